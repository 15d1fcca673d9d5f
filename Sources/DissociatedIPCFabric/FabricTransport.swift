#if Fabric
internal import CLibfabric
public import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Glibc
internal import Synchronization

/// The `fabric://` backend: Dissociated IPC over libfabric (Spec/fabric.md).
///
/// A location names the provider in its query: `fabric://HOST:PORT?provider=tcp`
/// (the default, libfabric's `tcp;ofi_rxm`) or `provider=shm` (same host),
/// or any other RDM provider by its libfabric name (`verbs`, `efa`, `cxi`).
/// Every connection has an RDM endpoint of its own on the server and a
/// thread that owns it (FABRIC-CONN-2). Messages travel as tagged sends:
/// small ones whole, large ones announced and then sent in pieces to
/// exact tags (FABRIC-WIRE-1, FABRIC-WIRE-2). Where the provider reads
/// remote memory, large bodies go as descriptors the client reads with
/// `fi_read` (body type 1, FABRIC-RM-1).
///
/// ```swift
/// var registry = TransportRegistry()
/// registry.register(FabricTransport())
/// let server = try await DissociatedServer(listeningAt: "fabric://127.0.0.1:0?provider=shm", catalog: catalog, registry: registry)
/// ```
public struct FabricTransport: DissociatedTransport {
  /// How an engine thread waits for work.
  public enum ProgressMode: String, Sendable, Hashable, CaseIterable {
    /// Sleep when idle: on the completion queue's descriptor where the
    /// provider has one (tcp), else polling with a back-off up to
    /// ``Config/maxIdleSleep`` (shm) (FABRIC-THREAD-2).
    case blocking
    /// Spin on the completion queue: lowest latency, one busy core per connection.
    case polling
  }

  /// Whether a server sends large bodies as descriptors (body type 1).
  public enum DescriptorBodies: String, Sendable, Hashable, CaseIterable {
    /// Where the provider reads remote memory (`FI_RMA`).
    case automatic
    /// Never: every body inline; clients still read descriptors other servers send.
    case never
  }

  /// Settings of the backend; each limit is in Spec/fabric.md.
  public struct Config: Sendable {
    /// The provider when a location names none (`tcp`).
    public var defaultProvider: String
    /// Blocking (default) or polling engine threads.
    public var progressMode: ProgressMode
    /// In blocking mode on a provider without a wait descriptor, the
    /// longest sleep between polls while idle (FABRIC-THREAD-2): the
    /// latest a message that ends a long silence is noticed.
    public var maxIdleSleep: Duration
    /// Bytes of sends a connection may have in flight before `send` waits (FABRIC-FLOW-2).
    public var sendQueueBytes: Int
    /// Bytes of received messages a connection holds unread, or receives
    /// into, before it fails with `.limitExceeded` (DIPC-LIM-4).
    public var maxQueuedFrameBytes: Int
    /// Bytes of tagged messages received ahead of the receives; beyond,
    /// the engine stops returning credits (FABRIC-FLOW-1).
    public var readAheadBytes: Int
    /// The largest message a peer may announce.
    public var maxMessageBytes: Int
    /// Control messages a connection receives into buffers posted ahead:
    /// the credits its peer gets (FABRIC-FLOW-1).
    public var controlReceives: Int
    /// How long `connect` waits for the server's welcome.
    public var connectTimeout: Duration
    /// How long `close` waits for the peer's acknowledgement.
    public var closeTimeout: Duration
    /// How often a connection tells its peer it is alive (FABRIC-LIVE-1).
    public var heartbeatInterval: Duration
    /// How long a silent peer counts as alive (FABRIC-LIVE-1).
    public var peerTimeout: Duration
    /// When bodies go as descriptors.
    public var descriptorBodies: DescriptorBodies
    /// The most connections one listener keeps at once (DIPC-LIM-7).
    public var maxConnections: Int

    /// Provider tcp, blocking threads sleeping at most 10 ms between polls
    /// where they must poll, 64 MiB in flight, 1 GiB unread, 16 MiB
    /// read-ahead, messages up to 1 GiB, 64 control receives, 10 s to
    /// connect and to close, a heartbeat a second, 10 s of silence,
    /// descriptors where remote reads exist, 256 connections per listener.
    public static var defaults: Config { Config() }

    /// Creates settings.
    public init(defaultProvider: String = "tcp", progressMode: ProgressMode = .blocking, maxIdleSleep: Duration = .milliseconds(10),
                sendQueueBytes: Int = 64 << 20, maxQueuedFrameBytes: Int = 1 << 30, readAheadBytes: Int = 16 << 20,
                maxMessageBytes: Int = 1 << 30, controlReceives: Int = 64, connectTimeout: Duration = .seconds(10),
                closeTimeout: Duration = .seconds(10), heartbeatInterval: Duration = .seconds(1), peerTimeout: Duration = .seconds(10),
                descriptorBodies: DescriptorBodies = .automatic, maxConnections: Int = 256) {
      self.defaultProvider = defaultProvider
      self.progressMode = progressMode
      self.maxIdleSleep = maxIdleSleep
      self.sendQueueBytes = sendQueueBytes
      self.maxQueuedFrameBytes = maxQueuedFrameBytes
      self.readAheadBytes = readAheadBytes
      self.maxMessageBytes = maxMessageBytes
      self.controlReceives = max(1, min(controlReceives, 4096))
      self.connectTimeout = connectTimeout
      self.closeTimeout = closeTimeout
      self.heartbeatInterval = heartbeatInterval
      self.peerTimeout = peerTimeout
      self.descriptorBodies = descriptorBodies
      self.maxConnections = maxConnections
    }
  }

  /// `fabric`.
  public let scheme = "fabric"
  /// The settings.
  public let config: Config

  /// Remote memory unless ``Config/descriptorBodies`` is `.never`; fetched
  /// bodies are copies (`fi_read`).
  public var capabilities: TransportCapabilities {
    TransportCapabilities(remoteMemory: config.descriptorBodies != .never, fetchesByMapping: false)
  }

  /// A backend with `config`.
  public init(config: Config = .defaults) { self.config = config }

  /// The libfabric providers this machine offers, by libfabric's names
  /// (`tcp;ofi_rxm`, `shm`, …); a location names one with `provider=`.
  public static var availableProviders: [String] { FabricInfo.availableProviders() }

  /// The version of the libfabric this process runs ("1.17").
  public static var libraryVersion: String { FabricInfo.libraryVersion() }

  /// Listens on `host:port` (port 0: a free one) with the address's
  /// provider; the host must be one address, never a wildcard (FABRIC-ADDR-1).
  public func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    let settings = try FabricSettings(config: config, address: address)
    let host = address.host.isEmpty ? "127.0.0.1" : address.host
    guard !["0.0.0.0", "::", "*"].contains(host) else {
      throw DissociatedIPCError(.invalidLocation, "\(address): fabric:// listens on one address; name it (a wildcard cannot be published)")
    }
    return try await FabricListener.open(settings: settings, host: host, port: address.port ?? 0, parameters: address.parameters)
  }

  /// Connects to the location's `host:port` with its provider;
  /// `.connectionRefused` when no server welcomes us within
  /// ``Config/connectTimeout``.
  public func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    let address = location.address
    guard let port = address.port, port != 0, !address.host.isEmpty else {
      throw DissociatedIPCError(.invalidLocation, "\(address): fabric:// needs a host and a port")
    }
    let settings = try FabricSettings(config: config, address: address)
    let connection = try FabricConnection(settings: settings, isServer: false,
                                          path: "fabric \(settings.provider) to \(address.host):\(port) (connecting)", slot: nil)
    let host = address.host
    let result: Result<Void, DissociatedIPCError> = await withCheckedContinuation { continuation in
      do throws(DissociatedIPCError) {
        try startDedicatedThread(named: "fabric-conn") {
          let endpoint: FabricEndpoint
          let listener: (address: UInt64, name: [UInt8])
          do throws(DissociatedIPCError) {
            try settings.probeListener(host: host, port: port)
            endpoint = try settings.endpoint(bindingTo: settings.clientSource(toward: host, port: port))
            listener = try settings.listenerAddress(host: host, port: port, in: endpoint)
          } catch {
            connection.shared.withLock { $0.finished = true }
            return continuation.resume(returning: .failure(error))
          }
          connection.shared.withLock { $0.path = settings.pathDescription(peer: "\(host):\(port)", remoteReads: endpoint.domain.info.remoteReads, virtual: endpoint.domain.info.virtualAddresses, server: false) }
          FabricEngine.runClient(connection: connection, endpoint: endpoint, listener: listener.address, listenerName: listener.name) {
            continuation.resume(returning: $0)
          }
        }
      } catch {
        continuation.resume(returning: .failure(error))
      }
    }
    try result.get()
    return connection
  }
}

/// A backend's settings with the provider a location chose.
struct FabricSettings: Sendable {
  let config: FabricTransport.Config
  /// libfabric's name of the provider (`tcp;ofi_rxm`).
  let provider: String

  /// The provider the address names (`provider=`), else the default;
  /// short names map to libfabric's (FABRIC-ADDR-2).
  init(config: FabricTransport.Config, address: TransportAddress) throws(DissociatedIPCError) {
    self.config = config
    let requested = address.parameter("provider") ?? config.defaultProvider
    guard !requested.isEmpty, requested.utf8.count <= 64,
          requested.utf8.allSatisfy({ ($0 >= 0x61 && $0 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || $0 == 0x5F || $0 == 0x3B })
    else {
      throw DissociatedIPCError(.invalidLocation, "fabric:// provider '\(PeerText.escaped(requested.utf8))' is not a libfabric provider name")
    }
    provider = switch requested {
    case "tcp": "tcp;ofi_rxm"
    case "verbs": "verbs;ofi_rxm"
    case "udp": "udp;ofi_rxd"
    default: requested
    }
  }

  /// The info for an endpoint bound to `source` (node, service).
  func info(node: String?, service: String?, source: Bool) throws(DissociatedIPCError) -> FabricInfo {
    do throws(FabricFailure) {
      return try FabricInfo(provider: provider, node: node, service: service, source: source)
    } catch {
      guard error.code == Int32(FI_ENODATA) else { throw FabricEngine.failure(error) }
      let present = FabricInfo.availableProviders()
      guard present.contains(where: { $0 == provider || $0.hasPrefix(provider + ";") || provider.hasPrefix($0 + ";") }) else {
        throw DissociatedIPCError(.invalidLocation, "fabric:// provider '\(provider)' is not available here (present: \(present.joined(separator: ", ")))")
      }
      throw DissociatedIPCError(.connectionRefused, "fabric:// provider '\(provider)' cannot reach \(node ?? "?"):\(service ?? "-"): \(error)")
    }
  }

  /// An endpoint bound to `source` with its own domain, address vector
  /// and completion queue (FABRIC-CONN-2).
  func endpoint(bindingTo source: (node: String, service: String?)) throws(DissociatedIPCError) -> FabricEndpoint {
    let info = try info(node: source.node, service: source.service, source: true)
    do throws(FabricFailure) {
      let domain = try FabricDomain(info: info)
      return try FabricEndpoint(domain: domain, addresses: try FabricAddressVector(domain: domain),
                                completions: try FabricCompletionQueue(domain: domain, waitable: config.progressMode == .blocking))
    } catch {
      throw FabricEngine.failure(error)
    }
  }

  /// Whether endpoints are named (shm) rather than bound to an IP address.
  var namesEndpoints: Bool { provider == "shm" }

  /// Where a client's (or a server connection's) endpoint binds: for
  /// named providers a fresh name, else the local address that routes
  /// to `host`, any port (FABRIC-ADDR-3).
  func clientSource(toward host: String, port: UInt16) throws(DissociatedIPCError) -> (node: String, service: String?) {
    if namesEndpoints { return (FabricSettings.uniqueName(), nil) }
    return (try localAddress(toward: host, port: port), "0")
  }

  /// A name no other endpoint of this machine has. The first call
  /// removes the regions that killed processes left (``staleRegionsRemoved``).
  static func uniqueName() -> String {
    _ = staleRegionsRemoved
    let number = nameCounter.withLock { counter -> UInt64 in
      counter &+= 1
      return counter
    }
    return "dipc-\(getpid())-\(number)-\(UInt32.random(in: 0 ... .max))"
  }

  private static let nameCounter = Mutex<UInt64>(0)

  /// Removes from /dev/shm the shm provider's regions of endpoints this
  /// backend named (``uniqueName()``) whose process is gone: a process
  /// killed with SIGKILL leaves its 16 MiB region behind, and nothing else
  /// removes it (FABRIC-SHM-1). Once per process, before its first named
  /// endpoint. A region whose PID a live process has now is kept.
  static let staleRegionsRemoved: Void = {
    guard let directory = opendir("/dev/shm") else { return }
    defer { closedir(directory) }
    let own = getpid()
    while let entry = readdir(directory) {
      let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
      guard let pid = regionOwner(name), pid != own, kill(pid, 0) != 0, errno == ESRCH else { continue }
      unlink("/dev/shm/" + name)
    }
  }()

  /// The process id in a region name ``uniqueName()`` gave
  /// (`dipc-PID-NUMBER-RANDOM`, then the provider's `:…` suffix); nil for
  /// any other name.
  static func regionOwner(_ name: String) -> pid_t? {
    let fields = (name.split(separator: ":", maxSplits: 1).first ?? "").split(separator: "-", omittingEmptySubsequences: false)
    guard fields.count == 4, fields[0] == "dipc",
          fields.dropFirst().allSatisfy({ !$0.isEmpty && $0.allSatisfy { $0.isASCII && $0.isNumber } })
    else { return nil }
    return pid_t(fields[1])
  }

  /// The listener's address at `host:port`, inserted into `endpoint`'s
  /// vector, and its name.
  func listenerAddress(host: String, port: UInt16, in endpoint: FabricEndpoint) throws(DissociatedIPCError)
    -> (address: UInt64, name: [UInt8]) {
    let destination = try info(node: host, service: String(port), source: false)
    guard let name = destination.destinationAddress else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// provider '\(provider)' resolves no address for \(host):\(port)")
    }
    if namesEndpoints, !Self.sharedMemoryNameExists(name) {
      throw DissociatedIPCError(.connectionRefused, "fabric:// nothing listens at \(host):\(port) on this machine")
    }
    do throws(FabricFailure) { return (try endpoint.addresses.insert(name), name) } catch {
      throw DissociatedIPCError(.connectionRefused, "fabric:// cannot address \(host):\(port): \(error)")
    }
  }

  /// Whether the shm provider's region for the endpoint name `name`
  /// (`fi_ns://HOST:PORT`) exists in /dev/shm (FABRIC-ADDR-4): libfabric
  /// 1.17's shm crashed inserting the name of an endpoint this process
  /// had just closed.
  static func sharedMemoryNameExists(_ name: [UInt8]) -> Bool {
    let text = String(decoding: name.prefix { $0 != 0 }, as: UTF8.self)
    let parts = text.split(separator: "://", maxSplits: 1)
    guard parts.count == 2, !parts[1].contains("/") else { return true }
    return access("/dev/shm/" + parts[1], F_OK) == 0
  }

  /// The connection's path report (DIPC path description).
  func pathDescription(peer: String, remoteReads: Bool, virtual: Bool, server: Bool) -> String {
    let bodies: String
    if !remoteReads {
      bodies = "large bodies inline (the provider has no remote reads)"
    } else if server && config.descriptorBodies == .never {
      bodies = "large bodies inline (descriptor bodies off)"
    } else {
      bodies = "large bodies by remote read (fi_read, \(virtual ? "virtual addresses" : "offsets"))"
    }
    return "fabric \(provider) \(server ? "from" : "to") \(peer), \(bodies), \(config.progressMode.rawValue) progress"
  }

  /// Over socket providers (tcp, sockets): throws `.connectionRefused`
  /// when a plain TCP connect to `host:port` is refused, or does not
  /// complete within a second (FABRIC-ADDR-5). Nothing is sent.
  func probeListener(host: String, port: UInt16) throws(DissociatedIPCError) {
    guard provider.hasPrefix("tcp") || provider.hasPrefix("sockets") else { return }
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    var found: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &found) == 0, let found else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// cannot resolve '\(PeerText.escaped(host.utf8))'")
    }
    defer { freeaddrinfo(found) }
    let socket = Glibc.socket(found.pointee.ai_family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard socket >= 0 else { throw DissociatedIPCError(.resourceExhausted, "fabric:// cannot open a socket (errno \(errno))") }
    defer { Glibc.close(socket) }
    if Glibc.connect(socket, found.pointee.ai_addr, found.pointee.ai_addrlen) == 0 { return }
    guard errno == EINPROGRESS else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// nothing listens at \(host):\(port) (errno \(errno))")
    }
    var descriptor = pollfd(fd: socket, events: Int16(POLLOUT), revents: 0)
    guard poll(&descriptor, 1, 1_000) == 1 else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// \(host):\(port) does not answer")
    }
    var failure: Int32 = 0
    var length = socklen_t(MemoryLayout<Int32>.size)
    _ = getsockopt(socket, SOL_SOCKET, SO_ERROR, &failure, &length)
    guard failure == 0 else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// nothing listens at \(host):\(port) (errno \(failure))")
    }
  }

  /// The local IPv4 or IPv6 address this machine uses to reach
  /// `host:port` (a connected UDP socket's name; nothing is sent).
  func localAddress(toward host: String, port: UInt16) throws(DissociatedIPCError) -> String {
    if host == "localhost" { return "127.0.0.1" }
    var hints = addrinfo()
    hints.ai_socktype = Int32(SOCK_DGRAM.rawValue)
    var found: UnsafeMutablePointer<addrinfo>?
    guard getaddrinfo(host, String(port), &hints, &found) == 0, let found else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// cannot resolve '\(PeerText.escaped(host.utf8))'")
    }
    defer { freeaddrinfo(found) }
    let socket = Glibc.socket(found.pointee.ai_family, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard socket >= 0 else { throw DissociatedIPCError(.resourceExhausted, "fabric:// cannot open a socket (errno \(errno))") }
    defer { Glibc.close(socket) }
    guard Glibc.connect(socket, found.pointee.ai_addr, found.pointee.ai_addrlen) == 0 else {
      throw DissociatedIPCError(.connectionRefused, "fabric:// no route to \(host):\(port) (errno \(errno))")
    }
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    var text = [CChar](repeating: 0, count: Int(NI_MAXHOST))
    let named = withUnsafeMutablePointer(to: &storage) { pointer in
      pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
        getsockname(socket, address, &length) == 0
          && getnameinfo(address, length, &text, socklen_t(text.count), nil, 0, NI_NUMERICHOST) == 0
      }
    }
    guard named else { throw DissociatedIPCError(.connectionRefused, "fabric:// cannot tell the local address toward \(host)") }
    return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
  }
}
#endif  // Fabric
