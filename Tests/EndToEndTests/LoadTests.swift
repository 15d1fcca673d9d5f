import ArrowIPC
import DissociatedIPC
import DissociatedIPCTransports
import Foundation
import Synchronization
import TestSupport
import Testing

/// Many clients at once: every one gets its whole stream, and the
/// server's shared memory stays within its budget (SHM-RING-8). The
/// larger run, with timings and ucx:// too, is `scripts/load.sh`.
@Suite("Many clients at once", .serialized)
struct LoadTests {
  static let clients = 16
  static let batches = 16
  static let rows = 1 << 17  // 1 MiB of int64 per batch

  /// shm:// with 1 MiB first segments and a 24 MiB budget for all its connections.
  static let budget = SharedMemoryBudget(maxBytes: 24 << 20)

  static var registry: TransportRegistry {
    var registry = TransportRegistry()
    registry.register(TCPTransport())
    var shm = SharedMemoryTransport.Config.defaults
    shm.segmentSize = 1 << 20
    shm.sharedBudget = budget
    registry.register(SharedMemoryTransport(config: shm))
    return registry
  }

  @Test("16 clients at once each get every batch, in order; shm:// segments stay within the shared budget",
        // ucx:// runs in scripts/load.sh only: 32 UCX workers made at once
        // in this process (16 clients, 16 server connections) hit UCX 1.13's
        // async-handler bug (UCX-LIM-4), which aborts the whole test process.
        arguments: ["tcp://127.0.0.1:0", "shm://"])
  func concurrentClients(listen: String) async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: Self.batches, rows: Self.rows)))
    let registry = Self.registry
    let server = try await DissociatedServer(listeningAt: listen, catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    let peak = Mutex(0)
    let sampler = Task {
      while !Task.isCancelled {
        let used = Self.budget.usedBytes
        peak.withLock { $0 = max($0, used) }
        try? await Task.sleep(for: .milliseconds(2))
      }
    }
    let location = server.location(for: "s")
    let received = try await withThrowingTaskGroup(of: Int.self) { group in
      for _ in 0 ..< Self.clients {
        group.addTask {
          var next: Int64 = 0
          for try await case .recordBatch(let batch) in DissociatedClient(registry: registry).stream(from: location) {
            // Every value in its place: batches whole and in order.
            let values = try batch.column(0).values(as: Int64.self)
            #expect(values.first == next && values.last == next + Int64(batch.rowCount) - 1)
            next += Int64(batch.rowCount)
          }
          return Int(next)
        }
      }
      return try await group.reduce(into: [Int]()) { $0.append($1) }
    }
    sampler.cancel()
    #expect(received == Array(repeating: Self.batches * Self.rows, count: Self.clients))
    // Each connection with nothing in use may take one segment beyond the
    // budget (SHM-RING-8): here at most 1 MiB each on the server side, and
    // the clients' own (small) segments for free_data.
    if listen.hasPrefix("shm") {
      #expect(peak.withLock { $0 } <= Self.budget.maxBytes + 2 * Self.clients << 20, "peak \(peak.withLock { $0 }) bytes")
      #expect(peak.withLock { $0 } > 0)
    }
    await server.shutdown()
    await running.value
  }
}
