@_exported public import DissociatedIPC
@_exported public import DissociatedIPCSharedMemory
@_exported public import DissociatedIPCTCP

extension TransportRegistry {
  /// Every backend this package ships, each with its default settings:
  /// `inproc://`, `tcp://` and `shm://` (more as they land). Start from
  /// this and register your own.
  public static var builtIn: TransportRegistry {
    var registry = TransportRegistry.defaults
    registry.register(TCPTransport())
    registry.register(SharedMemoryTransport())
    return registry
  }
}
