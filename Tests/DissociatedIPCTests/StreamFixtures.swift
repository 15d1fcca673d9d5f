import ArrowIPC
@testable import DissociatedIPC

/// Small streams for state-machine and driver tests.
enum StreamFixtures {
  /// Schema, a dictionary, then `batches` record batches of `rows` rows
  /// (int64 `id` with nulls, utf8 `label`, dictionary-encoded `tag`).
  static func messages(batches: Int, rows: Int = 4) throws -> [OutgoingMessage] {
    let dictionaryField = Field("tag", .utf8, dictionary: DictionaryEncoding(id: 3, indexBitWidth: 8))
    var result: [OutgoingMessage] = []
    var dictionary = RecordBatchBuilder(alignment: 8)
    dictionary.append("tag", strings: ["red", "green"])
    let (dictionaryBatch, dictionaryBody) = dictionary.finish()
    guard case .recordBatch(let dictionaryData) = dictionaryBatch.header else { fatalError() }
    for batch in 0 ..< batches {
      var builder = RecordBatchBuilder()
      builder.append("id", (0 ..< rows).map { $0 == 1 ? nil : Int64(batch * rows + $0) })
      builder.append("label", strings: (0 ..< rows).map { "b\(batch)r\($0)" })
      builder.append("tag", (0 ..< rows).map { Int8($0 % 2) as Int8? })
      if batch == 0 {
        var schema = builder.schema
        schema.fields[2] = dictionaryField
        result.append(try OutgoingMessage(Message(header: .schema(schema))))
        result.append(try OutgoingMessage(
          Message(header: .dictionaryBatch(DictionaryBatchHeader(id: 3, data: dictionaryData, isDelta: false)),
                  bodyLength: dictionaryBatch.bodyLength),
          body: dictionaryBody))
      }
      let (message, body) = builder.finish()
      result.append(try OutgoingMessage(message, body: body))
    }
    if batches == 0 {
      result.append(try OutgoingMessage(Message(header: .schema(Schema(fields: [dictionaryField])))))
    }
    return result
  }

  /// The `id` column of every record batch in `items`, for comparing streams.
  static func ids(_ items: [ClientItem]) throws -> [[Int64?]] {
    try items.compactMap { item in
      guard case .recordBatch(let batch, _) = item else { return nil }
      return Array(try batch.column(0).values(as: Int64.self))
    }
  }

  /// The ids a stream of `batches` × `rows` carries.
  static func expectedIDs(batches: Int, rows: Int = 4) -> [[Int64?]] {
    (0 ..< batches).map { batch in (0 ..< rows).map { $0 == 1 ? nil : Int64(batch * rows + $0) } }
  }
}

/// What a server puts on the wire, as the client sees it.
enum WireEvent: Sendable {
  case metadata([UInt8])
  case body(tag: UInt64, payload: [UInt8])
}

/// A fake remote memory for state-machine tests: exposing a body stores it
/// at a made-up address; fetching reads it back.
struct FakeRemoteMemory {
  var regions: [UInt64: ArrowBytes] = [:]
  var nextAddress: UInt64 = 0x10_0000

  mutating func expose(_ bytes: ArrowBytes) -> (region: UInt64, ranges: [RemoteRange]) {
    let address = nextAddress
    nextAddress += UInt64(bytes.count + 4096)
    regions[address] = bytes
    return (address, [RemoteRange(address: address, length: UInt64(bytes.count))])
  }

  func fetch(_ descriptor: BodyDescriptor) -> ArrowBytes {
    ArrowBytes(copying: descriptor.ranges.flatMap { range in
      regions[range.address]!.array.prefix(Int(range.length))
    })
  }
}

/// Runs a server state machine over `messages` and records the wire events.
func serve(_ messages: [OutgoingMessage], role: StreamRole = .combined, memory: inout FakeRemoteMemory,
           remoteMemory: Bool = false, threshold: Int = 64, firstSequence: UInt32 = 0) throws -> [WireEvent] {
  var server = ServerStreamStateMachine(
    role: role, remoteMemory: remoteMemory,
    config: ServerStreamConfig(rendezvousThreshold: threshold, maxOutstandingBytes: .max), firstSequence: firstSequence)
  var events: [WireEvent] = []
  for message in messages {
    let send = try server.message(message)
    if let frame = send.metadata { events.append(.metadata(frame.encoded)) }
    switch send.body {
    case .inline(let tag, let bytes)?: events.append(.body(tag: tag.rawValue, payload: bytes.array))
    case .expose(let sequence, let bytes)?:
      let (region, ranges) = memory.expose(bytes)
      let (tag, descriptor) = try server.bodyExposed(sequence: sequence, region: region, ranges: ranges)
      events.append(.body(tag: tag.rawValue, payload: descriptor.encoded))
    case nil: break
    }
  }
  if let end = server.sourceFinished() { events.append(.metadata(end.encoded)) }
  return events
}

/// Feeds `events` to a client state machine, fetching type-1 bodies from
/// `memory`, and returns what it delivered in order.
func receive(_ events: [WireEvent], memory: FakeRemoteMemory, client: inout ClientStreamStateMachine) throws -> [ClientItem] {
  var items: [ClientItem] = []
  for event in events {
    switch event {
    case .metadata(let bytes): try client.metadataReceived(ArrowBytes(copying: bytes))
    case .body(let tag, let payload):
      if let descriptor = try client.bodyReceived(tag: tag, payload: ArrowBytes(copying: payload)) {
        _ = try client.bodyFetched(sequence: Tag(rawValue: tag).sequence, bytes: memory.fetch(descriptor), release: true)
      }
    }
    while let item = try client.nextItem() { items.append(item) }
  }
  return items
}
