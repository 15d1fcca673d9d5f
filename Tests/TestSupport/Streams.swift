internal import ArrowIPC
public import DissociatedIPC
internal import Foundation

/// A schema and `batches` batches of one int64 column `v` of `rows` rows,
/// batch `b` holding `b * rows ..< (b + 1) * rows`: a stream whose every
/// value says where it belongs.
public func int64Stream(batches: Int, rows: Int) throws -> [OutgoingMessage] {
  var result: [OutgoingMessage] = []
  for batch in 0 ..< batches {
    var builder = RecordBatchBuilder()
    builder.append("v", (0 ..< rows).map { Int64(batch * rows + $0) as Int64? })
    if batch == 0 { result.append(try OutgoingMessage(Message(header: .schema(builder.schema)))) }
    let (message, body) = builder.finish()
    result.append(try OutgoingMessage(message, body: body))
  }
  return result
}

/// Writes ``int64Stream(batches:rows:)`` as a stream file at `path`.
public func writeInt64Stream(to path: String, batches: Int, rows: Int) throws {
  var writer = IPCStreamWriter(sink: [UInt8]())
  for batch in 0 ..< batches {
    var builder = RecordBatchBuilder()
    builder.append("v", (0 ..< rows).map { Int64(batch * rows + $0) as Int64? })
    if batch == 0 { try writer.write(Message(header: .schema(builder.schema))) }
    let (message, body) = builder.finish()
    try writer.write(message, body: body)
  }
  try writer.finish()
  guard FileManager.default.createFile(atPath: path, contents: Data(writer.sink)) else {
    throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
  }
}

/// Fetches `location` with a client of `registry` and counts the record
/// batches that arrive.
public func recordBatchCount(from location: Location, registry: TransportRegistry) async throws -> Int {
  var batches = 0
  var stream = DissociatedClient(registry: registry).stream(from: location).makeAsyncIterator()
  while let item = try await stream.next() {
    if case .recordBatch = item { batches += 1 }
  }
  await stream.close()
  return batches
}

/// A deterministic pseudo-random generator (SplitMix64), so failures replay.
public struct SplitMix64: RandomNumberGenerator {
  private var state: UInt64
  /// A generator whose sequence `seed` fixes.
  public init(seed: UInt64) { state = seed }
  /// The next 64 random bits.
  public mutating func next() -> UInt64 {
    state &+= 0x9E37_79B9_7F4A_7C15
    var z = state
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
  }
}
