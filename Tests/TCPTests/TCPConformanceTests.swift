import DissociatedIPC
import DissociatedIPCConformance
import DissociatedIPCTCP
import Testing

/// The shared conformance suite over real sockets on 127.0.0.1 and ::1.
@Suite("Conformance: tcp://")
struct TCPConformanceTests {
  @Test("every conformance case over IPv4", arguments: ConformanceCase.allCases)
  func ipv4(testCase: ConformanceCase) async throws {
    try await testCase.run(using: ConformanceHarness(
      transport: TCPTransport(), listenAddress: TransportAddress(scheme: "tcp", host: "127.0.0.1", port: 0)))
  }

  @Test("every conformance case over IPv6", arguments: ConformanceCase.allCases)
  func ipv6(testCase: ConformanceCase) async throws {
    try await testCase.run(using: ConformanceHarness(
      transport: TCPTransport(), listenAddress: TransportAddress(scheme: "tcp", host: "::1", port: 0), largestMessage: 1 << 20))
  }
}
