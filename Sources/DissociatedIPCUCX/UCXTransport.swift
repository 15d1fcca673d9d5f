#if UCX
public import ArrowIPC
public import DissociatedIPC
internal import Synchronization
#if canImport(Glibc)
internal import Glibc
#endif

/// The `ucx://` backend: Dissociated IPC over UCX (Spec/ucx.md), wire
/// compatible with Arrow's reference implementation.
///
/// Metadata frames travel as UCP active messages (id 0, no header), bodies
/// and the client's want_data and free_data as tagged messages; the server
/// listens with a UCP listener on `HOST:PORT`. Every connection has its own
/// UCP worker, so the tags of different streams never meet, and its own
/// progress thread, which sleeps on the worker's event descriptor while the
/// connection is idle (or polls, see ``Config/progressMode``). Where UCX
/// reads remote memory natively (see ``Config/descriptorBodies``), large
/// bodies go as body-type-1 descriptors: the server copies them into
/// memory registered with `ucp_mem_map`, whose rkey travels in the
/// location's `remote_handle`; the client reads them with `ucp_get_nbx`.
///
/// ```swift
/// var registry = TransportRegistry()
/// registry.register(UCXTransport(config: .init(options: ["TLS": "tcp,sm,self"])))
/// let server = try await DissociatedServer(listeningAt: "ucx://127.0.0.1:0", catalog: catalog, registry: registry)
/// ```
public struct UCXTransport: DissociatedTransport {
  /// How a progress thread waits for work.
  public enum ProgressMode: String, Sendable, Hashable, CaseIterable {
    /// Sleep on the worker's event descriptor while idle (no CPU when idle).
    case blocking
    /// Spin on `ucp_worker_progress`: lowest latency, one busy core per
    /// connection.
    case polling
  }

  /// When a server sends large bodies as descriptors (body type 1, read by
  /// the client with `ucp_get_nbx`) rather than inline (UCX-RM-8).
  public enum DescriptorBodies: String, Sendable, Hashable, CaseIterable {
    /// When the connection's lanes read remote memory natively (shared
    /// memory, RDMA). Over tcp lanes UCX emulates gets with active
    /// messages, and descriptors were 4.6× slower than inline bodies.
    case automatic
    /// Whenever the driver's rendezvous threshold says so, on any lanes.
    case always
    /// Never: every body inline and no registered memory (as
    /// ``Config/exposedMemoryBytes`` 0). Clients still fetch descriptors
    /// that other servers send.
    case never
  }

  /// Settings of the backend.
  public struct Config: Sendable {
    /// UCX settings, named without the `UCX_` prefix (`"TLS": "tcp"`,
    /// `"NET_DEVICES": "lo"`), applied over the environment's `UCX_*`
    /// variables to this backend's UCP context only (UCX-CONF-1).
    public var options: [String: String]
    /// Blocking (default) or polling progress threads.
    public var progressMode: ProgressMode
    /// In blocking mode, how long an idle progress thread keeps polling
    /// before it sleeps (a reply that comes sooner costs no wake-up). Off
    /// by default: on a loaded 2-core machine 50 µs did not help tiny
    /// batches and cost bulk throughput (UCX-THREAD-2).
    public var spinBeforeSleeping: Duration
    /// Bytes of sends a connection may have in flight before `send` waits
    /// for completions (UCX-SEND-2).
    public var sendQueueBytes: Int
    /// Received messages a connection may hold unread before it fails with
    /// `.limitExceeded` (DIPC-LIM-4).
    public var maxQueuedFrameBytes: Int
    /// Bytes of tagged messages a connection's progress thread receives
    /// ahead of the receives; beyond it, further messages stay with UCX,
    /// which holds a rendezvous sender back (UCX-RECV-2).
    public var readAheadBytes: Int
    /// How long `connect` waits for the server to accept.
    public var connectTimeout: Duration
    /// How long `close` waits for the peer to acknowledge and for sends in
    /// flight to complete before releasing the endpoint (UCX-CLOSE-1).
    public var closeTimeout: Duration
    /// Recycles large receive buffers once their batches are released.
    public var receiveBufferPool: BufferPool
    /// Bytes of registered memory a listener exposes bodies from (type 1);
    /// exposes wait while it is full (UCX-RM-3). Pages are committed only
    /// when used. 0: no remote memory, every body inline (type 0).
    public var exposedMemoryBytes: Int
    /// When bodies go as descriptors; `.automatic` by default: only where
    /// gets are native (UCX-RM-8).
    public var descriptorBodies: DescriptorBodies
    /// The most connections one listener keeps at once; it rejects more
    /// before starting anything for them (DIPC-LIM-7).
    public var maxConnections: Int

    /// Options from the environment, blocking progress, 64 MiB in flight,
    /// 1 GiB of unread messages, 16 MiB of tagged read-ahead, 10 s to connect, 30 s to close, 512 MiB of
    /// exposed memory per listener, descriptors only where gets are native,
    /// 256 connections per listener.
    public static var defaults: Config { Config() }

    /// Creates settings.
    public init(options: [String: String] = [:], progressMode: ProgressMode = .blocking,
                spinBeforeSleeping: Duration = .zero, sendQueueBytes: Int = 64 << 20,
                maxQueuedFrameBytes: Int = 1 << 30, readAheadBytes: Int = 16 << 20, connectTimeout: Duration = .seconds(10),
                closeTimeout: Duration = .seconds(30), receiveBufferPool: BufferPool = BufferPool(),
                exposedMemoryBytes: Int = 512 << 20, descriptorBodies: DescriptorBodies = .automatic,
                maxConnections: Int = 256) {
      self.maxConnections = maxConnections
      self.options = options
      self.progressMode = progressMode
      self.spinBeforeSleeping = spinBeforeSleeping
      self.sendQueueBytes = sendQueueBytes
      self.maxQueuedFrameBytes = maxQueuedFrameBytes
      self.readAheadBytes = readAheadBytes
      self.connectTimeout = connectTimeout
      self.closeTimeout = closeTimeout
      self.receiveBufferPool = receiveBufferPool
      self.exposedMemoryBytes = exposedMemoryBytes
      self.descriptorBodies = descriptorBodies
    }

    /// A listener registers memory and publishes its remote_handle.
    var exposesMemory: Bool { exposedMemoryBytes > 0 && descriptorBodies != .never }
  }

  /// `ucx`.
  public let scheme = "ucx"
  /// Remote memory unless ``Config/exposedMemoryBytes`` is 0 or
  /// ``Config/descriptorBodies`` is `.never`; fetched bodies are copies
  /// (`ucp_get_nbx`), not mappings. With `.automatic`, a server connection
  /// whose lanes have no native gets offers none (UCX-RM-8).
  public var capabilities: TransportCapabilities {
    TransportCapabilities(remoteMemory: config.exposesMemory, fetchesByMapping: false)
  }
  /// The settings.
  public let config: Config
  private let runtime = Runtime()

  /// A backend with `config`. The UCP context is created on first use.
  public init(config: Config = .defaults) { self.config = config }

  /// Listens on `host:port` (port 0 or none: a free port; host empty:
  /// 127.0.0.1, so that the published location is connectable, UCX-ADDR-1).
  public func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    try await UCXListener.open(runtime: runtime, host: address.host.isEmpty ? "127.0.0.1" : address.host,
                                      port: address.port ?? 0, config: config, scheme: scheme)
  }

  /// Connects to the location's `host:port`; `.connectionRefused` when
  /// nothing accepts there within ``Config/connectTimeout``. The rkeys of
  /// its `remote_handle` are unpacked for ``RemoteMemory/fetch(_:)``; one
  /// that does not decode or unpack makes fetches fail with
  /// `.malformedDescriptor` (UCX-RM-2).
  public func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    guard let port = location.port, port != 0, !location.host.isEmpty else {
      throw DissociatedIPCError(.invalidLocation, "\(location): ucx:// needs a host and a port")
    }
    let peer = location.host.contains(":") ? "[\(location.host)]:\(port)" : "\(location.host):\(port)"
    return try await UCXConnection.connect(runtime: runtime, host: location.host, port: port, peer: peer,
                                           remoteHandle: location.remoteHandle, config: config)
  }
}

/// The backend's UCP contexts, each created on first use: one for the
/// backend's options, and one more where a loopback listener narrows
/// them to `lo` (UCX-ADDR-3).
final class Runtime: Sendable {
  private let state = Mutex<[[String: String]: UCXContext]>([:])

  /// The context for a listener on, or a connection to, `host` with
  /// `options` (narrowed to `lo` for a loopback host, ``loopbackOptions(_:host:)``).
  func context(_ options: [String: String], host: String) throws(DissociatedIPCError) -> UCXContext {
    try context(Self.loopbackOptions(options, host: host))
  }

  /// The options of a listener on, or a connection to, `host`: a loopback
  /// host keeps UCX's own transports on `lo` too (`NET_DEVICES=lo`),
  /// unless the environment or the options name devices (UCX-ADDR-3).
  /// Each worker listens for its lanes on every device it uses, so without
  /// this a listener asked for 127.0.0.1 also listened on the machine's
  /// other addresses.
  static func loopbackOptions(_ options: [String: String], host: String) -> [String: String] {
    guard options["NET_DEVICES"] == nil, getenv("UCX_NET_DEVICES") == nil,
          host == "localhost" || host == "::1" || host.hasPrefix("127.")
    else { return options }
    return options.merging(["NET_DEVICES": "lo"]) { current, _ in current }
  }

  private func context(_ options: [String: String]) throws(DissociatedIPCError) -> UCXContext {
    let result: Result<UCXContext, DissociatedIPCError> = state.withLock { state in
      if let context = state[options] { return .success(context) }
      do throws(UCXFailure) {
        let context = try UCXContext(options: options)
        state[options] = context
        return .success(context)
      } catch {
        return .failure(DissociatedIPCError(.transportFailure, "ucx:// cannot initialise UCX: \(error)"))
      }
    }
    return try result.get()
  }
}

extension UCXTransport {
  /// Closes every ucx:// connection and listener of this process and waits
  /// for their progress threads (UCX-CLOSE-4): a goodbye first, then, after
  /// a second, an immediate teardown. `exit` does this by itself; a program
  /// that leaves with `_exit` instead, skipping UCX 1.13's library
  /// destructors (UCX-LIM-6), calls it first.
  public static func closeAllConnections() { ProgressThreads.stopAll() }

  /// Makes this process, when it exits, close every ucx:// connection (as
  /// ``closeAllConnections()``) and then end with `_exit` and exit's
  /// status, so that UCX 1.13's library destructors, which can abort after
  /// connections were torn down (UCX-LIM-6), never run. Exit handlers
  /// registered before this call and other libraries' destructors are
  /// skipped as well; stdio is flushed. For programs that cannot call
  /// `_exit` themselves, such as a test runner. Later calls do nothing.
  /// Does nothing with UCX 1.22 or later, whose destructors need no
  /// detour (``libraryDestructorsMayAbort``).
  public static func leaveWithoutLibraryDestructors() {
    if libraryDestructorsMayAbort { _ = leavesWithoutLibraryDestructors }
  }

  /// Whether the UCX this process runs is one whose library destructors
  /// can abort at exit (UCX-LIM-6): versions before 1.22 (UCX-VER-1).
  /// A program that leaves with `_exit` to avoid them need do so only
  /// when this is true.
  public static var libraryDestructorsMayAbort: Bool { UCXLibrary.isOlder(than: 1, 22) }

  /// The version of the UCX library this process runs ("1.13.1"), which
  /// may differ from the one it was built against (UCX-VER-1).
  public static var libraryVersion: String {
    let version = UCXLibrary.version
    return "\(version.major).\(version.minor).\(version.release)"
  }

  private static let leavesWithoutLibraryDestructors: Void = atProcessExitWithStatus { status, _ in
    ProgressThreads.stopAll()
    endProcess(status: status)
  }
}
#endif  // UCX
