internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// One shm:// connection: a reader thread that turns control messages into
/// inbox messages (payloads in the peer's segments become views of them),
/// and a send path that writes to the socket directly when nothing is
/// queued, else through a writer thread (SHM-THREAD-1), started when a
/// message first has to wait for it (SHM-THREAD-5).
final class SharedMemoryConnection: InboxReceiving, LazyWriterOwner {
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
    /// The writer thread: started once a message has to wait for it
    /// (SHM-THREAD-5); it sleeps on ``writerWake``, signalled only then.
    var writer = LazyWriter()
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

    /// What the writer needs to see what just changed (a message or
    /// return queued, a close, a failure). Pending work does not start it
    /// after a failure; a direct send in progress nudges again as it ends.
    mutating func nudgeWriter() -> LazyWriter.Nudge {
      let ending = failure != nil || closing || peerClosed
      let pending = failure == nil && (!queue.isEmpty || !returns.isEmpty)
      return writer.nudge(pendingWork: pending && !directSending, ending: ending && !directSending)
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
  let writerWake = DispatchSemaphore(value: 0)
  /// Wakes the parked reader thread (SHM-THREAD-4).
  let readerWake = DispatchSemaphore(value: 0)
  /// What a receive uses; only whoever receives now (the reader thread,
  /// or the task that claimed the socket) touches it.
  let receiving = ReceiveContext()
  let pathDescription: String

  /// This side's segments, those of them the peer has not returned, and
  /// the peer's segments mapped here, in MiB (rounded up).
  var heldResources: String? {
    let (total, inUse) = state.withLock { ($0.outbound.totalBytes, $0.outbound.bytesInUse) }
    let mapped = peerMappings.usage.bytes
    return "\(mebibytes(total)) MiB of shared segments (\(mebibytes(inUse)) MiB in segments the peer still uses), \(mebibytes(mapped)) MiB of the peer's mapped"
  }

  /// The listener's claim on this connection (DIPC-LIM-7), given back when
  /// the connection is freed.
  private let slot: ConnectionSlots.Slot?

  /// Starts the reader thread and sends the hello; the writer thread
  /// starts when a message first has to wait for it (SHM-THREAD-5).
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
        state.writer.neverStart()
        state.writerDone = true
        closeDescriptorIfIdle(&state)
      }
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

  // MARK: Closing and failing

  /// The peer closed: receives end after what was queued; nothing more can
  /// be sent, so waiting senders fail and the writer stops.
  func peerClosed() {
    inbox.close()
    let (waiters, writerNudge) = state.withLock { state in
      state.peerClosed = true
      defer { state.spaceWaiters = [] }
      return (state.spaceWaiters, state.nudgeWriter())
    }
    for waiter in waiters { waiter.resume() }
    nudge(writerNudge)
  }

  /// A send failed. When the peer is gone (EPIPE, ECONNRESET: the
  /// connectionClosed code) nothing more can be sent, but what the peer
  /// sent before stays receivable and the reader sees the end (SHM-CLOSE-2):
  /// a space return or free_data that loses the race with the peer's
  /// orderly close must not discard a received end of stream. Any other
  /// error fails the connection.
  func sendFailed(_ error: DissociatedIPCError) {
    guard error.code == .connectionClosed else { return fail(error) }
    let (waiters, writerNudge) = state.withLock { state -> ([CheckedContinuation<Void, Never>], LazyWriter.Nudge) in
      guard state.failure == nil, !state.peerClosed else { return ([], .nothing) }
      state.peerClosed = true
      state.queue.removeAll()
      state.returns.removeAll()
      state.queuedBytes = 0
      defer {
        state.spaceWaiters = []
        state.blockedSenders = []
      }
      return (state.spaceWaiters + state.blockedSenders, state.nudgeWriter())
    }
    for waiter in waiters { waiter.resume() }
    nudge(writerNudge)
  }

  /// Fails the connection with `error`: every pending and later call
  /// throws it; the socket is shut down so the peer and both threads see
  /// the end. The first failure wins.
  func fail(_ error: DissociatedIPCError) {
    let (waiters, writerNudge) = state.withLock { state -> ([CheckedContinuation<Void, Never>], LazyWriter.Nudge) in
      guard state.failure == nil else { return ([], .nothing) }
      state.failure = error
      if !state.descriptorClosed { socket.shutdown(reading: true, writing: true) }
      defer {
        state.spaceWaiters = []
        state.blockedSenders = []
      }
      return (state.spaceWaiters + state.blockedSenders, state.nudgeWriter())
    }
    inbox.close(error: error)
    for waiter in waiters { waiter.resume() }
    nudge(writerNudge)
  }

  /// Sends what was queued, then shuts the socket down in both directions
  /// (the peer receives everything, then the end); idempotent (SHM-CLOSE-1).
  func close() async {
    let (waiters, writerNudge) = state.withLock { state in
      state.closing = true
      defer { state.spaceWaiters = [] }
      return (state.spaceWaiters, state.nudgeWriter())
    }
    for waiter in waiters { waiter.resume() }
    nudge(writerNudge)
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
  func threadExited() {
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
