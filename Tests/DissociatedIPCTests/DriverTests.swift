import ArrowIPC
import Foundation
import Testing
@testable import DissociatedIPC
@testable import DissociatedIPCBackendKit

/// The async server and client over the in-process transport.
@Suite("Drivers")
struct DriverTests {
  /// Starts a server for `catalog` on `transport`, runs `body`, shuts down.
  static func withServer<T>(
    _ catalog: StreamCatalog, transport: InProcessTransport = InProcessTransport(),
    config: DissociatedServer.Config = .defaults,
    _ body: (DissociatedServer, DissociatedClient) async throws -> T
  ) async throws -> T {
    var registry = TransportRegistry()
    registry.register(transport)
    let server = try await DissociatedServer(listeningAt: "inproc://", catalog: catalog, registry: registry, config: config)
    let running = Task { await server.run() }
    defer { running.cancel() }
    let result = try await body(server, DissociatedClient(registry: registry))
    await server.shutdown()
    return result
  }

  @Test("tickets: a long one is refused before it is looked at; peer text reaches errors escaped and cut (DIPC-LIM-9)")
  func hostileTickets() async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try StreamFixtures.messages(batches: 1, rows: 4)))
    var config = DissociatedServer.Config.defaults
    config.maxTicketBytes = 1024
    try await Self.withServer(catalog, config: config) { server, client in
      func failure(_ ticket: [UInt8]) async -> DissociatedIPCError? {
        do {
          for try await _ in client.stream(from: server.location(for: "s"), ticket: ticket) {}
          return nil
        } catch {
          return error
        }
      }
      let long = try #require(await failure([UInt8](repeating: 0x41, count: 1025)))
      #expect(long.code == .peerError && long.detail.contains("limitExceeded"), "\(long)")
      #expect(!long.detail.contains("AAAA"), "the long ticket was echoed: \(long)")
      // Terminal escapes, a newline and 900 more bytes.
      let hostile = Array("\u{1B}]0;owned\u{07}\u{1B}[2J\nx".utf8) + [UInt8](repeating: 0x42, count: 900)
      let unknown = try #require(await failure(hostile))
      #expect(unknown.code == .peerError && unknown.detail.contains("unknownTicket"), "\(unknown)")
      #expect(!unknown.detail.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }), "control bytes in \(unknown.detail)")
      #expect(unknown.detail.contains(#"'\x1b]0;owned\x07\x1b[2J\x0axBBB"#), "\(unknown.detail)")
      #expect(unknown.detail.utf8.count < 300, "\(unknown.detail.utf8.count) bytes of detail")
      // A want_data the server never published: refused in words.
      var wrong = server.location(for: "s")
      wrong.wantData ^= 0x5A5A
      do {
        for try await _ in client.stream(from: wrong) {}
        Issue.record("a wrong want_data was served")
      } catch let error as DissociatedIPCError {
        #expect(error.code == .peerError && error.detail.contains("unexpectedMessage"), "\(error)")
      }
      // The server serves on.
      var batches = 0
      for try await case .recordBatch in client.stream(from: server.location(for: "s")) { batches += 1 }
      #expect(batches == 1)
    }
  }

  @Test("capabilities: only a published location fetches its own stream; fixed or borrowed want_data values are accessDenied (DIPC-ACCESS-1)")
  func capabilities() async throws {
    var catalog = StreamCatalog()
    catalog.add("a", .messages(try StreamFixtures.messages(batches: 2, rows: 4)))
    catalog.add("b", .messages(try StreamFixtures.messages(batches: 3, rows: 4)))
    var config = DissociatedServer.Config.defaults
    config.access = .capabilities
    try await Self.withServer(catalog, config: config) { server, client in
      func outcome(_ location: Location, ticket: [UInt8]? = nil) async -> Result<Int, DissociatedIPCError> {
        do {
          var batches = 0
          for try await case .recordBatch in client.stream(from: location, ticket: ticket) { batches += 1 }
          return .success(batches)
        } catch {
          return .failure(error)
        }
      }
      func denied(_ result: Result<Int, DissociatedIPCError>) -> Bool {
        guard case .failure(let error) = result else { return false }
        return error.code == .peerError && error.detail.contains("accessDenied")
      }
      let a = server.location(for: "a")
      #expect(try await outcome(a).get() == 2)
      // Split topology: each role has a value of its own.
      let metadata = server.location(for: "b", role: .metadata)
      let data = server.location(for: "b", role: .data)
      #expect(Set([metadata.wantData, data.wantData, server.location(for: "b").wantData]).count == 3)
      var batches = 0
      for try await case .recordBatch in client.stream(from: metadata, dataLocation: data) { batches += 1 }
      #expect(batches == 3)
      // The fixed values of an open server are refused.
      var fixed = a
      fixed.wantData = ControlTag.combined
      #expect(denied(await outcome(fixed)))
      // a's value does not fetch b.
      #expect(denied(await outcome(a, ticket: Array("b".utf8))))
      // A ticket the catalog lacks gets a location nobody accepts.
      #expect(denied(await outcome(server.location(for: "nope"))))
      #expect(server.location(for: "a").wantData == a.wantData, "a location is stable for the server's life")
    }
    // Another server draws other values.
    try await Self.withServer(catalog, config: config) { other, _ in
      #expect(other.location(for: "a").wantData != ControlTag.combined)
    }
  }

  @Test("peer text is escaped and cut: printable ASCII stays, the rest is \\xNN (DIPC-LIM-9)")
  func peerTextEscaping() {
    #expect(PeerText.escaped(Array("plain ticket-1".utf8)) == "plain ticket-1")
    #expect(PeerText.escaped([0x1B, 0x5B, 0x0A, 0x5C, 0xFF, 0x00]) == #"\x1b[\x0a\\xff\x00"#)
    let once = PeerText.escaped([0x1B, 0x0A, 0xC3, 0xA9] + [UInt8](repeating: 0x61, count: 100))
    #expect(PeerText.escaped(Array(once.utf8), limit: 1000) == once, "escaping escaped text changes nothing")
    #expect(PeerText.escaped(Array("é".utf8)) == "\\xc3\\xa9")
    #expect(PeerText.escaped([UInt8](repeating: 0x61, count: 100), limit: 4) == "aaaa... (100 bytes)")
  }

  @Test("a slow consumer does not grow the server's exposed memory past the bound (DIPC-BP-1)")
  func slowConsumer() async throws {
    let messages = try StreamFixtures.messages(batches: 40, rows: 8192)
    let batchBody = messages[2].body.count
    let bound = 4 * batchBody
    var catalog = StreamCatalog()
    catalog.add("big", .messages(messages))
    let transport = InProcessTransport(network: InProcessTransport.Network())  // its own byte counters
    let config = DissociatedServer.Config(
      stream: ServerStreamConfig(rendezvousThreshold: 1024, maxOutstandingBytes: bound),
      initiationTimeout: .seconds(5), arrowLimits: .defaults)
    let ids = try await Self.withServer(catalog, transport: transport, config: config) { server, client in
      var held: [RecordBatch] = []
      var ids: [[Int64?]] = []
      for try await item in client.stream(from: server.location(for: "big")) {
        guard case .recordBatch(let batch) = item else { continue }
        ids.append(Array(try batch.column(0).values(as: Int64.self)))
        held.append(batch)
        if held.count > 2 { held.removeFirst() }  // the consumer keeps two batches at a time
        try await Task.sleep(for: .milliseconds(2))
      }
      return ids
    }
    #expect(ids == StreamFixtures.expectedIDs(batches: 40, rows: 8192))
    #expect(transport.network.peakExposedBytes > 0, "bodies should have gone as descriptors")
    #expect(transport.network.peakExposedBytes <= bound + batchBody,
            "peak \(transport.network.peakExposedBytes) bytes exposed, bound \(bound) + one body")
    // Every body was returned once the consumer let go.
    for _ in 0 ..< 200 where transport.network.exposedBytes > 0 { try await Task.sleep(for: .milliseconds(5)) }
    #expect(transport.network.exposedBytes == 0)
  }

  @Test("descriptor bodies are views of the server's memory, returned when released (DIPC-FREE-1)")
  func zeroCopyAndRelease() async throws {
    let messages = try StreamFixtures.messages(batches: 3, rows: 4096)
    var catalog = StreamCatalog()
    catalog.add("s", .messages(messages))
    let transport = InProcessTransport(network: InProcessTransport.Network())  // its own byte counters
    let config = DissociatedServer.Config(stream: ServerStreamConfig(rendezvousThreshold: 1, maxOutstandingBytes: 1 << 30),
                                          initiationTimeout: .seconds(5), arrowLimits: .defaults)
    try await Self.withServer(catalog, transport: transport, config: config) { server, client in
      var batches: [RecordBatch] = []
      for try await case .recordBatch(let batch) in client.stream(from: server.location(for: "s")) { batches.append(batch) }
      #expect(batches.count == 3)
      for (batch, source) in zip(batches, messages.suffix(3)) {
        #expect(batch.body.unsafeBaseAddress == source.body.unsafeBaseAddress, "the client should see the server's bytes")
      }
      #expect(transport.network.exposedBytes > 0, "held batches keep their bodies exposed")
      batches.removeAll()
      for _ in 0 ..< 200 where transport.network.exposedBytes > 0 { try await Task.sleep(for: .milliseconds(5)) }
      #expect(transport.network.exposedBytes == 0, "released batches are returned with free_data")
    }
  }

  @Test("a client that leaves while the producer is silent ends the stream at once")
  func clientLeavesDuringSilentProducer() async throws {
    let messages = try StreamFixtures.messages(batches: 1)
    var catalog = StreamCatalog()
    catalog.add("quiet", .producer({
      AsyncThrowingStream { continuation in
        continuation.yield(messages[0])  // the schema, then nothing for a minute
        let task = Task {
          try? await Task.sleep(for: .seconds(60))
          continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
      }
    }))
    try await Self.withServer(catalog) { server, client in
      do {
        var iterator = client.stream(from: server.location(for: "quiet")).makeAsyncIterator()
        guard case .schema? = try await iterator.next() else { throw DissociatedIPCError(.unexpectedMessage, "no schema") }
      }  // the iterator is dropped: the client closes its connection
      for _ in 0 ..< 100 where server.streamCounts.active > 0 { try await Task.sleep(for: .milliseconds(20)) }
      #expect(server.streamCounts.active == 0, "the stream still waits for its producer after the client left")
    }
  }

  @Test("a served stream file arrives byte for byte and is written out as an IPC stream")
  func fileSourceAndWriteOut() async throws {
    let messages = try StreamFixtures.messages(batches: 5)
    var writer = IPCStreamWriter(sink: [UInt8]())
    for message in messages {
      try writer.write(try Message.decode(message.metadata), body: message.body)
    }
    try writer.finish()
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-\(UUID()).arrows").path
    #expect(FileManager.default.createFile(atPath: path, contents: Data(writer.sink)))
    defer { try? FileManager.default.removeItem(atPath: path) }
    var catalog = StreamCatalog()
    catalog.add("file", .file(path: path))
    let copy = try await Self.withServer(catalog) { server, client in
      var output = IPCStreamWriter(sink: [UInt8]())
      let batches = try await client.stream(from: server.location(for: "file")).write(to: &output)
      #expect(batches == 5)
      return output.sink
    }
    var reader = try ArrowStreamReader(ArrowBytes(copying: copy))
    var ids: [[Int64?]] = []
    while let item = try reader.next() {
      if case .recordBatch(let batch) = item { ids.append(Array(try batch.column(0).values(as: Int64.self))) }
    }
    #expect(ids == StreamFixtures.expectedIDs(batches: 5))
  }

  @Test("1,000 tiny batches through reordering and delays arrive in order")
  func tinyBatchesWithFaults() async throws {
    var catalog = StreamCatalog()
    catalog.add("tiny", .messages(try StreamFixtures.messages(batches: 1000, rows: 2)))
    let transport = InProcessTransport(faults: .init(reorderJitter: .microseconds(200)))
    let ids = try await Self.withServer(catalog, transport: transport) { server, client in
      var ids: [[Int64?]] = []
      for try await case .recordBatch(let batch) in client.stream(from: server.location(for: "tiny")) {
        ids.append(Array(try batch.column(0).values(as: Int64.self)))
      }
      return ids
    }
    #expect(ids == StreamFixtures.expectedIDs(batches: 1000, rows: 2))
  }

  @Test("a connection dropped mid-stream is a typed error on the client, and the server keeps serving")
  func droppedConnection() async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try StreamFixtures.messages(batches: 50)))
    let network = InProcessTransport.Network()
    let dropping = InProcessTransport(network: network, faults: .init(dropAfterMessages: 20))
    try await Self.withServer(catalog, transport: InProcessTransport(network: network)) { server, _ in
      var registry = TransportRegistry()
      registry.register(dropping)
      let client = DissociatedClient(registry: registry)
      await #expect { for try await _ in client.stream(from: server.location(for: "s")) {} } throws: {
        ($0 as? DissociatedIPCError)?.code == .streamTruncated
      }
      var healthy = TransportRegistry()
      healthy.register(InProcessTransport(network: network))
      var count = 0
      for try await _ in DissociatedClient(registry: healthy).stream(from: server.location(for: "s")) { count += 1 }
      #expect(count == 52)
    }
  }

  @Test("protocol violations by a client: bad initiation, unknown free_data address")
  func clientViolations() async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try StreamFixtures.messages(batches: 2, rows: 4096)))
    let transport = InProcessTransport()
    let config = DissociatedServer.Config(stream: ServerStreamConfig(rendezvousThreshold: 1, maxOutstandingBytes: 1 << 30),
                                          initiationTimeout: .seconds(5), arrowLimits: .defaults)
    try await Self.withServer(catalog, transport: transport, config: config) { server, _ in
      let location = server.location(for: "s")
      // A first tagged message that is not a want_data: an error frame
      // saying so, then the server hangs up (DIPC-ERR-3).
      let stranger = try await transport.connect(to: location)
      try await stranger.sendTagged(0x1234, [ArrowBytes(copying: [1])])
      let refusal = try #require(try await stranger.receiveFrame())
      guard case .error(let code, _) = try MetadataFrame.decode(refusal) else {
        Issue.record("not an error frame: \(refusal)")
        return
      }
      #expect(code == .unexpectedMessage)
      #expect(try await stranger.receiveFrame() == nil)
      await stranger.close()

      // free_data for an address never handed out: an error frame, then close.
      let liar = try await transport.connect(to: location)
      try await liar.sendTagged(location.wantData, [ArrowBytes(copying: Array("s".utf8))])
      _ = try await liar.receiveFrame()  // the schema: the stream has started
      try await liar.sendTagged(ControlTag.freeData, [ArrowBytes(copying: FreeDataPayload.encode([0xDEAD]))])
      var last: MetadataFrame?
      while let frame = try await liar.receiveFrame() { last = try MetadataFrame.decode(frame) }
      guard case .error(let code, _)? = last else {
        Issue.record("expected an error frame, got \(String(describing: last))")
        return
      }
      #expect(code == .unknownFreeAddress)
      await liar.close()
      #expect(server.streamCounts.failed == 2)
    }
  }
}
