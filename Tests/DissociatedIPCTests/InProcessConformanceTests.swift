import DissociatedIPC
import DissociatedIPCBackendKit
import DissociatedIPCConformance
import Testing

/// The shared conformance suite against the in-process transport, plain and
/// with injected reordering and delays.
@Suite("Conformance: inproc://")
struct InProcessConformanceTests {
  static let plain = ConformanceHarness(transport: InProcessTransport(), listenAddress: TransportAddress(scheme: "inproc"))
  static let faulty = ConformanceHarness(
    transport: InProcessTransport(faults: .init(reorderJitter: .microseconds(300), delay: .microseconds(20))),
    listenAddress: TransportAddress(scheme: "inproc"), largestMessage: 1 << 20)

  @Test("every conformance case", arguments: ConformanceCase.allCases)
  func conformance(testCase: ConformanceCase) async throws {
    try await testCase.run(using: Self.plain)
  }

  @Test("every conformance case with reordering and delays", arguments: ConformanceCase.allCases.filter {
    // Mask matching asserts arrival order of one sender's tagged messages, which jitter breaks on purpose.
    $0 != .maskMatching
  })
  func conformanceWithFaults(testCase: ConformanceCase) async throws {
    try await testCase.run(using: Self.faulty)
  }
}
