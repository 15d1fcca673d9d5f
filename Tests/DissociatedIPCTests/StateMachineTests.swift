import ArrowIPC
import Testing
@testable import DissociatedIPC

@Suite("Server stream state machine")
struct ServerStreamTests {
  static let messages = try! StreamFixtures.messages(batches: 3)

  @Test("sequence numbers start at 0 and the end of stream carries the message count (DIPC-SEQ-1, DIPC-META-3)")
  func sequenceNumbers() throws {
    var memory = FakeRemoteMemory()
    let events = try serve(Self.messages, memory: &memory)
    let frames = events.compactMap { event -> MetadataFrame? in
      if case .metadata(let bytes) = event { return try? MetadataFrame.decode(ArrowBytes(copying: bytes)) }
      return nil
    }
    #expect(frames.count == Self.messages.count + 1)
    for (index, frame) in frames.dropLast().enumerated() {
      guard case .message(let sequence, _) = frame else { Issue.record("frame \(index) is not a message"); continue }
      #expect(sequence == UInt32(index))
    }
    #expect(frames.last == .endOfStream(sequence: UInt32(Self.messages.count)))
    // Every dictionary and record batch has a body; the schema has none (DIPC-BODY-1).
    let bodyTags = events.compactMap { event -> UInt64? in if case .body(let tag, _) = event { return tag } else { return nil } }
    #expect(bodyTags == (1 ..< UInt64(Self.messages.count)).map { $0 })
  }

  @Test("roles: metadata-only sends frames, data-only sends bodies, with the same sequence numbers (DIPC-TOPO-2)")
  func roles() throws {
    var memory = FakeRemoteMemory()
    let metadata = try serve(Self.messages, role: .metadata, memory: &memory)
    let data = try serve(Self.messages, role: .data, memory: &memory)
    #expect(metadata.allSatisfy { if case .metadata = $0 { true } else { false } })
    #expect(data.allSatisfy { if case .body = $0 { true } else { false } })
    var client = ClientStreamStateMachine()
    let items = try receive(data + metadata, memory: memory, client: &client)
    #expect(try StreamFixtures.ids(items) == StreamFixtures.expectedIDs(batches: 3))
    #expect(client.isComplete)
  }

  @Test("rendezvous: bodies at or above the threshold go as descriptors only with remote memory (DIPC-BODY-7)")
  func rendezvous() throws {
    let big = try OutgoingMessage(Message(header: .recordBatch(RecordBatchHeader(length: 0, nodes: [], buffers: [])), bodyLength: 128),
                                  body: ArrowBytes(copying: [UInt8](repeating: 1, count: 128)))
    let small = try OutgoingMessage(Message(header: .recordBatch(RecordBatchHeader(length: 0, nodes: [], buffers: [])), bodyLength: 8),
                                    body: ArrowBytes(copying: [UInt8](repeating: 1, count: 8)))
    let empty = try OutgoingMessage(Message(header: .recordBatch(RecordBatchHeader(length: 0, nodes: [], buffers: []))))
    for remote in [false, true] {
      var server = ServerStreamStateMachine(role: .combined, remoteMemory: remote,
                                            config: ServerStreamConfig(rendezvousThreshold: 128, maxOutstandingBytes: 1 << 20))
      _ = try server.message(Self.messages[0])
      for (message, descriptor) in [(big, remote), (small, false), (empty, false)] {
        switch try server.message(message).body {
        case .expose?: #expect(descriptor, "remote \(remote), \(message.body.count) bytes")
        case .inline(let tag, let bytes)?:
          #expect(!descriptor && tag.bodyType == .inline && bytes.count == message.body.count)
        case nil: Issue.record("a batch without a body action")
        }
      }
    }
  }

  @Test("backpressure: outstanding descriptor bytes stop the source until free_data (DIPC-BP-1)")
  func backpressure() throws {
    var server = ServerStreamStateMachine(role: .combined, remoteMemory: true,
                                          config: ServerStreamConfig(rendezvousThreshold: 1, maxOutstandingBytes: 100))
    _ = try server.message(Self.messages[0])
    #expect(server.mayAcceptMessage)
    guard case .expose(let sequence, let bytes)? = try server.message(Self.messages[2]).body else {
      Issue.record("expected an exposed body")
      return
    }
    let (tag, descriptor) = try server.bodyExposed(sequence: sequence, region: 9, ranges: [
      RemoteRange(address: 0x100, length: UInt64(bytes.count - 8)), RemoteRange(address: 0x900, length: 8),
    ])
    #expect(sequence == 1 && tag == Tag(sequence: 1, bodyType: .descriptor) && descriptor.totalSize == UInt64(bytes.count))
    #expect(bytes.count >= 100 && !server.mayAcceptMessage && server.outstandingBytes == bytes.count)
    #expect(try server.freeData([0x100]).isEmpty, "half the region is still held")
    #expect(!server.mayAcceptMessage)
    #expect(try server.freeData([0x900]) == [9])
    #expect(server.mayAcceptMessage && server.outstandingBytes == 0)
  }

  @Test("free_data for addresses the client does not hold is a protocol error (DIPC-FREE-3)")
  func unknownFree() throws {
    var server = ServerStreamStateMachine(role: .combined, remoteMemory: true,
                                          config: ServerStreamConfig(rendezvousThreshold: 1, maxOutstandingBytes: 1 << 20))
    _ = try server.message(Self.messages[0])
    _ = try server.bodyExposed(sequence: 1, region: 1, ranges: [RemoteRange(address: 64, length: 8)])
    #expect(throws: DissociatedIPCError.self) { try server.freeData([65]) }
    _ = try server.freeData([64])
    #expect { try server.freeData([64]) } throws: { ($0 as? DissociatedIPCError)?.code == .unknownFreeAddress }
  }

  @Test("the stream finishes only when nothing is outstanding; a vanished client releases everything (DIPC-FREE-2, DIPC-FREE-4)")
  func draining() throws {
    var server = ServerStreamStateMachine(role: .combined, remoteMemory: true,
                                          config: ServerStreamConfig(rendezvousThreshold: 1, maxOutstandingBytes: 1 << 20))
    _ = try server.message(Self.messages[0])
    _ = try server.bodyExposed(sequence: 1, region: 5, ranges: [RemoteRange(address: 64, length: 8)])
    _ = try server.bodyExposed(sequence: 2, region: 6, ranges: [RemoteRange(address: 128, length: 8)])
    #expect(server.sourceFinished() == .endOfStream(sequence: 1))
    #expect(!server.isFinished)
    _ = try server.freeData([64])
    #expect(!server.isFinished)
    #expect(server.peerClosed() == [6])
    #expect(server.isFinished)
  }

  @Test("a source that does not start with the schema is the server's fault, never sent")
  func sourceOrder() throws {
    var server = ServerStreamStateMachine(role: .combined, remoteMemory: false)
    #expect { try server.message(Self.messages[2]) } throws: { ($0 as? DissociatedIPCError)?.code == .sourceFailed }
    var twice = ServerStreamStateMachine(role: .combined, remoteMemory: false)
    _ = try twice.message(Self.messages[0])
    #expect { try twice.message(Self.messages[0]) } throws: { ($0 as? DissociatedIPCError)?.code == .sourceFailed }
  }
}

@Suite("Client stream state machine")
struct ClientStreamTests {
  static let messages = try! StreamFixtures.messages(batches: 3)

  static func events(remote: Bool = false, firstSequence: UInt32 = 0) throws -> ([WireEvent], FakeRemoteMemory) {
    var memory = FakeRemoteMemory()
    let events = try serve(messages, memory: &memory, remoteMemory: remote, threshold: 1, firstSequence: firstSequence)
    return (events, memory)
  }

  @Test("in-order delivery of schema, dictionary and batches; zero-length bodies")
  func inOrder() throws {
    let (events, memory) = try Self.events()
    var client = ClientStreamStateMachine()
    let items = try receive(events, memory: memory, client: &client)
    guard case .schema(let schema)? = items.first else {
      Issue.record("the schema comes first")
      return
    }
    #expect(schema.fields.count == 3)
    guard case .dictionary(let dictionary, _) = items[1] else {
      Issue.record("then the dictionary")
      return
    }
    #expect(dictionary.id == 3)
    #expect(try StreamFixtures.ids(items) == StreamFixtures.expectedIDs(batches: 3))
    #expect(client.isComplete)
    try client.peerClosed()

    // An empty batch has a zero-length body message (DIPC-BODY-1).
    let empty = try OutgoingMessage(Message(header: .recordBatch(RecordBatchHeader(length: 0, nodes: [], buffers: []))))
    var memory2 = FakeRemoteMemory()
    var emptyClient = ClientStreamStateMachine()
    let emptySchema = try OutgoingMessage(Message(header: .schema(Schema(fields: []))))
    let wire = try serve([emptySchema, empty], memory: &memory2)
    #expect(wire.count == 4)
    #expect(try receive(wire, memory: memory2, client: &emptyClient).count == 2)
    #expect(emptyClient.isComplete)
  }

  /// The default window, and one that does not divide 2^32 (slots by
  /// `sequence % window` collided across the wrap).
  @Test("sequence numbers roll over at UInt32.max (DIPC-SEQ-2)", arguments: [1024, 7])
  func rollover(window: Int) throws {
    let first = UInt32.max - 2
    var memory = FakeRemoteMemory()
    let events = try serve(Self.messages, memory: &memory, firstSequence: first)
    var config = ClientStreamConfig.defaults
    config.reorderWindow = window
    var client = ClientStreamStateMachine(config: config, firstSequence: first)
    let items = try receive(events.reversed(), memory: memory, client: &client)
    #expect(try StreamFixtures.ids(items) == StreamFixtures.expectedIDs(batches: 3))
    #expect(client.isComplete)
  }

  @Test("type-1 bodies: fetched, then freed now (copied) or on release (mapped) (DIPC-BODY-3, DIPC-FREE-1)")
  func descriptors() throws {
    let (events, memory) = try Self.events(remote: true)
    var client = ClientStreamStateMachine()
    let items = try receive(events, memory: memory, client: &client)
    #expect(try StreamFixtures.ids(items) == StreamFixtures.expectedIDs(batches: 3))
    for case .recordBatch(_, let addresses) in items { #expect(addresses.count == 1) }

    var copying = ClientStreamStateMachine()
    try copying.metadataReceived(ArrowBytes(copying: MetadataFrame.message(sequence: 0, flatbuffer: Self.messages[0].metadata).encoded))
    guard case .body(let tag, let payload) = events.first(where: { if case .body = $0 { true } else { false } })! else { return }
    let descriptor = try #require(try copying.bodyReceived(tag: tag, payload: ArrowBytes(copying: payload)))
    let freeNow = try copying.bodyFetched(sequence: 1, bytes: memory.fetch(descriptor), release: false)
    #expect(freeNow == descriptor.ranges.map(\.address))
  }

  /// Each case: a sequence of raw events after a valid start, and the error.
  enum Step {
    case metadata([UInt8])
    case body(UInt64, [UInt8])
    case fetched(UInt32, [UInt8])
    case closed
  }

  static func frame(_ sequence: UInt32, _ index: Int) -> [UInt8] {
    MetadataFrame.message(sequence: sequence, flatbuffer: messages[index].metadata).encoded
  }

  static let batchBody = messages[2].body.array

  static let violations: [(String, [Step], DissociatedIPCError.Code)] = [
    ("reserved tag bits", [.body(1 << 40 | 2, batchBody)], .reservedTagBits),
    ("unknown metadata type", [.metadata([7, 1, 0, 0, 0, 0])], .unknownMetadataType),
    ("unknown body type", [.body(2 << 56 | 2, batchBody)], .unknownBodyType),
    ("duplicate metadata", [.metadata(frame(2, 2)), .metadata(frame(2, 2))], .duplicateSequence),
    ("duplicate body", [.body(2, batchBody), .body(2, batchBody)], .duplicateSequence),
    ("already delivered", [.metadata(frame(0, 0))], .duplicateSequence),
    ("body longer than bodyLength, body first", [.body(2, batchBody + [0, 0, 0, 0, 0, 0, 0, 0]), .metadata(frame(2, 2))], .bodyLengthMismatch),
    ("body shorter than bodyLength, metadata first", [.metadata(frame(2, 2)), .body(2, Array(batchBody.dropLast(8)))], .bodyLengthMismatch),
    ("descriptor size differs from bodyLength", [.metadata(frame(2, 2)),
      .body(1 << 56 | 2, try! BodyDescriptor(ranges: [RemoteRange(address: 8, length: 8)]).encoded)], .bodyLengthMismatch),
    ("malformed descriptor", [.body(1 << 56 | 2, [1, 2, 3])], .malformedDescriptor),
    ("fetched size differs", [.body(1 << 56 | 2, try! BodyDescriptor(ranges: [RemoteRange(address: 8, length: 8)]).encoded),
      .fetched(2, [1, 2, 3])], .bodyLengthMismatch),
    ("fetch without descriptor", [.fetched(2, [1])], .unexpectedMessage),
    ("beyond the reorder window", [.metadata(frame(10, 2))], .reorderWindowExceeded),
    ("too many buffered bytes", [.body(3, [UInt8](repeating: 0, count: 4096)), .body(4, [UInt8](repeating: 0, count: 4096))], .reorderWindowExceeded),
    ("a body for the schema", [.body(0 | 4, batchBody), .metadata(frame(4, 0))], .unexpectedMessage),
    ("a message after the end of stream", [.metadata([0, 3, 0, 0, 0]), .metadata(frame(3, 2))], .unexpectedMessage),
    ("a second end of stream", [.metadata([0, 5, 0, 0, 0]), .metadata([0, 5, 0, 0, 0])], .duplicateSequence),
    ("close with gaps after the end of stream", [.metadata([0, 5, 0, 0, 0]), .closed], .streamTruncated),
    ("close before the end of stream", [.closed], .streamTruncated),
    ("an error frame from the server", [.metadata(MetadataFrame.error(.unknownTicket, "x").encoded)], .peerError),
    ("a second schema", [.metadata(frame(2, 0)), .body(2, [])], .invalidArrow),
    ("garbage metadata", [.metadata([1, 2, 0, 0, 0, 9, 9, 9, 9, 9, 9, 9, 9])], .invalidArrow),
  ]

  @Test("every peer violation is a typed error, and the stream stays failed", arguments: violations)
  func violation(name: String, steps: [Step], code: DissociatedIPCError.Code) throws {
    var client = ClientStreamStateMachine(config: ClientStreamConfig(
      reorderWindow: 8, maxBufferedBytes: 6000, maxDescriptorRanges: 16, arrowLimits: .defaults))
    // A valid start: schema (0) and dictionary (1) delivered.
    try client.metadataReceived(ArrowBytes(copying: Self.frame(0, 0)))
    try client.metadataReceived(ArrowBytes(copying: Self.frame(1, 1)))
    _ = try client.bodyReceived(tag: 1, payload: Self.messages[1].body)
    while try client.nextItem() != nil {}
    var thrown: DissociatedIPCError?
    do throws(DissociatedIPCError) {
      for step in steps {
        switch step {
        case .metadata(let bytes): try client.metadataReceived(ArrowBytes(copying: bytes))
        case .body(let tag, let bytes): _ = try client.bodyReceived(tag: tag, payload: ArrowBytes(copying: bytes))
        case .fetched(let sequence, let bytes): _ = try client.bodyFetched(sequence: sequence, bytes: ArrowBytes(copying: bytes), release: true)
        case .closed: try client.peerClosed()
        }
        while try client.nextItem() != nil {}
      }
    } catch {
      thrown = error
    }
    #expect(thrown?.code == code, "\(name): \(String(describing: thrown))")
    // Failed for good: the next event reports the same error.
    let failure = try #require(thrown)
    #expect(throws: failure) { try client.metadataReceived(ArrowBytes(copying: Self.frame(2, 2))) }
  }

  @Test("property: any interleaving of the same messages delivers the same batches in stream order",
        arguments: [false, true])
  func anyInterleaving(remote: Bool) throws {
    let messages = try StreamFixtures.messages(batches: 12)
    var memory = FakeRemoteMemory()
    let events = try serve(messages, memory: &memory, remoteMemory: remote, threshold: 1)
    var random = SystemRandomNumberGenerator()
    for round in 0 ..< 300 {
      var shuffled = events
      // Every few rounds, only local swaps (small reorderings); otherwise any order.
      if round % 3 == 0 {
        for index in shuffled.indices.dropLast() where Bool.random(using: &random) { shuffled.swapAt(index, index + 1) }
      } else {
        shuffled.shuffle(using: &random)
      }
      var client = ClientStreamStateMachine()
      let items = try receive(shuffled, memory: memory, client: &client)
      #expect(items.count == messages.count)
      #expect(try StreamFixtures.ids(items) == StreamFixtures.expectedIDs(batches: 12))
      #expect(client.isComplete)
    }
  }
}
