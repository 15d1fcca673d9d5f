// The toy backend (ToyTransport.swift) driven end to end by the public
// drivers, as a third-party backend would be: registered in a
// TransportRegistry, served by DissociatedServer, fetched by
// DissociatedClient.

import ArrowIPC
import DissociatedIPC
import DissociatedIPCConformance
import Testing

/// A stream built in memory: the schema, then `batches` record batches of an
/// int64 `id` and a utf8 `name` column, both with nulls.
struct ToyStream {
  var batches = 5
  var rows = 37

  func ids(_ batch: Int) -> [Int64?] {
    (0 ..< rows).map { $0 % 3 == 1 ? nil : Int64(batch) * 1_000_000 - Int64($0) * 7 }
  }

  func names(_ batch: Int) -> [String?] {
    (0 ..< rows).map { row in
      row % 4 == 2 ? nil : row % 9 == 0 ? "" : "b\(batch)/r\(row) " + String(repeating: "é", count: row % 5)
    }
  }

  func builder(_ batch: Int) -> RecordBatchBuilder {
    var builder = RecordBatchBuilder()
    builder.append("id", ids(batch))
    builder.append("name", strings: names(batch))
    return builder
  }

  var schema: Schema { builder(0).schema }

  func messages() throws -> [OutgoingMessage] {
    var messages = [try OutgoingMessage(Message(header: .schema(schema)))]
    for batch in 0 ..< batches {
      let (message, body) = builder(batch).finish()
      messages.append(try OutgoingMessage(message, body: body))
    }
    return messages
  }
}

/// What a client received, decoded back to Swift values.
struct Received: Equatable {
  var schema: Schema?
  var ids: [[Int64?]] = []
  var names: [[String?]] = []
}

/// Runs a toy server with `catalog` for the duration of `body`.
func withToyServer(
  _ catalog: StreamCatalog, _ body: (DissociatedServer, DissociatedClient) async throws -> Void
) async throws {
  var registry = TransportRegistry()
  registry.register(ToyTransport())
  let server = try await DissociatedServer(listeningAt: "toy://", catalog: catalog, registry: registry)
  let running = Task { await server.run() }
  do {
    try await body(server, DissociatedClient(registry: registry))
  } catch {
    await server.shutdown()
    throw error
  }
  await server.shutdown()
  await running.value
}

/// Fetches `location` and decodes every item.
func fetch(_ client: DissociatedClient, _ location: Location) async throws -> Received {
  var received = Received()
  for try await item in client.stream(from: location) {
    switch item {
    case .schema(let schema):
      #expect(received.schema == nil, "one schema, first")
      received.schema = schema
    case .recordBatch(let batch):
      #expect(received.schema != nil, "schema before batches")
      received.ids.append(Array(try batch.column(0).values(as: Int64.self)))
      let names = try batch.column(1).binaries()
      received.names.append(names.indices.map { names.string(at: $0) })
    case .dictionary:
      Issue.record("unexpected dictionary batch")
    }
  }
  return received
}

@Suite struct ToyBackendTests {
  @Test func streamsOverTheToyBackend() async throws {
    let source = ToyStream()
    var catalog = StreamCatalog()
    catalog.add("toy-stream", .messages(try source.messages()))
    try await withToyServer(catalog) { server, client in
      let location = server.location(for: "toy-stream")
      #expect(location.scheme == "toy")
      #expect(location.freeData == nil, "no remote memory, so no free_data tag")
      let expected = Received(schema: source.schema,
                              ids: (0 ..< source.batches).map(source.ids),
                              names: (0 ..< source.batches).map(source.names))
      // Fetch several times, some concurrently, so ordering races show up.
      for _ in 0 ..< 10 {
        #expect(try await fetch(client, location) == expected)
      }
      try await withThrowingTaskGroup(of: Received.self) { group in
        for _ in 0 ..< 8 { group.addTask { try await fetch(client, location) } }
        for try await received in group { #expect(received == expected) }
      }
      #expect(server.streamCounts.served == 18)
      #expect(server.streamCounts.failed == 0)
    }
  }

  @Test func emptyStreamIsJustTheSchema() async throws {
    let source = ToyStream(batches: 0)
    var catalog = StreamCatalog()
    catalog.add("empty", .messages(try source.messages()))
    try await withToyServer(catalog) { server, client in
      let received = try await fetch(client, server.location(for: "empty"))
      #expect(received == Received(schema: source.schema))
    }
  }

  @Test func unknownTicketIsAPeerError() async throws {
    var catalog = StreamCatalog()
    catalog.add("known", .messages(try ToyStream().messages()))
    try await withToyServer(catalog) { server, client in
      for _ in 0 ..< 10 {
        var caught: DissociatedIPCError?
        do throws(DissociatedIPCError) {
          for try await _ in client.stream(from: server.location(for: "nope")) {
            Issue.record("an item arrived for an unknown ticket")
          }
        } catch {
          caught = error
        }
        let error = try #require(caught)
        #expect(error.code == .peerError)
        #expect(error.detail == "server reported unknownTicket: no stream for ticket 'nope'")
      }
      // The server keeps serving everyone else.
      #expect(try await fetch(client, server.location(for: "known")).ids.count == ToyStream().batches)
    }
  }

  @Test func connectingToAnUnknownNameIsRefused() async throws {
    var registry = TransportRegistry()
    registry.register(ToyTransport())
    let client = DissociatedClient(registry: registry)
    var caught: DissociatedIPCError?
    do throws(DissociatedIPCError) {
      for try await _ in client.stream(from: try Location(parsing: "toy://nobody?want_data=1&ticket=x")) {}
    } catch {
      caught = error
    }
    #expect(caught?.code == .connectionRefused)
  }

  @Test func transportsDoNotShareNames() async throws {
    let one = ToyTransport(), other = ToyTransport()
    let listener = try await one.listen(at: TransportAddress(scheme: "toy", host: "shared"))
    let location = Location(scheme: "toy", host: "shared", wantData: 1)
    await #expect(throws: DissociatedIPCError(.connectionRefused, "nothing listens at toy://shared")) {
      _ = try await other.connect(to: location)
    }
    let connection = try await one.connect(to: location)
    await connection.close()
    await listener.close()
  }

  /// What the conformance suite does not reach: a cancelled receive is
  /// withdrawn (the next message is not lost to it) and a broken link
  /// throws `.connectionClosed` on both ends.
  @Test func cancellationAndBrokenLinks() async throws {
    let transport = ToyTransport()
    let listener = try await transport.listen(at: TransportAddress(scheme: "toy"))
    let client = try await transport.connect(to: Location(scheme: "toy", host: listener.address.host, wantData: 1))
    let server = try #require(try await listener.accept())
    let pending = Task { try await client.receiveTagged(matching: 5, mask: .max) }
    try await Task.sleep(for: .milliseconds(20))
    pending.cancel()
    await #expect(throws: DissociatedIPCError(.cancelled, "receive cancelled")) { try await pending.value }
    try await server.sendTagged(5, [ArrowBytes(copying: [42])])
    let message = try await client.receiveTagged(matching: 5, mask: .max)
    #expect(message?.payload.array == [42])

    let waiting = Task { try await server.receiveFrame() }
    try await Task.sleep(for: .milliseconds(20))
    try #require(client as? ToyConnection).sever("cable cut")
    let broken = DissociatedIPCError(.connectionClosed, "cable cut")
    await #expect(throws: broken) { try await waiting.value }
    await #expect(throws: broken) { try await client.receiveTagged(matching: 0, mask: 0) }
    await #expect(throws: DissociatedIPCError.self) { try await server.sendFrame([ArrowBytes()]) }
    await client.close()
    await server.close()
    await listener.close()
    #expect(try await listener.accept() == nil)
  }

  /// Every case of the shared conformance suite, each on a fresh toy
  /// transport (its own namespace).
  @Test(arguments: ConformanceCase.allCases)
  func conformance(_ testCase: ConformanceCase) async throws {
    let harness = ConformanceHarness(transport: ToyTransport(), listenAddress: TransportAddress(scheme: "toy"))
    try await testCase.run(using: harness)
  }
}
