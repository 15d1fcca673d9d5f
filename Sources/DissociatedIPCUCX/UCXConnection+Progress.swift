#if UCX
internal import ArrowIPC
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

extension UCXConnection {
  /// The progress thread: creates the worker and endpoint (`open`), waits
  /// for a client connection to come up, unpacks the rkeys of
  /// `remoteHandle`, reports `ready`, then runs ``ProgressEngine/loop()``
  /// until the connection is closed or broken. The worker is destroyed
  /// before anyone waiting is woken (UCX-CLOSE-4).
  func run(context: UCXContext, connectTimeout: Duration?, remoteHandle: [UInt8]?,
           ready: (Result<Void, DissociatedIPCError>) -> Void,
           open: (UCXWorker, @escaping (UCXFailure) -> Void) throws(UCXFailure) -> UCXEndpoint) {
    let threadID = currentThreadID()
    shared.withLock { $0.threadID = threadID }
    ProgressThreads.started(ObjectIdentifier(self), close: { [weak self] in self?.closeInBackground() },
                            reset: { [weak self] in self?.reset() })
    let (failure, connected) = runEngine(context: context, connectTimeout: connectTimeout, remoteHandle: remoteHandle,
                                         ready: ready, open: open)
    ProgressThreads.ended(ObjectIdentifier(self))
    finish(failure: failure)
    if !connected, let failure { ready(.failure(failure)) }
  }

  /// Everything of `run` that needs the worker; the worker and the engine
  /// are released when it returns. Returns the failure, and whether the
  /// connection came up (then `ready` was called).
  private func runEngine(context: UCXContext, connectTimeout: Duration?, remoteHandle: [UInt8]?,
                         ready: (Result<Void, DissociatedIPCError>) -> Void,
                         open: (UCXWorker, @escaping (UCXFailure) -> Void) throws(UCXFailure) -> UCXEndpoint)
    -> (DissociatedIPCError?, connected: Bool) {
    let engine: ProgressEngine
    do throws(UCXFailure) {
      let worker = try UCXWorker(context: context)
      engine = ProgressEngine(connection: self, worker: worker)
      try engine.installHandlers()
      engine.endpoint = try open(worker) { [unowned engine] failure in engine.endpointFailed(failure) }
    } catch {
      return (DissociatedIPCError(.connectionRefused, "ucx:// \(peer): \(error)"), false)
    }
    shared.withLock { $0.worker = engine.worker }
    defer { shared.withLock { $0.worker = nil } }
    if let connectTimeout, let failure = engine.waitUntilConnected(timeout: connectTimeout) {
      engine.teardown()
      return (failure, false)
    }
    if let remoteHandle { engine.unpackRemoteKeys(remoteHandle) }
    engine.refreshPath()
    ready(.success(()))
    engine.loop()
    engine.teardown()
    return (engine.failure, true)
  }

  /// The thread has stopped: fail or end everything still waiting.
  private func finish(failure: DissociatedIPCError?) {
    let (commands, senders, closers) = shared.withLock { state in
      state.finished = true
      state.worker = nil
      if state.failure == nil { state.failure = failure }
      if state.sendError == nil {
        state.sendError = failure ?? UCXConnection.closedError
      }
      defer {
        state.commands = []
        state.blockedSenders = []
        state.closeWaiters = []
      }
      return (state.commands, state.blockedSenders, state.closeWaiters)
    }
    inbox.close(error: failure)
    // The client is gone: its blocks return to the pool (UCX-RM-6).
    exposedMemory?.close(owner: ObjectIdentifier(self))
    let closed = failure ?? UCXConnection.closedError
    for case .fetch(let fetch) in commands { fetch.result.resume(.failure(closed)) }
    for sender in senders { sender.resume() }
    for closer in closers { closer.resume() }
  }

  // MARK: Called by the engine (progress thread)

  /// Takes the queued commands (swapped out: no copy, and nothing
  /// allocated when there are none).
  func takeCommands() -> [Command] {
    shared.withLock { state in
      var taken: [Command] = []
      swap(&taken, &state.commands)
      return taken
    }
  }

  /// Marks the thread as going to sleep unless commands wait; false then.
  func prepareToSleep() -> Bool {
    shared.withLock { state in
      state.sleeping = state.commands.isEmpty
      return state.sleeping
    }
  }

  var hasCommands: Bool { shared.withLock { !$0.commands.isEmpty } }

  func awake() { shared.withLock { $0.sleeping = false } }

  /// `size` bytes of sends completed (or failed): wake senders below the limit.
  func sendsCompleted(_ size: Int) {
    let senders = shared.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.inFlightBytes -= size
      guard state.inFlightBytes <= config.sendQueueBytes || state.sendError != nil else { return [] }
      defer { state.blockedSenders = [] }
      return state.blockedSenders
    }
    for sender in senders { sender.resume() }
  }

  var inFlightBytes: Int { shared.withLock { $0.inFlightBytes } }

  /// Sends fail with `error` from now on; blocked senders wake.
  func refuseSends(_ error: DissociatedIPCError, failure: Bool) {
    let senders = shared.withLock { state -> [CheckedContinuation<Void, Never>] in
      if state.sendError == nil { state.sendError = error }
      if failure, state.failure == nil { state.failure = error }
      defer { state.blockedSenders = [] }
      return state.blockedSenders
    }
    for sender in senders { sender.resume() }
  }

  func setLanes(_ lanes: UCXLanes) {
    shared.withLock { state in
      state.path = "ucx \(peer) over \(lanes.summary)"
      state.descriptorsPayOff = lanes.descriptorsPayOff
    }
  }

  func setRemoteRegions(_ regions: Result<[UCXRemoteHandle.Region], DissociatedIPCError>) {
    shared.withLock { $0.remoteRegions = regions }
  }
}

/// The state only the progress thread touches: the worker, the endpoint,
/// incoming messages in arrival order, the close handshake.
final class ProgressEngine {
  /// A place in the arrival order (UCX-RECV-1, UCX-RECV-2).
  private enum Arrival {
    /// Its data is still being received.
    case pending
    case frame(ArrowBytes)
    case tagged(TaggedMessage)
    /// The peer's goodbye: everything before it has arrived.
    case end
  }

  unowned let connection: UCXConnection
  let worker: UCXWorker
  var endpoint: UCXEndpoint?
  private(set) var failure: DissociatedIPCError?
  /// Messages in arrival order; one whose data is not in yet holds its
  /// place. Delivered ones before `slotHead` are dropped from time to
  /// time; `removedSlots` counts those, so that the arrival numbered `n`
  /// is `slots[n - removedSlots]`.
  private var slots: [Arrival] = []
  private var slotHead = 0
  private var removedSlots = 0
  /// Bytes of tagged messages taken from UCX but not yet in the inbox.
  private var heldTaggedBytes = 0
  /// Queues the wake-up when receives make room in the inbox.
  private let resumeReadingAhead: @Sendable () -> Void
  private var slab: SlabAllocator
  private var peerSaidGoodbye = false
  /// The `.end` arrival is queued (after the goodbye and everything before it).
  private var endQueued = false
  private var mustAcknowledge = false
  private var goodbyeAcknowledged = false
  private var endpointDead = false
  private var closeDeadline: Int64?
  /// A client's close: when its last send completed, after which it waits
  /// only briefly for the acknowledgement (UCX-CLOSE-7).
  private var sendsDrainedAt: Int64?
  /// How long a client waits for the acknowledgement once its sends
  /// completed (UCX-CLOSE-7).
  static let clientAcknowledgementWait: Int64 = 250
  private var pathRefreshesLeft = 2
  private var pathStale = false
  /// The rkeys of the location's remote_handle, one per region (UCX-RM-2).
  private var remoteKeys: [UCXRemoteKey] = []
  /// Fetches whose gets are in flight (UCX-RM-5).
  private var fetching: [ObjectIdentifier: PendingFetch] = [:]
  /// Where control messages (empty) are received.
  private let controlScratch = UnsafeMutableRawPointer.allocate(byteCount: 8, alignment: 8)

  init(connection: UCXConnection, worker: UCXWorker) {
    self.connection = connection
    self.worker = worker
    slab = SlabAllocator(pool: connection.config.receiveBufferPool)
    resumeReadingAhead = { [weak connection] in connection?.resumeReadingAhead() }
  }

  deinit { controlScratch.deallocate() }

  func installHandlers() throws(UCXFailure) {
    try worker.setActiveMessageHandler(id: UCXWire.frame) { [unowned self] data in frameArrived(data) }
  }

  /// Takes the peer's goodbye and acknowledgement out of the worker's
  /// queue, wherever they wait in it (they carry no data).
  private func receiveControlMessages() {
    for tag in [UCXWire.goodbye, UCXWire.goodbyeAcknowledged] {
      while let message = worker.probe(tag: tag, mask: .max) { consumeControl(message) }
    }
  }

  private func consumeControl(_ message: ProbedMessage) {
    worker.receive(message, into: controlScratch, count: min(message.length, 8)) { _ in }
    if message.senderTag == UCXWire.goodbyeAcknowledged {
      goodbyeAcknowledged = true
    } else if !peerSaidGoodbye {
      peerSaidGoodbye = true
      // Acknowledged once everything before it is in (the `.end` arrival):
      // the peer then releases its endpoint, which would cut receives
      // still in progress. After a local close nothing more is received.
      if closeDeadline != nil { mustAcknowledge = true }
      // A peer that said goodbye reads nothing more: its blocks are free (UCX-RM-6).
      connection.exposedMemory?.close(owner: ObjectIdentifier(connection))
    }
  }

  /// Flushes the fresh client endpoint: done once the server accepted;
  /// nil on success, else `.connectionRefused` (UCX-CONN-2).
  func waitUntilConnected(timeout: Duration) -> DissociatedIPCError? {
    var outcome: UCXFailure??
    endpoint?.flush { outcome = .some($0) }
    let deadline = monotonicMilliseconds() + timeout.milliseconds
    while outcome == nil, !endpointDead, failure == nil {
      let now = monotonicMilliseconds()
      if now >= deadline {
        return DissociatedIPCError(.connectionRefused, "ucx:// \(connection.peer): no answer within \(timeout)")
      }
      if !worker.progress() { worker.sleep(timeoutMilliseconds: Int32(min(deadline - now, 100))) { false } }
    }
    if let failed = outcome ?? nil {
      return DissociatedIPCError(.connectionRefused, "ucx:// \(connection.peer): \(failed)")
    }
    if let failure { return DissociatedIPCError(.connectionRefused, "ucx:// \(connection.peer): \(failure.detail)") }
    return nil
  }

  // MARK: The loop

  func loop() {
    let polling = connection.config.progressMode == .polling
    let spin = connection.config.spinBeforeSleeping.microseconds
    var idleSince: Int64?
    while true {
      let commands = connection.takeCommands()
      var busy = !commands.isEmpty
      for command in commands { handle(command) }
      while worker.progress() { busy = true }
      if readAhead() { busy = true }
      if mustAcknowledge {
        mustAcknowledge = false
        if !endpointDead { endpoint?.sendTagged(UCXWire.goodbyeAcknowledged, []) { _ in } }
      }
      if pathStale { refreshPath() }
      if shouldStop() { return }
      if polling {
        if !busy { yieldThread() }  // let other threads of a busy machine run
        continue
      }
      // Spin a little before sleeping: a request/response exchange then
      // costs no wake-up (UCX-THREAD-2).
      let now = monotonicMicroseconds()
      if busy || idleSince == nil { idleSince = now }
      if now - idleSince! < spin { continue }
      guard connection.prepareToSleep() else { continue }
      let timeout = closeWakeDeadline.map { Int32(clamping: max(1, $0 - monotonicMilliseconds())) } ?? -1
      worker.sleep(timeoutMilliseconds: timeout) { connection.hasCommands }
      connection.awake()
      idleSince = nil
    }
  }

  private func shouldStop() -> Bool {
    if failure != nil { return true }
    guard let closeDeadline else { return false }
    let now = monotonicMilliseconds()
    if endpointDead || now >= closeDeadline { return true }
    guard connection.inFlightBytes == 0 else { return false }
    if goodbyeAcknowledged || peerSaidGoodbye { return true }
    // A client has everything it needs: a peer that never acknowledges
    // (Arrow's reference server) must not hold it for the close timeout.
    guard !connection.isServer else { return false }
    let drained = sendsDrainedAt ?? now
    sendsDrainedAt = drained
    return now - drained >= Self.clientAcknowledgementWait
  }

  /// When the thread must wake at the latest while closing.
  private var closeWakeDeadline: Int64? {
    guard let closeDeadline else { return nil }
    guard let sendsDrainedAt else { return closeDeadline }
    return min(closeDeadline, sendsDrainedAt + Self.clientAcknowledgementWait)
  }

  private func handle(_ command: UCXConnection.Command) {
    switch command {
    case .frame(let parts, let size):
      send(size) { endpoint, done in endpoint.sendActiveMessage(id: UCXWire.frame, parts, completion: done) }
    case .tagged(let tag, let parts, let size):
      send(size) { endpoint, done in endpoint.sendTagged(tag, parts, completion: done) }
    case .readAhead:
      break  // the loop reads ahead again if there is room
    case .fetch(let fetch):
      guard let endpoint, !endpointDead, failure == nil else {
        return fetch.result.resume(.failure(failure ?? DissociatedIPCError(.connectionClosed, "the ucx:// peer \(connection.peer) is gone")))
      }
      fetching[ObjectIdentifier(fetch)] = fetch
      fetch.start(on: endpoint, keys: remoteKeys) { [unowned self] failed in
        fetching[ObjectIdentifier(fetch)] = nil
        if let failed, !failed.isCancellation {
          fail(DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): get failed: \(failed)"))
        }
      }
    case .reset:
      fail(DissociatedIPCError(.connectionClosed, "the ucx:// connection was reset locally"))
    case .close:
      guard closeDeadline == nil else { return }
      closeDeadline = monotonicMilliseconds() + connection.config.closeTimeout.milliseconds
      connection.refuseSends(UCXConnection.closedError, failure: false)
      connection.inbox.close()
      if !endpointDead { endpoint?.sendTagged(UCXWire.goodbye, []) { _ in } }
    }
  }

  private func send(_ size: Int, _ start: (UCXEndpoint, @escaping (UCXFailure?) -> Void) -> Void) {
    guard let endpoint, !endpointDead else { return connection.sendsCompleted(size) }
    start(endpoint) { [unowned self] failed in
      connection.sendsCompleted(size)
      if pathRefreshesLeft > 0 { pathStale = true }
      if let failed, !endpointDead, !peerSaidGoodbye, closeDeadline == nil {
        fail(DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): send failed: \(failed)"))
      }
    }
  }

  // MARK: Remote memory

  /// Decodes the location's remote_handle and unpacks its rkeys on the
  /// endpoint; fetches fail with `.malformedDescriptor` if that fails
  /// (UCX-RM-2).
  func unpackRemoteKeys(_ handle: [UInt8]) {
    do throws(DissociatedIPCError) {
      let regions = try UCXRemoteHandle.decode(handle)
      guard let endpoint else { throw DissociatedIPCError(.connectionClosed, "the ucx:// endpoint is gone") }
      do throws(UCXFailure) {
        remoteKeys = try regions.map { region throws(UCXFailure) in try UCXRemoteKey(region.packedKey, endpoint: endpoint) }
      } catch {
        throw DissociatedIPCError(.malformedDescriptor, "ucx:// remote_handle: its rkey does not unpack: \(error)")
      }
      connection.setRemoteRegions(.success(regions))
    } catch {
      remoteKeys = []
      connection.setRemoteRegions(.failure(error))
    }
  }

  // MARK: Tagged messages

  /// Takes incoming tagged messages in arrival order (probe with mask 0,
  /// then receive into a buffer of the probed length) while fewer than
  /// `readAheadBytes` of them wait in the inbox or are being received;
  /// over it, the rest stay with UCX until receives make room, and only
  /// the goodbye and its acknowledgement are taken. After the peer's
  /// goodbye everything before it is taken, then the end is queued. After
  /// a local close nothing more is read (UCX-CLOSE-3). True when it took
  /// something (UCX-RECV-2).
  private func readAhead() -> Bool {
    guard closeDeadline == nil else {
      receiveControlMessages()
      return false
    }
    var took = false
    while peerSaidGoodbye || hasReadAheadRoom() {
      guard let message = worker.probe(tag: 0, mask: 0) else {
        if peerSaidGoodbye, !endQueued {
          endQueued = true
          append(.end)
        }
        return took
      }
      took = true
      if UCXWire.isControl(message.senderTag) {
        consumeControl(message)
      } else {
        take(message)
      }
    }
    receiveControlMessages()
    return took
  }

  /// Fewer than `readAheadBytes` of tagged messages are unread or being
  /// received; otherwise the inbox wakes the thread once receives took
  /// enough.
  private func hasReadAheadRoom() -> Bool {
    let limit = connection.config.readAheadBytes - heldTaggedBytes
    // At or below 0, the held messages' deliveries wake the loop instead.
    return limit > 0 && !connection.inbox.waitForTaggedRoom(below: limit, then: resumeReadingAhead)
  }

  private func take(_ message: ProbedMessage) {
    let slot = reservePlace()
    heldTaggedBytes += message.length
    let storage = AlignedStorage(capacity: message.length, zeroed: false, pool: connection.config.receiveBufferPool)
    // Weak: a receive still in flight when the connection ends (a cut
    // link stalls a rendezvous) is cancelled when the worker is destroyed,
    // after the engine (UCX-CLOSE-6).
    worker.receive(message, into: storage.mutableBytes.baseAddress!, count: message.length) { [weak self] failed in
      guard let self else { return }
      if pathRefreshesLeft > 0 { pathStale = true }
      if let failed {
        if !failed.isCancellation {
          fail(DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): receive failed: \(failed)"))
        }
        return
      }
      fill(slot, .tagged(TaggedMessage(tag: message.senderTag, payload: storage.freeze(count: message.length))))
    }
  }

  // MARK: Frames

  private func frameArrived(_ data: ActiveMessageData) {
    if pathRefreshesLeft > 0 { pathStale = true }
    switch data {
    case .inline(let bytes):
      guard let base = bytes.baseAddress, !bytes.isEmpty else { return append(.frame(ArrowBytes())) }
      if bytes.count <= SlabAllocator.maxSlabSize {
        append(.frame(slab.copy(base, count: bytes.count)))
      } else {
        let storage = AlignedStorage(capacity: bytes.count, zeroed: false, pool: connection.config.receiveBufferPool)
        storage.mutableBytes.baseAddress!.copyMemory(from: base, byteCount: bytes.count)
        append(.frame(storage.freeze(count: bytes.count)))
      }
    case .rendezvous(let descriptor, let length):
      let slot = reservePlace()
      let storage = AlignedStorage(capacity: length, zeroed: false, pool: connection.config.receiveBufferPool)
      worker.receiveActiveMessage(descriptor, into: storage.mutableBytes.baseAddress!, count: length) { [weak self] failed in
        guard let self else { return }  // cancelled with the worker (UCX-CLOSE-6)
        if let failed {
          if !failed.isCancellation {
            fail(DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): frame receive failed: \(failed)"))
          }
          return
        }
        fill(slot, .frame(storage.freeze(count: length)))
      }
    }
  }

  // MARK: Arrival order

  private func append(_ arrival: Arrival) {
    slots.append(arrival)
    deliverArrivals()
  }

  /// Appends a place for an arrival whose data is still coming; returns
  /// its number in the arrival order for ``fill(_:_:)``.
  private func reservePlace() -> Int {
    slots.append(.pending)
    return removedSlots + slots.count - 1
  }

  /// The data of the arrival numbered `slot` is in.
  private func fill(_ slot: Int, _ arrival: Arrival) {
    slots[slot - removedSlots] = arrival
    deliverArrivals()
  }

  /// Hands every complete arrival at the head to the inbox, in order.
  private func deliverArrivals() {
    while slotHead < slots.count {
      var delivered = true
      switch slots[slotHead] {
      case .pending: return
      case .frame(let frame):
        delivered = connection.inbox.deliverFrame(frame)
      case .tagged(let message):
        heldTaggedBytes -= message.payload.count
        delivered = connection.inbox.deliverTagged(message)
      case .end:
        connection.inbox.close()
        mustAcknowledge = true
      }
      if !delivered {
        fail(DissociatedIPCError(.limitExceeded, "ucx:// \(connection.peer): more than \(connection.config.maxQueuedFrameBytes) bytes of messages unread"))
      }
      slots[slotHead] = .pending
      slotHead += 1
    }
    if slotHead > 64, slotHead * 2 > slots.count {
      slots.removeFirst(slotHead)
      removedSlots += slotHead
      slotHead = 0
    }
  }

  // MARK: Failure and teardown

  func endpointFailed(_ failed: UCXFailure) {
    endpointDead = true
    // A goodbye that arrived before the peer closed makes this an orderly
    // end, whichever of the two UCX reports first (UCX-CLOSE-7).
    receiveControlMessages()
    if peerSaidGoodbye || closeDeadline != nil {
      connection.refuseSends(DissociatedIPCError(.connectionClosed, "the ucx:// peer \(connection.peer) closed the connection"),
                             failure: false)
    } else {
      fail(DissociatedIPCError(.connectionClosed, "the ucx:// peer \(connection.peer) went away: \(failed)"))
    }
  }

  private func fail(_ error: DissociatedIPCError) {
    guard failure == nil else { return }
    failure = error
    connection.refuseSends(error, failure: true)
    connection.inbox.close(error: error)
    // Their buffers stay with the gets' completions, which UCX may still
    // run; they stay listed until then (see teardown).
    for fetch in fetching.values { fetch.result.resume(.failure(error)) }
  }

  /// Releases the endpoint (outstanding operations complete as cancelled),
  /// then ends what still waits.
  func teardown() {
    // UCX wants an rkey destroyed once its operations are flushed and
    // before its endpoint: first, unless gets are in flight; then those
    // were cancelled by the forced close (the worker, which owns the
    // rkeys' memory, outlives both).
    if fetching.isEmpty { remoteKeys = [] }
    endpoint?.close()
    endpoint = nil
    remoteKeys = []
    let closed = failure ?? UCXConnection.closedError
    for fetch in fetching.values { fetch.result.resume(.failure(closed)) }
    fetching = [:]
    for command in connection.takeCommands() {
      switch command {
      case .frame(_, let size), .tagged(_, _, let size): connection.sendsCompleted(size)
      case .fetch(let fetch): fetch.result.resume(.failure(closed))
      case .readAhead, .close, .reset: break
      }
    }
    if failure == nil { connection.inbox.close() }
  }

  /// The transports UCX chose for the endpoint's lanes (UCX-PATH-1), and
  /// whether they read remote memory natively (UCX-RM-8). A server
  /// connection's lanes are known once its endpoint exists, before it is
  /// handed to `accept`.
  func refreshPath() {
    pathStale = false
    pathRefreshesLeft -= 1
    guard let lanes = endpoint?.lanes() else { return }
    connection.setLanes(lanes)
  }
}

extension Duration {
  /// Whole microseconds.
  var microseconds: Int64 {
    let (seconds, attoseconds) = components
    return seconds * 1_000_000 + attoseconds / 1_000_000_000_000
  }

  /// Whole milliseconds (at least 1 for a positive duration).
  var milliseconds: Int64 {
    let (seconds, attoseconds) = components
    return max(seconds * 1000 + attoseconds / 1_000_000_000_000_000, self > .zero ? 1 : 0)
  }
}
#endif  // UCX
