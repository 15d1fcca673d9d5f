/// Builds a FlatBuffer back to front, the way the reference builders do.
///
/// Children are written before their parents; ``Offset`` values count bytes
/// from the end of the finished buffer, so they stay valid as the buffer
/// grows at the front. Every scalar is aligned to its size and the finished
/// buffer's length is a multiple of the largest alignment used (8 for Arrow).
struct FlatBufferBuilder {
  /// A position in the buffer, counted from its end.
  struct Offset: Hashable {
    fileprivate let fromEnd: Int
  }

  /// Bytes are kept at the end of `storage`: the finished buffer is
  /// `storage[storage.count - used ..< storage.count]`.
  private var storage: [UInt8]
  private var used = 0
  private var minimumAlignment = 1
  /// Field id → position (from end) of the fields of the table being built.
  private var tableFields: [(id: Int, at: Int)] = []
  private var tableStart = 0

  /// Creates a builder with room for `capacity` bytes before it grows.
  init(capacity: Int = 256) {
    storage = [UInt8](repeating: 0, count: max(capacity, 16))
  }

  // MARK: Raw writing

  private mutating func ensureSpace(_ extra: Int) {
    guard used + extra > storage.count else { return }
    var newCount = storage.count
    while used + extra > newCount { newCount *= 2 }
    var grown = [UInt8](repeating: 0, count: newCount)
    let oldCount = storage.count
    grown.withUnsafeMutableBytes { target in
      storage.withUnsafeBytes { source in
        target.baseAddress!.advanced(by: newCount - used)
          .copyMemory(from: source.baseAddress!.advanced(by: oldCount - used), byteCount: used)
      }
    }
    storage = grown
  }

  /// Pads so that after writing `additional` more bytes, the position is a
  /// multiple of `size`.
  private mutating func prepare(_ size: Int, additional: Int) {
    minimumAlignment = max(minimumAlignment, size)
    let padding = (~(used + additional) &+ 1) & (size - 1)
    ensureSpace(padding + additional + size)
    used += padding  // storage is zero-filled, so padding bytes are zero
  }

  private mutating func push<T: FixedWidthInteger>(_ value: T) {
    let size = MemoryLayout<T>.size
    ensureSpace(size)
    used += size
    let at = storage.count - used
    storage.withUnsafeMutableBytes { $0.storeBytes(of: value.littleEndian, toByteOffset: at, as: T.self) }
  }

  private mutating func pushBytes(_ bytes: some Collection<UInt8>) {
    ensureSpace(bytes.count)
    used += bytes.count
    let at = storage.count - used
    storage.replaceSubrange(at ..< at + bytes.count, with: bytes)
  }

  /// The current position.
  private var here: Offset { Offset(fromEnd: used) }

  // MARK: Tables

  /// Starts a table; add its fields, then call ``endTable()``.
  mutating func startTable() {
    precondition(tableFields.isEmpty, "nested startTable")
    tableStart = used
  }

  /// Adds a scalar field. Values equal to `omitIfEqual` are not written
  /// (readers apply the schema default); pass `nil` to always write.
  mutating func add<T: FixedWidthInteger>(_ id: Int, _ value: T, omitIfEqual defaultValue: T? = nil) {
    if let defaultValue, value == defaultValue { return }
    prepare(MemoryLayout<T>.size, additional: 0)
    push(value)
    tableFields.append((id, used))
  }

  /// Adds a bool field; a value equal to `omitIfEqual` (by default
  /// `false`) is not written; pass `nil` to always write.
  mutating func add(_ id: Int, _ value: Bool, omitIfEqual defaultValue: Bool? = false) {
    add(id, UInt8(value ? 1 : 0), omitIfEqual: defaultValue.map { $0 ? 1 : 0 })
  }

  /// Adds an inline struct of two Int64 (Arrow's `Buffer`), aligned to 8.
  mutating func add(_ id: Int, int64Pair pair: (Int64, Int64)) {
    prepare(8, additional: 16)
    push(pair.1)
    push(pair.0)
    tableFields.append((id, used))
  }

  /// Adds a reference field (table, vector or string).
  mutating func add(_ id: Int, _ target: Offset) {
    prepare(4, additional: 0)
    push(UInt32(used + 4 - target.fromEnd))
    tableFields.append((id, used))
  }

  /// Adds a reference field when `target` is present.
  mutating func add(_ id: Int, _ target: Offset?) {
    if let target { add(id, target) }
  }

  /// Finishes the table and writes its vtable in front of it.
  mutating func endTable() -> Offset {
    prepare(4, additional: 0)
    push(Int32(0))  // soffset to the vtable, patched below
    let tableAt = used
    let fieldCount = (tableFields.map(\.id).max() ?? -1) + 1
    var slots = [UInt16](repeating: 0, count: fieldCount)
    for field in tableFields { slots[field.id] = UInt16(tableAt - field.at) }
    for slot in slots.reversed() { push(slot) }
    push(UInt16(tableAt - tableStart))  // inline table size
    push(UInt16(4 + 2 * fieldCount))  // vtable size
    let vtableAt = used
    let soffsetPosition = storage.count - tableAt
    storage.withUnsafeMutableBytes {
      $0.storeBytes(of: Int32(vtableAt - tableAt).littleEndian, toByteOffset: soffsetPosition, as: Int32.self)
    }
    tableFields.removeAll(keepingCapacity: true)
    return Offset(fromEnd: tableAt)
  }

  // MARK: Vectors and strings

  /// A vector of table (or string) references.
  mutating func vector(of offsets: [Offset]) -> Offset {
    prepare(4, additional: 4 * offsets.count)
    for offset in offsets.reversed() { push(UInt32(used + 4 - offset.fromEnd)) }
    push(UInt32(offsets.count))
    return here
  }

  /// A vector of scalars.
  mutating func vector<T: FixedWidthInteger>(of values: some BidirectionalCollection<T>) -> Offset {
    let size = MemoryLayout<T>.size
    prepare(4, additional: size * values.count)
    prepare(size, additional: size * values.count)
    for value in values.reversed() { push(value) }
    push(UInt32(values.count))
    return here
  }

  /// A vector of structs made of two `Int64` fields (Arrow's `FieldNode` and
  /// `Buffer`), 16 bytes each, aligned to 8.
  mutating func vector(ofInt64Pairs pairs: some BidirectionalCollection<(Int64, Int64)>) -> Offset {
    prepare(4, additional: 16 * pairs.count)
    prepare(8, additional: 16 * pairs.count)
    for pair in pairs.reversed() {
      push(pair.1)
      push(pair.0)
    }
    push(UInt32(pairs.count))
    return here
  }

  /// A string (UTF-8, zero-terminated).
  mutating func string(_ text: String) -> Offset {
    let utf8 = Array(text.utf8)
    prepare(4, additional: utf8.count + 1)
    push(UInt8(0))
    pushBytes(utf8)
    push(UInt32(utf8.count))
    return here
  }

  // MARK: Finishing

  /// Writes the root offset and returns the finished bytes.
  mutating func finish(root: Offset) -> [UInt8] {
    prepare(max(minimumAlignment, 8), additional: 4)
    push(UInt32(used + 4 - root.fromEnd))
    return Array(storage[(storage.count - used)...])
  }
}
