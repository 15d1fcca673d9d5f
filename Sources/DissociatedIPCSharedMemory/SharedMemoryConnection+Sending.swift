internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// Sending: direct sends from the calling task, the writer thread, and
/// the queue between them (SHM-THREAD-1, SHM-CTRL-6, SHM-CTRL-8).
extension SharedMemoryConnection {
  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send(parts, tag: 0, inline: .frame, inSegment: .frameInSegment)
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send(parts, tag: tag, inline: .tagged, inSegment: .taggedInSegment)
  }

  /// A frame and its body together (kind 11, SHM-CTRL-7) when both fit
  /// inline; otherwise one after the other.
  func sendFrame(_ frame: [ArrowBytes], thenTagged tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    let frameLength = frame.reduce(0) { $0 + $1.count }
    guard frameLength + 8 + parts.reduce(0, { $0 + $1.count }) <= config.inlineLimit else {
      try await sendFrame(frame)
      return try await sendTagged(tag, parts)
    }
    try await submitWaiting(Outgoing(kind: .frameAndTagged, tag: tag, words: (UInt64(frameLength), 0), wordCount: 1,
                                     parts: frame, trailingParts: parts))
  }

  /// Small payloads go inside the control message; larger ones are copied
  /// once into this side's segment and announced by address (SHM-RING-4).
  @inline(__always)
  private func send(_ parts: [ArrowBytes], tag: UInt64, inline: SharedMemoryWire.Kind,
                    inSegment: SharedMemoryWire.Kind) async throws(DissociatedIPCError) {
    let count = parts.reduce(0) { $0 + $1.count }
    guard count > config.inlineLimit else {
      return try await submitWaiting(Outgoing(kind: inline, tag: tag, parts: parts))
    }
    guard count <= config.maxMessageSize else {
      throw DissociatedIPCError(.limitExceeded, "a \(count)-byte message exceeds the limit of \(config.maxMessageSize)")
    }
    let block = try await reserve(count, kind: .payload)
    var destination = block.pointer
    for part in parts { destination += part.copy(to: destination) }
    withExtendedLifetime(block.segment) {}
    try await submitWaiting(Outgoing(kind: inSegment, tag: tag, words: (block.address, UInt64(count)), wordCount: 2))
  }

  /// Submits `message` (``submit(_:)``), then waits while the writer's
  /// queue is over its limit. The usual case is synchronous: no
  /// suspension unless the queue is full.
  @inline(__always)
  private func submitWaiting(_ message: Outgoing) async throws(DissociatedIPCError) {
    guard try submit(message) else { return }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let wait = state.withLock { state -> Bool in
        guard state.queuedBytes > config.writeQueueBytes, state.sendError == nil, !state.writerDone else { return false }
        state.blockedSenders.append(continuation)
        return true
      }
      if !wait { continuation.resume() }
    }
    if let error = state.withLock({ $0.sendError }) { throw error }
  }

  /// Sends `message` at once when nothing waits before it (never
  /// blocking), else queues it for the writer; returns whether the queue
  /// is over its limit. A failed send fails the connection.
  @discardableResult
  func submit(_ message: Outgoing) throws(DissociatedIPCError) -> Bool {
    let outcome = try state.withLock { (state) throws(DissociatedIPCError) -> SubmitOutcome in
      try enqueue(message, &state)
    }
    return try complete(outcome, message)
  }

  /// What ``enqueue(_:_:)`` did; ``complete(_:_:)`` finishes it outside
  /// the lock.
  enum SubmitOutcome {
    case direct, queued(nudge: LazyWriter.Nudge, over: Bool)
  }

  /// The locked part of ``submit(_:)``: claims the socket for a direct
  /// send, or queues.
  func enqueue(_ message: Outgoing, _ state: inout State) throws(DissociatedIPCError) -> SubmitOutcome {
    if let error = state.sendError { throw error }
    // A lone message goes straight to the socket; a stream of them is
    // batched by the writer (SHM-THREAD-1). The hello, sent as the
    // connection opens, does not count: the first message after it
    // (want_data, a schema) is a lone one, not the second of a stream that
    // would wait for the writer thread to wake.
    let direct = message.kind == .hello || state.submissions.submitted()
    if direct, state.queue.isEmpty, !state.writerBusy, !state.directSending, !state.descriptorClosed {
      state.directSending = true
      return .direct
    }
    state.enqueueForWriter(message)
    return .queued(nudge: state.nudgeWriter(), over: state.queuedBytes > config.writeQueueBytes)
  }

  /// The unlocked part of ``submit(_:)``: the direct send (never
  /// blocking: a message that would block goes first in the queue), or
  /// waking the writer. A failed send fails the connection.
  @discardableResult
  func complete(_ outcome: SubmitOutcome, _ message: Outgoing) throws(DissociatedIPCError) -> Bool {
    switch outcome {
    case .queued(let writerNudge, let over):
      nudge(writerNudge)
      // A writer that could not start failed the connection: the message
      // just queued will never leave, so its sender must hear it.
      if case .start = writerNudge, let failure = state.withLock({ $0.failure }) { throw failure }
      return over
    case .direct:
      var failure: DissociatedIPCError?
      var sent = false
      do throws(DissociatedIPCError) {
        sent = try transmit(message, wait: false)
      } catch {
        failure = error
      }
      let (writerNudge, over) = state.withLock { state -> (LazyWriter.Nudge, Bool) in
        state.directSending = false
        if failure == nil, !sent {
          state.queue.insert(message, at: 0)
          state.queuedBytes += message.queuedBytes
        }
        let pending = !state.queue.isEmpty || !state.returns.isEmpty || state.closing || state.peerClosed || state.failure != nil
        let writerNudge = pending ? state.nudgeWriter() : .nothing
        closeDescriptorIfIdle(&state)
        return (writerNudge, state.queuedBytes > config.writeQueueBytes)
      }
      nudge(writerNudge)
      if let failure {
        sendFailed(failure)
        throw failure
      }
      return over
    }
  }

  /// Sends one message on the socket; false when it would block (only
  /// without `wait`).
  private func transmit(_ message: Outgoing, wait: Bool) throws(DissociatedIPCError) -> Bool {
    let length = SharedMemoryWire.length(words: message.wordCount)
    return try withUnsafeTemporaryAllocation(byteCount: length, alignment: 8) { (header) throws(DissociatedIPCError) -> Bool in
      SharedMemoryWire.write(message.kind, tag: message.tag, words: message.words, count: message.wordCount,
                             into: header.baseAddress!)
      return try socket.send(header: UnsafeRawBufferPointer(header), parts: message.parts, message.trailingParts,
                             passing: message.segment?.descriptor ?? message.arena?.descriptor ?? -1, wait: wait)
    }
  }

  /// The writer thread: sends what direct sends could not, and returned
  /// space, until the connection closes; small messages go together in
  /// batch packets (SHM-CTRL-6), which senders fill as they queue
  /// (SHM-CTRL-8).
  func writeLoop() {
    // Where the writer packs its own space returns.
    let scratch = BatchPacket()
    // Swapped with the state's queues each round, so taking a round's
    // messages allocates nothing.
    var messages: [Outgoing] = []
    var returns: [UInt64] = []
    var sentPackets: [BatchPacket] = []
    while true {
      let stop = state.withLock { state -> Bool in
        if state.failure != nil { return true }
        if state.directSending || (state.queue.isEmpty && state.returns.isEmpty) {
          if !state.directSending, state.closing || state.peerClosed { return true }
          state.writer.sleeping = true
          return false
        }
        state.writerBusy = true
        swap(&state.queue, &messages)
        swap(&state.returns, &returns)
        return false
      }
      if stop { break }
      if messages.isEmpty, returns.isEmpty {
        writerWake.wait()
        continue
      }
      let queuedBytes = messages.reduce(0) { $0 + $1.queuedBytes }
      do throws(DissociatedIPCError) {
        var start = 0
        while start < returns.count {
          let end = min(start + SharedMemoryWire.maxReturnsPerMessage, returns.count)
          var payload: [UInt8] = []
          payload.reserveCapacity(8 * (end - start))
          for address in returns[start ..< end] { withUnsafeBytes(of: address.littleEndian) { payload += $0 } }
          messages.append(Outgoing(kind: .spaceReturned, parts: [ArrowBytes(copying: payload)]))
          start = end
        }
        try transmitAll(messages, scratch: scratch)
      } catch {
        sendFailed(error)
        break
      }
      // Sent: let go of the payloads (and any segment) before sleeping;
      // keep a few packets for the senders to fill again.
      for case let packet? in messages.lazy.map(\.packet) where sentPackets.count < Self.spareBatchPackets {
        packet.reset()
        sentPackets.append(packet)
      }
      messages.removeAll(keepingCapacity: true)
      returns.removeAll(keepingCapacity: true)
      let released = state.withLock { state -> [CheckedContinuation<Void, Never>] in
        state.writerBusy = false
        state.queuedBytes -= queuedBytes
        while state.sparePackets.count < Self.spareBatchPackets, let packet = sentPackets.popLast() {
          state.sparePackets.append(packet)
        }
        guard state.queuedBytes <= config.writeQueueBytes else { return [] }
        defer { state.blockedSenders = [] }
        return state.blockedSenders
      }
      sentPackets.removeAll(keepingCapacity: true)
      for sender in released { sender.resume() }
    }
    finishWriting()
  }

  /// Does what ``State/nudgeWriter()`` asked for.
  func nudge(_ writerNudge: LazyWriter.Nudge) { perform(writerNudge, threadName: "shm-writer") }

  /// The writer's part ends (its thread stops, or it never ran): close
  /// waiters and blocked senders go on; the descriptor closes once the
  /// reader stopped too (SHM-THREAD-2).
  func finishWriting() {
    let waiters = state.withLock { state in
      state.writerBusy = false
      state.writerDone = true
      defer {
        state.closeWaiters = []
        state.blockedSenders = []
      }
      return state.closeWaiters + state.blockedSenders
    }
    for waiter in waiters { waiter.resume() }
    threadExited()
  }

  /// Sends `messages` in order with blocking calls: batch packets as they
  /// are; runs of other batchable messages (the writer's space returns)
  /// packed into `scratch`, as many as fit; the rest alone.
  private func transmitAll(_ messages: [Outgoing], scratch: BatchPacket) throws(DissociatedIPCError) {
    var index = 0
    while index < messages.count {
      if let packet = messages[index].packet {
        _ = try socket.send(header: packet.bytes, parts: [], passing: -1, wait: true)
        index += 1
        continue
      }
      scratch.reset()
      var end = index
      while end < messages.count, messages[end].batchable, scratch.append(messages[end]) { end += 1 }
      guard end > index else {
        _ = try transmit(messages[index], wait: true)
        index += 1
        continue
      }
      _ = try socket.send(header: scratch.bytes, parts: [], passing: -1, wait: true)
      index = end
    }
  }
}
