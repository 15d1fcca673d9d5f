import Testing
@testable import ArrowIPC

@Suite("IPC stream format")
struct StreamFormatTests {
  /// A stream of a built batch: schema, one batch, end of stream.
  static func builtStream(rows: Int = 10) throws -> (bytes: [UInt8], schema: Schema) {
    var builder = RecordBatchBuilder()
    builder.append("i", (0 ..< rows).map { $0 % 3 == 0 ? nil : Int32($0) })
    builder.append("s", strings: (0 ..< rows).map { $0 % 4 == 0 ? nil : "v\($0)" })
    var writer = IPCStreamWriter(sink: [UInt8]())
    try writer.write(Message(header: .schema(builder.schema)))
    let (message, body) = builder.finish()
    try writer.write(message, body: body)
    try writer.finish()
    return (writer.sink, builder.schema)
  }

  @Test("written messages are 8-byte framed and read back")
  func writeRead() throws {
    let (bytes, schema) = try Self.builtStream()
    #expect(bytes.count % 8 == 0)
    #expect(Array(bytes.suffix(8)) == IPCFraming.endOfStream)
    var reader = try ArrowStreamReader(ArrowBytes(copying: bytes))
    #expect(reader.schema == schema)
    guard case .recordBatch(let batch) = try reader.next() else {
      Issue.record("expected a batch")
      return
    }
    #expect(Array(try batch.column(0).values(as: Int32.self)) == (0 ..< 10).map { $0 % 3 == 0 ? nil : Int32($0) })
    let strings = try batch.column(1).binaries()
    #expect((0 ..< 10).map { strings.string(at: $0) } == (0 ..< 10).map { $0 % 4 == 0 ? nil : "v\($0)" })
    #expect(try reader.next() == nil)
  }

  @Test("the pre-0.15 framing without continuation marker is read")
  func legacyFraming() throws {
    // Rewrite each `FFFFFFFF len` prefix as `len` plus 4 bytes of padding moved
    // into the metadata length, as pyarrow's legacy writer does.
    var legacy: [UInt8] = []
    var reader = IPCStreamReader(ArrowBytes(copying: pyarrowInt32Stream))
    while let message = try reader.next() {
      let metadata = message.metadata.array + [0, 0, 0, 0]
      withUnsafeBytes(of: Int32(metadata.count).littleEndian) { legacy += $0 }
      legacy += metadata + message.body.array
    }
    legacy += [0, 0, 0, 0]
    var legacyReader = IPCStreamReader(ArrowBytes(copying: legacy))
    var count = 0
    while try legacyReader.next() != nil { count += 1 }
    #expect(count == 2)
  }

  @Test("a stream that ends without an end-of-stream marker ends cleanly")
  func missingEndMarker() throws {
    let bytes = Array(pyarrowInt32Stream.dropLast(8))
    var reader = IPCStreamReader(ArrowBytes(copying: bytes))
    #expect(try reader.next() != nil)
    #expect(try reader.next() != nil)
    #expect(try reader.next() == nil)
  }

  @Test("every truncation of a stream is a typed error, never a crash")
  func everyTruncation() throws {
    let bytes = pyarrowInt32Stream
    // Cuts on a message boundary are a valid (shorter) stream; every other cut must throw.
    let boundaries: Set<Int> = [0, 128, 296]
    for length in 0 ..< bytes.count - 8 where !boundaries.contains(length) {
      var reader = IPCStreamReader(ArrowBytes(copying: bytes.prefix(length)))
      let error = #expect(throws: ArrowIPCError.self, "cut at \(length)") {
        while try reader.next() != nil {}
      }
      #expect(error?.code == .truncated || error?.code == .outOfBounds || error?.code == .invalidVTable,
              "cut at \(length): \(String(describing: error))")
    }
  }

  @Test("reading a mapped stream file returns slices of the mapping")
  func zeroCopyMapping() throws {
    let (bytes, _) = try Self.builtStream(rows: 1000)
    let path = "/tmp/arrowipc-zero-copy-\(UInt32.random(in: 0 ... .max)).arrows"
    var sink = FileDescriptorSink(descriptor: open(path))
    try sink.write(contentsOf: bytes)
    close(sink.descriptor)
    defer { remove(path) }
    let mapped = try ArrowBytes(mappingFileAt: path)
    var reader = try ArrowStreamReader(mapped)
    guard case .recordBatch(let batch) = try reader.next() else {
      Issue.record("expected a batch")
      return
    }
    let values = batch.column(0).buffer(1)
    #expect(mapped.contains(address: try #require(batch.body.unsafeBaseAddress)))
    #expect(mapped.contains(address: try #require(values.unsafeBaseAddress)))
    #expect(values.count == 4000)
  }

  @Test("a negative or oversized metadata length is refused")
  func badMetadataLength() throws {
    for (length, code) in [(Int32(-8), ArrowIPCError.Code.invalidValue), (Int32.max, .limitExceeded)] {
      var bytes: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
      withUnsafeBytes(of: length.littleEndian) { bytes += $0 }
      var reader = IPCStreamReader(ArrowBytes(copying: bytes + [UInt8](repeating: 0, count: 64)))
      let error = #expect(throws: ArrowIPCError.self) { try reader.next() }
      #expect(error?.code == code)
    }
  }

  @Test("stream rules: schema first, no second schema, known dictionaries")
  func streamRules() throws {
    let batch = try Message(header: .recordBatch(RecordBatchHeader(length: 0, nodes: [], buffers: []))).encode()
    let schema = try Message(header: .schema(Schema(fields: []))).encode()
    let dictionary = try Message(header: .dictionaryBatch(DictionaryBatchHeader(
      id: 9, data: RecordBatchHeader(length: 0, nodes: [], buffers: []), isDelta: false))).encode()
    func stream(_ messages: [[UInt8]]) -> ArrowBytes {
      ArrowBytes(copying: messages.flatMap { IPCFraming.encapsulate(metadata: $0) } + IPCFraming.endOfStream)
    }
    #expect(throws: ArrowIPCError(.invalidStream, "the first message has header type 3, not Schema")) {
      try ArrowStreamReader(stream([batch]))
    }
    var twoSchemas = try ArrowStreamReader(stream([schema, schema]))
    #expect { try twoSchemas.next() } throws: { ($0 as? ArrowIPCError)?.code == .invalidStream }
    var unknownDictionary = try ArrowStreamReader(stream([schema, dictionary]))
    #expect { try unknownDictionary.next() } throws: { ($0 as? ArrowIPCError)?.code == .invalidStream }
    #expect { try ArrowStreamReader(stream([])) } throws: { ($0 as? ArrowIPCError)?.code == .invalidStream }
  }
}

#if canImport(Glibc)
import Glibc

private func open(_ path: String) -> Int32 { Glibc.open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o600) }
#endif
