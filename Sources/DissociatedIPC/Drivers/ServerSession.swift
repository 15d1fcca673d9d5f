internal import ArrowIPC
internal import Synchronization

/// One served stream: feeds a ``ServerStreamStateMachine`` from a source and
/// from the client's free_data, and does the I/O it asks for.
///
/// Not an actor: the sending loop and the free_data loop are two tasks
/// that share the state machine under a lock, so that the many awaits per
/// message (the source, the frame, the body) run on the task's own
/// executor instead of hopping to an actor and back around each one.
final class ServerSession: Sendable {
  private struct State {
    var machine: ServerStreamStateMachine
    /// The sending loop, waiting for free_data to make room
    /// (backpressure) or for the client to return everything (draining).
    var waiter: CheckedContinuation<Void, Never>?
    var failure: DissociatedIPCError?
    var clientClosed = false
    /// The task sending the stream; cancelled when the client fails or
    /// leaves, so a producer that yields rarely is not waited for.
    var sending: Task<Result<Void, DissociatedIPCError>, Never>?
    /// Messages the transport took and free_data received so far: what
    /// the stall watchdog watches (DIPC-LIM-10).
    var progress: UInt64 = 0
    /// The sending loop waits for the source (a producer that is slow to
    /// yield is not the client's fault).
    var awaitingSource = false

    var isStopped: Bool { failure != nil || clientClosed }

    func checkStopped() throws(DissociatedIPCError) {
      if let failure { throw failure }
      if clientClosed { throw DissociatedIPCError(.streamTruncated, "the client closed the connection mid-stream") }
    }

    /// The waiting sending loop, taken so it is resumed once.
    mutating func takeWaiter() -> CheckedContinuation<Void, Never>? {
      defer { waiter = nil }
      return waiter
    }
  }

  /// The sending loop gives its thread to other tasks after this many
  /// messages: a source that never waits (an array, a file) over a
  /// transport with room would otherwise hold one of the concurrency
  /// pool's few threads until backpressure stops it (DIPC-BP-3).
  static let messagesPerTurn = 64

  private let connection: any TransportConnection
  private let remoteMemory: (any RemoteMemory)?
  private let state: Mutex<State>
  /// How long the stream may wait for the client without progress
  /// (DIPC-LIM-10); nil: for ever.
  private let stallTimeout: Duration?

  init(connection: any TransportConnection, remoteMemory: (any RemoteMemory)?, machine: ServerStreamStateMachine,
       stallTimeout: Duration?) {
    self.connection = connection
    self.remoteMemory = remoteMemory
    self.stallTimeout = stallTimeout
    state = Mutex(State(machine: machine))
  }

  /// Sends the stream, then waits until the client returned every exposed
  /// region or went away.
  func run(_ source: sending MessageSource) async throws(DissociatedIPCError) {
    // The sending task is recorded before the free_data loop starts, so a
    // client that leaves at once always finds it to cancel.
    let sending = Task { await self.send(source) }
    state.withLock { $0.sending = sending }
    let control = Task { await self.receiveControl() }
    defer { control.cancel() }
    let watchdog = stallTimeout.map { timeout in Task { await self.failWhenStalled(timeout) } }
    defer { watchdog?.cancel() }
    let result = await withTaskCancellationHandler { await sending.value } onCancel: { sending.cancel() }
    try result.get()
  }

  private func send(_ source: consuming MessageSource) async -> Result<Void, DissociatedIPCError> {
    var iterator = source
    var parts = PartLists()
    do throws(DissociatedIPCError) {
      var sinceYield = 0
      while true {
        sinceYield += 1
        if sinceYield == Self.messagesPerTurn {
          sinceYield = 0
          await Task.yield()
        }
        await waitUntil { $0.machine.mayAcceptMessage }
        // A client that closed is noticed once the source has a message
        // for it: one that closed after its last message (a data
        // connection, after the last body) was served in full.
        try state.withLock { (state) throws(DissociatedIPCError) in
          if let failure = state.failure { throw failure }
          state.awaitingSource = true
        }
        let next: OutgoingMessage?
        do { next = try await iterator.next() } catch {
          try state.withLock { (state) throws(DissociatedIPCError) in try state.checkStopped() }
          throw DissociatedIPCError(.sourceFailed, "the stream source failed: \(error)")
        }
        // The client may have failed or left while the source was awaited.
        let planned = try state.withLock { (state) throws(DissociatedIPCError) -> ServerSend? in
          if next != nil || state.failure != nil { try state.checkStopped() }
          // The transport took the message before this one.
          state.awaitingSource = false
          state.progress &+= 1
          return try next.map { (message) throws(DissociatedIPCError) in try state.machine.message(message) }
        }
        guard let planned else {
          // A producer's stream ends early when its task is cancelled: that
          // is not the end of the data, so it must not become an end of
          // stream. Arrays and files end only at their end.
          if Task.isCancelled, iterator.endsWhenCancelled {
            throw DissociatedIPCError(.cancelled, "the server stopped serving this stream")
          }
          break
        }
        try await send(planned, parts: &parts)
      }
      if let end = state.withLock({ $0.machine.sourceFinished() }) { try await connection.sendFrame(parts.frame(end)) }
      await waitUntil { $0.machine.isFinished }
      if let failure = state.withLock({ $0.failure }) { throw failure }
      return .success(())
    } catch let thrown {
      // A stall (DIPC-LIM-10) aborted the connection: say so, not what the
      // aborted send threw.
      let error = state.withLock { $0.failure } ?? thrown
      if error.code != .connectionClosed, error.code != .streamTruncated {
        // Tell the client why, if it can still hear (DIPC-ERR-2).
        try? await connection.sendFrame(MetadataFrame.error(error.code, error.detail).parts)
      }
      await releaseAll()
      return .failure(error)
    }
  }

  /// What the sending loop hands the transport, built in reused storage:
  /// frame prefixes come from a slab (one allocation per chunk), and the
  /// part lists are refilled in place, so a transport that is done with
  /// them when its send returns (shm:// copies them) costs no array
  /// allocation per message.
  private struct PartLists {
    var slab = SlabAllocator()
    var frameParts: [ArrowBytes] = []
    var bodyParts: [ArrowBytes] = []

    /// `frame`'s prefix and payload.
    mutating func frame(_ frame: MetadataFrame) -> [ArrowBytes] {
      frame.parts(into: &frameParts, using: &slab)
      return frameParts
    }

    /// `bytes` as a one-part list.
    mutating func body(_ bytes: ArrowBytes) -> [ArrowBytes] {
      bodyParts.removeAll(keepingCapacity: true)
      bodyParts.append(bytes)
      return bodyParts
    }
  }

  @inline(__always)
  private func send(_ send: ServerSend, parts: inout PartLists) async throws(DissociatedIPCError) {
    if let frame = send.metadata, case .inline(let tag, let bytes)? = send.body {
      // A frame and its inline body: one hand-off to the transport.
      return try await connection.sendFrame(parts.frame(frame), thenTagged: tag.rawValue, parts.body(bytes))
    }
    if let frame = send.metadata { try await connection.sendFrame(parts.frame(frame)) }
    switch send.body {
    case .inline(let tag, let bytes)?:
      try await connection.sendTagged(tag.rawValue, parts.body(bytes))
    case .expose(let sequence, let bytes)?:
      guard let remoteMemory else { preconditionFailure("exposing without remote memory") }
      let region = try await remoteMemory.expose(bytes)
      let (tag, descriptor) = try state.withLock { (state) throws(DissociatedIPCError) in
        try state.machine.bodyExposed(sequence: sequence, region: region.id, ranges: region.ranges)
      }
      try await connection.sendTagged(tag.rawValue, [ArrowBytes(copying: descriptor.encoded)])
    case nil:
      break
    }
  }

  /// Returns once `ready` holds or the stream stopped (the client failed
  /// or left); free_data and the client's end check again.
  @inline(__always)
  private func waitUntil(_ ready: (inout State) -> Bool) async {
    while !state.withLock({ ready(&$0) || $0.isStopped }) {
      await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
        let resumeNow = state.withLock { state -> Bool in
          if ready(&state) || state.isStopped { return true }
          state.waiter = continuation
          return false
        }
        if resumeNow { continuation.resume() }
      }
    }
  }

  /// Receives free_data until the client closes; anything else tagged is a
  /// protocol error (DIPC-CONN-2).
  private func receiveControl() async {
    do throws(DissociatedIPCError) {
      while let message = try await connection.receiveTagged(matching: 0, mask: 0) {
        guard message.tag == ControlTag.freeData else {
          throw DissociatedIPCError(.unexpectedMessage, "tagged message \(Tag(rawValue: message.tag)) after initiation")
        }
        let addresses = try FreeDataPayload.decode(message.payload)
        let (released, waiter) = try state.withLock { (state) throws(DissociatedIPCError) in
          state.progress &+= 1
          return (try state.machine.freeData(addresses), state.takeWaiter())
        }
        for region in released { await remoteMemory?.release(region) }
        waiter?.resume()
      }
      state.withLock { $0.clientClosed = true }
    } catch {
      if error.code == .cancelled { return }
      state.withLock { state in
        if error.code == .connectionClosed { state.clientClosed = true } else { state.failure = error }
      }
    }
    await releaseAll()
    let (waiter, sending) = state.withLock { ($0.takeWaiter(), $0.sending) }
    waiter?.resume()
    sending?.cancel()  // a producer that is awaited now would hold the stream open
  }

  /// Fails the stream when, for `timeout`, the transport took no message
  /// and no free_data came while the stream waited for the client: a peer
  /// that stopped reading, or that keeps its descriptors (DIPC-LIM-10).
  /// The connection is aborted, so a send blocked on it returns. Detected
  /// between one and two `timeout`s after the last progress.
  private func failWhenStalled(_ timeout: Duration) async {
    var seen: UInt64? = nil
    while true {
      do { try await Task.sleep(for: timeout) } catch { return }
      let stalled = state.withLock { state -> (CheckedContinuation<Void, Never>?, Task<Result<Void, DissociatedIPCError>, Never>?)? in
        defer { seen = state.progress }
        guard state.progress == seen, !state.awaitingSource, !state.isStopped else { return nil }
        state.failure = DissociatedIPCError(.timedOut, "the client took no message and returned no memory for \(timeout)")
        return (state.takeWaiter(), state.sending)
      }
      guard let (waiter, sending) = stalled else { continue }
      connection.abort()
      waiter?.resume()
      sending?.cancel()
      return
    }
  }

  /// Releases every region the client still held (DIPC-FREE-4).
  private func releaseAll() async {
    for region in state.withLock({ $0.machine.peerClosed() }) { await remoteMemory?.release(region) }
  }
}
