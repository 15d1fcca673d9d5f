import Testing
@testable import ArrowIPC

@Suite("Message codec")
struct MessageCodecTests {
  @Test("decodes pyarrow's schema and record batch byte for byte")
  func decodesPyarrowStream() throws {
    var reader = IPCStreamReader(ArrowBytes(copying: pyarrowInt32Stream))
    let schemaMessage = try #require(try reader.next())
    #expect(schemaMessage.message.version == .v5)
    #expect(schemaMessage.message.header == .schema(Schema(fields: [Field("a", .int(bitWidth: 32, signed: true))])))
    let batchMessage = try #require(try reader.next())
    guard case .recordBatch(let batch) = batchMessage.message.header else {
      Issue.record("expected a record batch")
      return
    }
    #expect(batch.length == 3)
    #expect(Array(batch.nodes) == [FieldNode(length: 3, nullCount: 1)])
    #expect(Array(batch.buffers) == [BodyBuffer(offset: 0, length: 1), BodyBuffer(offset: 8, length: 12)])
    #expect(batchMessage.body.array == hexBytes("0500000000000000 0100000000000000 0300000000000000"))
    #expect(try reader.next() == nil)
    #expect(reader.isFinished)
  }

  @Test("every type, nested field, dictionary and metadata survives encode → decode")
  func schemaRoundTrip() throws {
    let message = Message(header: .schema(everyTypeSchema), customMetadata: [KeyValue("m", "1")])
    let bytes = try message.encode()
    #expect(bytes.count % 8 == 0)
    let decoded = try Message.decode(ArrowBytes(copying: bytes))
    #expect(decoded == message)
  }

  @Test("record and dictionary batch headers survive encode → decode")
  func batchRoundTrip() throws {
    let batch = RecordBatchHeader(
      length: 5, nodes: [FieldNode(length: 5, nullCount: 2)],
      buffers: [BodyBuffer(offset: 0, length: 1), BodyBuffer(offset: 8, length: 40)],
      compression: BodyCompression(codec: .zstd), variadicBufferCounts: [3, 0])
    for header in [MessageHeader.recordBatch(batch),
                   .dictionaryBatch(DictionaryBatchHeader(id: -4, data: batch, isDelta: true))] {
      let message = Message(header: header, bodyLength: 48)
      #expect(try Message.decode(ArrowBytes(copying: message.encode())) == message)
    }
  }

  @Test("a flatbuffer read at an odd address decodes the same")
  func misalignedInput() throws {
    let bytes = try Message(header: .schema(everyTypeSchema)).encode()
    let shifted = try ArrowBytes(copying: [0, 0, 0, 0, 0] + bytes).slice(offset: 5, count: bytes.count)
    #expect(try Message.decode(shifted) == Message(header: .schema(everyTypeSchema)))
  }

  @Test("Date32 keeps its explicit DAY unit and Int keeps a zero signedness")
  func nonZeroDefaultsAreWritten() throws {
    let schema = Schema(fields: [Field("d", .date(.day)), Field("u", .int(bitWidth: 8, signed: false))])
    let decoded = try Message.decode(ArrowBytes(copying: Message(header: .schema(schema)).encode()))
    #expect(decoded.header == .schema(schema))
  }

  /// One dense tensor and one sparse tensor of each index kind.
  static let tensorHeaders: [MessageHeader] = [
    MessageHeader.tensor(TensorHeader(type: .int(bitWidth: 64, signed: true),
                                      shape: [TensorDimension(size: 3, name: "rows"), TensorDimension(size: 4)],
                                      strides: [32, 8], data: BodyBuffer(offset: 0, length: 96))),
    .sparseTensor(SparseTensorHeader(
      type: .floatingPoint(.double), shape: [TensorDimension(size: 2), TensorDimension(size: 3)], nonZeroLength: 2,
      index: .coordinate(indicesType: IntegerType(bitWidth: 64, signed: true), indicesStrides: [8, 16],
                         indices: BodyBuffer(offset: 0, length: 32), isCanonical: true),
      data: BodyBuffer(offset: 32, length: 16))),
    .sparseTensor(SparseTensorHeader(
      type: .int(bitWidth: 32, signed: true), shape: [TensorDimension(size: 6), TensorDimension(size: 4)], nonZeroLength: 9,
      index: .compressedMatrix(axis: .column, indptrType: IntegerType(bitWidth: 64, signed: true), indptr: BodyBuffer(offset: 0, length: 56),
                               indicesType: IntegerType(bitWidth: 32, signed: false), indices: BodyBuffer(offset: 56, length: 36)),
      data: BodyBuffer(offset: 96, length: 36))),
    .sparseTensor(SparseTensorHeader(
      type: .int(bitWidth: 8, signed: false), shape: [TensorDimension(size: 2, name: "x")], nonZeroLength: 1,
      index: .compressedFiber(indptrType: IntegerType(bitWidth: 32, signed: true),
                              indptrBuffers: [BodyBuffer(offset: 0, length: 8)], indicesType: IntegerType(bitWidth: 16, signed: true),
                              indicesBuffers: [BodyBuffer(offset: 8, length: 2), BodyBuffer(offset: 16, length: 2)], axisOrder: [0]),
      data: BodyBuffer(offset: 24, length: 1))),
  ]

  @Test("tensor and sparse tensor headers survive encode → decode", arguments: tensorHeaders)
  func tensorRoundTrip(header: MessageHeader) throws {
    let message = Message(header: header, bodyLength: 136)
    #expect(try Message.decode(ArrowBytes(copying: message.encode())) == message)
  }

  @Test("tensor data outside the body is refused")
  func tensorOutsideBody() throws {
    let tensor = TensorHeader(type: .int(bitWidth: 8, signed: true), shape: [TensorDimension(size: 16)], strides: [],
                              data: BodyBuffer(offset: 8, length: 16))
    let bytes = try Message(header: .tensor(tensor), bodyLength: 16).encode()
    #expect { try Message.decode(ArrowBytes(copying: bytes)) } throws: { ($0 as? ArrowIPCError)?.code == .layoutMismatch }
  }
}
