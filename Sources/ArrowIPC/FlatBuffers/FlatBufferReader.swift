/// Bounds-checked reading of a FlatBuffer in raw memory.
///
/// Every offset, vtable, vector and string is checked against the buffer
/// before it is used, so a lying buffer yields an ``ArrowIPCError`` and never
/// an out-of-bounds read. Loads are unaligned, so the buffer may start at any
/// address (the Dissociated IPC metadata frame puts it at offset 5).
///
/// The pointer is borrowed: callers keep the memory alive (``ArrowBytes``
/// does) while a reader or any ``FlatBufferTable`` made from it is in use.
@usableFromInline
struct FlatBufferReader {
  @usableFromInline let base: UnsafeRawPointer
  @usableFromInline let count: Int

  @usableFromInline
  init(base: UnsafeRawPointer, count: Int) {
    self.base = base
    self.count = count
  }

  /// Whether `size` bytes at `offset` lie inside the buffer.
  @inlinable
  func contains(_ offset: Int, _ size: Int) -> Bool {
    offset >= 0 && size >= 0 && offset <= count && size <= count &- offset
  }

  /// Loads a little-endian integer at `offset`.
  ///
  /// The hot accessors are always inlined and build their errors in
  /// separate cold functions: with the message text inline they were too
  /// large to inline, and a metadata decode paid a call per field.
  @inlinable @inline(__always)
  func load<T: FixedWidthInteger>(_: T.Type, at offset: Int) throws(ArrowIPCError) -> T {
    guard contains(offset, MemoryLayout<T>.size) else { throw outOfBounds("\(T.self)", at: offset) }
    return T(littleEndian: base.loadUnaligned(fromByteOffset: offset, as: T.self))
  }

  @usableFromInline @inline(never)
  func outOfBounds(_ what: String, at offset: Int) -> ArrowIPCError {
    ArrowIPCError(.outOfBounds, "\(what) at \(offset) outside \(count)-byte flatbuffer")
  }

  /// Follows the uoffset stored at `slot`: the target is `slot + value`.
  @inlinable @inline(__always)
  func follow(_ slot: Int) throws(ArrowIPCError) -> Int {
    let relative = try load(UInt32.self, at: slot)
    let (target, overflow) = slot.addingReportingOverflow(Int(relative))
    guard !overflow, target < count, relative > 0 else { throw badOffset(at: slot, relative: relative) }
    return target
  }

  @usableFromInline @inline(never)
  func badOffset(at slot: Int, relative: UInt32) -> ArrowIPCError {
    ArrowIPCError(.outOfBounds, "offset at \(slot) points to \(slot &+ Int(relative)), outside \(count) bytes")
  }

  /// The root table (the uoffset at byte 0).
  @inlinable
  func rootTable() throws(ArrowIPCError) -> FlatBufferTable {
    try table(at: follow(0))
  }

  /// Validates and returns the table at `position`.
  @inlinable @inline(__always)
  func table(at position: Int) throws(ArrowIPCError) -> FlatBufferTable {
    let soffset = try load(Int32.self, at: position)
    let (vtable, overflow) = position.subtractingReportingOverflow(Int(soffset))
    guard !overflow, contains(vtable, 4) else {
      throw invalidVTable("vtable of table at \(position) lies outside the buffer")
    }
    let vtableSize = Int(try load(UInt16.self, at: vtable))
    let tableSize = Int(try load(UInt16.self, at: vtable + 2))
    guard vtableSize >= 4, vtableSize % 2 == 0, contains(vtable, vtableSize) else {
      throw invalidVTable("vtable at \(vtable) has bad size \(vtableSize)")
    }
    guard tableSize >= 4, contains(position, tableSize) else {
      throw invalidVTable("table at \(position) has bad inline size \(tableSize)")
    }
    return FlatBufferTable(reader: self, position: position, vtable: vtable,
                           fieldCount: (vtableSize - 4) / 2, inlineSize: tableSize)
  }

  @usableFromInline @inline(never)
  func invalidVTable(_ detail: @autoclosure () -> String) -> ArrowIPCError {
    ArrowIPCError(.invalidVTable, detail())
  }
}

/// A validated table: its vtable and inline area lie inside the buffer.
@usableFromInline
struct FlatBufferTable {
  @usableFromInline let reader: FlatBufferReader
  @usableFromInline let position: Int
  @usableFromInline let vtable: Int
  @usableFromInline let fieldCount: Int
  @usableFromInline let inlineSize: Int

  @usableFromInline
  init(reader: FlatBufferReader, position: Int, vtable: Int, fieldCount: Int, inlineSize: Int) {
    self.reader = reader
    self.position = position
    self.vtable = vtable
    self.fieldCount = fieldCount
    self.inlineSize = inlineSize
  }

  /// The absolute position of field `id` holding `size` bytes, or `nil` when
  /// absent. Checks that the field lies inside the table's inline area.
  @inlinable @inline(__always)
  func fieldPosition(_ id: Int, size: Int) throws(ArrowIPCError) -> Int? {
    guard id < fieldCount else { return nil }
    let relative = Int(try reader.load(UInt16.self, at: vtable + 4 + 2 * id))
    guard relative != 0 else { return nil }
    guard relative >= 4, relative + size <= inlineSize else {
      throw reader.invalidVTable("field \(id) at +\(relative) outside table of \(inlineSize) bytes")
    }
    return position + relative
  }

  /// A scalar field, or `defaultValue` when absent.
  @inlinable @inline(__always)
  func scalar<T: FixedWidthInteger>(_ id: Int, default defaultValue: T) throws(ArrowIPCError) -> T {
    guard let at = try fieldPosition(id, size: MemoryLayout<T>.size) else { return defaultValue }
    return try reader.load(T.self, at: at)
  }

  /// A bool field, or `defaultValue` when absent. Any non-zero byte is true.
  @inlinable
  func bool(_ id: Int, default defaultValue: Bool) throws(ArrowIPCError) -> Bool {
    try scalar(id, default: UInt8(defaultValue ? 1 : 0)) != 0
  }

  /// Whether field `id` is present.
  @inlinable
  func has(_ id: Int) throws(ArrowIPCError) -> Bool {
    try fieldPosition(id, size: 0) != nil
  }

  /// A sub-table field, or `nil` when absent.
  @inlinable @inline(__always)
  func table(_ id: Int) throws(ArrowIPCError) -> FlatBufferTable? {
    guard let slot = try fieldPosition(id, size: 4) else { return nil }
    return try reader.table(at: reader.follow(slot))
  }

  /// A vector field of `elementSize`-byte elements, or `nil` when absent.
  @inlinable @inline(__always)
  func vector(_ id: Int, elementSize: Int) throws(ArrowIPCError) -> FlatBufferVector? {
    guard let slot = try fieldPosition(id, size: 4) else { return nil }
    let start = try reader.follow(slot)
    let length = Int(try reader.load(UInt32.self, at: start))
    let (bytes, overflow) = length.multipliedReportingOverflow(by: elementSize)
    guard !overflow, reader.contains(start + 4, bytes) else {
      throw reader.outOfBounds("vector of \(length)×\(elementSize) bytes", at: start)
    }
    return FlatBufferVector(reader: reader, start: start + 4, count: length, elementSize: elementSize)
  }

  /// An inline struct of two Int64 (Arrow's `Buffer`), or `nil` when absent.
  @inlinable
  func int64Pair(_ id: Int) throws(ArrowIPCError) -> (Int64, Int64)? {
    guard let at = try fieldPosition(id, size: 16) else { return nil }
    return (try reader.load(Int64.self, at: at), try reader.load(Int64.self, at: at + 8))
  }

  /// A string field, decoded as UTF-8, or `nil` when absent.
  func string(_ id: Int) throws(ArrowIPCError) -> String? {
    guard let vector = try vector(id, elementSize: 1) else { return nil }
    let bytes = UnsafeRawBufferPointer(start: reader.base + vector.start, count: vector.count)
    guard let text = String(validating: bytes, as: UTF8.self) else {
      throw ArrowIPCError(.invalidValue, "string at \(vector.start) is not valid UTF-8")
    }
    return text
  }
}

/// A validated vector: all `count` elements lie inside the buffer.
@usableFromInline
struct FlatBufferVector {
  @usableFromInline let reader: FlatBufferReader
  /// Absolute position of element 0.
  @usableFromInline let start: Int
  @usableFromInline let count: Int
  @usableFromInline let elementSize: Int

  @usableFromInline
  init(reader: FlatBufferReader, start: Int, count: Int, elementSize: Int) {
    self.reader = reader
    self.start = start
    self.count = count
    self.elementSize = elementSize
  }

  /// The scalar element at `index` (already bounds-checked by construction).
  @inlinable
  func scalar<T: FixedWidthInteger>(_ index: Int, as: T.Type) -> T {
    precondition(index >= 0 && index < count && MemoryLayout<T>.size == elementSize)
    return T(littleEndian: reader.base.loadUnaligned(fromByteOffset: start + index * elementSize, as: T.self))
  }

  /// Scalar number `index` of `stride` bytes inside a vector of structs
  /// (already bounds-checked by construction).
  @inlinable
  func scalar<T: FixedWidthInteger>(_ index: Int, as: T.Type, stride: Int) -> T {
    precondition(index >= 0 && (index + 1) * stride <= count * elementSize)
    return T(littleEndian: reader.base.loadUnaligned(fromByteOffset: start + index * stride, as: T.self))
  }

  /// The table element at `index` of a vector of table offsets.
  @inlinable
  func table(_ index: Int) throws(ArrowIPCError) -> FlatBufferTable {
    precondition(index >= 0 && index < count && elementSize == 4)
    return try reader.table(at: reader.follow(start + 4 * index))
  }
}
