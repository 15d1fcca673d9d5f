public import DissociatedIPC
internal import DissociatedIPCBackendKit

/// The `shm://` backend: Dissociated IPC between processes of one host
/// through shared memory (Spec/shm.md).
///
/// A connection is a Unix-domain SOCK_SEQPACKET socket carrying small
/// control messages; payloads above ``Config/inlineLimit`` are copied once
/// into a sealed memfd segment the sender owns and the receiver maps
/// read-only, so the receiver reads them in place. Segments travel as
/// descriptors (SCM_RIGHTS): nothing is ever named in `/dev/shm`, and
/// nothing is left behind by a crashed process. Remote memory (body type 1)
/// is offered: exposed bodies are fetched as views of the server's segment;
/// bodies a producer wrote into a ``SharedMemoryBuffer`` are described in
/// place, with no copy at all.
///
/// ```swift
/// var registry = TransportRegistry()
/// registry.register(SharedMemoryTransport())
/// let server = try await DissociatedServer(listeningAt: "shm://", catalog: catalog, registry: registry)
/// print(server.location(for: "trades"))   // shm:///tmp/dipc-4242-1x2y3z.sock?want_data=…
/// ```
public struct SharedMemoryTransport: DissociatedTransport {
  /// Settings of the backend.
  public struct Config: Sendable {
    /// The mode of the listening socket file (SHM-ADDR-4); only processes
    /// that may write the file can connect.
    public var socketMode: UInt32
    /// Payloads up to this many bytes travel inside the control message;
    /// larger ones go through the shared segment (SHM-RING-4). At most
    /// 64 KiB.
    public var inlineLimit: Int
    /// The size of the first outbound segment, created on first use;
    /// segments added later double the total, up to 64 MiB each
    /// (SHM-RING-2).
    public var segmentSize: Int
    /// The most segment bytes one connection's sender may hold; past it,
    /// a sender waits for the peer to return space (SHM-RING-2).
    public var maxSharedBytes: Int
    /// Received messages a connection may hold for receivers before its
    /// reader stops reading (the socket's flow control then slows the
    /// sender).
    public var readAheadBytes: Int
    /// Inline bytes a connection may queue for its writer before `send`
    /// waits.
    public var writeQueueBytes: Int
    /// The largest message a sender accepts (`.limitExceeded` beyond).
    public var maxMessageSize: Int
    /// The name segments carry in `/proc/PID/maps` and `/proc/PID/fd`
    /// (`/memfd:NAME`), to tell them apart when debugging.
    public var segmentName: String
    /// The most bytes of the peer's segments that received payloads the
    /// application still holds may keep; a payload that would go beyond
    /// is copied into this process's memory and its space returned at
    /// once (SHM-RING-7), so a consumer that keeps everything never makes
    /// the peer's sender wait for space it cannot get back.
    public var maxHeldPayloadBytes: Int
    /// The most connections one listener keeps at once; it closes more at
    /// once, before starting anything for them (DIPC-LIM-7).
    public var maxConnections: Int
    /// The most of the peer's segments (ring segments and buffers described
    /// in place) a connection maps at once; one more fails the connection
    /// with `.limitExceeded` (SHM-MEM-6).
    public var maxPeerSegments: Int
    /// The most bytes of the peer's segments a connection maps at once;
    /// beyond, `.limitExceeded` (SHM-MEM-6).
    public var maxPeerMappedBytes: Int
    /// The segment bytes all connections made with this configuration
    /// (a listener's clients) hold together; beyond it their rings stop
    /// growing and senders wait for returned space (SHM-RING-8). Shared
    /// by copies of this configuration.
    public var sharedBudget: SharedMemoryBudget

    /// Mode 0600, 16 KiB inline, an 8 MiB first segment, 1 GiB shared per
    /// connection, 64 MiB read ahead, 8 MiB write queue, 4 GiB messages,
    /// 512 MiB of held payloads (half the peer's default 1 GiB), 256
    /// connections per listener, 1,024 peer segments and 4 GiB of them
    /// mapped per connection, 1 GiB of segments for all connections together.
    public static var defaults: Config {
      Config(socketMode: 0o600, inlineLimit: 16 << 10, segmentSize: 8 << 20, maxSharedBytes: 1 << 30,
             readAheadBytes: 64 << 20, writeQueueBytes: 8 << 20, maxMessageSize: 4 << 30, segmentName: "dipc-shm")
    }

    /// Creates settings.
    public init(socketMode: UInt32, inlineLimit: Int, segmentSize: Int, maxSharedBytes: Int,
                readAheadBytes: Int, writeQueueBytes: Int, maxMessageSize: Int, segmentName: String,
                maxHeldPayloadBytes: Int = 512 << 20, maxConnections: Int = 256,
                maxPeerSegments: Int = 1024, maxPeerMappedBytes: Int = 4 << 30,
                sharedBudget: SharedMemoryBudget = SharedMemoryBudget(maxBytes: 1 << 30)) {
      self.sharedBudget = sharedBudget
      self.maxPeerSegments = maxPeerSegments
      self.maxPeerMappedBytes = maxPeerMappedBytes
      self.maxConnections = maxConnections
      precondition((0 ... SharedMemoryWire.maxInlinePayload).contains(inlineLimit), "inlineLimit is at most 64 KiB")
      precondition(segmentSize > 0 && maxSharedBytes >= segmentSize, "maxSharedBytes must hold at least one segment")
      self.socketMode = socketMode
      self.inlineLimit = inlineLimit
      self.segmentSize = segmentSize
      self.maxSharedBytes = maxSharedBytes
      self.readAheadBytes = readAheadBytes
      self.writeQueueBytes = writeQueueBytes
      self.maxMessageSize = maxMessageSize
      self.segmentName = segmentName
      self.maxHeldPayloadBytes = maxHeldPayloadBytes
    }
  }

  /// `shm`.
  public let scheme = "shm"
  /// Remote memory by mapping: fetched bodies are views of the server's
  /// segment.
  public let capabilities = TransportCapabilities(remoteMemory: true, fetchesByMapping: true)
  /// The settings.
  public let config: Config

  /// A backend with `config`.
  public init(config: Config = .defaults) { self.config = config }

  /// Listens on the socket file `address.path`; an empty path picks a
  /// fresh one (SHM-ADDR-2). A stale socket file nobody accepts on is
  /// replaced; a live one is `.transportFailure` (SHM-ADDR-5).
  public func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    guard address.host.isEmpty, address.port == nil else {
      throw DissociatedIPCError(.invalidLocation, "\(address): shm:// takes a socket path, no host or port (shm:///path)")
    }
    if address.path.isEmpty { removeStaleSocketFiles(in: socketDirectory()) }
    let path = address.path.isEmpty ? freshSocketPath() : address.path
    return try SharedMemoryListener(path: path, config: config)
  }

  /// Connects to the socket file of the location's path.
  public func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    guard location.host.isEmpty, location.port == nil, !location.path.isEmpty else {
      throw DissociatedIPCError(.invalidLocation, "\(location): shm:// needs a socket path and no host (shm:///path)")
    }
    let config = config
    // The usual case connects at once, here (SHM-ADDR-7); connect(2)
    // blocks while the listener's backlog is full: that wait is not for
    // the pool.
    if let socket = try UnixSocket.connectNow(path: location.path) {
      return try SharedMemoryConnection(socket: socket, config: config, path: location.path)
    }
    let socket = try await onDedicatedThread(named: "shm-connect") { () throws(DissociatedIPCError) in
      try UnixSocket.connect(path: location.path)
    }
    return try SharedMemoryConnection(socket: socket, config: config, path: location.path)
  }
}
