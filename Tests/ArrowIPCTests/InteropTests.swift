import Foundation
import Testing
@testable import ArrowIPC

/// Interop with pyarrow, code nobody here wrote: Swift reads every stream of
/// the pyarrow corpus, re-emits it, and pyarrow finds the same content; and
/// pyarrow reads batches built with the Swift writer.
@Suite("pyarrow interop")
struct InteropTests {
  static func corpusFile(_ name: String) throws -> URL {
    try Interop.corpus.get().appendingPathComponent(name)
  }

  @Test("Swift reads every stream of the pyarrow corpus, with its layouts")
  func readsCorpus() throws {
    let manifest = try Interop.manifest()
    #expect(manifest.count >= 60)
    for (name, _) in manifest {
      var reader = try ArrowStreamReader(ArrowBytes(mappingFileAt: try Self.corpusFile(name).path))
      var batches = 0
      var largestBody = 0
      var compressed = false
      var dictionaries = 0
      while let item = try reader.next() {
        switch item {
        case .recordBatch(let batch):
          batches += 1
          largestBody = max(largestBody, batch.body.count)
          compressed = compressed || batch.header.compression != nil
        case .dictionary: dictionaries += 1
        }
      }
      switch name {
      case "many_tiny_batches.arrows": #expect(batches == 10_000)
      case "large_batch.arrows": #expect(largestBody >= 64 << 20)
      case "schema_only.arrows": #expect(batches == 0)
      case "compressed_lz4.arrows", "compressed_zstd.arrows": #expect(compressed, "\(name)")
      case "dictionary_delta.arrows", "dictionary_replacement.arrows": #expect(dictionaries > 1, "\(name)")
      default: #expect(batches > 0 || name.contains("empty"), "\(name)")
      }
    }
  }

  @Test("every corpus stream re-emitted by the Swift writer has pyarrow's content hash")
  func reEmitsCorpus() throws {
    let manifest = try Interop.manifest()
    let folder = try Interop.scratchFolder("re-emitted")
    defer { try? FileManager.default.removeItem(at: folder) }
    var outputs: [String] = []
    for (name, _) in manifest {
      let source = try ArrowBytes(mappingFileAt: try Self.corpusFile(name).path)
      let target = folder.appendingPathComponent(name).path
      try reEmit(source, to: target)
      outputs.append(target)
    }
    let lines = try Interop.python(["arrow_check.py", "hash"] + outputs).split(separator: "\n")
    #expect(lines.count == manifest.count)
    for ((name, expected), line) in zip(manifest, lines) {
      #expect(line.hasPrefix(expected + "  "), "\(name): pyarrow sees different content after re-emission")
    }
  }

  /// Decodes each message, encodes it again with the Swift encoder and
  /// writes it with its original body bytes.
  func reEmit(_ source: ArrowBytes, to path: String) throws {
    let descriptor = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0o644)
    #expect(descriptor >= 0)
    defer { close(descriptor) }
    var reader = IPCStreamReader(source)
    var writer = IPCStreamWriter(sink: FileDescriptorSink(descriptor: descriptor))
    while let next = try reader.next() {
      try writer.write(next.message, body: next.body)
    }
    try writer.finish()
  }

  @Test("pyarrow reads batches built with the Swift writer, value for value")
  func pyarrowReadsSwiftBatches() throws {
    let folder = try Interop.scratchFolder("swift-written")
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("built.arrows").path
    let rows = 37
    var writer = IPCStreamWriter(sink: [UInt8]())
    for batch in 0 ..< 3 {
      var builder = RecordBatchBuilder(alignment: batch == 1 ? 8 : 64)
      builder.append("i8", (0 ..< rows).map { $0 % 5 == 0 ? nil : Int8(truncatingIfNeeded: $0 * 7 - 100) })
      builder.append("u16", (0 ..< rows).map { UInt16($0 * 1000 + batch) as UInt16? })
      builder.append("i64", (0 ..< rows).map { $0 % 3 == 0 ? nil : Int64($0) * -1_000_000_007 })
      builder.append("u64", (0 ..< rows).map { UInt64.max - UInt64($0) as UInt64? })
      builder.append("f32", (0 ..< rows).map { Float($0) / 4 as Float? })
      builder.append("f64", (0 ..< rows).map { $0 % 4 == 0 ? nil : Double($0) * 1.5 })
      builder.append("flag", booleans: (0 ..< rows).map { $0 % 6 == 0 ? nil : $0 % 2 == 1 })
      builder.append("text", strings: (0 ..< rows).map { $0 % 7 == 0 ? nil : "é-\(batch)-\($0)" })
      builder.append("blob", binaries: (0 ..< rows).map { $0 % 8 == 0 ? nil : [UInt8(batch), UInt8($0)] })
      if batch == 0 { try writer.write(Message(header: .schema(builder.schema))) }
      let (message, body) = builder.finish()
      try writer.write(message, body: body)
    }
    try writer.finish()
    #expect(FileManager.default.createFile(atPath: path, contents: Data(writer.sink)))

    let json = try Interop.python(["arrow_check.py", "values", path])
    let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    let batches = try #require(decoded?["batches"] as? [[String: Any]])
    #expect(batches.count == 3)
    for (batch, content) in batches.enumerated() {
      #expect(content["num_rows"] as? Int == rows)
      let columns = try #require(content["columns"] as? [String: [Any]])
      func column(_ name: String) -> [Any] { columns[name] ?? [] }
      for row in 0 ..< rows {
        func check(_ name: String, _ expected: Any?) {
          let actual = column(name)[row]
          let same = switch expected {
          case nil: actual is NSNull
          case let value as Int64: (actual as? NSNumber)?.int64Value == value
          case let value as UInt64: (actual as? NSNumber)?.uint64Value == value
          case let value as Double: (actual as? NSNumber)?.doubleValue == value
          case let value as Bool: (actual as? Bool) == value
          case let value as String: (actual as? String) == value
          default: false
          }
          #expect(same, "batch \(batch) row \(row) column \(name): pyarrow read \(actual), wrote \(String(describing: expected))")
        }
        check("i8", row % 5 == 0 ? nil : Int64(Int8(truncatingIfNeeded: row * 7 - 100)))
        check("u16", Int64(row * 1000 + batch))
        check("i64", row % 3 == 0 ? nil : Int64(row) * -1_000_000_007)
        check("u64", UInt64.max - UInt64(row))
        check("f32", Double(Float(row) / 4))
        check("f64", row % 4 == 0 ? nil : Double(row) * 1.5)
        check("flag", row % 6 == 0 ? nil : row % 2 == 1)
        check("text", row % 7 == 0 ? nil : "é-\(batch)-\(row)")
        check("blob", row % 8 == 0 ? nil : String(format: "%02x%02x", batch, row))
      }
    }
  }

  @Test("a pyarrow tensor message decodes, re-encodes, and pyarrow reads the copy")
  func tensorInterop() throws {
    let folder = try Interop.scratchFolder("tensor")
    defer { try? FileManager.default.removeItem(at: folder) }
    let source = folder.appendingPathComponent("tensor.bin").path
    let copy = folder.appendingPathComponent("copy.bin").path
    try Interop.python(["arrow_check.py", "tensor-write", source])
    var reader = IPCStreamReader(try ArrowBytes(mappingFileAt: source))
    let message = try #require(try reader.next())
    guard case .tensor(let tensor) = message.message.header else {
      Issue.record("expected a tensor, got \(message.message.header.unionCode)")
      return
    }
    #expect(tensor.type == .int(bitWidth: 64, signed: true))
    #expect(tensor.shape == [TensorDimension(size: 3, name: "rows"), TensorDimension(size: 4, name: "cols")])
    #expect(tensor.strides == [8, 24])
    var writer = IPCStreamWriter(sink: [UInt8]())
    try writer.write(message.message, body: message.body)
    #expect(FileManager.default.createFile(atPath: copy, contents: Data(writer.sink)))
    let json = try Interop.python(["arrow_check.py", "tensor-read", copy])
    let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    #expect(decoded?["shape"] as? [Int] == [3, 4])
    #expect(decoded?["dim_names"] as? [String] == ["rows", "cols"])
    #expect(decoded?["values"] as? [[Int]] == [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])
  }

  @Test("Swift reads pyarrow's sample stream value for value")
  func swiftReadsPyarrowValues() throws {
    let folder = try Interop.scratchFolder("pyarrow-sample")
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("sample.arrows").path
    try Interop.python(["arrow_check.py", "write-sample", path])
    let json = try Interop.python(["arrow_check.py", "values", path])
    let decoded = try JSONSerialization.jsonObject(with: Data(json.utf8)) as? [String: Any]
    let expected = try #require(decoded?["batches"] as? [[String: Any]])

    var reader = try ArrowStreamReader(ArrowBytes(mappingFileAt: path))
    var index = 0
    while case .recordBatch(let batch)? = try reader.next() {
      let columns = try #require(expected[index]["columns"] as? [String: [Any]])
      #expect(batch.rowCount == expected[index]["num_rows"] as? Int)
      for column in 0 ..< batch.columnCount {
        let view = batch.column(column)
        let values = try #require(columns[view.field.name])
        // Each value as text, the same way on both sides.
        let actual: [String?] = switch view.field.type {
        case .int(32, true): try view.values(as: Int32.self).map { $0.map { "\($0)" } }
        case .floatingPoint(.double): try view.values(as: Double.self).map { $0.map { "\($0)" } }
        case .bool: try view.booleans().map { $0.map { "\($0)" } }
        case .utf8:
          try { () throws -> [String?] in let strings = try view.binaries(); return (0 ..< strings.count).map(strings.string(at:)) }()
        default: []
        }
        let theirs: [String?] = values.map { value in
          guard let number = value as? NSNumber else { return value as? String }
          return switch view.field.type {
          case .bool: "\(number.boolValue)"
          case .floatingPoint: "\(number.doubleValue)"
          default: "\(number.intValue)"
          }
        }
        #expect(!actual.isEmpty, "column \(view.field.name) of type \(view.field.type) has no typed reader")
        #expect(actual == theirs, "batch \(index) column \(view.field.name)")
      }
      index += 1
    }
    #expect(index == expected.count && index > 0)
  }
}
