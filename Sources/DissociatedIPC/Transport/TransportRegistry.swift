/// The backends a server or client can use, by URI scheme.
///
/// A value type: build one, register what you need, and pass it to
/// ``DissociatedServer`` and ``DissociatedClient``. There is no global
/// registry.
///
/// ```swift
/// var registry = TransportRegistry.builtIn      // the backends this package ships
/// registry.register(MyTransport())               // your own, by its scheme
/// let client = DissociatedClient(registry: registry)
/// ```
/// `DissociatedIPCBackendKit`'s `TransportRegistry.defaults` holds the
/// in-process transport; the `DissociatedIPCTransports` module's
/// `TransportRegistry.builtIn` adds every backend this package ships.
public struct TransportRegistry: Sendable {
  private var transports: [String: any DissociatedTransport] = [:]

  /// An empty registry.
  public init() {}

  /// Registers `transport` for its scheme, replacing any earlier one.
  public mutating func register(_ transport: any DissociatedTransport) {
    transports[transport.scheme.lowercased()] = transport
  }

  /// Removes the backend for `scheme`.
  public mutating func removeTransport(forScheme scheme: String) {
    transports[scheme.lowercased()] = nil
  }

  /// The registered schemes, sorted.
  public var schemes: [String] { transports.keys.sorted() }

  /// The backend for `scheme`.
  ///
  /// - Throws: `.unsupportedScheme` when none is registered.
  public func transport(forScheme scheme: String) throws(DissociatedIPCError) -> any DissociatedTransport {
    guard let transport = transports[scheme.lowercased()] else {
      throw DissociatedIPCError(.unsupportedScheme,
                                "no backend for '\(scheme)://' (registered: \(schemes.map { $0 + "://" }.joined(separator: ", ")))")
    }
    return transport
  }
}
