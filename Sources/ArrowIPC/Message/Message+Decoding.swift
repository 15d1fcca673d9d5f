// Decoding of the `Message` flatbuffer and everything below it, with every
// read bounds-checked (FlatBufferReader) and every value range-checked.
// Field ids follow Message.fbs / Schema.fbs; Spec/arrow-ipc.md lists them.

extension Message {
  /// Decodes and verifies one `Message` flatbuffer.
  ///
  /// `flatbuffer` may start at any address. Record-batch nodes and buffers
  /// are not copied: the returned header reads them from `flatbuffer`, which
  /// it retains.
  ///
  /// - Throws: ``ArrowIPCError`` when the bytes are not a valid message
  ///   within `limits`; see Spec/arrow-ipc.md for the codes.
  public static func decode(
    _ flatbuffer: ArrowBytes, limits: ArrowIPCLimits = .defaults
  ) throws(ArrowIPCError) -> Message {
    guard flatbuffer.count <= limits.maxMetadataSize else {
      throw ArrowIPCError(.limitExceeded, "metadata of \(flatbuffer.count) bytes exceeds \(limits.maxMetadataSize)")
    }
    guard flatbuffer.count >= 8, let base = flatbuffer.unsafeBaseAddress else {
      throw ArrowIPCError(.truncated, "metadata of \(flatbuffer.count) bytes is too short for a flatbuffer")
    }
    // The decoder holds `flatbuffer`, which keeps the memory alive while
    // the reader uses its address.
    var decoder = MessageDecoder(
      reader: FlatBufferReader(base: base, count: flatbuffer.count), bytes: flatbuffer, limits: limits)
    return try decoder.message()
  }
}

/// Walks one message flatbuffer; holds the limits and the running counts.
///
/// `elementBudget` stops amplification: a crafted buffer can point many
/// vector slots at one shared table, so a few kilobytes would expand into
/// billions of fields. In a buffer without sharing every field, key/value
/// pair and union type id has its own 4-byte vector slot, so their total
/// cannot exceed the buffer size / 4; decoding stops there.
private struct MessageDecoder {
  let reader: FlatBufferReader
  let bytes: ArrowBytes
  let limits: ArrowIPCLimits
  var fieldCount = 0
  var elementBudget: Int

  init(reader: FlatBufferReader, bytes: ArrowBytes, limits: ArrowIPCLimits) {
    self.reader = reader
    self.bytes = bytes
    self.limits = limits
    self.elementBudget = reader.count / 4
  }

  /// Charges `count` decoded vector elements against ``elementBudget``.
  mutating func spend(_ count: Int) throws(ArrowIPCError) {
    elementBudget -= count
    guard elementBudget >= 0 else {
      throw ArrowIPCError(.limitExceeded, "the metadata expands to more elements than its \(reader.count) bytes can hold")
    }
  }

  mutating func message() throws(ArrowIPCError) -> Message {
    let root = try reader.rootTable()
    let rawVersion = try root.scalar(0, default: Int16(0))
    guard let version = MetadataVersion(rawValue: rawVersion) else {
      throw ArrowIPCError(.unsupportedVersion, "metadata version \(rawVersion) is unknown")
    }
    guard version >= .v4 else {
      throw ArrowIPCError(.unsupportedVersion, "metadata version V\(rawVersion + 1) predates V4")
    }
    let bodyLength = try root.scalar(3, default: Int64(0))
    guard bodyLength >= 0, bodyLength <= limits.maxBodyLength else {
      throw ArrowIPCError(bodyLength < 0 ? .invalidValue : .limitExceeded,
                          "bodyLength \(bodyLength) outside 0...\(limits.maxBodyLength)")
    }
    let headerType = try root.scalar(1, default: UInt8(0))
    let headerTable = try root.table(2)
    let header: MessageHeader
    switch headerType {
    case 1: header = .schema(try schema(required(headerTable, "Message.header (Schema)")))
    case 2: header = .dictionaryBatch(try dictionaryBatch(required(headerTable, "Message.header (DictionaryBatch)")))
    case 3: header = .recordBatch(try recordBatch(required(headerTable, "Message.header (RecordBatch)")))
    case 4: header = .tensor(try tensor(required(headerTable, "Message.header (Tensor)")))
    case 5: header = .sparseTensor(try sparseTensor(required(headerTable, "Message.header (SparseTensor)")))
    case 0: throw ArrowIPCError(.missingField, "Message.header_type is NONE")
    default: throw ArrowIPCError(.invalidValue, "Message.header_type \(headerType) is unknown")
    }
    // Tensor data must lie inside the body (IPC-MSG-10).
    let tensorBuffers: [BodyBuffer]
    switch header {
    case .tensor(let tensor): tensorBuffers = [tensor.data]
    case .sparseTensor(let sparse): tensorBuffers = [sparse.data] + sparse.index.buffers
    default: tensorBuffers = []
    }
    for buffer in tensorBuffers {
      guard buffer.offset >= 0, buffer.length >= 0, buffer.offset <= bodyLength, buffer.length <= bodyLength - buffer.offset else {
        throw ArrowIPCError(.layoutMismatch, "tensor buffer \(buffer.offset)+\(buffer.length) outside the \(bodyLength)-byte body")
      }
    }
    return Message(header: header, bodyLength: bodyLength, version: version,
                   customMetadata: try keyValues(root, 4))
  }

  // MARK: Tensors

  mutating func tensor(_ table: FlatBufferTable) throws(ArrowIPCError) -> TensorHeader {
    TensorHeader(type: try arrowType(try table.scalar(0, default: UInt8(0)), try table.table(1), field: "tensor"),
                 shape: try dimensions(table, 2), strides: try int64s(table, 3),
                 data: try bodyBuffer(table, 4, "Tensor.data"))
  }

  mutating func sparseTensor(_ table: FlatBufferTable) throws(ArrowIPCError) -> SparseTensorHeader {
    let type = try arrowType(try table.scalar(0, default: UInt8(0)), try table.table(1), field: "sparse tensor")
    let shape = try dimensions(table, 2)
    let nonZero = try table.scalar(3, default: Int64(0))
    guard nonZero >= 0 else { throw ArrowIPCError(.invalidValue, "SparseTensor.non_zero_length \(nonZero)") }
    let indexTable = try required(table.table(5), "SparseTensor.sparseIndex")
    let index: SparseTensorIndex
    switch try table.scalar(4, default: UInt8(0)) {
    case 1:
      index = .coordinate(indicesType: try integerType(indexTable, 0), indicesStrides: try int64s(indexTable, 1),
                          indices: try bodyBuffer(indexTable, 2, "SparseTensorIndexCOO.indicesBuffer"),
                          isCanonical: try indexTable.bool(3, default: false))
    case 2:
      let rawAxis = try indexTable.scalar(0, default: Int16(0))
      guard let axis = SparseTensorIndex.CompressedAxis(rawValue: rawAxis) else {
        throw ArrowIPCError(.invalidValue, "SparseMatrixIndexCSX.compressedAxis \(rawAxis)")
      }
      index = .compressedMatrix(axis: axis, indptrType: try integerType(indexTable, 1),
                                indptr: try bodyBuffer(indexTable, 2, "SparseMatrixIndexCSX.indptrBuffer"),
                                indicesType: try integerType(indexTable, 3),
                                indices: try bodyBuffer(indexTable, 4, "SparseMatrixIndexCSX.indicesBuffer"))
    case 3:
      var axisOrder: [Int32] = []
      if let vector = try indexTable.vector(4, elementSize: 4) {
        try spend(vector.count)
        axisOrder = (0 ..< vector.count).map { vector.scalar($0, as: Int32.self) }
      }
      index = .compressedFiber(indptrType: try integerType(indexTable, 0), indptrBuffers: try bodyBuffers(indexTable, 1),
                               indicesType: try integerType(indexTable, 2), indicesBuffers: try bodyBuffers(indexTable, 3),
                               axisOrder: axisOrder)
    case let code:
      throw ArrowIPCError(.invalidValue, "SparseTensor.sparseIndex_type \(code) is unknown")
    }
    return SparseTensorHeader(type: type, shape: shape, nonZeroLength: nonZero, index: index,
                              data: try bodyBuffer(table, 6, "SparseTensor.data"))
  }

  mutating func dimensions(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> [TensorDimension] {
    guard let vector = try table.vector(id, elementSize: 4) else { return [] }
    try spend(vector.count)
    var result: [TensorDimension] = []
    for index in 0 ..< vector.count {
      let dimension = try vector.table(index)
      let size = try dimension.scalar(0, default: Int64(0))
      guard size >= 0 else { throw ArrowIPCError(.invalidValue, "tensor dimension of size \(size)") }
      result.append(TensorDimension(size: size, name: try dimension.string(1)))
    }
    return result
  }

  mutating func int64s(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> [Int64] {
    guard let vector = try table.vector(id, elementSize: 8) else { return [] }
    try spend(vector.count)
    return (0 ..< vector.count).map { vector.scalar($0, as: Int64.self) }
  }

  mutating func bodyBuffers(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> [BodyBuffer] {
    guard let vector = try table.vector(id, elementSize: 16) else { return [] }
    try spend(vector.count)
    return (0 ..< vector.count).map {
      BodyBuffer(offset: vector.scalar(2 * $0, as: Int64.self, stride: 8), length: vector.scalar(2 * $0 + 1, as: Int64.self, stride: 8))
    }
  }

  func bodyBuffer(_ table: FlatBufferTable, _ id: Int, _ what: String) throws(ArrowIPCError) -> BodyBuffer {
    guard let (offset, length) = try table.int64Pair(id) else { throw ArrowIPCError(.missingField, "\(what) is absent") }
    return BodyBuffer(offset: offset, length: length)
  }

  func integerType(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> IntegerType {
    let (bits, signed) = try intType(required(table.table(id), "tensor index type"))
    return IntegerType(bitWidth: bits, signed: signed)
  }

  // MARK: Record and dictionary batches

  func recordBatch(_ table: FlatBufferTable) throws(ArrowIPCError) -> RecordBatchHeader {
    let length = try table.scalar(0, default: Int64(0))
    guard length >= 0 else { throw ArrowIPCError(.invalidValue, "RecordBatch.length \(length) is negative") }
    let nodes: FlatStructs<FieldNode> = try structs(table, 1)
    let buffers: FlatStructs<BodyBuffer> = try structs(table, 2)
    var compression: BodyCompression?
    if let compressionTable = try table.table(3) {
      let rawCodec = try compressionTable.scalar(0, default: Int8(0))
      guard let codec = BodyCompression.Codec(rawValue: rawCodec) else {
        throw ArrowIPCError(.invalidValue, "BodyCompression.codec \(rawCodec) is unknown")
      }
      let method = try compressionTable.scalar(1, default: Int8(0))
      guard method == 0 else { throw ArrowIPCError(.invalidValue, "BodyCompression.method \(method) is unknown") }
      compression = BodyCompression(codec: codec)
    }
    let variadic: FlatStructs<Int64> = try structs(table, 4)
    return RecordBatchHeader(length: length, nodes: nodes, buffers: buffers,
                             compression: compression, variadicBufferCounts: variadic)
  }

  func dictionaryBatch(_ table: FlatBufferTable) throws(ArrowIPCError) -> DictionaryBatchHeader {
    DictionaryBatchHeader(
      id: try table.scalar(0, default: Int64(0)),
      data: try recordBatch(required(table.table(1), "DictionaryBatch.data")),
      isDelta: try table.bool(2, default: false))
  }

  func structs<Element: FlatStruct>(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> FlatStructs<Element> {
    guard let vector = try table.vector(id, elementSize: Element.flatSize) else { return FlatStructs([]) }
    guard vector.count <= limits.maxBuffersPerBatch else {
      throw ArrowIPCError(.limitExceeded, "\(vector.count) entries exceed the limit of \(limits.maxBuffersPerBatch)")
    }
    return FlatStructs(verified: bytes, start: vector.start, count: vector.count)
  }

  // MARK: Schema

  mutating func schema(_ table: FlatBufferTable) throws(ArrowIPCError) -> Schema {
    let rawEndianness = try table.scalar(0, default: Int16(0))
    guard let endianness = Endianness(rawValue: rawEndianness) else {
      throw ArrowIPCError(.invalidValue, "Schema.endianness \(rawEndianness) is unknown")
    }
    var features: [SchemaFeature] = []
    if let vector = try table.vector(3, elementSize: 8) {
      guard vector.count <= limits.maxMetadataPairs else {
        throw ArrowIPCError(.limitExceeded, "\(vector.count) schema features")
      }
      features = (0 ..< vector.count).map { SchemaFeature(rawValue: vector.scalar($0, as: Int64.self)) }
    }
    return Schema(fields: try fields(table, 1, depth: 1), metadata: try keyValues(table, 2),
                  endianness: endianness, features: features)
  }

  mutating func fields(_ table: FlatBufferTable, _ id: Int, depth: Int) throws(ArrowIPCError) -> [Field] {
    guard let vector = try table.vector(id, elementSize: 4) else { return [] }
    guard depth <= limits.maxNestingDepth else {
      throw ArrowIPCError(.limitExceeded, "fields nested deeper than \(limits.maxNestingDepth)")
    }
    try spend(vector.count)
    fieldCount += vector.count
    guard fieldCount <= limits.maxFieldCount else {
      throw ArrowIPCError(.limitExceeded, "more than \(limits.maxFieldCount) fields")
    }
    var result: [Field] = []
    result.reserveCapacity(vector.count)
    for index in 0 ..< vector.count {
      result.append(try field(vector.table(index), depth: depth))
    }
    return result
  }

  mutating func field(_ table: FlatBufferTable, depth: Int) throws(ArrowIPCError) -> Field {
    let name = try table.string(0) ?? ""
    let typeCode = try table.scalar(2, default: UInt8(0))
    let type = try arrowType(typeCode, try table.table(3), field: name)
    var dictionary: DictionaryEncoding?
    if let encoding = try table.table(4) {
      var indexBitWidth = 32
      var indexSigned = true
      if let indexType = try encoding.table(1) {
        (indexBitWidth, indexSigned) = try intType(indexType)
      }
      let kind = try encoding.scalar(3, default: Int16(0))
      guard kind == 0 else { throw ArrowIPCError(.invalidValue, "field '\(name)': dictionaryKind \(kind) is unknown") }
      dictionary = DictionaryEncoding(
        id: try encoding.scalar(0, default: Int64(0)), indexBitWidth: indexBitWidth,
        indexSigned: indexSigned, isOrdered: try encoding.bool(2, default: false))
    }
    let result = Field(name, type, nullable: try table.bool(1, default: false), dictionary: dictionary,
                       children: try fields(table, 5, depth: depth + 1), metadata: try keyValues(table, 6))
    try FieldShape.validate(result)
    return result
  }

  func intType(_ table: FlatBufferTable) throws(ArrowIPCError) -> (Int, Bool) {
    let bitWidth = Int(try table.scalar(0, default: Int32(0)))
    guard [8, 16, 32, 64].contains(bitWidth) else {
      throw ArrowIPCError(.invalidValue, "Int.bitWidth \(bitWidth) is not 8, 16, 32 or 64")
    }
    return (bitWidth, try table.bool(1, default: false))
  }

  mutating func arrowType(_ code: UInt8, _ table: FlatBufferTable?, field: String) throws(ArrowIPCError) -> ArrowType {
    // A union value always points to a table; tolerate a missing one for
    // types without parameters, and let parameterized types fail on their
    // required values.
    func scalar<T: FixedWidthInteger>(_ id: Int, _ defaultValue: T) throws(ArrowIPCError) -> T {
      try table?.scalar(id, default: defaultValue) ?? defaultValue
    }
    func unit<Unit: RawRepresentable<Int16>>(_ id: Int, _ defaultValue: Int16, _: Unit.Type) throws(ArrowIPCError) -> Unit {
      let raw = try scalar(id, defaultValue)
      guard let unit = Unit(rawValue: raw) else {
        throw ArrowIPCError(.invalidValue, "field '\(field)': \(Unit.self) \(raw) is unknown")
      }
      return unit
    }
    func nonNegative(_ id: Int, _ what: String) throws(ArrowIPCError) -> Int {
      let value = Int(try scalar(id, Int32(0)))
      guard value >= 0 else { throw ArrowIPCError(.invalidValue, "field '\(field)': \(what) \(value) is negative") }
      return value
    }
    switch code {
    case 1: return .null
    case 2:
      guard let table else { throw ArrowIPCError(.missingField, "field '\(field)': Int type table") }
      let (bits, signed) = try intType(table)
      return .int(bitWidth: bits, signed: signed)
    case 3: return .floatingPoint(try unit(0, 0, FloatingPointPrecision.self))
    case 4: return .binary
    case 5: return .utf8
    case 6: return .bool
    case 7:
      let bitWidth = Int(try scalar(2, Int32(128)))
      guard [32, 64, 128, 256].contains(bitWidth) else {
        throw ArrowIPCError(.invalidValue, "field '\(field)': Decimal.bitWidth \(bitWidth)")
      }
      return .decimal(precision: Int(try scalar(0, Int32(0))), scale: Int(try scalar(1, Int32(0))), bitWidth: bitWidth)
    case 8: return .date(try unit(0, 1, DateUnit.self))
    case 9:
      let timeUnit = try unit(0, 1, TimeUnit.self)
      let bitWidth = Int(try scalar(1, Int32(32)))
      let expected = timeUnit == .second || timeUnit == .millisecond ? 32 : 64
      guard bitWidth == expected else {
        throw ArrowIPCError(.invalidValue, "field '\(field)': Time(\(timeUnit)) with bitWidth \(bitWidth)")
      }
      return .time(timeUnit, bitWidth: bitWidth)
    case 10: return .timestamp(try unit(0, 0, TimeUnit.self), timezone: try table?.string(1))
    case 11: return .interval(try unit(0, 0, IntervalUnit.self))
    case 12: return .list
    case 13: return .struct
    case 14:
      let mode = try unit(0, 0, UnionMode.self)
      var typeIds: [Int32]?
      if let vector = try table?.vector(1, elementSize: 4) {
        try spend(vector.count)
        typeIds = (0 ..< vector.count).map { vector.scalar($0, as: Int32.self) }
      }
      return .union(mode: mode, typeIds: typeIds)
    case 15: return .fixedSizeBinary(byteWidth: try nonNegative(0, "FixedSizeBinary.byteWidth"))
    case 16: return .fixedSizeList(listSize: try nonNegative(0, "FixedSizeList.listSize"))
    case 17: return .map(keysSorted: try table?.bool(0, default: false) ?? false)
    case 18: return .duration(try unit(0, 1, TimeUnit.self))
    case 19: return .largeBinary
    case 20: return .largeUtf8
    case 21: return .largeList
    case 22: return .runEndEncoded
    case 23: return .binaryView
    case 24: return .utf8View
    case 25: return .listView
    case 26: return .largeListView
    case 0: throw ArrowIPCError(.missingField, "field '\(field)': type_type is NONE")
    default: throw ArrowIPCError(.unsupportedFeature, "field '\(field)': type code \(code) is unknown")
    }
  }

  // MARK: Custom metadata

  mutating func keyValues(_ table: FlatBufferTable, _ id: Int) throws(ArrowIPCError) -> [KeyValue] {
    guard let vector = try table.vector(id, elementSize: 4) else { return [] }
    try spend(vector.count)
    guard vector.count <= limits.maxMetadataPairs else {
      throw ArrowIPCError(.limitExceeded, "\(vector.count) metadata pairs exceed \(limits.maxMetadataPairs)")
    }
    var result: [KeyValue] = []
    result.reserveCapacity(vector.count)
    for index in 0 ..< vector.count {
      let pair = try vector.table(index)
      result.append(KeyValue(try pair.string(0) ?? "", try pair.string(1) ?? ""))
    }
    return result
  }

  func required(_ table: FlatBufferTable?, _ what: String) throws(ArrowIPCError) -> FlatBufferTable {
    guard let table else { throw ArrowIPCError(.missingField, "\(what) is absent") }
    return table
  }
}

/// The child-count rules of nested types, checked on decode so that layout
/// code can rely on them.
enum FieldShape {
  static func validate(_ field: Field) throws(ArrowIPCError) {
    let children = field.children
    func expect(_ count: Int) throws(ArrowIPCError) {
      guard children.count == count else {
        throw ArrowIPCError(.invalidValue,
                            "field '\(field.name)' of type \(field.type) has \(children.count) children, needs \(count)")
      }
    }
    switch field.type {
    case .list, .largeList, .listView, .largeListView, .fixedSizeList: try expect(1)
    case .map:
      try expect(1)
      guard children[0].type == .struct, children[0].children.count == 2 else {
        throw ArrowIPCError(.invalidValue, "map field '\(field.name)' needs a struct child with key and value")
      }
    case .runEndEncoded:
      try expect(2)
      guard case .int(let bits, true) = children[0].type, bits >= 16 else {
        throw ArrowIPCError(.invalidValue, "run-end encoded field '\(field.name)': run_ends must be Int16/32/64")
      }
    case .union(_, let typeIds):
      if let typeIds { try expect(typeIds.count) }
    case .struct: break
    default: try expect(0)
    }
  }
}
