/// Read access to one array of a record batch.
///
/// The typed accessors check the array's type and buffer sizes once, then
/// read values straight from the body. Compressed or big-endian bodies are
/// not decoded: the accessors throw `.unsupportedFeature` for them.
public struct ArrayView: Sendable {
  /// The matched layout.
  public let layout: ArrayLayout
  let body: ArrowBytes
  let compressed: Bool
  let bigEndian: Bool

  /// The field.
  public var field: Field { layout.field }
  /// The number of value slots.
  public var length: Int { Int(layout.node.length) }
  /// The number of nulls.
  public var nullCount: Int { Int(layout.node.nullCount) }

  /// Buffer `index` (counted from 0) of this array, a slice of the body.
  public func buffer(_ index: Int) -> ArrowBytes {
    let range = layout.buffers[layout.buffers.startIndex + index]
    // BodyLayout checked that the range lies inside the body.
    return body.clampedSlice(offset: Int(clamping: range.offset), count: Int(clamping: range.length))
  }

  /// The child arrays (struct members, list values, …).
  public var children: [ArrayView] {
    layout.children.map { ArrayView(layout: $0, body: body, compressed: compressed, bigEndian: bigEndian) }
  }

  /// The validity bitmap, or nil when every slot is valid.
  public func validity() throws(ArrowIPCError) -> ValidityBitmap? {
    try checkReadable()
    guard nullCount > 0 else { return nil }
    guard let bitmap = layout.buffers.first, fits(bitmap.length, count: length, bitWidth: 1) else {
      throw ArrowIPCError(.layoutMismatch, "field '\(field.name)': validity bitmap shorter than \(length) bits")
    }
    return ValidityBitmap(bytes: buffer(0), length: length)
  }

  /// Fixed-width values read as `T`.
  ///
  /// - Throws: `.invalidValue` when `T` does not match the field's type,
  ///   `.layoutMismatch` when the values buffer is too short.
  public func values<T: ArrowPrimitive>(as _: T.Type) throws(ArrowIPCError) -> PrimitiveValues<T> {
    guard field.dictionary == nil, T.matches(field.type) else {
      throw ArrowIPCError(.invalidValue, "field '\(field.name)' of type \(field.type) is not readable as \(T.self)")
    }
    let validity = try validity()
    let values = buffer(1)
    guard fits(Int64(values.count), count: length, bitWidth: 8 * MemoryLayout<T>.size) else {
      throw ArrowIPCError(.layoutMismatch, "field '\(field.name)': values buffer holds \(values.count) bytes for \(length) values")
    }
    return PrimitiveValues(values: values, validity: validity, count: length)
  }

  /// Boolean values.
  public func booleans() throws(ArrowIPCError) -> BooleanValues {
    guard field.dictionary == nil, field.type == .bool else {
      throw ArrowIPCError(.invalidValue, "field '\(field.name)' of type \(field.type) is not bool")
    }
    let validity = try validity()
    let bits = buffer(1)
    guard fits(Int64(bits.count), count: length, bitWidth: 1) else {
      throw ArrowIPCError(.layoutMismatch, "field '\(field.name)': \(bits.count) bytes for \(length) booleans")
    }
    return BooleanValues(bits: ValidityBitmap(bytes: bits, length: length), validity: validity)
  }

  /// Variable-length values of a binary, utf8, large binary or large utf8
  /// array. Offsets are checked once: non-decreasing, inside the data.
  public func binaries() throws(ArrowIPCError) -> BinaryValues {
    let offsetWidth: Int
    switch field.type {
    case .binary, .utf8: offsetWidth = 4
    case .largeBinary, .largeUtf8: offsetWidth = 8
    default:
      throw ArrowIPCError(.invalidValue, "field '\(field.name)' of type \(field.type) is not binary or utf8")
    }
    guard field.dictionary == nil else {
      throw ArrowIPCError(.invalidValue, "field '\(field.name)' is dictionary-encoded")
    }
    let validity = try validity()
    let offsets = buffer(1)
    let data = buffer(2)
    guard length == 0 || (length < Int.max && fits(Int64(offsets.count), count: length + 1, bitWidth: 8 * offsetWidth)) else {
      throw ArrowIPCError(.layoutMismatch, "field '\(field.name)': offsets buffer too short")
    }
    let values = BinaryValues(offsets: offsets, offsetWidth: offsetWidth, data: data, validity: validity, count: length)
    try values.checkOffsets(field: field.name)
    return values
  }

  /// Whether `available` bytes hold `count` values of `bitWidth` bits;
  /// false when the size overflows (a lying node length).
  private func fits(_ available: Int64, count: Int, bitWidth: Int) -> Bool {
    let (bits, overflow) = count.multipliedReportingOverflow(by: bitWidth)
    return !overflow && bits <= Int.max - 7 && Int64((bits + 7) / 8) <= available
  }

  private func checkReadable() throws(ArrowIPCError) {
    guard !compressed else {
      throw ArrowIPCError(.unsupportedFeature, "field '\(field.name)': typed access to a compressed body")
    }
    guard !bigEndian else {
      throw ArrowIPCError(.unsupportedFeature, "field '\(field.name)': typed access to a big-endian body")
    }
  }
}

/// A bitmap of `length` bits, least significant bit first.
public struct ValidityBitmap: Sendable {
  let bytes: ArrowBytes
  /// The number of bits.
  public let length: Int

  /// Bit `index`.
  public subscript(index: Int) -> Bool {
    precondition(index >= 0 && index < length, "bit index out of range")
    return bytes[index >> 3] & (1 << UInt8(index & 7)) != 0
  }
}

/// A Swift type that reads the values of fixed-width Arrow types.
public protocol ArrowPrimitive: Sendable {
  /// The type a writer gives a column of this Swift type.
  static var arrowType: ArrowType { get }
  /// Whether values of `type` can be read as this Swift type.
  static func matches(_ type: ArrowType) -> Bool
}

extension ArrowPrimitive where Self: FixedWidthInteger {
  /// The matching `Int` type of the same width and signedness.
  public static var arrowType: ArrowType { .int(bitWidth: bitWidth, signed: isSigned) }
  /// Integers of the same width and signedness; Int32 and Int64 also read
  /// the temporal types stored as such.
  public static func matches(_ type: ArrowType) -> Bool {
    if type == arrowType { return true }
    guard isSigned else { return false }
    switch type {
    case .date, .time, .timestamp, .duration: return type.byteWidth == bitWidth / 8
    case .interval(.yearMonth): return bitWidth == 32
    default: return false
    }
  }
}

extension Int8: ArrowPrimitive {}
extension Int16: ArrowPrimitive {}
extension Int32: ArrowPrimitive {}
extension Int64: ArrowPrimitive {}
extension UInt8: ArrowPrimitive {}
extension UInt16: ArrowPrimitive {}
extension UInt32: ArrowPrimitive {}
extension UInt64: ArrowPrimitive {}

extension Float: ArrowPrimitive {
  /// `floatingPoint(.single)`.
  public static var arrowType: ArrowType { .floatingPoint(.single) }
  /// Single-precision floats.
  public static func matches(_ type: ArrowType) -> Bool { type == arrowType }
}

extension Double: ArrowPrimitive {
  /// `floatingPoint(.double)`.
  public static var arrowType: ArrowType { .floatingPoint(.double) }
  /// Double-precision floats.
  public static func matches(_ type: ArrowType) -> Bool { type == arrowType }
}

/// The values of a fixed-width array; nil for null slots.
public struct PrimitiveValues<T: ArrowPrimitive>: RandomAccessCollection, Sendable {
  let values: ArrowBytes
  let validity: ValidityBitmap?
  /// The number of slots.
  public let count: Int

  /// 0.
  public var startIndex: Int { 0 }
  /// ``count``.
  public var endIndex: Int { count }

  /// The value at `index`, or nil when null.
  public subscript(index: Int) -> T? {
    precondition(index >= 0 && index < count, "value index out of range")
    if let validity, !validity[index] { return nil }
    return values.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: index * MemoryLayout<T>.size, as: T.self) }
  }
}

/// The values of a boolean array; nil for null slots.
public struct BooleanValues: RandomAccessCollection, Sendable {
  let bits: ValidityBitmap
  let validity: ValidityBitmap?

  /// 0.
  public var startIndex: Int { 0 }
  /// The number of slots.
  public var endIndex: Int { bits.length }

  /// The value at `index`, or nil when null.
  public subscript(index: Int) -> Bool? {
    if let validity, !validity[index] { return nil }
    return bits[index]
  }
}

/// The values of a binary or utf8 array; nil for null slots.
public struct BinaryValues: RandomAccessCollection, Sendable {
  let offsets: ArrowBytes
  let offsetWidth: Int
  let data: ArrowBytes
  let validity: ValidityBitmap?
  /// The number of slots.
  public let count: Int

  /// 0.
  public var startIndex: Int { 0 }
  /// ``count``.
  public var endIndex: Int { count }

  private func offset(_ index: Int) -> Int {
    offsets.withUnsafeBytes { raw in
      offsetWidth == 4
        ? Int(Int32(littleEndian: raw.loadUnaligned(fromByteOffset: 4 * index, as: Int32.self)))
        : Int(Int64(littleEndian: raw.loadUnaligned(fromByteOffset: 8 * index, as: Int64.self)))
    }
  }

  func checkOffsets(field: String) throws(ArrowIPCError) {
    guard count > 0 else { return }
    var previous = offset(0)
    guard previous >= 0 else { throw ArrowIPCError(.layoutMismatch, "field '\(field)': first offset \(previous)") }
    for index in 1 ... count {
      let next = offset(index)
      guard next >= previous else {
        throw ArrowIPCError(.layoutMismatch, "field '\(field)': offset \(index) decreases")
      }
      previous = next
    }
    guard previous <= data.count else {
      throw ArrowIPCError(.layoutMismatch, "field '\(field)': offsets end at \(previous), data has \(data.count) bytes")
    }
  }

  /// The bytes of slot `index` (a slice of the body), or nil when null.
  public subscript(index: Int) -> ArrowBytes? {
    precondition(index >= 0 && index < count, "value index out of range")
    if let validity, !validity[index] { return nil }
    // checkOffsets proved start...end lies inside the data buffer, but a
    // peer may rewrite shared memory after that check (SHM-TRUST-1): the
    // offsets are read again and clamped, so such a peer changes values,
    // never where they are read from.
    let start = Swift.min(Swift.max(offset(index), 0), data.count)
    let end = Swift.min(Swift.max(offset(index + 1), start), data.count)
    return ArrowBytes(owner: data.owner, base: data.base.map { $0 + start }, count: end - start)
  }

  /// Slot `index` decoded as UTF-8 (invalid sequences repaired), or nil
  /// when null.
  public func string(at index: Int) -> String? {
    self[index].map { bytes in bytes.withUnsafeBytes { String(decoding: $0, as: UTF8.self) } }
  }
}
