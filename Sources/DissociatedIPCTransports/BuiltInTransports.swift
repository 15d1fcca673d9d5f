@_exported public import DissociatedIPC
@_exported public import DissociatedIPCBackendKit
@_exported public import DissociatedIPCFabric
@_exported public import DissociatedIPCSharedMemory
@_exported public import DissociatedIPCTCP
@_exported public import DissociatedIPCUCX

extension TransportRegistry {
  /// Every backend this package ships, each with its default settings:
  /// `inproc://`, `tcp://`, `shm://`, `ucx://` and `fabric://`. Start from
  /// this and register your own.
  public static var builtIn: TransportRegistry {
    var registry = TransportRegistry.defaults
    registry.register(TCPTransport())
    registry.register(SharedMemoryTransport())
    registry.register(UCXTransport())
    registry.register(FabricTransport())
    return registry
  }
}
