public import ArrowIPC
public import DissociatedIPC
internal import DissociatedIPCBackendKit

/// The `tcp://` backend: Dissociated IPC over one TCP connection per stream
/// flow, on IPv4 or IPv6 (Spec/tcp.md).
///
/// Framed and tagged messages share the byte stream, each behind a 24-byte
/// header. Every connection has a dedicated reader thread, which receives
/// large payloads straight into their final 64-byte-aligned buffers, and a
/// dedicated writer thread, which sends queued messages with scatter-gather
/// writes; neither blocks Swift's concurrency pool. No remote memory: every
/// body travels inline (type 0).
///
/// ```swift
/// var registry = TransportRegistry()
/// registry.register(TCPTransport())
/// let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry)
/// ```
public struct TCPTransport: DissociatedTransport {
  /// Settings of the backend.
  public struct Config: Sendable {
    /// Largest message accepted from a peer; a header announcing more
    /// closes the connection with `.limitExceeded` (TCP-FRAME-3).
    public var maxMessageSize: Int
    /// Received bytes a connection may hold for receivers before its
    /// reader stops reading (TCP flow control then slows the sender).
    public var readAheadBytes: Int
    /// Bytes a connection may queue for its writer before `send` waits.
    public var writeQueueBytes: Int
    /// SO_SNDBUF / SO_RCVBUF, or nil for the kernel's autotuning.
    public var socketBufferSize: Int?
    /// Recycles received payload buffers of 64 KiB and more once their
    /// batches are released (TCP-RECV-3); shared by every connection made
    /// with this configuration.
    public var receiveBufferPool: BufferPool
    /// The most connections one listener keeps at once; it closes more at
    /// once, before starting anything for them (DIPC-LIM-7).
    public var maxConnections: Int

    /// 4 GiB messages, 64 MiB read ahead, 8 MiB write queue, kernel
    /// buffers, a 64 MiB receive-buffer pool, 256 connections per listener.
    public static var defaults: Config {
      Config(maxMessageSize: 4 << 30, readAheadBytes: 64 << 20, writeQueueBytes: 8 << 20, socketBufferSize: nil)
    }

    /// Creates settings.
    public init(maxMessageSize: Int, readAheadBytes: Int, writeQueueBytes: Int, socketBufferSize: Int?,
                receiveBufferPool: BufferPool = BufferPool(), maxConnections: Int = 256) {
      self.maxConnections = maxConnections
      self.maxMessageSize = maxMessageSize
      self.readAheadBytes = readAheadBytes
      self.writeQueueBytes = writeQueueBytes
      self.socketBufferSize = socketBufferSize
      self.receiveBufferPool = receiveBufferPool
    }
  }

  /// `tcp`.
  public let scheme = "tcp"
  /// No remote memory.
  public let capabilities = TransportCapabilities(remoteMemory: false, fetchesByMapping: false)
  /// The settings.
  public let config: Config

  /// A backend with `config`.
  public init(config: Config = .defaults) { self.config = config }

  /// Listens on `host:port` (port 0 or none: a free port; host empty:
  /// all interfaces).
  public func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    let (socket, port) = try Socket.listen(host: address.host, port: address.port ?? 0)
    do {
      return try TCPListener(socket: socket, address: TransportAddress(scheme: scheme, host: address.host, port: port),
                             config: config)
    } catch {
      socket.close()
      throw error
    }
  }

  /// Connects to the location's `host:port`.
  public func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    guard let port = location.port, port != 0 else {
      throw DissociatedIPCError(.invalidLocation, "\(location): tcp:// needs a port")
    }
    // connect(2) may block for a remote host: do it on a thread of its own.
    let socket = try await onDedicatedThread(named: "tcp-connect") { () throws(DissociatedIPCError) in
      try Socket.connect(host: location.host, port: port)
    }
    return try TCPConnection(socket: socket, config: config, peer: "\(location.host):\(port)")
  }
}
