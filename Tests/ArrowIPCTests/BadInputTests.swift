import Testing
@testable import ArrowIPC

/// Hand-made malformed flatbuffers and layouts; each must give the stated
/// error code (Spec/arrow-ipc.md, "Errors").
@Suite("Bad input")
struct BadInputTests {
  /// A valid message with one Int32 field, for patching.
  static let validSchema = try! Message(header: .schema(Schema(fields: [Field("a", .int(bitWidth: 32, signed: true))]))).encode()

  static func patched(_ bytes: [UInt8], at offset: Int, _ value: some FixedWidthInteger) -> [UInt8] {
    var copy = bytes
    withUnsafeBytes(of: value.littleEndian) { copy.replaceSubrange(offset ..< offset + $0.count, with: $0) }
    return copy
  }

  static func decodeError(_ bytes: [UInt8], limits: ArrowIPCLimits = .defaults) -> ArrowIPCError.Code? {
    do {
      _ = try Message.decode(ArrowBytes(copying: bytes), limits: limits)
      return nil
    } catch {
      return error.code
    }
  }

  /// A message built by `build`, which returns the root table.
  static func built(_ build: (inout FlatBufferBuilder) -> FlatBufferBuilder.Offset) -> [UInt8] {
    var builder = FlatBufferBuilder()
    let root = build(&builder)
    return builder.finish(root: root)
  }

  /// A Message table around a header written by `header`.
  static func message(version: Int16 = 4, headerType: UInt8, bodyLength: Int64 = 0,
                      _ header: (inout FlatBufferBuilder) -> FlatBufferBuilder.Offset?) -> [UInt8] {
    built { builder in
      let headerOffset = header(&builder)
      builder.startTable()
      builder.add(0, version, omitIfEqual: nil)
      builder.add(1, headerType, omitIfEqual: nil)
      builder.add(2, headerOffset)
      builder.add(3, bodyLength, omitIfEqual: nil)
      return builder.endTable()
    }
  }

  static func schemaMessage(_ fields: (inout FlatBufferBuilder) -> FlatBufferBuilder.Offset) -> [UInt8] {
    message(headerType: 1) { builder in
      let vector = fields(&builder)
      builder.startTable()
      builder.add(1, vector)
      return builder.endTable()
    }
  }

  /// A field table with a raw type code and a type table.
  static func rawField(_ builder: inout FlatBufferBuilder, code: UInt8,
                       children: [FlatBufferBuilder.Offset] = [],
                       type: (inout FlatBufferBuilder) -> Void = { _ in }) -> FlatBufferBuilder.Offset {
    builder.startTable()
    type(&builder)
    let typeTable = builder.endTable()
    let childVector = builder.vector(of: children)
    builder.startTable()
    builder.add(2, code, omitIfEqual: nil)
    builder.add(3, typeTable)
    builder.add(5, childVector)
    return builder.endTable()
  }

  @Test("malformed flatbuffers", arguments: [
    ("empty", [UInt8](), ArrowIPCError.Code.truncated),
    ("root offset past the end", patched(validSchema, at: 0, UInt32(100_000)), .outOfBounds),
    ("root offset zero", patched(validSchema, at: 0, UInt32(0)), .outOfBounds),
    ("vtable before the buffer", patched(validSchema, at: Int(validSchema[0]), Int32(100_000)), .invalidVTable),
    ("vtable after the buffer", patched(validSchema, at: Int(validSchema[0]), Int32(-100_000)), .invalidVTable),
    ("negative body length", message(headerType: 3, bodyLength: -8) { _ in nil }, .invalidValue),
    ("absurd body length", message(headerType: 3, bodyLength: .max) { _ in nil }, .limitExceeded),
    ("unknown header type", message(headerType: 9) { _ in nil }, .invalidValue),
    ("header type NONE", message(headerType: 0) { _ in nil }, .missingField),
    ("missing header table", message(headerType: 3) { _ in nil }, .missingField),
    ("metadata version V3", message(version: 2, headerType: 1) { _ in nil }, .unsupportedVersion),
    ("unknown metadata version", message(version: 77, headerType: 1) { _ in nil }, .unsupportedVersion),
    ("Int of 7 bits", schemaMessage { b in
      let field = rawField(&b, code: 2) { $0.add(0, Int32(7), omitIfEqual: nil) }
      return b.vector(of: [field])
    }, .invalidValue),
    ("unknown type code", schemaMessage { b in b.vector(of: [rawField(&b, code: 99)]) }, .unsupportedFeature),
    ("Time(second) of 64 bits", schemaMessage { b in
      let field = rawField(&b, code: 9) { $0.add(0, Int16(0), omitIfEqual: nil); $0.add(1, Int32(64), omitIfEqual: nil) }
      return b.vector(of: [field])
    }, .invalidValue),
    ("unknown time unit", schemaMessage { b in
      b.vector(of: [rawField(&b, code: 18) { $0.add(0, Int16(9), omitIfEqual: nil) }])
    }, .invalidValue),
    ("list without child", schemaMessage { b in b.vector(of: [rawField(&b, code: 12)]) }, .invalidValue),
    ("int with a child", schemaMessage { b in
      let child = rawField(&b, code: 6)
      return b.vector(of: [rawField(&b, code: 2, children: [child]) { $0.add(0, Int32(8), omitIfEqual: nil) }])
    }, .invalidValue),
    ("negative fixed size binary", schemaMessage { b in
      b.vector(of: [rawField(&b, code: 15) { $0.add(0, Int32(-1), omitIfEqual: nil) }])
    }, .invalidValue),
  ] as [(String, [UInt8], ArrowIPCError.Code)])
  func malformed(name: String, bytes: [UInt8], expected: ArrowIPCError.Code) {
    #expect(Self.decodeError(bytes) == expected, "\(name)")
  }

  @Test("offsets rewritten after validation (a peer writing shared memory) give other values, never a crash (SHM-TRUST-1)")
  func offsetsRewrittenAfterValidation() throws {
    var builder = RecordBatchBuilder()
    builder.append("s", strings: ["alpha", "beta", nil, "gamma"])
    var writer = IPCStreamWriter(sink: [UInt8]())
    try writer.write(Message(header: .schema(builder.schema)))
    let (message, body) = builder.finish()
    try writer.write(message, body: body)
    try writer.finish()
    // The stream in memory this test can still write, as a peer could.
    let storage = AlignedStorage(capacity: writer.sink.count)
    writer.sink.withUnsafeBytes { storage.mutableBytes.copyMemory(from: $0) }
    var reader = try ArrowStreamReader(storage.freeze(count: writer.sink.count))
    guard case .recordBatch(let batch)? = try reader.next() else {
      Issue.record("no batch")
      return
    }
    let values = try batch.column(0).binaries()
    #expect(values.string(at: 1) == "beta")
    let offsets = try #require(UnsafeMutableRawPointer(mutating: batch.column(0).buffer(1).unsafeBaseAddress))
    for garbage: [Int32] in [[-9, 1 << 30, 3, -1, .max], [.max, 0, .min, 7, 2]] {
      for (index, value) in garbage.enumerated() { offsets.storeBytes(of: value.littleEndian, toByteOffset: 4 * index, as: Int32.self) }
      for index in 0 ..< 4 { _ = values.string(at: index) }
    }
  }

  @Test("a vector whose count runs past the buffer is refused")
  func absurdVectorLength() throws {
    let bytes = Self.schemaMessage { b in b.vector(of: [Self.rawField(&b, code: 6)]) }
    // Find the fields vector (count 1 followed by one offset) and make the count huge.
    for offset in stride(from: 4, to: bytes.count - 4, by: 4) where bytes[offset ..< offset + 4] == [1, 0, 0, 0] {
      let code = Self.decodeError(Self.patched(bytes, at: offset, UInt32.max))
      if code == .outOfBounds { return }
    }
    Issue.record("no patched count was reported as out of bounds")
  }

  @Test("invalid UTF-8 in a field name is refused")
  func invalidUTF8() throws {
    var bytes = Self.validSchema
    let name = try #require(bytes.firstIndex(of: UInt8(ascii: "a")))
    bytes[name] = 0xFF
    #expect(Self.decodeError(bytes) == .invalidValue)
  }

  @Test("fields nested deeper than the limit are refused")
  func deepNesting() {
    let bytes = Self.schemaMessage { b in
      var field = Self.rawField(&b, code: 6)
      for _ in 0 ..< 200 { field = Self.rawField(&b, code: 13, children: [field]) }
      return b.vector(of: [field])
    }
    #expect(Self.decodeError(bytes) == .limitExceeded)
  }

  @Test("a shared child table cannot blow up the field count (DAG amplification)")
  func dagAmplification() {
    // Each level references the level below 64 times: 64^6 fields if expanded.
    let bytes = Self.schemaMessage { b in
      var field = Self.rawField(&b, code: 6)
      for _ in 0 ..< 6 { field = Self.rawField(&b, code: 13, children: Array(repeating: field, count: 64)) }
      return b.vector(of: [field])
    }
    #expect(bytes.count < 4096)
    #expect(Self.decodeError(bytes) == .limitExceeded)
  }

  @Test("metadata over the size limit is refused before parsing")
  func metadataSizeLimit() {
    var limits = ArrowIPCLimits.defaults
    limits.maxMetadataSize = 16
    #expect(Self.decodeError(Self.validSchema, limits: limits) == .limitExceeded)
  }

  // MARK: Body layout

  static let int32Field = Field("a", .int(bitWidth: 32, signed: true))

  static func layoutError(_ fields: [Field], _ batch: RecordBatchHeader, bodyLength: Int64) -> ArrowIPCError.Code? {
    do {
      _ = try BodyLayout.arrays(of: fields, in: batch, bodyLength: bodyLength, version: .v5)
      return nil
    } catch {
      return error.code
    }
  }

  @Test("layouts that do not fit the schema or the body", arguments: [
    ("buffer past the body", [FieldNode(length: 2, nullCount: 0)], [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 8, length: 16)]),
    ("negative buffer offset", [FieldNode(length: 2, nullCount: 0)], [BodyBuffer(offset: -8, length: 0), BodyBuffer(offset: 0, length: 8)]),
    ("overflowing buffer", [FieldNode(length: 2, nullCount: 0)], [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 8, length: .max)]),
    ("too few buffers", [FieldNode(length: 2, nullCount: 0)], [BodyBuffer(offset: 0, length: 8)]),
    ("too many buffers", [FieldNode(length: 2, nullCount: 0)], Array(repeating: BodyBuffer(offset: 0, length: 8), count: 3)),
    ("no node", [], [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: 8)]),
    ("extra node", Array(repeating: FieldNode(length: 2, nullCount: 0), count: 2), [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: 8)]),
    ("more nulls than values", [FieldNode(length: 2, nullCount: 3)], [BodyBuffer(offset: 0, length: 1), BodyBuffer(offset: 8, length: 8)]),
    ("column length differs from batch", [FieldNode(length: 1, nullCount: 0)], [BodyBuffer(offset: 0, length: 0), BodyBuffer(offset: 0, length: 8)]),
  ] as [(String, [FieldNode], [BodyBuffer])])
  func badLayouts(name: String, nodes: [FieldNode], buffers: [BodyBuffer]) {
    let batch = RecordBatchHeader(length: 2, nodes: nodes, buffers: buffers)
    #expect(Self.layoutError([Self.int32Field], batch, bodyLength: 16) == .layoutMismatch, "\(name)")
  }

  @Test("buffer counts per layout follow the format", arguments: [
    (Field("n", .null), 0), (Field("b", .bool), 2), (Field("s", .utf8), 3), (Field("l", .largeBinary), 3),
    (Field("v", .utf8View), 2), (Field("lv", .listView), 3), (Field("st", .struct), 1),
    (Field("fsl", .fixedSizeList(listSize: 2)), 1), (Field("su", .union(mode: .sparse, typeIds: nil)), 1),
    (Field("du", .union(mode: .dense, typeIds: nil)), 2), (Field("ree", .runEndEncoded), 0),
    (Field("d", .utf8, dictionary: DictionaryEncoding(id: 0)), 2),
  ])
  func bufferCounts(field: Field, expected: Int) {
    #expect(BodyLayout.bufferCount(of: field) == expected)
  }

  @Test("V4 unions carry a validity buffer")
  func v4Unions() {
    #expect(BodyLayout.bufferCount(of: Field("u", .union(mode: .dense, typeIds: nil)), version: .v4) == 3)
  }

  @Test("view columns take their variadic buffer count")
  func variadicCounts() throws {
    let field = Field("v", .binaryView)
    let buffers = Array(repeating: BodyBuffer(offset: 0, length: 8), count: 4)
    let good = RecordBatchHeader(length: 1, nodes: [FieldNode(length: 1, nullCount: 0)], buffers: buffers,
                                 variadicBufferCounts: [2])
    let layouts = try BodyLayout.arrays(of: [field], in: good, bodyLength: 8, version: .v5)
    #expect(layouts[0].buffers.count == 4)
    let missing = RecordBatchHeader(length: 1, nodes: [FieldNode(length: 1, nullCount: 0)], buffers: buffers)
    #expect(Self.layoutError([field], missing, bodyLength: 8) == .layoutMismatch)
  }

  @Test("typed access checks types, buffer sizes and offsets")
  func typedAccess() throws {
    var builder = RecordBatchBuilder(alignment: 8)
    builder.append("s", strings: ["ab", nil, "c"])
    let (message, body) = builder.finish()
    let batch = try RecordBatch(schema: builder.schema, message: message, body: body)
    #expect(throws: ArrowIPCError.self) { try batch.column(0).values(as: Int32.self) }
    #expect(throws: ArrowIPCError.self) { try batch.column(0).booleans() }
    // Corrupt the last offset so it points past the data buffer.
    var corrupted = body.array
    let offsets = Int(batch.layouts[0].buffers[1].offset)
    corrupted.replaceSubrange(offsets + 12 ..< offsets + 16, with: [0xFF, 0, 0, 0])
    let bad = try RecordBatch(schema: builder.schema, message: message, body: ArrowBytes(copying: corrupted))
    #expect { try bad.column(0).binaries() } throws: { ($0 as? ArrowIPCError)?.code == .layoutMismatch }
  }
}
