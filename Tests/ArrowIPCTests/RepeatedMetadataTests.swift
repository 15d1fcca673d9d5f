import Testing
@testable import ArrowIPC

/// Streams of batches of one shape repeat their metadata; the decoder and
/// the stream validator reuse earlier work then, and must never let that
/// change a result.
@Suite("Repeated metadata")
struct RepeatedMetadataTests {
  /// A record batch of one int64 column of `rows` rows, `bufferLength`
  /// bytes of values, in a body of `bodyLength` bytes.
  static func batch(rows: Int64, bufferLength: Int64? = nil, bodyLength: Int64? = nil) -> Message {
    let values = bufferLength ?? rows * 8
    let header = RecordBatchHeader(length: rows, nodes: [FieldNode(length: rows, nullCount: 0)],
                                   buffers: [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: values)])
    return Message(header: .recordBatch(header), bodyLength: bodyLength ?? (values + 7) / 8 * 8)
  }

  /// Owns a copy of some bytes; a weak reference tells when it is gone.
  // @unchecked: the memory is written once, in init, and only read after.
  final class CountedOwner: ArrowBytesOwner, @unchecked Sendable {
    let storage: UnsafeMutableRawPointer
    init(_ bytes: [UInt8]) {
      storage = .allocate(byteCount: bytes.count, alignment: 8)
      storage.copyMemory(from: bytes, byteCount: bytes.count)
    }
    deinit { storage.deallocate() }
  }

  @Test("repeated bytes decode to the same message; changed bytes are decoded afresh")
  func decoderFollowsTheBytes() throws {
    var decoder = RepeatedMessageDecoder()
    let two = try Self.batch(rows: 2).encode()
    let three = try Self.batch(rows: 3).encode()
    #expect(two.count == three.count)
    for bytes in [two, two, three, three, two] {
      #expect(try decoder.decode(ArrowBytes(copying: bytes)) == Message.decode(ArrowBytes(copying: bytes)))
    }
    // The same bytes as a slice at another address: still equal.
    let shifted = try ArrowBytes(copying: [1, 2, 3] + two).slice(offset: 3, count: two.count)
    #expect(try decoder.decode(shifted) == Self.batch(rows: 2))
  }

  @Test("invalid metadata after a remembered batch is still refused")
  func invalidAfterRemembered() throws {
    var decoder = RepeatedMessageDecoder()
    var bytes = try Self.batch(rows: 2).encode()
    _ = try decoder.decode(ArrowBytes(copying: bytes))
    bytes[0] = 0xFF  // the root offset now points past the end
    #expect(throws: ArrowIPCError.self) { try decoder.decode(ArrowBytes(copying: bytes)) }
    #expect(throws: ArrowIPCError.self) { try decoder.decode(ArrowBytes(copying: Array(bytes.prefix(6)))) }
  }

  @Test("limits apply to remembered and large metadata alike")
  func limits() throws {
    var limits = ArrowIPCLimits.defaults
    let bytes = try Self.batch(rows: 2).encode()
    limits.maxMetadataSize = bytes.count - 1
    var decoder = RepeatedMessageDecoder(limits: limits)
    #expect { try decoder.decode(ArrowBytes(copying: bytes)) } throws: { ($0 as? ArrowIPCError)?.code == .limitExceeded }
    let many = Schema(fields: (0 ..< 200).map { Field("column \($0)", .int(bitWidth: 64, signed: true)) })
    let large = try Message(header: .schema(many)).encode()
    #expect(large.count > RepeatedMessageDecoder.maxRememberedBytes)
    var unlimited = RepeatedMessageDecoder()
    #expect(try unlimited.decode(ArrowBytes(copying: large)) == Message(header: .schema(many)))
  }

  @Test("a remembered message keeps none of the caller's buffers alive")
  func keepsNoCallerBuffer() throws {
    var decoder = RepeatedMessageDecoder()
    let bytes = try Self.batch(rows: 2).encode()
    weak var released: CountedOwner?
    var message: Message?
    do {
      let owner = CountedOwner(bytes)
      released = owner
      message = try decoder.decode(ArrowBytes(unsafeBase: owner.storage, count: bytes.count, owner: owner))
    }
    #expect(released == nil)
    #expect(message == Self.batch(rows: 2))
    #expect(try decoder.decode(ArrowBytes(copying: bytes)) == message)
  }

  @Test("record-batch headers compare equal by content, at the same or another address")
  func flatStructsEquality() throws {
    let bytes = try Self.batch(rows: 2).encode()
    let first = try Message.decode(ArrowBytes(copying: bytes)).header.bodyDescription!
    let second = try Message.decode(ArrowBytes(copying: bytes)).header.bodyDescription!
    #expect(first.buffers == first.buffers)
    #expect(first.buffers == second.buffers)
    #expect(first.buffers == FlatStructs([BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: 16)]))
    #expect(first.buffers != FlatStructs([BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: 24)]))
    #expect(first.buffers != FlatStructs([BodyBuffer(offset: 0, length: 0)]))
  }

  @Test("a batch that repeats an earlier shape is still checked against its own body")
  func validatorChecksEveryBatch() throws {
    var validator = ArrowStreamValidator()
    let schema = Schema(fields: [Field("v", .int(bitWidth: 64, signed: true))])
    _ = try validator.accept(Message(header: .schema(schema)), body: ArrowBytes())
    let body = ArrowBytes(copying: (0 ..< 16).map { UInt8($0) })
    for _ in 0 ..< 2 {
      guard case .recordBatch(let batch) = try validator.accept(Self.batch(rows: 2), body: body) else {
        Issue.record("expected a record batch")
        return
      }
      #expect(batch.rowCount == 2)
      #expect(try Array(batch.column(0).values(as: Int64.self)) == [0x0706_0504_0302_0100, 0x0F0E_0D0C_0B0A_0908])
    }
    // Same shape, body of the wrong size.
    #expect { try validator.accept(Self.batch(rows: 2), body: ArrowBytes(copying: [UInt8](repeating: 0, count: 8))) }
      throws: { ($0 as? ArrowIPCError)?.code == .layoutMismatch }
    // Values buffer too short for the rows, in a body of the same length:
    // its own layout, not the remembered one, so reading it is refused.
    guard case .recordBatch(let short) = try validator.accept(Self.batch(rows: 2, bufferLength: 8, bodyLength: 16),
                                                                body: body) else {
      Issue.record("expected a record batch")
      return
    }
    #expect { try short.column(0).values(as: Int64.self) } throws: { ($0 as? ArrowIPCError)?.code == .layoutMismatch }
    // A buffer past the end of the body.
    #expect { try validator.accept(Self.batch(rows: 2, bufferLength: 24, bodyLength: 16), body: body) }
      throws: { ($0 as? ArrowIPCError)?.code == .layoutMismatch }
    // And the earlier shape still goes through after the refusals.
    #expect(try validator.accept(Self.batch(rows: 2), body: body) != nil)
  }
}
