#if UCX
import DissociatedIPC
import DissociatedIPCConformance
import DissociatedIPCUCX
import Testing

/// The shared conformance suite over ucx:// on loopback, once with UCX's
/// TCP transport alone and once with shared memory allowed (a same-host
/// peer then moves data through shared memory; TCP still carries the
/// connection setup). The settings go to each backend's own UCP context
/// (UCX-CONF-1), so both run in one process. Serialized: UCX 1.13 can
/// abort when workers are torn down while another worker's missed async
/// events are replayed (UCX-LIM-4), and fewer workers at once make that
/// rarer.
@Suite("Conformance: ucx://", .serialized, .exitsWithoutUCXDestructors)
struct UCXConformanceTests {
  /// Descriptors forced (`.always`): the remote-memory case needs them,
  /// and over these lanes `.automatic` sends every body inline (UCX-RM-8).
  static func transport(_ transports: String) -> UCXTransport {
    UCXTransport(config: .init(options: ["TLS": transports, "NET_DEVICES": "lo"], descriptorBodies: .always))
  }

  @Test("every conformance case over UCX_TLS=tcp", arguments: ConformanceCase.allCases)
  func tcp(testCase: ConformanceCase) async throws {
    try await testCase.run(using: ConformanceHarness(
      transport: Self.transport("tcp"), listenAddress: TransportAddress(scheme: "ucx", host: "127.0.0.1", port: 0)))
  }

  @Test("every conformance case over UCX_TLS=tcp,sm,self", arguments: ConformanceCase.allCases)
  func sharedMemory(testCase: ConformanceCase) async throws {
    try await testCase.run(using: ConformanceHarness(
      transport: Self.transport("tcp,sm,self"), listenAddress: TransportAddress(scheme: "ucx", host: "127.0.0.1", port: 0)))
  }
}
#endif  // UCX
