#if UCX
internal import ArrowIPC
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// What travels on a ucx:// endpoint besides the protocol's own messages
/// (UCX-WIRE-1, UCX-CLOSE-1).
enum UCXWire {
  /// Active-message id of framed (metadata) messages: no header, the
  /// payload is the frame. The Arrow reference implementation's id.
  static let frame: UInt32 = 0
  /// Tag of the empty message that says "I send nothing more": everything
  /// sent before it was sent. Bits 32–55 are set, so it is never a body
  /// tag; its low 32 bits (2^32 − 1) match a reference client's body probe
  /// only for that sequence number.
  static let goodbye: UInt64 = 0xFFFF_FFFF_FFFF_FFFF
  /// Tag of the empty answer "your goodbye arrived": its sender may
  /// release the endpoint.
  static let goodbyeAcknowledged: UInt64 = 0xFFFF_FFFE_FFFF_FFFF

  /// Tags the transport consumes itself; never handed to receivers.
  static func isControl(_ tag: UInt64) -> Bool { tag == goodbye || tag == goodbyeAcknowledged }
}

/// One ucx:// connection: a UCP worker and endpoint owned by a dedicated
/// progress thread (UCX-THREAD-1). Callers hand it commands (sends,
/// fetches, close) through a queue and wake it with `ucp_worker_signal`;
/// it posts them in order, runs UCX's callbacks and resumes the callers.
/// It also takes every incoming message and delivers it to ``inbox``,
/// where receives wait (UCX-RECV-1, UCX-RECV-2).
final class UCXConnection: InboxReceiving {
  enum Command {
    case frame([ArrowBytes], size: Int)
    case tagged(UInt64, [ArrowBytes], size: Int)
    case fetch(PendingFetch)
    /// Receives drained the inbox below the read-ahead budget: read on.
    case readAhead
    case close
    case reset
  }

  struct Shared {
    var commands: [Command] = []
    /// Bytes queued or posted whose sends have not completed.
    var inFlightBytes = 0
    var blockedSenders: [CheckedContinuation<Void, Never>] = []
    var closeRequested = false
    /// Why sends fail from now on (a broken connection, a peer that left).
    var sendError: DissociatedIPCError?
    /// Why the connection broke; nil while healthy or after an orderly end.
    var failure: DissociatedIPCError?
    /// The progress thread has stopped; the worker is gone.
    var finished = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    /// The progress thread sleeps (or is about to): senders must signal.
    var sleeping = false
    var worker: UCXWorker?
    var path: String
    /// The progress thread's kernel id (tests read its CPU time).
    var threadID: Int32 = 0
    /// The server regions a fetch may read, from the location's
    /// remote_handle once its rkeys unpacked (UCX-RM-2), or why not.
    var remoteRegions: Result<[UCXRemoteHandle.Region], DissociatedIPCError> =
      .failure(DissociatedIPCError(.malformedDescriptor, "the ucx:// location has no remote_handle: the server's memory cannot be read"))
    /// The endpoint's lanes make descriptor bodies worth it under
    /// `.automatic` (UCX-RM-8, UCX-RM-9).
    var descriptorsPayOff = false
  }

  /// What calls on a connection closed in order (locally or by the peer) throw.
  static let closedError = DissociatedIPCError(.connectionClosed, "the ucx:// connection is closed")

  let shared: Mutex<Shared>
  let inbox: MessageInbox
  let config: UCXTransport.Config
  let peer: String
  /// Accepted by a listener (else connected by a client).
  let isServer: Bool
  /// Server side: the listener's pool that ``remoteMemory`` exposes from.
  let exposedMemory: ExposedMemoryPool?
  /// The listener's claim on this connection (DIPC-LIM-7), given back when
  /// the connection is freed.
  private let slot: ConnectionSlots.Slot?

  private init(config: UCXTransport.Config, peer: String, isServer: Bool, exposedMemory: ExposedMemoryPool? = nil,
               slot: ConnectionSlots.Slot? = nil) {
    self.slot = slot
    self.config = config
    self.peer = peer
    self.isServer = isServer
    self.exposedMemory = exposedMemory
    inbox = MessageInbox(maxBufferedBytes: config.maxQueuedFrameBytes)
    shared = Mutex(Shared(path: "ucx \(peer) (connecting)"))
  }

  /// Connects to a listener at `address`; returns once the connection is
  /// up (and the rkeys of `remoteHandle` are unpacked, UCX-RM-2), or throws
  /// `.connectionRefused` (UCX-CONN-2).
  /// The context (created on first use) and the name resolution run on
  /// the connection's thread too, never on Swift's concurrency pool.
  static func connect(runtime: Runtime, host: String, port: UInt16, peer: String, remoteHandle: [UInt8]?,
                      config: UCXTransport.Config) async throws(DissociatedIPCError) -> UCXConnection {
    let connection = UCXConnection(config: config, peer: peer, isServer: false)
    let result: Result<Void, DissociatedIPCError> = await withCheckedContinuation { continuation in
      do throws(DissociatedIPCError) {
        try startDedicatedThread(named: "ucx-progress") {
        let context: UCXContext
        let address: SocketAddress
        do throws(DissociatedIPCError) {
          context = try runtime.context(config.options, host: host)
          address = try SocketAddress.resolve(host: host, port: port)
        } catch {
          return continuation.resume(returning: .failure(error))
        }
        connection.run(context: context, connectTimeout: config.connectTimeout, remoteHandle: remoteHandle,
                       ready: { continuation.resume(returning: $0) }) {
          (worker, onError) throws(UCXFailure) in try UCXEndpoint(worker: worker, connectingTo: address, onError: onError)
        }
        }
      } catch {
        continuation.resume(returning: .failure(error))
      }
    }
    try result.get()
    return connection
  }

  /// Accepts a connection request on a thread of its own; `ready` gets the
  /// connection once its endpoint exists.
  /// Its bodies are exposed from `exposedMemory` (UCX-RM-3).
  ///
  /// - Throws: `.resourceExhausted` when no thread can be had; the caller
  ///   then rejects the request.
  static func accept(context: UCXContext, request: UCXConnectionRequest, peer: String, config: UCXTransport.Config,
                     exposedMemory: ExposedMemoryPool?, slot: ConnectionSlots.Slot,
                     ready: @escaping @Sendable (UCXConnection) -> Void) throws(DissociatedIPCError) {
    let connection = UCXConnection(config: config, peer: peer, isServer: true, exposedMemory: exposedMemory, slot: slot)
    exposedMemory?.open(owner: ObjectIdentifier(connection))
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "ucx-progress") {
        // Flushed before it is handed over: the lanes are final once the
        // client's wire-up arrived, and they decide whether bodies go as
        // descriptors (UCX-RM-8; shared-memory lanes come with wire-up).
        connection.run(context: context, connectTimeout: config.connectTimeout, remoteHandle: nil,
                       ready: { if case .success = $0 { ready(connection) } }) {
          (worker, onError) throws(UCXFailure) in try UCXEndpoint(worker: worker, accepting: request, onError: onError)
        }
      }
    } catch {
      exposedMemory?.close(owner: ObjectIdentifier(connection))
      throw error
    }
  }

  /// A client always fetches whatever descriptor arrives; a server offers
  /// remote memory, so that its bodies go as descriptors, only as
  /// ``UCXTransport/Config/descriptorBodies`` says (UCX-RM-8).
  var remoteMemory: (any RemoteMemory)? {
    guard isServer else { return UCXRemoteMemory(connection: self) }
    guard exposedMemory != nil else { return nil }
    switch config.descriptorBodies {
    case .always: return UCXRemoteMemory(connection: self)
    case .automatic: return shared.withLock { $0.descriptorsPayOff } ? UCXRemoteMemory(connection: self) : nil
    case .never: return nil
    }
  }

  var pathDescription: String { shared.withLock { $0.path } }

  // MARK: Sending

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    let size = parts.reduce(0) { $0 + $1.count }
    try await send(.frame(parts, size: size), size: size)
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    let size = parts.reduce(0) { $0 + $1.count }
    try await send(.tagged(tag, parts, size: size), size: size)
  }

  /// Both sends queued under one lock, with one wake-up of the progress
  /// thread; on the wire an active message and a tagged one, as apart.
  func sendFrame(_ frame: [ArrowBytes], thenTagged tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    let frameSize = frame.reduce(0) { $0 + $1.count }
    let size = parts.reduce(0) { $0 + $1.count }
    try await send(.frame(frame, size: frameSize), then: .tagged(tag, parts, size: size), size: frameSize + size)
  }

  /// Queues a send (or two, in order) for the progress thread and returns;
  /// waits while more than `sendQueueBytes` are in flight (UCX-SEND-2).
  private func send(_ command: Command, then second: Command? = nil, size: Int) async throws(DissociatedIPCError) {
    let mustWait = try enqueue(command, then: second, size: size)
    guard mustWait else { return }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let wait = shared.withLock { state -> Bool in
        guard state.inFlightBytes > config.sendQueueBytes, state.sendError == nil, !state.finished else { return false }
        state.blockedSenders.append(continuation)
        return true
      }
      if !wait { continuation.resume() }
    }
    if let error = shared.withLock({ $0.sendError }) { throw error }
  }

  /// Appends a send (or two); true when the caller must wait for room.
  private func enqueue(_ command: Command, then second: Command?, size: Int) throws(DissociatedIPCError) -> Bool {
    let outcome: Result<(Bool, UCXWorker?), DissociatedIPCError> = shared.withLock { state in
      if let error = state.sendError { return .failure(error) }
      if state.closeRequested || state.finished {
        return .failure(UCXConnection.closedError)
      }
      state.commands.append(command)
      if let second { state.commands.append(second) }
      state.inFlightBytes += size
      return .success((state.inFlightBytes > config.sendQueueBytes, state.takeSleeper()))
    }
    let (mustWait, sleeper) = try outcome.get()
    sleeper?.signal()
    return mustWait
  }

  // MARK: Receiving
  // Served by the inbox (InboxReceiving), which the progress thread fills
  // ahead of the receives (UCX-RECV-2).

  // MARK: Remote memory

  /// Reads `ranges` of the server's registered memory, checked against the
  /// remote_handle's regions first, on the progress thread (UCX-RM-5).
  func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes {
    let regions = try shared.withLock { $0.remoteRegions }.get()
    var pieces: [PendingFetch.Piece] = []
    var total = 0
    for range in ranges {
      let key = try UCXRemoteHandle.region(of: range, in: regions)
      guard range.length <= UInt64(Int.max - total) else {
        throw DissociatedIPCError(.malformedDescriptor, "ranges of more than \(Int.max) bytes in all")
      }
      pieces.append(PendingFetch.Piece(address: range.address, length: Int(range.length), offset: total, key: key))
      total += Int(range.length)
    }
    guard !pieces.isEmpty else { return ArrowBytes() }
    let fetch = PendingFetch(pieces: pieces, total: total, pool: config.receiveBufferPool)
    let result: Result<ArrowBytes, DissociatedIPCError> = await withCheckedContinuation { continuation in
      guard fetch.result.install(continuation) else { return }
      if !post(.fetch(fetch)) { fetch.result.resume(.failure(UCXConnection.closedError)) }
    }
    return try result.get()
  }

  // MARK: Closing

  /// Sends a goodbye after everything queued, waits until the peer
  /// acknowledged it and every send completed (at most `closeTimeout`),
  /// then releases the endpoint (UCX-CLOSE-1). Idempotent; wakes pending
  /// receives (they return nil).
  func close() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let (done, sleeper) = shared.withLock { state -> (Bool, UCXWorker?) in
        if state.finished { return (true, nil) }
        state.closeWaiters.append(continuation)
        return (false, state.requestClose())
      }
      sleeper?.signal()
      if done { continuation.resume() }
    }
  }

  /// Drops the connection at once, without the goodbye handshake: the
  /// peer sees a broken connection (`.connectionClosed`), as after a crash.
  /// Local receives fail with `.connectionClosed` too.
  func reset() { post(.reset) }

  /// Wakes the progress thread to read ahead again (receives drained the
  /// inbox below the budget, UCX-RECV-2).
  func resumeReadingAhead() { post(.readAhead) }

  /// Queues `command` for the progress thread, waking it; false when the
  /// thread has finished.
  @discardableResult
  private func post(_ command: Command) -> Bool {
    let (posted, sleeper) = shared.withLock { state -> (Bool, UCXWorker?) in
      guard !state.finished else { return (false, nil) }
      state.commands.append(command)
      return (true, state.takeSleeper())
    }
    sleeper?.signal()
    return posted
  }

  /// The progress thread's kernel thread id (0 before it started).
  var progressThreadID: Int32 { shared.withLock { $0.threadID } }

  /// Ends the connection now, without the goodbye handshake (``reset()``):
  /// pending and later calls fail, and the peer sees a broken connection.
  func abort() { reset() }

  /// Starts the orderly close without waiting for it: what process exit
  /// does to connections still open (UCX-CLOSE-4).
  func closeInBackground() {
    shared.withLock { $0.finished ? nil : $0.requestClose() }?.signal()
  }
}

extension UCXConnection.Shared {
  /// The worker to signal if its thread sleeps (clearing the flag), else nil.
  mutating func takeSleeper() -> UCXWorker? {
    guard sleeping else { return nil }
    sleeping = false
    return worker
  }

  /// Queues the close command once; the worker to signal, as
  /// ``takeSleeper()``.
  mutating func requestClose() -> UCXWorker? {
    if !closeRequested {
      closeRequested = true
      commands.append(.close)
    }
    return takeSleeper()
  }
}
#endif  // UCX
