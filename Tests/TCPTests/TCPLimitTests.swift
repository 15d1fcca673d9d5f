import ArrowIPC
import DissociatedIPC
import DissociatedIPCTCP
import Foundation
import TestSupport
import Testing

/// Memory, threads and connections a tcp:// peer can make a server hold
/// are bounded (Spec/limits.md).
@Suite("tcp:// limits", .serialized)
struct TCPLimitTests {
  static func registry(_ config: TCPTransport.Config) -> TransportRegistry {
    var registry = TransportRegistry()
    registry.register(TCPTransport(config: config))
    return registry
  }

  /// Runs a server of a 4-batch stream `s` over tcp:// with `config` for
  /// `body`, then shuts it down.
  static func withServer(_ config: TCPTransport.Config,
                         _ body: (DissociatedServer, TransportRegistry) async throws -> Void) async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 4, rows: 64)))
    let registry = Self.registry(config)
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    try await body(server, registry)
    await server.shutdown()
    await running.value
  }

  /// How many batches of `s` a client fetches.
  static func fetchBatches(_ server: DissociatedServer, _ registry: TransportRegistry) async throws -> Int {
    try await recordBatchCount(from: server.location(for: "s"), registry: registry)
  }

  @Test("a length just under the limit costs memory in proportion to the bytes that arrived, not the length (TCP-RECV-5)")
  func nearLimitLength() async throws {
    let limit = 16 << 30
    var config = TCPTransport.Config.defaults
    config.maxMessageSize = limit
    try await Self.withServer(config) { server, registry in
      let port = server.listener.address.port!
      let before = ResourceCensus.take()
      do {
        let peer = try #require(RawTCPPeer(port: port))
        #expect(peer.send(RawTCPPeer.hello + RawTCPPeer.taggedHeader(tag: 0x8000_0DEA_DBA0_BAB0, length: limit - 1)))
        #expect(peer.send([UInt8](repeating: 7, count: 1 << 20)))
        // The server's reader took every byte sent: its buffer for the
        // message exists now.
        #expect(await eventually { tcpQueues(local: port, remote: peer.localPort).map { $0 == (0, 0) } ?? false })
        #expect(await eventually { tcpQueues(local: peer.localPort, remote: port).map { $0.send == 0 } ?? false })
        let during = ResourceCensus.take()
        // Tests running in parallel grow the address space too (up to
        // 1.5 GiB seen); the announced length would add 16 GiB.
        #expect(during.virtualBytes - before.virtualBytes < 8 << 30,
                "address space grew by \(during.virtualBytes - before.virtualBytes) bytes for 1 MiB received")
      }
      // The peer is gone: the server serves on.
      #expect(try await Self.fetchBatches(server, registry) == 4)
    }
  }

  @Test("a payload that grows through several buffers arrives whole (TCP-RECV-5)")
  func growingPayload() async throws {
    var catalog = StreamCatalog()
    // One 24 MiB batch: received into 4, then 16, then 24 MiB.
    catalog.add("s", .messages(try int64Stream(batches: 1, rows: 3 << 20)))
    let registry = Self.registry(.defaults)
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    var rows = 0
    for try await case .recordBatch(let batch) in DissociatedClient(registry: registry).stream(from: server.location(for: "s")) {
      let values = try batch.column(0).values(as: Int64.self)
      #expect(values.enumerated().allSatisfy { $0.element == Int64($0.offset) })
      rows += batch.rowCount
    }
    #expect(rows == 3 << 20)
    await server.shutdown()
    await running.value
  }

  @Test("past maxConnections a connection is closed at once; a freed slot serves the next client (DIPC-LIM-7)")
  func maxConnections() async throws {
    var config = TCPTransport.Config.defaults
    config.maxConnections = 2
    try await Self.withServer(config) { server, registry in
      let port = server.listener.address.port!
      var holders = [try #require(RawTCPPeer(port: port)), try #require(RawTCPPeer(port: port))]
      // Both hold a slot once the server's reader greets them.
      for holder in holders { #expect(holder.send(RawTCPPeer.hello)) }
      let refused = try #require(RawTCPPeer(port: port))
      #expect(refused.closedByPeer(within: 5), "a third connection was kept (the initiation timeout, 10 s, would close it later)")
      holders.removeAll()
      // The slots come back as the two connections are freed.
      var batches = 0
      let deadline = ContinuousClock.now + .seconds(30)
      while batches == 0, ContinuousClock.now < deadline {
        do {
          batches = try await Self.fetchBatches(server, registry)
        } catch {
          try await Task.sleep(for: .milliseconds(20))
        }
      }
      #expect(batches == 4)
    }
  }

  @Test("a client that stops reading fails its stream after the stall timeout; a graceful shutdown ends within its grace period (DIPC-LIM-10, DIPC-TEAR-5)")
  func stalledClient() async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 64, rows: 32768)))  // 16 MiB
    var transportConfig = TCPTransport.Config.defaults
    transportConfig.writeQueueBytes = 1 << 20
    transportConfig.socketBufferSize = 64 << 10
    let registry = Self.registry(transportConfig)
    var config = DissociatedServer.Config.defaults
    config.stallTimeout = .milliseconds(500)
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry,
                                             config: config)
    let running = Task { await server.run() }
    let port = server.listener.address.port!
    let wantData = server.location(for: "s").wantData
    do {
      let peer = try #require(RawTCPPeer.requesting(port: port, wantData: wantData, ticket: "s"))
      #expect(await eventually { server.streamCounts.failed == 1 }, "the stalled stream still runs")
      #expect(peer.closedByPeer(within: 10), "the stalled client's connection stays open")
    }
    // The server serves on.
    #expect(try await Self.fetchBatches(server, registry) == 64)
    await server.shutdown()
    await running.value

    // Without a stall timeout, a stalled stream holds a graceful shutdown
    // only for its grace period.
    config.stallTimeout = nil
    let patient = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry,
                                              config: config)
    let patientRunning = Task { await patient.run() }
    let peer = try #require(RawTCPPeer.requesting(port: patient.listener.address.port!, wantData: wantData, ticket: "s"))
    #expect(await eventually { patient.streamCounts.active == 1 })
    await patient.shutdown(gracePeriod: .milliseconds(300))
    await patientRunning.value
    #expect(patient.streamCounts.active == 0)
    #expect(peer.closedByPeer(within: 10))
  }
}
