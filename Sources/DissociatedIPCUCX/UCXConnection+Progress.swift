internal import ArrowIPC
internal import DissociatedIPC
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
    nameThread("ucx-progress")
    let threadID = currentThreadID()
    shared.withLock { $0.threadID = threadID }
    ProgressThreads.started(ObjectIdentifier(self), close: { [weak self] in self?.abort() }, reset: { [weak self] in self?.reset() })
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
        state.sendError = failure ?? DissociatedIPCError(.connectionClosed, "the ucx:// connection is closed")
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
    let closed = failure ?? DissociatedIPCError(.connectionClosed, "the ucx:// connection is closed")
    for command in commands {
      switch command {
      case .receive(let receive): receive.result.resume(failure.map { .failure($0) } ?? .success(nil))
      case .fetch(let fetch): fetch.result.resume(.failure(closed))
      case .frame, .tagged, .close, .reset: break
      }
    }
    for sender in senders { sender.resume() }
    for closer in closers { closer.resume() }
  }

  // MARK: Called by the engine (progress thread)

  /// Takes the queued commands.
  func takeCommands() -> [Command] {
    shared.withLock { state in
      defer { state.commands.removeAll(keepingCapacity: true) }
      return state.commands
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
      state.nativeGets = lanes.nativeGets
    }
  }

  func setRemoteRegions(_ regions: Result<[UCXRemoteHandle.Region], DissociatedIPCError>) {
    shared.withLock { $0.remoteRegions = regions }
  }
}

/// The state only the progress thread touches: the worker, the endpoint,
/// posted receives, frames in arrival order, the close handshake.
final class ProgressEngine {
  private enum FrameSlot {
    case pending
    case ready(ArrowBytes)
    case end
  }

  unowned let connection: UCXConnection
  let worker: UCXWorker
  var endpoint: UCXEndpoint?
  private(set) var failure: DissociatedIPCError?
  /// Posted tagged receives, in posting order (UCX-RECV-2).
  private var posted: [PendingReceive] = []
  /// Frames in arrival order; a rendezvous frame holds its place until its
  /// data is in (UCX-RECV-1). `removedSlots` counts slots already delivered.
  private var slots: [FrameSlot] = []
  private var slotHead = 0
  private var removedSlots = 0
  private var slab: SlabAllocator
  private var peerSaidGoodbye = false
  private var mustAcknowledge = false
  private var goodbyeAcknowledged = false
  private var endpointDead = false
  private var closeDeadline: Int64?
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
  }

  deinit { controlScratch.deallocate() }

  func installHandlers() throws(UCXFailure) {
    try worker.setActiveMessageHandler(id: UCXWire.frame) { [unowned self] data in frameArrived(data) }
  }

  /// Takes the peer's goodbye and acknowledgement out of the worker's
  /// queue whenever they arrived (they carry no data).
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
      mustAcknowledge = true
      append(.end)
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
      receiveControlMessages()
      if mustAcknowledge {
        mustAcknowledge = false
        if !endpointDead { endpoint?.sendTagged(UCXWire.goodbyeAcknowledged, []) { _ in } }
      }
      matchReceives()
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
      let timeout = closeDeadline.map { Int32(clamping: max(1, $0 - monotonicMilliseconds())) } ?? -1
      worker.sleep(timeoutMilliseconds: timeout) { connection.hasCommands }
      connection.awake()
      idleSince = nil
    }
  }

  private func shouldStop() -> Bool {
    if failure != nil { return true }
    guard let closeDeadline else { return false }
    if endpointDead || monotonicMilliseconds() >= closeDeadline { return true }
    return connection.inFlightBytes == 0 && (goodbyeAcknowledged || peerSaidGoodbye)
  }

  private func handle(_ command: UCXConnection.Command) {
    switch command {
    case .frame(let parts, let size):
      send(size) { endpoint, done in endpoint.sendActiveMessage(id: UCXWire.frame, parts, completion: done) }
    case .tagged(let tag, let parts, let size):
      send(size) { endpoint, done in endpoint.sendTagged(tag, parts, completion: done) }
    case .receive(let receive):
      posted.append(receive)
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
      connection.refuseSends(DissociatedIPCError(.connectionClosed, "the ucx:// connection is closed"), failure: false)
      connection.inbox.close()
      for receive in posted { receive.result.resume(.success(nil)) }
      posted = []
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

  // MARK: Tagged receives

  /// Serves posted receives in posting order from the worker's unexpected
  /// queue (probe, then receive into a buffer of the probed size).
  private func matchReceives() {
    var index = 0
    while index < posted.count {
      let receive = posted[index]
      if receive.result.isFinished {
        posted.remove(at: index)
        continue
      }
      if let message = worker.probe(tag: receive.tag, mask: receive.mask) {
        if UCXWire.isControl(message.senderTag) {
          consumeControl(message)
          continue  // probe again for the same receive
        }
        posted.remove(at: index)
        start(message, for: receive)
        continue
      }
      if peerSaidGoodbye || endpointDead {
        // Everything the peer sent before its goodbye has been matched
        // already (UCX-CLOSE-1): nothing more can arrive.
        receive.result.resume(.success(nil))
        posted.remove(at: index)
        continue
      }
      index += 1
    }
  }

  private func start(_ message: ProbedMessage, for receive: PendingReceive) {
    let storage = AlignedStorage(capacity: message.length, zeroed: false, pool: connection.config.receiveBufferPool)
    worker.receive(message, into: storage.mutableBytes.baseAddress!, count: message.length) { [unowned self] failed in
      if pathRefreshesLeft > 0 { pathStale = true }
      if let failed {
        let error = DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): receive failed: \(failed)")
        receive.result.resume(.failure(error))
        if !failed.isCancellation { fail(error) }
      } else {
        receive.result.resume(.success(TaggedMessage(tag: message.senderTag, payload: storage.freeze(count: message.length))))
      }
    }
  }

  // MARK: Frames

  private func frameArrived(_ data: ActiveMessageData) {
    if pathRefreshesLeft > 0 { pathStale = true }
    switch data {
    case .inline(let bytes):
      guard let base = bytes.baseAddress, !bytes.isEmpty else { return append(.ready(ArrowBytes())) }
      if bytes.count <= SlabAllocator.maxSlabSize {
        append(.ready(slab.copy(base, count: bytes.count)))
      } else {
        let storage = AlignedStorage(capacity: bytes.count, zeroed: false, pool: connection.config.receiveBufferPool)
        storage.mutableBytes.baseAddress!.copyMemory(from: base, byteCount: bytes.count)
        append(.ready(storage.freeze(count: bytes.count)))
      }
    case .rendezvous(let descriptor, let length):
      let slot = removedSlots + slots.count - slotHead
      append(.pending)
      let storage = AlignedStorage(capacity: length, zeroed: false, pool: connection.config.receiveBufferPool)
      worker.receiveActiveMessage(descriptor, into: storage.mutableBytes.baseAddress!, count: length) { [unowned self] failed in
        if let failed {
          if !failed.isCancellation {
            fail(DissociatedIPCError(.connectionClosed, "ucx:// \(connection.peer): frame receive failed: \(failed)"))
          }
          return
        }
        slots[slot - removedSlots + slotHead] = .ready(storage.freeze(count: length))
        deliverFrames()
      }
    }
  }

  private func append(_ slot: FrameSlot) {
    slots.append(slot)
    deliverFrames()
  }

  /// Hands every frame at the head that is complete to the inbox, in order.
  private func deliverFrames() {
    while slotHead < slots.count {
      switch slots[slotHead] {
      case .pending: return
      case .ready(let frame):
        if !connection.inbox.deliverFrame(frame) {
          fail(DissociatedIPCError(.limitExceeded, "ucx:// \(connection.peer): more than \(connection.config.maxQueuedFrameBytes) bytes of frames unread"))
        }
      case .end:
        connection.inbox.close()
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
    for receive in posted { receive.result.resume(.failure(error)) }
    posted = []
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
    let closed = failure ?? DissociatedIPCError(.connectionClosed, "the ucx:// connection is closed")
    for fetch in fetching.values { fetch.result.resume(.failure(closed)) }
    fetching = [:]
    let end: Result<TaggedMessage?, DissociatedIPCError> = failure.map { .failure($0) } ?? .success(nil)
    for receive in posted { receive.result.resume(end) }
    posted = []
    for command in connection.takeCommands() {
      switch command {
      case .frame(_, let size), .tagged(_, _, let size): connection.sendsCompleted(size)
      case .receive(let receive): receive.result.resume(end)
      case .fetch(let fetch): fetch.result.resume(.failure(closed))
      case .close, .reset: break
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
