internal import ArrowIPC
public import DissociatedIPC
internal import Synchronization

/// A transport inside one process, scheme `inproc` (`inproc://NAME`), for
/// core tests and demos: connections are pairs of ``MessageInbox``es, and
/// remote memory hands the client a view of the server's bytes (zero copy).
///
/// Listeners live in a ``Network``: by default the process's shared one
/// (``Network/process``), so a server and a client made with default
/// registries find each other; pass your own network to isolate them. ``Faults``
/// injects reordering of tagged messages against everything else, delays
/// and dropped connections.
public struct InProcessTransport: DissociatedTransport {
  /// Faults to inject into every connection made through this transport.
  public struct Faults: Sendable, Hashable {
    /// Deliver each tagged message after a random delay up to this long,
    /// so bodies overtake each other and their metadata (nil: in order).
    public var reorderJitter: Duration?
    /// Delay every message by this long.
    public var delay: Duration?
    /// Break the connection (both directions, `.connectionClosed`) after this
    /// many messages were sent on it, counting both directions.
    public var dropAfterMessages: Int?

    /// No faults.
    public static let none = Faults(reorderJitter: nil, delay: nil, dropAfterMessages: nil)

    /// Creates a fault set.
    public init(reorderJitter: Duration? = nil, delay: Duration? = nil, dropAfterMessages: Int? = nil) {
      self.reorderJitter = reorderJitter
      self.delay = delay
      self.dropAfterMessages = dropAfterMessages
    }
  }

  /// The namespace of listener names.
  public final class Network: Sendable {
    private let listeners = Mutex<[String: Listener]>([:])
    private let nextName = Atomic<Int>(1)
    private let exposedNow = Atomic<Int>(0)
    private let exposedPeak = Atomic<Int>(0)

    /// An empty network.
    public init() {}

    /// The network of transports made without an explicit one: the
    /// process's `inproc://` namespace.
    public static let process = Network()

    /// Bytes servers on this network expose to clients right now.
    public var exposedBytes: Int { exposedNow.load(ordering: .relaxed) }
    /// The most bytes exposed at once so far (to check backpressure bounds).
    public var peakExposedBytes: Int { exposedPeak.load(ordering: .relaxed) }

    func exposed(_ delta: Int) {
      let now = exposedNow.wrappingAdd(delta, ordering: .relaxed).newValue
      exposedPeak.max(now, ordering: .relaxed)
    }

    fileprivate func bind(_ name: String, _ listener: Listener) throws(DissociatedIPCError) {
      let bound = listeners.withLock { listeners -> Bool in
        guard listeners[name] == nil else { return false }
        listeners[name] = listener
        return true
      }
      guard bound else { throw DissociatedIPCError(.transportFailure, "inproc://\(name) is already bound") }
    }

    fileprivate func unbind(_ name: String) { _ = listeners.withLock { $0.removeValue(forKey: name) } }
    fileprivate func listener(_ name: String) -> Listener? { listeners.withLock { $0[name] } }
    fileprivate func freshName() -> String { "l\(nextName.wrappingAdd(1, ordering: .relaxed).oldValue)" }
  }

  /// The scheme, `inproc`.
  public let scheme = "inproc"
  /// Remote memory by mapping: the client sees the server's bytes.
  public let capabilities = TransportCapabilities(remoteMemory: true, fetchesByMapping: true)
  /// The namespace.
  public let network: Network
  /// The injected faults.
  public let faults: Faults

  /// A transport on `network` (the process's by default) with `faults`.
  public init(network: Network = .process, faults: Faults = .none) {
    self.network = network
    self.faults = faults
  }

  /// Binds `inproc://NAME`; an empty name picks a fresh one.
  public func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    let name = address.host.isEmpty ? network.freshName() : address.host
    let listener = Listener(name: name, network: network)
    try network.bind(name, listener)
    return listener
  }

  /// Connects to the listener named by the location's host.
  public func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    guard let listener = network.listener(location.host) else {
      throw DissociatedIPCError(.connectionRefused, "nothing listens at inproc://\(location.host)")
    }
    let (client, server) = Connection.pair(faults: faults, network: network)
    guard listener.enqueue(server) else {
      throw DissociatedIPCError(.connectionRefused, "inproc://\(location.host) is closed")
    }
    return client
  }

  /// An in-process listener.
  final class Listener: TransportListener {
    let name: String
    let network: Network
    private let inbox = MessageInbox()
    private let pending = Mutex<[UInt64: Connection]>([:])
    private let counter = Atomic<UInt64>(0)

    init(name: String, network: Network) {
      self.name = name
      self.network = network
    }

    var address: TransportAddress { TransportAddress(scheme: "inproc", host: name) }
    var remoteHandle: [UInt8]? { nil }

    /// Queues a new server-side connection; false once closed.
    func enqueue(_ connection: Connection) -> Bool {
      let id = counter.wrappingAdd(1, ordering: .relaxed).newValue
      pending.withLock { $0[id] = connection }
      var idBytes: [UInt8] = []
      idBytes.appendLittleEndian(id)
      inbox.deliverFrame(ArrowBytes(copying: idBytes))
      return network.listener(name) === self
    }

    func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
      guard let token = try await inbox.receiveFrame() else { return nil }
      let id = token.loadLittleEndian(UInt64.self, at: 0)
      return pending.withLock { $0.removeValue(forKey: id) }
    }

    func close() async {
      network.unbind(name)
      inbox.close()
      let abandoned = pending.withLock { pending in
        defer { pending.removeAll() }
        return Array(pending.values)
      }
      for connection in abandoned { await connection.close() }
    }
  }
}

extension TransportRegistry {
  /// The in-process transport (`inproc://`) alone: for tests and for
  /// trying the core without a network.
  public static var defaults: TransportRegistry {
    var registry = TransportRegistry()
    registry.register(InProcessTransport())
    return registry
  }
}
