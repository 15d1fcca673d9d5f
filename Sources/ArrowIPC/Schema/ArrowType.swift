/// An Arrow logical type: one member of the `Type` union in Arrow's
/// `Schema.fbs`.
///
/// Nested types (lists, structs, maps, unions, run-end encoded) carry only
/// their own parameters; their child fields are ``Field/children``, as in the
/// flatbuffer.
public enum ArrowType: Hashable, Sendable {
  /// All values null; no buffers.
  case null
  /// Bit-packed booleans.
  case bool
  /// Integers of 8, 16, 32 or 64 bits.
  case int(bitWidth: Int, signed: Bool)
  /// IEEE 754 floats.
  case floatingPoint(FloatingPointPrecision)
  /// Decimals of 32, 64, 128 or 256 bits.
  case decimal(precision: Int, scale: Int, bitWidth: Int)
  /// Dates: days as Int32 or milliseconds as Int64.
  case date(DateUnit)
  /// Time of day, 32 bits (seconds, milliseconds) or 64 bits (micro-, nanoseconds).
  case time(TimeUnit, bitWidth: Int)
  /// Instants as Int64 since the epoch; `timezone` nil means naive.
  case timestamp(TimeUnit, timezone: String?)
  /// Calendar intervals.
  case interval(IntervalUnit)
  /// Elapsed time as Int64.
  case duration(TimeUnit)
  /// Variable-length bytes with Int32 offsets.
  case binary
  /// Variable-length UTF-8 with Int32 offsets.
  case utf8
  /// Variable-length bytes with Int64 offsets.
  case largeBinary
  /// Variable-length UTF-8 with Int64 offsets.
  case largeUtf8
  /// Bytes through 16-byte views into variadic data buffers.
  case binaryView
  /// UTF-8 through 16-byte views into variadic data buffers.
  case utf8View
  /// Fixed-width opaque values of `byteWidth` bytes.
  case fixedSizeBinary(byteWidth: Int)
  /// Lists with Int32 offsets; one child.
  case list
  /// Lists with Int64 offsets; one child.
  case largeList
  /// Lists of `listSize` child values each; one child.
  case fixedSizeList(listSize: Int)
  /// Lists with Int32 offsets and sizes; one child.
  case listView
  /// Lists with Int64 offsets and sizes; one child.
  case largeListView
  /// A struct; one child per member.
  case `struct`
  /// A map: a list of `entries` structs with `key` and `value` children.
  case map(keysSorted: Bool)
  /// A union of the children; `typeIds` maps child index to type id (nil
  /// means child i has id i).
  case union(mode: UnionMode, typeIds: [Int32]?)
  /// Run-end encoded values: children `run_ends` and `values`.
  case runEndEncoded

  /// The code of this member in the flatbuffer `Type` union.
  public var unionCode: UInt8 {
    switch self {
    case .null: 1
    case .int: 2
    case .floatingPoint: 3
    case .binary: 4
    case .utf8: 5
    case .bool: 6
    case .decimal: 7
    case .date: 8
    case .time: 9
    case .timestamp: 10
    case .interval: 11
    case .list: 12
    case .struct: 13
    case .union: 14
    case .fixedSizeBinary: 15
    case .fixedSizeList: 16
    case .map: 17
    case .duration: 18
    case .largeBinary: 19
    case .largeUtf8: 20
    case .largeList: 21
    case .runEndEncoded: 22
    case .binaryView: 23
    case .utf8View: 24
    case .listView: 25
    case .largeListView: 26
    }
  }

  /// The width in bytes of one value of a fixed-width type (nil for others).
  /// `bool` is bit-packed and reports nil.
  public var byteWidth: Int? {
    switch self {
    case .int(let bits, _): bits / 8
    case .floatingPoint(let precision): precision.byteWidth
    case .decimal(_, _, let bits): bits / 8
    case .date(let unit): unit == .day ? 4 : 8
    case .time(_, let bits): bits / 8
    case .timestamp, .duration: 8
    case .interval(let unit): unit.byteWidth
    case .fixedSizeBinary(let width): width
    default: nil
    }
  }
}

/// Floating-point precision.
public enum FloatingPointPrecision: Int16, Hashable, Sendable, CaseIterable {
  /// 16-bit.
  case half = 0
  /// 32-bit.
  case single = 1
  /// 64-bit.
  case double = 2

  /// Bytes per value.
  public var byteWidth: Int { [2, 4, 8][Int(rawValue)] }
}

/// The unit of a ``ArrowType/date(_:)``.
public enum DateUnit: Int16, Hashable, Sendable, CaseIterable {
  /// Days since the epoch, Int32 (Date32).
  case day = 0
  /// Milliseconds since the epoch, Int64 (Date64).
  case millisecond = 1
}

/// The unit of times, timestamps and durations.
public enum TimeUnit: Int16, Hashable, Sendable, CaseIterable {
  /// Seconds.
  case second = 0
  /// Milliseconds.
  case millisecond = 1
  /// Microseconds.
  case microsecond = 2
  /// Nanoseconds.
  case nanosecond = 3
}

/// The unit of an ``ArrowType/interval(_:)``.
public enum IntervalUnit: Int16, Hashable, Sendable, CaseIterable {
  /// Months as Int32.
  case yearMonth = 0
  /// Days and milliseconds as two Int32.
  case dayTime = 1
  /// Months, days (Int32 each) and nanoseconds (Int64).
  case monthDayNano = 2

  /// Bytes per value.
  public var byteWidth: Int { [4, 8, 16][Int(rawValue)] }
}

/// Sparse or dense union layout.
public enum UnionMode: Int16, Hashable, Sendable, CaseIterable {
  /// Every child has the union's length; a type-id buffer selects.
  case sparse = 0
  /// A type-id buffer and an offsets buffer index into shorter children.
  case dense = 1
}
