import DissociatedIPC
import DissociatedIPCConformance
import DissociatedIPCSharedMemory
import Testing

/// The shared conformance suite over shm://, each case on a fresh socket
/// path.
@Suite("Conformance: shm://")
struct SharedMemoryConformanceTests {
  @Test("every conformance case", arguments: ConformanceCase.allCases)
  func conformance(testCase: ConformanceCase) async throws {
    try await testCase.run(using: ConformanceHarness(transport: SharedMemoryTransport(),
                                                     listenAddress: TransportAddress(scheme: "shm")))
  }
}
