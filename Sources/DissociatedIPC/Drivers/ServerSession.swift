internal import ArrowIPC

/// One served stream: feeds a ``ServerStreamStateMachine`` from a source and
/// from the client's free_data, and does the I/O it asks for.
actor ServerSession {
  private let connection: any TransportConnection
  private let remoteMemory: (any RemoteMemory)?
  private var machine: ServerStreamStateMachine
  /// The source loop, waiting for free_data to make room (backpressure) or
  /// for the client to return everything (draining).
  private var waiter: CheckedContinuation<Void, Never>?
  private var failure: DissociatedIPCError?
  private var clientClosed = false
  /// Where metadata frame prefixes are written (one allocation per chunk).
  private var slab = SlabAllocator()

  init(connection: any TransportConnection, remoteMemory: (any RemoteMemory)?, machine: ServerStreamStateMachine) {
    self.connection = connection
    self.remoteMemory = remoteMemory
    self.machine = machine
  }

  /// The task sending the stream; cancelled when the client fails or
  /// leaves, so a producer that yields rarely is not waited for.
  private var sending: Task<Result<Void, DissociatedIPCError>, Never>?

  /// Sends the stream, then waits until the client returned every exposed
  /// region or went away.
  func run(_ source: MessageSource) async throws(DissociatedIPCError) {
    let control = Task { await self.receiveControl() }
    defer { control.cancel() }
    let sending = Task { await self.send(source) }
    self.sending = sending
    let result = await withTaskCancellationHandler { await sending.value } onCancel: { sending.cancel() }
    try result.get()
  }

  private func send(_ source: MessageSource) async -> Result<Void, DissociatedIPCError> {
    var iterator = source
    do throws(DissociatedIPCError) {
      while true {
        while !machine.mayAcceptMessage, !isStopped { await waitForChange() }
        try checkStopped()
        let next: OutgoingMessage?
        do { next = try await iterator.next() } catch {
          try checkStopped()
          throw DissociatedIPCError(.sourceFailed, "the stream source failed: \(error)")
        }
        // The client may have failed or left while the source was awaited.
        try checkStopped()
        guard let next else {
          // A source stream ends early when its task is cancelled: that is
          // not the end of the data, so it must not become an end of stream.
          if Task.isCancelled { throw DissociatedIPCError(.cancelled, "the server stopped serving this stream") }
          break
        }
        try await send(try machine.message(next))
      }
      if let end = machine.sourceFinished() { try await connection.sendFrame(end.parts(using: &slab)) }
      while !machine.isFinished, !isStopped { await waitForChange() }
      if let failure { throw failure }
      return .success(())
    } catch {
      if error.code != .connectionClosed, error.code != .streamTruncated {
        // Tell the client why, if it can still hear (DIPC-ERR-2).
        try? await connection.sendFrame(MetadataFrame.error(error.code, error.detail).parts)
      }
      await releaseAll()
      return .failure(error)
    }
  }

  private var isStopped: Bool { failure != nil || clientClosed }

  private func checkStopped() throws(DissociatedIPCError) {
    if let failure { throw failure }
    if clientClosed { throw DissociatedIPCError(.streamTruncated, "the client closed the connection mid-stream") }
  }

  private func send(_ send: ServerSend) async throws(DissociatedIPCError) {
    if let frame = send.metadata { try await connection.sendFrame(frame.parts(using: &slab)) }
    switch send.body {
    case .inline(let tag, let bytes)?:
      try await connection.sendTagged(tag.rawValue, [bytes])
    case .expose(let sequence, let bytes)?:
      guard let remoteMemory else { preconditionFailure("exposing without remote memory") }
      let region = try await remoteMemory.expose(bytes)
      let (tag, descriptor) = try machine.bodyExposed(sequence: sequence, region: region.id, ranges: region.ranges)
      try await connection.sendTagged(tag.rawValue, [ArrowBytes(copying: descriptor.encoded)])
    case nil:
      break
    }
  }

  private func waitForChange() async {
    await withCheckedContinuation { waiter = $0 }
  }

  private func wake() {
    waiter?.resume()
    waiter = nil
  }

  /// Receives free_data until the client closes; anything else tagged is a
  /// protocol error (DIPC-CONN-2).
  private func receiveControl() async {
    do throws(DissociatedIPCError) {
      while let message = try await connection.receiveTagged(matching: 0, mask: 0) {
        guard message.tag == ControlTag.freeData else {
          throw DissociatedIPCError(.unexpectedMessage, "tagged message \(Tag(rawValue: message.tag)) after initiation")
        }
        let released = try machine.freeData(FreeDataPayload.decode(message.payload))
        for region in released { await remoteMemory?.release(region) }
        wake()
      }
      clientClosed = true
    } catch {
      if error.code == .cancelled { return }
      if error.code == .connectionClosed { clientClosed = true } else { failure = error }
    }
    await releaseAll()
    wake()
    sending?.cancel()  // a producer that is awaited now would hold the stream open
  }

  /// Releases every region the client still held (DIPC-FREE-4).
  private func releaseAll() async {
    for region in machine.peerClosed() { await remoteMemory?.release(region) }
  }
}
