/// Builds a record batch from Swift values: the schema, the RecordBatch
/// message and its body, ready for ``IPCStreamWriter``.
///
/// Buffers are laid out in column order at `alignment` (64 by default, as
/// Arrow recommends); a column without nulls gets an empty validity buffer,
/// as Arrow C++ writes.
public struct RecordBatchBuilder: Sendable {
  private struct Column: Sendable {
    var field: Field
    var node: FieldNode
    var buffers: [[UInt8]]
  }
  private var columns: [Column] = []
  private var rowCount: Int?
  /// The alignment of every buffer in the body (8 or a multiple of 8).
  public let alignment: Int

  /// Creates an empty builder.
  public init(alignment: Int = 64) {
    precondition(alignment >= 8 && alignment % 8 == 0, "alignment must be a multiple of 8")
    self.alignment = alignment
  }

  /// Adds a fixed-width column; nil values are nulls.
  // Inlinable, so the caller's compiler specializes it for `T`: run
  // generically, the loop cost several allocations per value.
  @inlinable
  public mutating func append<T: ArrowPrimitive & BitwiseCopyable>(_ name: String, _ values: [T?]) {
    var bytes = [UInt8](repeating: 0, count: values.count * MemoryLayout<T>.size)
    bytes.withUnsafeMutableBytes { raw in
      for (index, value) in values.enumerated() where value != nil {
        raw.storeBytes(of: value!, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
      }
    }
    add(Field(name, T.arrowType), values.map { $0 != nil }, [bytes])
  }

  /// Adds a boolean column; nil values are nulls.
  public mutating func append(_ name: String, booleans values: [Bool?]) {
    add(Field(name, .bool), values.map { $0 != nil }, [Self.bitmap(values.map { $0 == true })])
  }

  /// Adds a utf8 column; nil values are nulls.
  public mutating func append(_ name: String, strings values: [String?]) {
    appendVariable(Field(name, .utf8), values.map { $0.map { Array($0.utf8) } })
  }

  /// Adds a binary column; nil values are nulls.
  public mutating func append(_ name: String, binaries values: [[UInt8]?]) {
    appendVariable(Field(name, .binary), values)
  }

  private mutating func appendVariable(_ field: Field, _ values: [[UInt8]?]) {
    var offsets: [Int32] = [0]
    var data: [UInt8] = []
    for value in values {
      data.append(contentsOf: value ?? [])
      offsets.append(Int32(data.count))
    }
    add(field, values.map { $0 != nil }, [offsets.withUnsafeBytes { Array($0) }, data])
  }

  @usableFromInline
  mutating func add(_ field: Field, _ valid: [Bool], _ buffers: [[UInt8]]) {
    precondition(rowCount == nil || rowCount == valid.count, "columns must have the same length")
    rowCount = valid.count
    let nulls = valid.count - valid.count { $0 }
    let validity = nulls == 0 ? [] : Self.bitmap(valid)
    columns.append(Column(field: field, node: FieldNode(length: Int64(valid.count), nullCount: Int64(nulls)),
                          buffers: [validity] + buffers))
  }

  private static func bitmap(_ bits: [Bool]) -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: (bits.count + 7) / 8)
    for (index, bit) in bits.enumerated() where bit { bytes[index >> 3] |= 1 << UInt8(index & 7) }
    return bytes
  }

  /// The schema of the columns added so far.
  public var schema: Schema { Schema(fields: columns.map(\.field)) }

  /// The RecordBatch message and its body.
  public func finish() -> (message: Message, body: ArrowBytes) {
    var ranges: [BodyBuffer] = []
    var end = 0
    for buffer in columns.flatMap(\.buffers) {
      ranges.append(BodyBuffer(offset: Int64(end), length: Int64(buffer.count)))
      end += (buffer.count + alignment - 1) / alignment * alignment
    }
    let storage = AlignedStorage(capacity: end)
    for (range, buffer) in zip(ranges, columns.flatMap(\.buffers)) where !buffer.isEmpty {
      buffer.withUnsafeBytes {
        storage.mutableBytes.baseAddress!.advanced(by: Int(range.offset))
          .copyMemory(from: $0.baseAddress!, byteCount: buffer.count)
      }
    }
    let header = RecordBatchHeader(length: Int64(rowCount ?? 0), nodes: columns.map(\.node), buffers: ranges)
    return (Message(header: .recordBatch(header), bodyLength: Int64(end)), storage.freeze(count: end))
  }
}
