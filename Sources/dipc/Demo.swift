internal import ArgumentParser
internal import ArrowIPC
internal import Foundation

/// `dipc demo`: builds a dataset, writes it as an IPC stream, reads it back
/// and checks every value.
struct Demo: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Build a sample dataset, write it as an Arrow IPC stream, read it back and verify it.",
    discussion: """
      Writes N batches of four columns (int64 id, float64 value, bool flag,
      utf8 label, with nulls) to an in-memory Arrow IPC stream, reads the
      stream back without copying and checks every value. Prints one line.
      """
  )

  @Option(help: "Number of record batches.")
  var batches = 64

  @Option(help: "Rows per batch.")
  var rows = 16_384

  @Option(help: "Also write the stream to this file (readable by pyarrow).")
  var output: String?

  func validate() throws {
    guard batches > 0, rows > 0 else { throw ValidationError("--batches and --rows must be positive") }
  }

  func run() throws {
    let started = ContinuousClock.now
    var builder = RecordBatchBuilder()
    var writer = IPCStreamWriter(sink: [UInt8]())
    for batch in 0 ..< batches {
      builder = RecordBatchBuilder()
      let base = batch * rows
      builder.append("id", (0 ..< rows).map { Int64(base + $0) as Int64? })
      builder.append("value", (0 ..< rows).map { $0 % 7 == 0 ? nil : Double(base + $0) * 0.5 })
      builder.append("flag", booleans: (0 ..< rows).map { $0 % 5 == 0 ? nil : ($0 % 2 == 0) })
      builder.append("label", strings: (0 ..< rows).map { $0 % 11 == 0 ? nil : "row-\(base + $0)" })
      if batch == 0 { try writer.write(Message(header: .schema(builder.schema))) }
      let (message, body) = builder.finish()
      try writer.write(message, body: body)
    }
    try writer.finish()
    let stream = ArrowBytes(copying: writer.sink)
    let written = ContinuousClock.now

    var reader = try ArrowStreamReader(stream)
    var rowsRead = 0
    var batchesRead = 0
    while let item = try reader.next() {
      guard case .recordBatch(let batch) = item else { continue }
      try Self.verify(batch, base: batchesRead * rows)
      rowsRead += batch.rowCount
      batchesRead += 1
    }
    guard batchesRead == batches, rowsRead == batches * rows else {
      throw ValidationError("read \(batchesRead) batches / \(rowsRead) rows, wrote \(batches) / \(batches * rows)")
    }
    let read = ContinuousClock.now
    if let output {
      guard FileManager.default.createFile(atPath: output, contents: Data(writer.sink)) else {
        throw ValidationError("cannot write \(output)")
      }
    }
    let mib = Double(stream.count) / 1_048_576
    print("demo ok: \(batchesRead) batches, \(rowsRead) rows, \(String(format: "%.1f", mib)) MiB; "
      + "write \(Self.rate(mib, written - started)), read+verify \(Self.rate(mib, read - written))")
  }

  private static func verify(_ batch: RecordBatch, base: Int) throws {
    let ids = try batch.column(0).values(as: Int64.self)
    let values = try batch.column(1).values(as: Double.self)
    let flags = try batch.column(2).booleans()
    let labels = try batch.column(3).binaries()
    for row in 0 ..< batch.rowCount {
      let expectedValue = row % 7 == 0 ? nil : Double(base + row) * 0.5
      let expectedFlag = row % 5 == 0 ? nil : (row % 2 == 0)
      let expectedLabel = row % 11 == 0 ? nil : "row-\(base + row)"
      guard ids[row] == Int64(base + row), values[row] == expectedValue, flags[row] == expectedFlag,
            labels.string(at: row) == expectedLabel
      else { throw ValidationError("batch at row \(base): mismatch in row \(row)") }
    }
  }

  private static func rate(_ mib: Double, _ elapsed: Duration) -> String {
    let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
    return String(format: "%.0f MiB/s", mib / max(seconds, 1e-9))
  }
}
