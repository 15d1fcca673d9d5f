@_exported public import DissociatedIPC
@_exported public import DissociatedIPCBackendKit
@_exported public import DissociatedIPCSharedMemory
@_exported public import DissociatedIPCTCP
#if Fabric
@_exported public import DissociatedIPCFabric
#endif
#if UCX
@_exported public import DissociatedIPCUCX
#endif

extension TransportRegistry {
  /// Every backend this build of the package has, each with its default
  /// settings: `inproc://`, `tcp://`, `shm://`, and `ucx://` and
  /// `fabric://` unless their traits were turned off. Start from this and
  /// register your own.
  public static var builtIn: TransportRegistry {
    var registry = TransportRegistry.defaults
    registry.register(TCPTransport())
    registry.register(SharedMemoryTransport())
    #if UCX
    registry.register(UCXTransport())
    #endif
    #if Fabric
    registry.register(FabricTransport())
    #endif
    return registry
  }
}
