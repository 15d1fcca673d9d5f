#if Fabric
internal import ArrowIPC
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// One fabric:// connection: an RDM endpoint of its own, owned by a
/// dedicated engine thread (``FabricEngine``, FABRIC-THREAD-1). Callers
/// queue commands (sends, exposes, fetches, close) and wake the thread;
/// it posts them, reads completions, and delivers what arrives to
/// ``inbox``, where receives wait.
final class FabricConnection: InboxReceiving {
  /// A send a caller queued: a frame (`tag` nil) or a tagged message.
  struct SendRequest: Sendable {
    var tag: UInt64?
    var parts: [ArrowBytes]
    var size: Int
  }

  enum Command: Sendable {
    case send(SendRequest)
    case expose(ArrowBytes, CheckedContinuation<Result<ExposedRegion, DissociatedIPCError>, Never>)
    case release(UInt64)
    case fetch([RemoteRange], CheckedContinuation<Result<ArrowBytes, DissociatedIPCError>, Never>)
    /// Receives drained the inbox below the read-ahead budget: read on.
    case readAhead
    case close
    case reset
  }

  struct Shared {
    var commands: [Command] = []
    /// Bytes of sends queued or posted and not completed.
    var inFlightBytes = 0
    var blockedSenders: [CheckedContinuation<Void, Never>] = []
    var closeRequested = false
    /// Why sends fail from now on.
    var sendError: DissociatedIPCError?
    /// The engine has stopped; the endpoint is gone.
    var finished = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    /// The engine sleeps (or is about to): posters must signal ``wake``.
    var sleeping = false
    var path: String
    /// Regions exposed to the peer now, and their bytes.
    var exposedRegions = 0
    var exposedBytes = 0
  }

  /// What calls on a connection closed in order throw.
  static let closedError = DissociatedIPCError(.connectionClosed, "the fabric:// connection is closed")

  let shared: Mutex<Shared>
  let inbox: MessageInbox
  let wake: FabricWake
  let settings: FabricSettings
  /// Accepted by a listener (else connected by a client).
  let isServer: Bool
  /// The listener's claim on this connection (DIPC-LIM-7).
  private let slot: ConnectionSlots.Slot?

  init(settings: FabricSettings, isServer: Bool, path: String, slot: ConnectionSlots.Slot?) throws(DissociatedIPCError) {
    self.settings = settings
    self.isServer = isServer
    self.slot = slot
    wake = try FabricWake()
    inbox = MessageInbox(maxBufferedBytes: settings.config.maxQueuedFrameBytes)
    shared = Mutex(Shared(path: path))
  }

  /// The server offers its memory only where bodies go by remote read
  /// (``FabricTransport/Config/descriptorBodies``); a client always reads
  /// the descriptors that arrive.
  var remoteMemory: (any RemoteMemory)? {
    guard isServer else { return FabricRemoteMemory(connection: self) }
    return settings.config.descriptorBodies == .automatic ? FabricRemoteMemory(connection: self) : nil
  }

  var pathDescription: String { shared.withLock { $0.path } }

  var heldResources: String? {
    let (regions, bytes) = shared.withLock { ($0.exposedRegions, $0.exposedBytes) }
    return regions == 0 ? nil : "\(regions) registered regions (\(mebibytes(bytes)) MiB) the peer may read"
  }

  // MARK: Sending

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send([SendRequest(tag: nil, parts: parts, size: parts.reduce(0) { $0 + $1.count })])
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send([SendRequest(tag: tag, parts: parts, size: parts.reduce(0) { $0 + $1.count })])
  }

  /// Both queued under one lock, with one wake-up of the engine.
  func sendFrame(_ frame: [ArrowBytes], thenTagged tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send([SendRequest(tag: nil, parts: frame, size: frame.reduce(0) { $0 + $1.count }),
                    SendRequest(tag: tag, parts: parts, size: parts.reduce(0) { $0 + $1.count })])
  }

  /// Queues sends for the engine and returns; waits while more than
  /// ``FabricTransport/Config/sendQueueBytes`` are in flight (FABRIC-FLOW-2).
  private func send(_ requests: [SendRequest]) async throws(DissociatedIPCError) {
    let size = requests.reduce(0) { $0 + $1.size }
    let outcome: Result<(Bool, Bool), DissociatedIPCError> = shared.withLock { state in
      if let error = state.sendError { return .failure(error) }
      if state.closeRequested || state.finished { return .failure(FabricConnection.closedError) }
      state.commands += requests.map(Command.send)
      state.inFlightBytes += size
      return .success((state.inFlightBytes > settings.config.sendQueueBytes, state.takeSleeper()))
    }
    let (mustWait, signal) = try outcome.get()
    if signal { wake.signal() }
    guard mustWait else { return }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let wait = shared.withLock { state -> Bool in
        guard state.inFlightBytes > settings.config.sendQueueBytes, state.sendError == nil, !state.finished else { return false }
        state.blockedSenders.append(continuation)
        return true
      }
      if !wait { continuation.resume() }
    }
    if let error = shared.withLock({ $0.sendError }) { throw error }
  }

  /// The engine finished sends of `size` bytes: wakes senders once room is back.
  func sendsCompleted(_ size: Int) {
    let woken = shared.withLock { state -> [CheckedContinuation<Void, Never>] in
      state.inFlightBytes -= size
      guard state.inFlightBytes <= settings.config.sendQueueBytes else { return [] }
      defer { state.blockedSenders.removeAll() }
      return state.blockedSenders
    }
    for sender in woken { sender.resume() }
  }

  // MARK: Commands

  /// Queues `command` for the engine, waking it; false once it finished.
  @discardableResult
  func post(_ command: Command) -> Bool {
    let (posted, signal) = shared.withLock { state -> (Bool, Bool) in
      guard !state.finished else { return (false, false) }
      state.commands.append(command)
      return (true, state.takeSleeper())
    }
    if signal { wake.signal() }
    return posted
  }

  // MARK: Closing

  /// Sends a goodbye after everything queued and waits until the peer
  /// acknowledged it (at most ``FabricTransport/Config/closeTimeout``),
  /// then releases the endpoint (FABRIC-CLOSE-1). Idempotent.
  func close() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let (done, signal) = shared.withLock { state -> (Bool, Bool) in
        if state.finished { return (true, false) }
        state.closeWaiters.append(continuation)
        if !state.closeRequested {
          state.closeRequested = true
          state.commands.append(.close)
        }
        return (false, state.takeSleeper())
      }
      if signal { wake.signal() }
      if done { continuation.resume() }
    }
  }

  /// Drops the connection now: a reset goes to the peer (best effort),
  /// pending and later calls fail with `.connectionClosed` (FABRIC-CLOSE-2).
  func abort() { post(.reset) }
}

extension FabricConnection.Shared {
  /// Whether the engine sleeps and must be signalled (clearing the flag).
  mutating func takeSleeper() -> Bool {
    guard sleeping else { return false }
    sleeping = false
    return true
  }
}

/// The remote-memory side of a fabric:// connection (FABRIC-RM-1…4).
struct FabricRemoteMemory: RemoteMemory {
  let connection: FabricConnection

  /// Registers `bytes` for remote reads; the peer hears of the region
  /// (its key and base) before any descriptor naming it.
  func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion {
    let result: Result<ExposedRegion, DissociatedIPCError> = await withCheckedContinuation { continuation in
      if !connection.post(.expose(bytes, continuation)) { continuation.resume(returning: .failure(FabricConnection.closedError)) }
    }
    return try result.get()
  }

  /// Deregisters the region and tells the peer.
  func release(_ region: UInt64) async { connection.post(.release(region)) }

  /// Reads `ranges` of regions the server announced, with `fi_read`.
  func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes {
    let result: Result<ArrowBytes, DissociatedIPCError> = await withCheckedContinuation { continuation in
      if !connection.post(.fetch(ranges, continuation)) { continuation.resume(returning: .failure(FabricConnection.closedError)) }
    }
    return try result.get()
  }
}
#endif  // Fabric
