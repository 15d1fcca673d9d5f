import ArrowIPC
import DissociatedIPC
import DissociatedIPCTransports
import Foundation
import Logging
import Synchronization
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

  /// Every log record a handler kept: message and metadata.
  final class Records: Sendable {
    let list = Mutex<[(String, Logger.Metadata)]>([])
  }

  /// Keeps every log record, for tests that read what a server logged.
  struct CapturingLogHandler: LogHandler {
    let records: Records
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
      get { metadata[key] }
      set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
      let merged = metadata.merging(event.metadata ?? [:]) { $1 }
      records.list.withLock { $0.append(("\(event.message)", merged)) }
    }
  }

  @Test("as a stream ends, the server logs the shared memory its connection still holds for the client")
  func heldMemoryLogged() async throws {
    let records = Records()
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 4, rows: 1 << 17)))  // 1 MiB bodies: through segments
    var config = DissociatedServer.Config.defaults
    config.logger = Logger(label: "test") { _ in CapturingLogHandler(records: records) }
    let server = try await DissociatedServer(listeningAt: "shm://", catalog: catalog, registry: .builtIn, config: config)
    let running = Task { await server.run() }
    #expect(try await recordBatchCount(from: server.location(for: "s"), registry: .builtIn) == 4)
    #expect(await eventually { server.streamCounts.served == 1 })
    let served = records.list.withLock { $0.first { $0.0 == "stream served" } }
    let held = try #require(served?.1["held"], "no held memory in \(String(describing: served))")
    #expect("\(held)".contains("MiB of shared segments"), "\(held)")
    await server.shutdown()
    await running.value
  }
}
