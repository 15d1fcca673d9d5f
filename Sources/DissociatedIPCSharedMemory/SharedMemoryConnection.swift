internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import Synchronization

/// One shm:// connection: a reader thread that turns control messages into
/// inbox messages (payloads in the peer's segments become views of them),
/// and a send path that writes to the socket directly when nothing is
/// queued, else through a writer thread (SHM-THREAD-1).
final class SharedMemoryConnection: InboxReceiving {
  /// A control message waiting for the writer thread.
  struct Outgoing {
    var kind: SharedMemoryWire.Kind
    var tag: UInt64 = 0
    var words: (UInt64, UInt64) = (0, 0)
    var wordCount = 0
    /// Payload parts sent after the header (inline messages).
    var parts: [ArrowBytes] = []
    /// Parts sent after `parts` (kind 11: the body after the frame), kept
    /// apart so that queuing the pair builds no third array.
    var trailingParts: [ArrowBytes] = []
    /// A segment whose descriptor travels with the message.
    var segment: OutboundSegment?
    /// A buffer whose descriptor travels with the message (kind 9).
    var arena: SharedMemoryBuffer?
    /// Kind 10 only: the batch, filled as messages were queued.
    var packet: BatchPacket?

    /// The message's length on the wire.
    var queuedBytes: Int {
      if let packet { return packet.length }
      return SharedMemoryWire.length(words: wordCount) + parts.reduce(0) { $0 + $1.count } + trailingParts.reduce(0) { $0 + $1.count }
    }
    /// Whether it may travel inside a batch (SHM-CTRL-6).
    var batchable: Bool { kind.batchable && segment == nil && arena == nil }
  }

  struct State {
    // Sending.
    var queue: [Outgoing] = []
    var queuedBytes = 0
    /// The writer thread holds messages taken from the queue: a direct
    /// send now would overtake them.
    var writerBusy = false
    /// A task is sending directly, outside the lock: nothing else may
    /// send (order), and the descriptor stays open (SHM-THREAD-2).
    var directSending = false
    /// Tells a stream of messages from a lone one (SHM-THREAD-1).
    var submissions = LoneMessageDetector()
    /// The writer sleeps on ``writerWake``; signal only then.
    var writerSleeping = false
    /// Space of the peer's segments to return (SHM-RING-3).
    var returns: [UInt64] = []
    /// Bytes of the peer's segments that delivered payloads still hold
    /// (SHM-RING-7).
    var heldPayloads = HeldBytes()
    /// Senders waiting for the queue to drain below its limit.
    var blockedSenders: [CheckedContinuation<Void, Never>] = []
    // This side's segments.
    var outbound = OutboundSegments()
    /// Bumped whenever space is freed, so a sender that found no room
    /// can tell whether it missed a wake-up.
    var spaceGeneration = 0
    var spaceWaiters: [CheckedContinuation<Void, Never>] = []
    // The peer's segments, mapped.
    var peerSegments: [UInt16: MappedSegment] = [:]
    // Buffers exposed in place (SHM-ARENA-*).
    var arenas = ArenaTable()
    // Lifecycle.
    var closing = false
    var peerClosed = false
    var failure: DissociatedIPCError?
    var writerDone = false
    var readerDone = false
    /// The reader thread handed receiving to the receiving tasks and waits
    /// on ``readerWake`` (SHM-THREAD-4).
    var readerParked = false
    /// A task is receiving from the socket now (SHM-THREAD-4).
    var taskReceiving = false
    /// A receive started waiting while a task received: that task wakes
    /// the reader when it is done (SHM-THREAD-4).
    var readerWanted = false
    /// Control messages received on tasks rather than the reader thread.
    var receivedOnTasks = 0
    var descriptorClosed = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []

    /// Why nothing can be sent, if so.
    var sendError: DissociatedIPCError? {
      if let failure { return failure }
      if closing || peerClosed { return DissociatedIPCError(.connectionClosed, "the shm:// connection is closed") }
      return nil
    }

    /// Sent batch packets kept for reuse (at most ``spareBatchPackets``).
    var sparePackets: [BatchPacket] = []

    /// Wakes the writer if it sleeps; returns whether to signal it.
    mutating func wakeWriter() -> Bool {
      defer { writerSleeping = false }
      return writerSleeping
    }

    /// Queues `message` for the writer: a batchable one is copied at once
    /// into the batch packet at the queue's end, or a new one, so the
    /// writer sends whole packets and never touches the message's parts
    /// (SHM-CTRL-8). Adds the bytes this puts on the wire to `queuedBytes`.
    mutating func enqueueForWriter(_ message: Outgoing) {
      if message.batchable, let packet = queue.last?.packet {
        let before = packet.length
        if packet.append(message) {
          queuedBytes += packet.length - before
          return
        }
      }
      if message.batchable, BatchPacket.fitsEmpty(messageLength: message.queuedBytes) {
        let packet = sparePackets.popLast() ?? BatchPacket()
        _ = packet.append(message)
        queue.append(Outgoing(kind: .batch, packet: packet))
        queuedBytes += packet.length
        return
      }
      queue.append(message)
      queuedBytes += message.queuedBytes
    }
  }

  /// How many sent batch packets a connection keeps for reuse.
  static let spareBatchPackets = 4

  let socket: UnixSocket
  let config: SharedMemoryTransport.Config
  let inbox = MessageInbox(maxBufferedBytes: Int.max)
  let state = Mutex(State())
  /// Bounds the peer's segments this side maps (SHM-MEM-6).
  let peerMappings: MappingBudget
  private let writerWake = DispatchSemaphore(value: 0)
  /// Wakes the parked reader thread (SHM-THREAD-4).
  private let readerWake = DispatchSemaphore(value: 0)
  /// What a receive uses; only whoever receives now (the reader thread,
  /// or the task that claimed the socket) touches it.
  private let receiving = ReceiveContext()
  let pathDescription: String

  /// The listener's claim on this connection (DIPC-LIM-7), given back when
  /// the connection is freed.
  private let slot: ConnectionSlots.Slot?

  /// Starts the reader and writer threads and sends the hello.
  ///
  /// - Throws: `.resourceExhausted` when a thread cannot be had; `socket`
  ///   is closed then (at once, or by the reader thread as it ends).
  init(socket: UnixSocket, config: SharedMemoryTransport.Config, path: String,
       slot: ConnectionSlots.Slot? = nil) throws(DissociatedIPCError) {
    self.socket = socket
    self.config = config
    self.slot = slot
    peerMappings = MappingBudget(maxSegments: config.maxPeerSegments, maxBytes: config.maxPeerMappedBytes)
    pathDescription = "shm via \(path), peer pid \(socket.peerProcess().map(String.init) ?? "?")"
    inbox.whenReceiveWaits { [weak self] in self?.wakeParkedReader() }
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "shm-reader") { [self] in readLoop() }
    } catch {
      state.withLock { state in
        state.readerDone = true
        state.writerDone = true
        closeDescriptorIfIdle(&state)
      }
      throw error
    }
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "shm-writer") { [self] in writeLoop() }
    } catch {
      // The reader sees the shutdown, ends and closes the descriptor.
      state.withLock { $0.writerDone = true }
      fail(error)
      throw error
    }
    do throws(DissociatedIPCError) {
      try submit(Outgoing(kind: .hello, words: Self.helloWords, wordCount: 2))
    } catch {
      sendFailed(error)  // a peer already gone ends sending only (SHM-CLOSE-2)
    }
  }

  /// The hello's body as two words: "DIPCSHM\0", then version and flags.
  private static var helloWords: (UInt64, UInt64) {
    let bytes = SharedMemoryWire.hello
    return bytes.withUnsafeBytes {
      (UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 16, as: UInt64.self)),
       UInt64(littleEndian: $0.loadUnaligned(fromByteOffset: 24, as: UInt64.self)))
    }
  }

  var remoteMemory: (any RemoteMemory)? { SharedMemoryRemoteMemory(connection: self) }

  // MARK: Sending

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
    case direct, queued(wake: Bool, over: Bool)
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
    return .queued(wake: state.wakeWriter(), over: state.queuedBytes > config.writeQueueBytes)
  }

  /// The unlocked part of ``submit(_:)``: the direct send (never
  /// blocking: a message that would block goes first in the queue), or
  /// waking the writer. A failed send fails the connection.
  @discardableResult
  func complete(_ outcome: SubmitOutcome, _ message: Outgoing) throws(DissociatedIPCError) -> Bool {
    switch outcome {
    case .queued(let wake, let over):
      if wake { writerWake.signal() }
      return over
    case .direct:
      var failure: DissociatedIPCError?
      var sent = false
      do throws(DissociatedIPCError) {
        sent = try transmit(message, wait: false)
      } catch {
        failure = error
      }
      let (wake, over) = state.withLock { state -> (Bool, Bool) in
        state.directSending = false
        if failure == nil, !sent {
          state.queue.insert(message, at: 0)
          state.queuedBytes += message.queuedBytes
        }
        let pending = !state.queue.isEmpty || !state.returns.isEmpty || state.closing || state.peerClosed || state.failure != nil
        let wake = pending && state.wakeWriter()
        closeDescriptorIfIdle(&state)
        return (wake, state.queuedBytes > config.writeQueueBytes)
      }
      if wake { writerWake.signal() }
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

  /// Reserves a block of this side's segments for `count` bytes, waiting
  /// while none has room (backpressure, SHM-RING-2). A new segment is
  /// announced to the peer before anything can refer to it.
  func reserve(_ count: Int, kind: BlockKind) async throws(DissociatedIPCError) -> OutboundSegments.Reservation {
    while true {
      let placement = try state.withLock { (state) throws(DissociatedIPCError) -> (OutboundSegments.Placement, Int) in
        if let error = state.sendError { throw error }
        return (try state.outbound.place(count, kind: kind, config: config), state.spaceGeneration)
      }
      switch placement.0 {
      case .placed(let reservation, let added, let retired):
        reservation.segment.populate(through: reservation.payloadOffset + count)
        for id in retired { try submit(Outgoing(kind: .segmentRetired, words: (UInt64(id), 0), wordCount: 1)) }
        if let added {
          try submit(Outgoing(kind: .segmentAdded, words: (UInt64(added.id), UInt64(added.size)), wordCount: 2, segment: added))
        }
        return reservation
      case .full:
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
          let wait = state.withLock { state -> Bool in
            guard state.spaceGeneration == placement.1, state.sendError == nil else { return false }
            state.spaceWaiters.append(continuation)
            return true
          }
          if !wait { continuation.resume() }
        }
      }
    }
  }

  /// Frees blocks of this side's segments and wakes senders waiting for
  /// space; false when an address is not a live block of `kind`.
  func freeSpace(_ addresses: some Sequence<UInt64>, kind: BlockKind) -> Bool {
    let (known, waiters) = state.withLock { state in
      var known = true
      for address in addresses where !state.outbound.free(address, kind: kind) { known = false }
      state.spaceGeneration += 1
      defer { state.spaceWaiters = [] }
      return (known, state.spaceWaiters)
    }
    for waiter in waiters { waiter.resume() }
    return known
  }

  /// Counts a received payload of `length` bytes as held, unless held
  /// payloads would then pin more than `maxHeldPayloadBytes` of the
  /// peer's memory (one alone always may); false then (SHM-RING-7).
  private func holdPayload(_ length: Int) -> Bool {
    state.withLock { $0.heldPayloads.hold(length, limit: config.maxHeldPayloadBytes) }
  }

  /// The application released a payload in the peer's segment: queue its
  /// address for the writer, which coalesces returns (SHM-RING-3); `held`
  /// is what ``holdPayload(_:)`` counted for it.
  func returnSpace(_ address: UInt64, held: Int = 0) {
    let wake = state.withLock { state -> Bool in
      state.heldPayloads.release(held)
      guard state.sendError == nil else { return false }
      state.returns.append(address)
      return state.wakeWriter()
    }
    if wake { writerWake.signal() }
  }

  /// The writer thread: sends what direct sends could not, and returned
  /// space, until the connection closes; small messages go together in
  /// batch packets (SHM-CTRL-6), which senders fill as they queue
  /// (SHM-CTRL-8).
  private func writeLoop() {
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
          state.writerSleeping = true
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
    let (waiters, senders) = state.withLock { state in
      state.writerBusy = false
      state.writerDone = true
      defer {
        state.closeWaiters = []
        state.blockedSenders = []
      }
      return (state.closeWaiters, state.blockedSenders)
    }
    for waiter in waiters + senders { waiter.resume() }
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

  // MARK: Receiving

  /// The reader thread: the peer's hello, then control messages until the
  /// peer closes (orderly) or breaks the protocol (SHM-FAULT-2). While the
  /// receiving task is behind, it hands receiving to that task and parks
  /// (SHM-THREAD-4).
  private func readLoop() {
    do throws(DissociatedIPCError) {
      while waitWhileTasksReceive() {
        guard case .message(let received) = try socket.receive(into: receiving.buffer) else { break }
        try handle(received)
        inbox.waitForRoom(below: config.readAheadBytes)
        if inbox.isClosed { break }  // closed locally: nobody will receive more
        handOffIfBehind()
      }
      peerClosed()
    } catch {
      fail(error)
    }
    state.withLock { $0.readerDone = true }
    threadExited()
  }

  /// The reader hands receiving to the tasks once this many messages wait
  /// to be received after a delivery, and no receive waits (SHM-THREAD-4).
  static let handOffBacklog = 64

  /// Parks the reader when the receiving task is behind. Checked again
  /// after parking: a receive that started waiting meanwhile needs the
  /// reader, and its wake-up (``wakeParkedReader()``) may have come before
  /// the park.
  private func handOffIfBehind() {
    guard inbox.unclaimedBacklog >= Self.handOffBacklog else { return }
    state.withLock { $0.readerParked = true }
    guard inbox.unclaimedBacklog < Self.handOffBacklog else { return }
    state.withLock { state in if !state.taskReceiving { state.readerParked = false } }
  }

  /// A receive started waiting: the reader receives again, unless a task
  /// receives now (it hands receiving back itself when it finds nothing).
  private func wakeParkedReader() {
    let wake = state.withLock { state -> Bool in
      guard state.readerParked else { return false }
      guard !state.taskReceiving else {
        state.readerWanted = true
        return false
      }
      state.readerParked = false
      return true
    }
    if wake { readerWake.signal() }
  }

  /// How long a parked reader waits before it takes receiving back, so
  /// that control messages and the peer's close are seen while no task
  /// receives (SHM-THREAD-4).
  static let parkTimeout = DispatchTimeInterval.milliseconds(5)

  /// Waits while the reader is parked and a task may receive; false once
  /// the inbox is closed.
  private func waitWhileTasksReceive() -> Bool {
    while state.withLock({ $0.readerParked }) {
      if inbox.isClosed { return false }
      _ = readerWake.wait(timeout: .now() + Self.parkTimeout)
      // Take receiving back unless a task receives right now (it hands it
      // back itself, with a signal, when it is done and a receive waits or
      // it found nothing).
      state.withLock { state in if !state.taskReceiving { state.readerParked = false } }
    }
    return !inbox.isClosed
  }

  /// Receives one control message on the calling task, without waiting,
  /// when the reader handed receiving to the tasks and the inbox has room
  /// (SHM-THREAD-4). True when something was received; false when the
  /// socket is not the task's to read or nothing was there. The reader
  /// thread receives again, woken, when nothing was there, when a receive
  /// waits, or when nothing that arrived waits for this task.
  private func receiveOnTask() -> Bool {
    // A quick look first: while the reader receives (the usual case when
    // the task keeps up) this costs one uncontended lock, not the inbox's.
    guard state.withLock({ $0.readerParked && !$0.taskReceiving }), inbox.hasRoom(below: config.readAheadBytes) else {
      return false
    }
    let claimed = state.withLock { state -> Bool in
      guard state.readerParked, !state.taskReceiving, !state.descriptorClosed, state.failure == nil else { return false }
      state.taskReceiving = true
      return true
    }
    guard claimed else { return false }
    var received = false
    do throws(DissociatedIPCError) {
      switch try socket.receive(into: receiving.buffer, wait: false) {
      case .message(let message):
        try handle(message)
        received = true
      case .closed:
        peerClosed()
      case .wouldBlock:
        break
      }
    } catch {
      fail(error)
    }
    let unclaimed = received ? inbox.unclaimedBacklog : 0
    let wake = state.withLock { state -> Bool in
      state.taskReceiving = false
      if received { state.receivedOnTasks += 1 }
      let wake = unclaimed == 0 || state.readerWanted
      if wake {
        state.readerParked = false
        state.readerWanted = false
      }
      closeDescriptorIfIdle(&state)
      return wake
    }
    if wake { readerWake.signal() }
    return received
  }

  /// How many control messages tasks received themselves (SHM-THREAD-4).
  var controlMessagesReceivedOnTasks: Int { state.withLock { $0.receivedOnTasks } }

  /// `take` again after each control message received on this task,
  /// while it finds nothing and the task may receive (SHM-THREAD-4).
  @inline(__always)
  private func takeReceiving<T>(
    _ take: () throws(DissociatedIPCError) -> ReadyReceive<T>
  ) throws(DissociatedIPCError) -> ReadyReceive<T> {
    while true {
      let ready = try take()
      guard case .wouldWait = ready, receiveOnTask() else { return ready }
    }
  }

  /// The inbox's next frame, if queued or receivable now on this task.
  func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> {
    try takeReceiving { () throws(DissociatedIPCError) in try inbox.readyFrame() }
  }

  /// The inbox's next matching tagged message, if queued or receivable
  /// now on this task.
  func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    try takeReceiving { () throws(DissociatedIPCError) in try inbox.readyTagged(matching: tag, mask: mask) }
  }

  /// The next frame: as ``readyFrame()``, else waiting in the inbox for
  /// the reader thread.
  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? {
    try await readyFrame().orWaiting { () async throws(DissociatedIPCError) in try await inbox.receiveFrame() }
  }

  /// The next matching tagged message: as ``readyTagged(matching:mask:)``,
  /// else waiting in the inbox for the reader thread.
  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    try await readyTagged(matching: tag, mask: mask).orWaiting { () async throws(DissociatedIPCError) in
      try await inbox.receiveTagged(matching: tag, mask: mask)
    }
  }

  /// Chunks for received payloads, shared by every connection (warm,
  /// already-faulted memory).
  static let receivePool = BufferPool(maxPooledBytes: 16 << 20, minimumSize: SlabAllocator.chunkSize)

  /// Acts on one control message received into the receive context's
  /// buffer; what it received goes to the inbox in one delivery.
  private func handle(_ received: UnixSocket.Received) throws(DissociatedIPCError) {
    let context = receiving
    let buffer = UnsafeRawBufferPointer(context.buffer)
    var descriptors = received.descriptors
    defer { for descriptor in descriptors { closeDescriptor(descriptor) } }
    defer {
      if !context.deliveries.isEmpty { inbox.deliver(context.deliveries) }
      context.deliveries.removeAll(keepingCapacity: true)
    }
    guard !received.truncated else {
      throw DissociatedIPCError(.transportFailure, "a shm:// control message longer than \(buffer.count) bytes or with too many descriptors")
    }
    let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<received.length])
    let message = try SharedMemoryWire.parse(bytes)
    guard context.greeted == (message != .hello) else {
      throw DissociatedIPCError(.transportFailure, context.greeted ? "a second shm:// hello" : "the peer is not a shm:// Dissociated IPC endpoint (no hello)")
    }
    if message == .hello {
      context.greeted = true
      return
    }
    if case .segmentAdded = message {} else if !descriptors.isEmpty {
      throw DissociatedIPCError(.transportFailure, "a shm:// control message of kind \(bytes[0]) carried a descriptor")
    }
    guard message == .batch else { return try dispatch(message, bytes, descriptors: &descriptors, slab: &context.slab, into: &context.deliveries) }
    // A batch (SHM-CTRL-6): each entry is handled as if it came alone.
    var none: [Int32] = []
    try SharedMemoryWire.batchEntries(bytes, into: &context.batchEntries)
    for entry in context.batchEntries {
      let inner = UnsafeRawBufferPointer(rebasing: bytes[entry])
      try dispatch(try SharedMemoryWire.parse(inner), inner, descriptors: &none, slab: &context.slab, into: &context.deliveries)
    }
  }

  /// Acts on one parsed message (`bytes` are its bytes); a received
  /// payload is appended to `deliveries`.
  private func dispatch(_ message: SharedMemoryWire.Message, _ bytes: UnsafeRawBufferPointer, descriptors: inout [Int32],
                        slab: inout SlabAllocator, into deliveries: inout [MessageInbox.Delivery]) throws(DissociatedIPCError) {
    switch message {
    case .hello, .batch:
      break  // handled by the caller
    case .inline(let kind, let tag, let offset, let length):
      let payload = slab.copy(bytes.baseAddress! + offset, count: length)
      deliveries.append(kind == .frame ? .frame(payload) : .tagged(TaggedMessage(tag: tag, payload: payload)))
    case .frameAndTagged(let tag, let offset, let frameLength, let payloadLength):
      deliveries.append(.frame(slab.copy(bytes.baseAddress! + offset, count: frameLength)))
      let payload = slab.copy(bytes.baseAddress! + offset + frameLength, count: payloadLength)
      deliveries.append(.tagged(TaggedMessage(tag: tag, payload: payload)))
    case .inSegment(let kind, let tag, let address, let length):
      let (id, offset) = SharedMemoryWire.split(address)
      guard let segment = state.withLock({ $0.peerSegments[id] }), segment.contains(offset: offset, length: length) else {
        throw DissociatedIPCError(.malformedDescriptor, "a payload at segment \(id) offset \(offset) length \(length) lies outside every mapped segment")
      }
      guard kind == .taggedInSegment else {
        // A frame is copied out and its space returned at once: the inbox
        // keeps received frames referenced until it compacts its queue, so
        // a view would pin ring space the application released (SHM-RING-5).
        let frame = slab.copy(segment.base + offset, count: length)
        returnSpace(address)
        return deliveries.append(.frame(frame))
      }
      guard holdPayload(length) else {
        // Held payloads already pin as much of the peer's memory as they
        // may: this one is copied and its space returned (SHM-RING-7).
        let copy = segment.view(offset: offset, length: length, owner: segment).copied()
        returnSpace(address)
        return deliveries.append(.tagged(TaggedMessage(tag: tag, payload: copy)))
      }
      let lease = PayloadLease(segment: segment, address: address, length: length, connection: self)
      deliveries.append(.tagged(TaggedMessage(tag: tag, payload: segment.view(offset: offset, length: length, owner: lease))))
    case .segmentAdded(let id, let size, let arena):
      guard descriptors.count == 1 else {
        throw DissociatedIPCError(.transportFailure, "a segment announced with \(descriptors.count) descriptors, not 1")
      }
      let descriptor = descriptors.removeFirst()
      do throws(DissociatedIPCError) {
        try peerMappings.reserve(size)
      } catch {
        closeDescriptor(descriptor)
        throw error
      }
      let base: UnsafeRawPointer
      do throws(DissociatedIPCError) {
        base = try mapPeerSegment(descriptor, size: size)
      } catch {
        peerMappings.release(size)
        throw error
      }
      let segment = MappedSegment(id: id, base: base, size: size, isArena: arena, budget: peerMappings)
      let added = state.withLock { state -> Bool in
        guard state.peerSegments[id] == nil else { return false }
        state.peerSegments[id] = segment
        return true
      }
      guard added else { throw DissociatedIPCError(.malformedDescriptor, "segment \(id) announced twice") }
    case .spaceReturned(let count):
      let addresses = (0 ..< count).lazy.map { SharedMemoryWire.returnedAddress(bytes, $0) }
      guard freeSpace(addresses, kind: .payload) else {
        throw DissociatedIPCError(.unknownFreeAddress, "the peer returned space it was not given")
      }
    case .segmentRetired(let id):
      guard state.withLock({ $0.peerSegments.removeValue(forKey: id) }) != nil else {
        throw DissociatedIPCError(.malformedDescriptor, "retired segment \(id) was never announced")
      }
    }
  }

  // MARK: Closing and failing

  /// The peer closed: receives end after what was queued; nothing more can
  /// be sent, so waiting senders fail and the writer stops.
  private func peerClosed() {
    inbox.close()
    let (waiters, wake) = state.withLock { state in
      state.peerClosed = true
      defer { state.spaceWaiters = [] }
      return (state.spaceWaiters, state.wakeWriter())
    }
    for waiter in waiters { waiter.resume() }
    if wake { writerWake.signal() }
  }

  /// A send failed. When the peer is gone (EPIPE, ECONNRESET: the
  /// connectionClosed code) nothing more can be sent, but what the peer
  /// sent before stays receivable and the reader sees the end (SHM-CLOSE-2):
  /// a space return or free_data that loses the race with the peer's
  /// orderly close must not discard a received end of stream. Any other
  /// error fails the connection.
  func sendFailed(_ error: DissociatedIPCError) {
    guard error.code == .connectionClosed else { return fail(error) }
    let (waiters, wake) = state.withLock { state -> ([CheckedContinuation<Void, Never>], Bool) in
      guard state.failure == nil, !state.peerClosed else { return ([], false) }
      state.peerClosed = true
      state.queue.removeAll()
      state.returns.removeAll()
      state.queuedBytes = 0
      defer {
        state.spaceWaiters = []
        state.blockedSenders = []
      }
      return (state.spaceWaiters + state.blockedSenders, state.wakeWriter())
    }
    for waiter in waiters { waiter.resume() }
    if wake { writerWake.signal() }
  }

  /// Fails the connection with `error`: every pending and later call
  /// throws it; the socket is shut down so the peer and both threads see
  /// the end. The first failure wins.
  func fail(_ error: DissociatedIPCError) {
    let (waiters, wake) = state.withLock { state -> ([CheckedContinuation<Void, Never>], Bool) in
      guard state.failure == nil else { return ([], false) }
      state.failure = error
      if !state.descriptorClosed { socket.shutdown(reading: true, writing: true) }
      defer {
        state.spaceWaiters = []
        state.blockedSenders = []
      }
      return (state.spaceWaiters + state.blockedSenders, state.wakeWriter())
    }
    inbox.close(error: error)
    for waiter in waiters { waiter.resume() }
    if wake { writerWake.signal() }
  }

  /// Sends what was queued, then shuts the socket down in both directions
  /// (the peer receives everything, then the end); idempotent (SHM-CLOSE-1).
  func close() async {
    let (waiters, wake) = state.withLock { state in
      state.closing = true
      defer { state.spaceWaiters = [] }
      return (state.spaceWaiters, state.wakeWriter())
    }
    for waiter in waiters { waiter.resume() }
    if wake { writerWake.signal() }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { state -> Bool in
        if state.writerDone { return true }
        state.closeWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
    state.withLock { state in
      if !state.descriptorClosed { socket.shutdown(reading: true, writing: true) }
      // This side's segments unmap once no copy into them runs; the peer's
      // once no view of them is left (SHM-MEM-3).
      state.outbound.removeAll()
      state.arenas.removeAll()
      state.peerSegments.removeAll()
    }
    inbox.close()
  }

  /// Closes at once without flushing: the socket is shut down, so a
  /// writer blocked on a peer that stopped reading returns.
  func abort() {
    fail(DissociatedIPCError(.connectionClosed, "the shm:// connection was aborted"))
  }

  /// The descriptor is closed only once both threads stopped, so no call
  /// can reach a descriptor number the kernel has reused (SHM-THREAD-2).
  private func threadExited() {
    state.withLock { closeDescriptorIfIdle(&$0) }
  }

  /// Closes the descriptor when both threads stopped and no direct send
  /// runs (SHM-THREAD-2).
  func closeDescriptorIfIdle(_ state: inout State) {
    guard state.readerDone, state.writerDone, !state.directSending, !state.taskReceiving, !state.descriptorClosed else { return }
    state.descriptorClosed = true
    socket.close()
  }
}

/// What receiving one control message uses, reused from message to
/// message: the receive buffer, whether the peer said hello, the slab for
/// small payloads, and scratch lists. Unchecked `Sendable`: only whoever
/// receives touches it — the reader thread, or the one task that claimed
/// the socket (`taskReceiving`) while the reader is parked (SHM-THREAD-4);
/// the hand-overs go through the connection's lock.
final class ReceiveContext: @unchecked Sendable {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SharedMemoryWire.maxMessageLength, alignment: 64)
  var greeted = false
  // Small received payloads are carved out of pooled 64 KiB chunks (one
  // allocation per chunk, not per message).
  var slab = SlabAllocator(pool: SharedMemoryConnection.receivePool)
  /// What one control message received, for the inbox.
  var deliveries: [MessageInbox.Delivery] = []
  /// A batch's entries.
  var batchEntries: [Range<Int>] = []

  deinit { buffer.deallocate() }
}
