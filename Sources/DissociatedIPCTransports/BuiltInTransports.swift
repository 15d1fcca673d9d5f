@_exported public import DissociatedIPC
@_exported public import DissociatedIPCTCP

extension TransportRegistry {
  /// Every backend this package ships, each with its default settings:
  /// `inproc://` and `tcp://` (more as they land). Start from this and
  /// register your own.
  public static var builtIn: TransportRegistry {
    var registry = TransportRegistry.defaults
    registry.register(TCPTransport())
    return registry
  }
}
