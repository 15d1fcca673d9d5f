public import ArrowIPC
public import Logging
internal import Synchronization

/// Serves a ``StreamCatalog`` over one transport listener.
///
/// ```swift
/// var catalog = StreamCatalog()
/// catalog.add("trades", .file(path: "trades.arrows"))
/// let server = try await DissociatedServer(listeningAt: "inproc://", catalog: catalog)
/// print(server.location(for: "trades"))     // inproc://l1?want_data=…&ticket=trades
/// try await server.run()                      // until shutdown()
/// ```
/// Every accepted connection carries one stream (DIPC-CONN-2): its first
/// tagged message must be a want_data (``ControlTag``) carrying a ticket.
/// An unknown ticket gets an error frame and the connection closes; the
/// server keeps serving everyone else.
public final class DissociatedServer: Sendable {
  /// Server settings.
  public struct Config: Sendable {
    /// Rendezvous threshold and outstanding-bytes bound per stream.
    public var stream: ServerStreamConfig
    /// How long a new connection may take to send want_data (DIPC-LIM-5).
    public var initiationTimeout: Duration
    /// Limits applied when reading stream files.
    public var arrowLimits: ArrowIPCLimits
    /// Where connections, streams and their failures are logged.
    public var logger: Logger
    /// The longest ticket a client may send; a longer one is refused with
    /// `limitExceeded` before it is looked at (DIPC-LIM-9).
    public var maxTicketBytes: Int
    /// How long a stream may wait for its client — a transport that takes
    /// no message, descriptors not returned — before it fails with
    /// `timedOut` and its connection is aborted (DIPC-LIM-10); nil: no limit.
    public var stallTimeout: Duration?
    /// Who may fetch (DIPC-ACCESS-1): `.open` (fixed want_data values, as
    /// the reference) or `.capabilities` (a random want_data per ticket
    /// and role, published only in its location).
    public var access: AccessPolicy

    /// 64 KiB rendezvous, 256 MiB outstanding, 10 s to initiate, 16 KiB
    /// tickets, 60 s without progress, open access, no logging.
    public static let defaults = Config(stream: .defaults, initiationTimeout: .seconds(10), arrowLimits: .defaults)

    /// Creates settings.
    public init(stream: ServerStreamConfig, initiationTimeout: Duration, arrowLimits: ArrowIPCLimits,
                logger: Logger = Logger(label: "dissociated-ipc.server", factory: { _ in SwiftLogNoOpLogHandler() }),
                maxTicketBytes: Int = 16 << 10, stallTimeout: Duration? = .seconds(60), access: AccessPolicy = .open) {
      self.access = access
      self.maxTicketBytes = maxTicketBytes
      self.stallTimeout = stallTimeout
      self.stream = stream
      self.initiationTimeout = initiationTimeout
      self.arrowLimits = arrowLimits
      self.logger = logger
    }
  }

  /// The bound listener.
  public let listener: any TransportListener
  private let transport: any DissociatedTransport
  private let catalog: StreamCatalog
  private let config: Config
  /// The want_data values issued under `.capabilities` (empty otherwise).
  private let grants: Grants
  private let streams = Mutex<(active: Int, served: Int, failed: Int)>((0, 0, 0))
  /// Connections being served, so a non-graceful shutdown can close them.
  private let connections = Mutex<[ObjectIdentifier: any TransportConnection]>([:])

  /// Binds a listener at `address` (e.g. `tcp://127.0.0.1:0`) with the
  /// backend `registry` has for its scheme.
  public init(listeningAt address: String, catalog: StreamCatalog, registry: TransportRegistry,
              config: Config = .defaults) async throws(DissociatedIPCError) {
    let parsed = try TransportAddress(parsing: address)
    transport = try registry.transport(forScheme: parsed.scheme)
    listener = try await transport.listen(at: parsed)
    self.catalog = catalog
    self.config = config
    grants = config.access == .capabilities ? Grants(tickets: catalog.tickets) : Grants(tickets: [])
  }

  /// The location that fetches `ticket` in `role` (the ticket travels in the
  /// `ticket` parameter, DIPC-URI-7).
  public func location(for ticket: [UInt8], role: StreamRole = .combined) -> Location {
    let address = listener.address
    var others: [Location.KeyValuePair] = []
    if let text = String(validating: ticket, as: UTF8.self) {
      others.append(.init("ticket", text))
    } else {
      others.append(.init("ticket64", Base64.encode(ticket)))
    }
    let remote = transport.capabilities.remoteMemory && role != .metadata
    return address.location(wantData: wantData(for: ticket, role: role), freeData: remote ? ControlTag.freeData : nil,
                            remoteHandle: remote ? listener.remoteHandle : nil, extra: others)
  }

  /// The want_data a location for `ticket` in `role` carries: the fixed
  /// value of the role, or under `.capabilities` the one issued for the
  /// ticket (a ticket the catalog lacks gets a random value nobody will
  /// accept).
  private func wantData(for ticket: [UInt8], role: StreamRole) -> UInt64 {
    guard config.access == .capabilities else { return ControlTag.wantData(role) }
    var generator = SystemRandomNumberGenerator()
    return grants.wantData(for: ticket, role: role) ?? Grants.randomTag(using: &generator)
  }

  /// The location that fetches the UTF-8 `ticket` in `role`.
  public func location(for ticket: String, role: StreamRole = .combined) -> Location {
    location(for: Array(ticket.utf8), role: role)
  }

  /// Counts of streams: running now, completed, failed (refusals and
  /// connections that never asked in time included). A connection that
  /// closes before asking for a stream counts in none.
  public var streamCounts: (active: Int, served: Int, failed: Int) { streams.withLock { $0 } }

  /// What a server is doing and holding at one moment: its connections
  /// and streams, and what its listener says it holds (shared or
  /// registered memory). `dipc serve` prints it on SIGUSR1.
  public struct Stats: Sendable, CustomStringConvertible {
    /// Connections being served now, those that have not asked for a
    /// stream yet included.
    public var connections: Int
    /// Streams running now.
    public var activeStreams: Int
    /// Streams that completed.
    public var servedStreams: Int
    /// Streams that failed or were refused.
    public var failedStreams: Int
    /// The listener's ``TransportListener/heldResources``.
    public var held: String?

    /// `connections=… active=… served=… failed=… held="…"`.
    public var description: String {
      var text = "connections=\(connections) active=\(activeStreams) served=\(servedStreams) failed=\(failedStreams)"
      if let held { text += " held=\"\(held)\"" }
      return text
    }
  }

  /// The server's stats now.
  public var stats: Stats {
    let counts = streamCounts
    return Stats(connections: connections.withLock { $0.count }, activeStreams: counts.active,
                 servedStreams: counts.served, failedStreams: counts.failed, held: listener.heldResources)
  }

  /// Accepts and serves connections until ``shutdown()`` or until the
  /// calling task is cancelled; each stream runs in its own child task.
  /// When it returns, the listener is closed (new clients are refused).
  public func run() async {
    await withDiscardingTaskGroup { group in
      while let connection = try? await listener.accept() {
        group.addTask { await self.serve(connection) }
      }
      await listener.close()
    }
  }

  /// Stops accepting new connections. Graceful: streams in progress
  /// finish. Not graceful: their connections are aborted now (clients see
  /// a truncated stream), also those blocked on a client that stopped
  /// reading.
  public func shutdown(graceful: Bool = true) async {
    await listener.close()
    guard !graceful else { return }
    for connection in connections.withLock({ Array($0.values) }) { connection.abort() }
  }

  /// Stops accepting new connections and lets streams in progress finish
  /// for at most `gracePeriod`; then aborts the connections of those that
  /// did not (DIPC-TEAR-5). Returns when no connection is left or after
  /// the abort.
  public func shutdown(gracePeriod: Duration) async {
    await listener.close()
    let deadline = ContinuousClock.now + gracePeriod
    // Connections, not active streams: a client whose want_data is still
    // on its way gets the grace period too.
    while connections.withLock({ !$0.isEmpty }), ContinuousClock.now < deadline {
      try? await Task.sleep(for: .milliseconds(10))
    }
    await shutdown(graceful: false)
  }

  private func serve(_ connection: any TransportConnection) async {
    connections.withLock { $0[ObjectIdentifier(connection)] = connection }
    defer { connections.withLock { $0[ObjectIdentifier(connection)] = nil } }
    let outcome: DissociatedIPCError?
    var requested = false
    do throws(DissociatedIPCError) {
      try await serveStream(on: connection, requested: &requested)
      outcome = nil
    } catch {
      outcome = error
    }
    // What the connection held for the client as the stream ended: shared
    // memory a client keeps alive shows here.
    var metadata: Logger.Metadata = ["path": "\(connection.pathDescription)"]
    if let held = connection.heldResources { metadata["held"] = "\(held)" }
    await connection.close()
    if let outcome {
      metadata["error"] = "\(outcome)"
      config.logger.warning("stream failed", metadata: metadata)
    } else if requested {
      config.logger.info("stream served", metadata: metadata)
    } else {
      config.logger.debug("connection closed before asking for a stream", metadata: metadata)
    }
    streams.withLock { counts in
      if requested { counts.active -= 1 }
      if outcome != nil { counts.failed += 1 } else if requested { counts.served += 1 }
    }
  }

  /// Serves the stream `connection` asks for; sets `requested` (and counts
  /// the stream active) once it asked. Returns when the stream ended, or
  /// when the connection closed before asking.
  private func serveStream(on connection: any TransportConnection, requested: inout Bool) async throws(DissociatedIPCError) {
    let first = try await withTimeout(config.initiationTimeout) { () async throws(DissociatedIPCError) in
      try await connection.receiveTagged(matching: 0, mask: 0)
    }
    guard let first else { return }  // closed before asking for anything
    requested = true
    streams.withLock { $0.active += 1 }
    let ticket = first.payload
    let role: StreamRole
    switch config.access {
    case .open:
      guard let fixed = ControlTag.role(of: first.tag) else {
        // Refused in words: a client with a wrong want_data would otherwise
        // see only a connection that closed (DIPC-ERR-3).
        throw await refuse(DissociatedIPCError(.unexpectedMessage, "first tagged message \(Tag(rawValue: first.tag)) is not a want_data this server publishes"), on: connection)
      }
      role = fixed
    case .capabilities:
      // The ticket is compared only once the tag was found: a guessed tag
      // learns nothing about which tickets exist.
      guard let grant = grants.grant(first.tag), ticket.count == grant.ticket.count,
            ticket.withUnsafeBytes({ $0.elementsEqual(grant.ticket) })
      else {
        throw await refuse(DissociatedIPCError(.accessDenied, "this want_data does not grant that stream"), on: connection)
      }
      role = grant.role
    }
    guard ticket.count <= config.maxTicketBytes else {
      throw await refuse(DissociatedIPCError(.limitExceeded, "a ticket of \(ticket.count) bytes exceeds the limit of \(config.maxTicketBytes)"),
                         on: connection, tellingClient: role.sendsMetadata)
    }
    config.logger.debug("stream requested", metadata: [
      "role": "\(role)", "ticket": "\(Self.describe(ticket))", "path": "\(connection.pathDescription)",
    ])
    guard let source = catalog[ticket.array] else {
      throw await refuse(DissociatedIPCError(.unknownTicket, "no stream for ticket \(Self.describe(ticket))"),
                         on: connection, tellingClient: role.sendsMetadata)
    }
    let remoteMemory = transport.capabilities.remoteMemory ? connection.remoteMemory : nil
    let session = ServerSession(connection: connection, remoteMemory: remoteMemory,
                                machine: ServerStreamStateMachine(role: role, remoteMemory: remoteMemory != nil,
                                                                  config: config.stream),
                                stallTimeout: config.stallTimeout)
    try await session.run(source.messages(limits: config.arrowLimits))
  }

  /// Refuses a stream before it starts: says why in an error frame when the
  /// connection carries metadata (DIPC-ERR-2, DIPC-ERR-3); returns `error`
  /// for the caller to throw.
  private func refuse(_ error: DissociatedIPCError, on connection: any TransportConnection,
                      tellingClient: Bool = true) async -> DissociatedIPCError {
    if tellingClient { try? await connection.sendFrame(MetadataFrame.error(error.code, error.detail).parts) }
    return error
  }

  /// A ticket as logs and errors show it: quoted, escaped, at most 64
  /// bytes of it (DIPC-LIM-9).
  static func describe(_ ticket: ArrowBytes) -> String {
    ticket.withUnsafeBytes { "'\(PeerText.escaped($0))'" }
  }
}

extension MetadataFrame {
  /// The frame as parts for ``TransportConnection/sendFrame(_:)``.
  var parts: [ArrowBytes] { [ArrowBytes(copying: prefix), payload] }
}

/// Runs `operation`, failing with `.timedOut` after `timeout`.
func withTimeout<T: Sendable>(
  _ timeout: Duration, _ operation: @escaping @Sendable () async throws(DissociatedIPCError) -> T
) async throws(DissociatedIPCError) -> T {
  do {
    return try await withThrowingTaskGroup(of: T.self) { group in
      group.addTask { try await operation() }
      group.addTask {
        try await Task.sleep(for: timeout)
        throw DissociatedIPCError(.timedOut, "no answer within \(timeout)")
      }
      defer { group.cancelAll() }
      return try await group.next()!
    }
  } catch let error as DissociatedIPCError {
    throw error
  } catch {
    throw DissociatedIPCError(.cancelled, "\(error)")
  }
}
