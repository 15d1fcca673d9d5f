#if Fabric
import DissociatedIPC
import DissociatedIPCConformance
import DissociatedIPCFabric
import Testing

/// The shared conformance suite over fabric://, once per provider.
@Suite("Conformance: fabric://")
struct FabricConformanceTests {
  /// The providers CI has: libfabric's tcp (`tcp;ofi_rxm`) and shm.
  static let providers = ["tcp", "shm"]

  /// A listen address on loopback with `provider`.
  static func address(_ provider: String) -> TransportAddress {
    TransportAddress(scheme: "fabric", host: "127.0.0.1", port: 0, parameters: [.init("provider", provider)])
  }

  @Test("every conformance case", arguments: ConformanceCase.allCases, providers)
  func conformance(testCase: ConformanceCase, provider: String) async throws {
    try await testCase.run(using: ConformanceHarness(transport: FabricTransport(), listenAddress: Self.address(provider)))
  }
}
#endif  // Fabric
