public import ArrowIPC

/// Reads Arrow IPC streams end to end and touches every value a consumer
/// could read: the `ipc-stream` target, and the random-mutation test.
public enum StreamExerciser {
  /// Reads `bytes` as a stream, touching every readable value (folded
  /// into `checksum`, so nothing is optimised away); throws the first
  /// error the stream has.
  public static func read(_ bytes: ArrowBytes, checksum: inout Int) throws(ArrowIPCError) {
    var reader = try ArrowStreamReader(bytes)
    while let item = try reader.next() {
      switch item {
      case .recordBatch(let batch): try touch(batch, &checksum)
      case .dictionary(let dictionary): try touch(dictionary.values, &checksum)
      }
    }
  }

  /// Touches every column of `batch` (compressed bodies are passed
  /// through undecoded, so not read).
  public static func touch(_ batch: RecordBatch, _ checksum: inout Int) throws(ArrowIPCError) {
    guard batch.header.compression == nil else { return }
    for index in 0 ..< batch.columnCount { try touch(batch.column(index), &checksum) }
  }

  /// Touches the values of `array` and its children, by type.
  static func touch(_ array: ArrayView, _ checksum: inout Int) throws(ArrowIPCError) {
    if array.field.dictionary == nil {
      switch array.field.type {
      case .int(8, true): checksum &+= sum(try array.values(as: Int8.self))
      case .int(32, true), .date(.day): checksum &+= sum(try array.values(as: Int32.self))
      case .int(64, true), .timestamp, .duration: checksum &+= sum(try array.values(as: Int64.self))
      case .int(64, false): checksum &+= sum(try array.values(as: UInt64.self))
      case .floatingPoint(.double): checksum &+= try array.values(as: Double.self).count { $0 != nil }
      case .bool: checksum &+= try array.booleans().count { $0 == true }
      case .utf8, .binary, .largeUtf8, .largeBinary:
        let values = try array.binaries()
        for index in 0 ..< values.count { checksum &+= values[index]?.count ?? 0 }
      default: break
      }
    }
    for child in array.children { try touch(child, &checksum) }
  }

  static func sum<T: ArrowPrimitive & BinaryInteger>(_ values: PrimitiveValues<T>) -> Int {
    values.reduce(0) { $0 &+ Int(truncatingIfNeeded: $1 ?? 0) }
  }
}

/// The `ipc-stream` target.
enum IPCStreamTarget {
  static func run(_ input: [UInt8]) {
    var checksum = 0
    do throws(ArrowIPCError) {
      try StreamExerciser.read(ArrowBytes(copying: input), checksum: &checksum)
    } catch {
      checksum &+= 1
    }
    blackHole(checksum)
  }
}

/// Keeps `value` alive for the optimiser.
@inline(never)
func blackHole<T>(_ value: T) { withExtendedLifetime(value) {} }
