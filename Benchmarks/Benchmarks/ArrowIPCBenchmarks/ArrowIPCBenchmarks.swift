// Codec benchmarks (Spec/arrow-ipc.md): header decode + verify, and reading
// streams from memory, where cost must follow the number of messages, not
// the number of bytes (zero copy).

import ArrowIPC
import Benchmark
import BenchmarkSupport

/// The flatbuffer of a RecordBatch message with `columns` nullable int64
/// columns (two buffers each), as a writer would produce it.
func recordBatchMetadata(columns: Int) -> ArrowBytes {
  let nodes = Array(repeating: FieldNode(length: 1024, nullCount: 3), count: columns)
  let buffers = (0 ..< columns).flatMap { column in
    [BodyBuffer(offset: Int64(column * 8320), length: 128), BodyBuffer(offset: Int64(column * 8320 + 128), length: 8192)]
  }
  let header = RecordBatchHeader(length: 1024, nodes: nodes, buffers: buffers)
  let message = Message(header: .recordBatch(header), bodyLength: Int64(columns * 8320))
  return ArrowBytes(copying: try! message.encode())
}

/// An in-memory IPC stream of `batches` batches of one int64 column of
/// `rows` rows.
func stream(batches: Int, rows: Int) -> ArrowBytes {
  var builder = RecordBatchBuilder()
  builder.append("v", (0 ..< rows).map { Int64($0) as Int64? })
  let (message, body) = builder.finish()
  var writer = IPCStreamWriter(sink: [UInt8]())
  try! writer.write(Message(header: .schema(builder.schema)))
  for _ in 0 ..< batches { try! writer.write(message, body: body) }
  try! writer.finish()
  return ArrowBytes(copying: writer.sink)
}

/// Reads every message of `bytes` and its batch layout; returns the body bytes seen.
func readAll(_ bytes: ArrowBytes) throws -> Int {
  var reader = try ArrowStreamReader(bytes)
  var total = 0
  while let item = try reader.next() {
    if case .recordBatch(let batch) = item { total += batch.body.count }
  }
  return total
}

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = configuration()

  for columns in [10, 100] {
    let metadata = recordBatchMetadata(columns: columns)
    Benchmark("decode-verify-batch-header-\(columns)-columns") { benchmark in
      for _ in benchmark.scaledIterations {
        let message = try Message.decode(metadata)
        guard case .recordBatch(let header) = message.header else { fatalError("not a batch") }
        // Touch every node and buffer, as a layout walk would.
        var sum: Int64 = 0
        for node in header.nodes { sum &+= node.length }
        for buffer in header.buffers { sum &+= buffer.offset }
        blackHole(sum)
      }
    }
  }

  // Matching a decoded batch to its schema (what a client does per batch).
  var builder = RecordBatchBuilder()
  builder.append("id", (0 ..< 8).map { Int64($0) as Int64? })
  builder.append("value", (0 ..< 8).map { $0 == 3 ? nil : Double($0) })
  builder.append("name", strings: (0 ..< 8).map { "n\($0)" })
  let (batchMessage, batchBody) = builder.finish()
  let batchSchema = builder.schema
  let batchMetadata = ArrowBytes(copying: try! batchMessage.encode())
  Benchmark("decode-batch-header-match-schema-3-columns") { benchmark in
    for _ in benchmark.scaledIterations {
      let message = try Message.decode(batchMetadata)
      blackHole(try RecordBatch(schema: batchSchema, message: message, body: batchBody).rowCount)
    }
  }

  // Same message count, 64x the bytes: time per read should not change.
  for (label, rows) in [("1MiB", 1 << 17), ("64MiB", 1 << 23)] {
    let bytes = stream(batches: 1, rows: rows)
    Benchmark("read-stream-from-memory-one-\(label)-batch",
              configuration: configuration(metrics: [.wallClock, .mallocCountTotal])) { benchmark in
      for _ in benchmark.scaledIterations { blackHole(try readAll(bytes)) }
    }
  }

  let tiny = stream(batches: 10_000, rows: 2)
  Benchmark("message-loop-frame-decode-verify-10k-tiny-batches",
            configuration: configuration(metrics: [.wallClock, .mallocCountTotal], seconds: 3)) { benchmark in
    for _ in benchmark.scaledIterations {
      var reader = IPCStreamReader(tiny)
      var bodies = 0
      while let message = try reader.next() { bodies &+= message.body.count }
      blackHole(bodies)
    }
  }
  Benchmark("read-stream-from-memory-10k-tiny-batches",
            configuration: configuration(metrics: [.wallClock, .mallocCountTotal], seconds: 3)) { benchmark in
    for _ in benchmark.scaledIterations { blackHole(try readAll(tiny)) }
  }
}
