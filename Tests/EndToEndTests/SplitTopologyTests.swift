import ArrowIPC
import DissociatedIPC
import DissociatedIPCTransports
import Foundation
import TestSupport
import Testing

/// The two-connection topology ends cleanly on both connections.
@Suite("Split topology", .serialized)
struct SplitTopologyTests {
  @Test("a complete fetch over metadata and data connections counts as served on both, never as a client that left mid-stream",
        arguments: ["shm://", "tcp://127.0.0.1:0"])
  func bothConnectionsServed(listen: String) async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 4, rows: 1 << 15)))
    let server = try await DissociatedServer(listeningAt: listen, catalog: catalog, registry: .builtIn)
    let running = Task { await server.run() }
    let client = DissociatedClient(registry: .builtIn)
    let rounds = 100
    for _ in 0 ..< rounds {
      var batches = 0
      for try await case .recordBatch in client.stream(from: server.location(for: "s", role: .metadata),
                                                       dataLocation: server.location(for: "s", role: .data)) {
        batches += 1
      }
      #expect(batches == 4)
    }
    #expect(await eventually { server.streamCounts.active == 0 })
    let counts = server.streamCounts
    #expect(counts.failed == 0 && counts.served == 2 * rounds, "\(counts)")
    await server.shutdown()
    await running.value
  }
}
