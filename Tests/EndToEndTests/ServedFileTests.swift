import ArrowIPC
import DissociatedIPCTransports
import Foundation
import TestSupport
import Testing

/// Files served by a running server may change under it (DIPC-FILE-1): a
/// truncated or rewritten file fails its stream with a typed error, and
/// the server serves on.
@Suite("Served files changed under a running server", .serialized)
struct ServedFileTests {
  /// Backends with small buffers, so a server is at most a few MiB ahead
  /// of a client that pauses.
  static var smallBuffers: TransportRegistry {
    var registry = TransportRegistry()
    registry.register(TCPTransport(config: .init(maxMessageSize: 1 << 30, readAheadBytes: 2 << 20,
                                                  writeQueueBytes: 1 << 20, socketBufferSize: 256 << 10)))
    var shm = SharedMemoryTransport.Config.defaults
    shm.maxSharedBytes = 16 << 20
    shm.readAheadBytes = 2 << 20
    registry.register(SharedMemoryTransport(config: shm))
    return registry
  }

  @Test("a file truncated while it is served fails that stream with a typed error; the server serves on",
        arguments: ["tcp://127.0.0.1:0", "shm://"])
  func truncatedWhileServed(listen: String) async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-truncate-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("big.arrows").path
    // 64 batches of 1 MiB.
    try writeInt64Stream(to: path, batches: 64, rows: 1 << 17)
    var catalog = StreamCatalog()
    catalog.add("big", .file(path: path))
    catalog.add("small", .messages(try int64Stream(batches: 3, rows: 16)))
    var config = DissociatedServer.Config.defaults
    config.stream.maxOutstandingBytes = 4 << 20
    let registry = Self.smallBuffers
    let server = try await DissociatedServer(listeningAt: listen, catalog: catalog, registry: registry, config: config)
    let running = Task { await server.run() }

    var received = 0
    let failure: DissociatedIPCError? = await {
      do {
        var iterator = DissociatedClient(registry: registry).stream(from: server.location(for: "big")).makeAsyncIterator()
        while let item = try await iterator.next() {
          guard case .recordBatch(let batch) = item else { continue }
          // Every value that arrives is the file's, from before or after.
          #expect(try batch.column(0).values(as: Int64.self).first == Int64(received << 17))
          received += 1
          if received == 2 { #expect(truncate(path, 4096) == 0) }
        }
        return nil
      } catch let error as DissociatedIPCError {
        return error
      } catch {
        Issue.record("not a DissociatedIPCError: \(error)")
        return nil
      }
    }()
    let error = try #require(failure, "all \(received) batches arrived from a file truncated to 4 KiB")
    // The server's own account (its sourceFailed error frame), also over
    // shm://, where a body the failed stream's server took back fails
    // first (DIPC-ERR-4).
    #expect(error.code == .peerError && error.detail.contains("sourceFailed"), "\(error)")
    #expect(received < 64)
    // The server is alive and serves the next client.
    #expect(try await recordBatchCount(from: server.location(for: "small"), registry: registry) == 3)
    await server.shutdown()
    await running.value
  }

  @Test("FIFOs and other non-regular files are refused at once, never read")
  func nonRegularFiles() throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-fifo-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let fifo = folder.appendingPathComponent("pipe.arrows").path
    #expect(mkfifo(fifo, 0o600) == 0)
    for path in [fifo, folder.path, "/dev/zero"] {
      #expect(throws: ArrowIPCError.self) { _ = try IPCFileReader(path: path) }
      #expect(throws: ArrowIPCError.self) { _ = try ArrowBytes(mappingFileAt: path) }
    }
  }
}
