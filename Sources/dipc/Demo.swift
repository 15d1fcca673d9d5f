import ArgumentParser
import ArrowIPC
import DissociatedIPCBench
import DissociatedIPCTransports
import Foundation

/// `dipc demo`: a server and a client in one process, end to end.
struct Demo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Stream a generated dataset from a server to a client and verify every value.",
    discussion: """
      Starts a server and a client over the chosen transport (the fastest
      embedded one by default: shm://, POSIX shared memory), streams N
      batches of four columns (int64 id, float64 value, bool flag, utf8
      label, with nulls), checks every value on arrival and prints one line
      with the throughput.
      """
  )

  @Option(help: "Transport scheme to run over (see `dipc transports`).")
  var transport = "shm"

  @Option(help: "Number of record batches.")
  var batches = 64

  @Option(help: "Rows per batch.")
  var rows = 16_384

  func validate() throws {
    guard batches > 0, rows > 0 else { throw ValidationError("--batches and --rows must be positive") }
  }

  func run() async throws {
    let messages = try Self.dataset(batches: batches, rows: rows)
    var catalog = StreamCatalog()
    catalog.add("demo", .messages(messages))
    let server = try await DissociatedServer(listeningAt: TransportBench.localListenURI(transport), catalog: catalog, registry: .builtIn)
    let running = Task { await server.run() }
    defer { running.cancel() }

    // Receive first (timed), then verify, so the rate is the transport's.
    let started = ContinuousClock.now
    var received: [RecordBatch] = []
    for try await item in DissociatedClient(registry: .builtIn).stream(from: server.location(for: "demo")) {
      if case .recordBatch(let batch) = item { received.append(batch) }
    }
    let elapsed = Units.seconds(ContinuousClock.now - started)
    await server.shutdown()
    guard received.count == batches else {
      throw ValidationError("received \(received.count) batches, sent \(batches)")
    }
    for (index, batch) in received.enumerated() { try Self.verify(batch, base: index * rows) }
    let bytes = Double(received.reduce(0) { $0 + $1.body.count })
    print("demo ok: \(transport):// \(batches) batches, \(batches * rows) rows, \(Units.bytes(bytes)) in "
      + String(format: "%.3f s", elapsed) + ", \(Units.bytes(bytes / elapsed))/s; every value verified")
  }

  /// Schema, then `batches` batches of the four demo columns.
  static func dataset(batches: Int, rows: Int) throws -> [OutgoingMessage] {
    var messages: [OutgoingMessage] = []
    for batch in 0 ..< batches {
      var builder = RecordBatchBuilder()
      let base = batch * rows
      builder.append("id", (0 ..< rows).map { Int64(base + $0) as Int64? })
      builder.append("value", (0 ..< rows).map { $0 % 7 == 0 ? nil : Double(base + $0) * 0.5 })
      builder.append("flag", booleans: (0 ..< rows).map { $0 % 5 == 0 ? nil : ($0 % 2 == 0) })
      builder.append("label", strings: (0 ..< rows).map { $0 % 11 == 0 ? nil : "row-\(base + $0)" })
      if batch == 0 { messages.append(try OutgoingMessage(Message(header: .schema(builder.schema)))) }
      let (message, body) = builder.finish()
      messages.append(try OutgoingMessage(message, body: body))
    }
    return messages
  }

  static func verify(_ batch: RecordBatch, base: Int) throws {
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
      else { throw ValidationError("batch starting at row \(base): row \(row) differs") }
    }
  }
}
