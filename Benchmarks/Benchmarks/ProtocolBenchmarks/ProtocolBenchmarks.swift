// Protocol-core benchmarks (Spec/dissociated-ipc.md): the cost of the
// server and client state machines per batch, each side of a stream alone
// (Components.swift), and end-to-end tiny batches over the in-process
// transport.

import ArrowIPC
import Benchmark
import BenchmarkSupport
import DissociatedIPC
import DissociatedIPCBackendKit

/// A schema and one small record batch (three columns, 8 rows).
func sampleMessages() -> (schema: OutgoingMessage, batch: OutgoingMessage) {
  var builder = RecordBatchBuilder()
  builder.append("id", (0 ..< 8).map { Int64($0) as Int64? })
  builder.append("value", (0 ..< 8).map { $0 == 3 ? nil : Double($0) })
  builder.append("name", strings: (0 ..< 8).map { "n\($0)" })
  let (message, body) = builder.finish()
  return (try! OutgoingMessage(Message(header: .schema(builder.schema))), try! OutgoingMessage(message, body: body))
}

/// Both state machines, kept across iterations so sequence numbers advance.
struct Pipeline {
  var server = ServerStreamStateMachine(role: .combined, remoteMemory: false)
  var client = ClientStreamStateMachine()
  let batch: OutgoingMessage
  /// A reusable frame: the batch's flatbuffer behind a prefix whose
  /// sequence bytes are rewritten in place for each message.
  let frameStorage: AlignedStorage
  let frame: ArrowBytes

  init() {
    let (schema, batch) = sampleMessages()
    self.batch = batch
    let schemaSend = try! server.message(schema)
    try! client.metadataReceived(ArrowBytes(copying: schemaSend.metadata!.encoded))
    _ = try! client.nextItem()
    let storage = AlignedStorage(capacity: 5 + batch.metadata.count)
    storage.mutableBytes[0] = MetadataFrame.messageType
    batch.metadata.withUnsafeBytes { storage.mutableBytes.baseAddress!.advanced(by: 5).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    frameStorage = storage
    frame = storage.freeze(count: 5 + batch.metadata.count)
  }

  /// One batch through both machines: server assigns and emits, the client
  /// matches metadata and body and delivers the batch.
  mutating func step() throws -> Int {
    let send = try server.message(batch)
    guard case .message(let sequence, _)? = send.metadata, case .inline(let tag, let body)? = send.body else {
      fatalError("unexpected send")
    }
    frameStorage.mutableBytes.storeBytes(of: sequence.littleEndian, toByteOffset: 1, as: UInt32.self)
    try client.metadataReceived(frame)
    _ = try client.bodyReceived(tag: tag.rawValue, payload: body)
    guard case .recordBatch(let delivered, _)? = try client.nextItem() else { fatalError("no batch") }
    return delivered.rowCount
  }
}

let benchmarks: @Sendable () -> Void = {
  Benchmark.defaultConfiguration = configuration()

  /// Kept across benchmark runs, so the machines reach their steady state;
  /// one class access per batch.
  final class Holder: @unchecked Sendable { var pipeline = Pipeline() }
  let holder = Holder()
  Benchmark("state-machines-per-batch-server-client-inline-body") { benchmark in
    for _ in benchmark.scaledIterations { blackHole(try holder.pipeline.step()) }
  }

  let (schema, batch) = sampleMessages()
  let tinyStream = [schema] + Array(repeating: batch, count: 10_000)

  let prepared = PreparedConnection.stream(tinyStream)
  var preparedRegistry = TransportRegistry.defaults
  preparedRegistry.register(PreparedTransport(frames: prepared.frames, tagged: prepared.tagged))
  let preparedLocation = try! Location(parsing: "prepared://here?want_data=0&ticket=tiny")
  Benchmark("client-alone-10k-tiny-batches-from-prepared-connection",
            configuration: configuration(seconds: 5)) { benchmark in
    for _ in benchmark.scaledIterations {
      var batches = 0
      for try await case .recordBatch in DissociatedClient(registry: preparedRegistry).stream(from: preparedLocation) { batches += 1 }
      precondition(batches == 10_000)
    }
  }

  Benchmark("server-alone-10k-tiny-batches-into-discarding-connection",
            configuration: configuration(seconds: 5, allocationSlack: 8)) { benchmark in
    var catalog = StreamCatalog()
    catalog.add("tiny", .messages(tinyStream))
    for _ in benchmark.scaledIterations {
      let (sent, signal) = AsyncStream<Void>.makeStream()
      var registry = TransportRegistry.defaults
      // Every message's frame and the end of stream.
      registry.register(DiscardingTransport(listener: DiscardingListener(DiscardingConnection(expected: 10_002, sent: signal))))
      let server = try await DissociatedServer(listeningAt: "discarding://here", catalog: catalog, registry: registry)
      let running = Task { await server.run() }
      for await _ in sent { break }
      running.cancel()
    }
  }
  Benchmark("inproc-end-to-end-10k-tiny-batches",
            configuration: configuration(seconds: 5, allocationSlack: 500)) { benchmark in
    var catalog = StreamCatalog()
    catalog.add("tiny", .messages(tinyStream))
    let server = try await DissociatedServer(listeningAt: "inproc://", catalog: catalog, registry: .defaults)
    let running = Task { await server.run() }
    let client = DissociatedClient(registry: .defaults)
    let location = server.location(for: "tiny")
    benchmark.startMeasurement()
    for _ in benchmark.scaledIterations {
      var batches = 0
      for try await case .recordBatch in client.stream(from: location) { batches += 1 }
      precondition(batches == 10_000)
    }
    benchmark.stopMeasurement()
    running.cancel()
    await server.shutdown()
  }
}
