/// A fixed-size struct stored inline in a flatbuffer vector.
public protocol FlatStruct: Hashable, Sendable {
  /// Size in bytes of one element in the flatbuffer.
  static var flatSize: Int { get }
  /// Reads one element at `pointer` (little-endian, any alignment).
  init(flatAt pointer: UnsafeRawPointer)
  /// Writes this element at `pointer` in the flatbuffer layout.
  func write(flatAt pointer: UnsafeMutableRawPointer)
}

extension FieldNode: FlatStruct {
  /// 16 bytes: length, null count.
  public static var flatSize: Int { 16 }
  /// Reads `length` at +0 and `nullCount` at +8.
  @inlinable public init(flatAt pointer: UnsafeRawPointer) {
    self.init(length: Int64(littleEndian: pointer.loadUnaligned(as: Int64.self)),
              nullCount: Int64(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: Int64.self)))
  }
  /// Writes `length` at +0 and `nullCount` at +8.
  public func write(flatAt pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: length.littleEndian, as: Int64.self)
    pointer.storeBytes(of: nullCount.littleEndian, toByteOffset: 8, as: Int64.self)
  }
}

extension BodyBuffer: FlatStruct {
  /// 16 bytes: offset, length.
  public static var flatSize: Int { 16 }
  /// Reads `offset` at +0 and `length` at +8.
  @inlinable public init(flatAt pointer: UnsafeRawPointer) {
    self.init(offset: Int64(littleEndian: pointer.loadUnaligned(as: Int64.self)),
              length: Int64(littleEndian: pointer.loadUnaligned(fromByteOffset: 8, as: Int64.self)))
  }
  /// Writes `offset` at +0 and `length` at +8.
  public func write(flatAt pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: offset.littleEndian, as: Int64.self)
    pointer.storeBytes(of: length.littleEndian, toByteOffset: 8, as: Int64.self)
  }
}

extension Int64: FlatStruct {
  /// 8 bytes.
  public static var flatSize: Int { 8 }
  /// Reads a little-endian Int64.
  @inlinable public init(flatAt pointer: UnsafeRawPointer) {
    self.init(littleEndian: pointer.loadUnaligned(as: Int64.self))
  }
  /// Writes a little-endian Int64.
  public func write(flatAt pointer: UnsafeMutableRawPointer) {
    pointer.storeBytes(of: littleEndian, as: Int64.self)
  }
}

/// A random-access collection of inline structs read from flatbuffer
/// layout: a verified range of a decoded flatbuffer (no copy, no
/// allocation), or elements built in memory, stored in the same layout.
///
/// One reference keeps the memory alive, so copying a value costs a single
/// retain (record-batch headers are copied on every delivery).
public struct FlatStructs<Element: FlatStruct>: RandomAccessCollection, Hashable, @unchecked Sendable {
  // Sendable: `base` points into memory that `owner` keeps alive and
  // immutable (ArrowBytes' contract).
  /// Keeps the memory alive; never read on the element path.
  private let owner: (any ArrowBytesOwner)?
  /// The first element, or nil when empty.
  private let base: UnsafeRawPointer?

  /// The number of elements.
  public let count: Int

  /// Stores `elements` in flatbuffer layout (one allocation; none when
  /// empty).
  public init(_ elements: [Element]) {
    guard !elements.isEmpty else {
      owner = nil
      base = nil
      count = 0
      return
    }
    let storage = AlignedStorage(capacity: elements.count * Element.flatSize, zeroed: false)
    for (index, element) in elements.enumerated() {
      element.write(flatAt: storage.mutableBytes.baseAddress! + index * Element.flatSize)
    }
    owner = storage
    base = elements.isEmpty ? nil : UnsafeRawPointer(storage.mutableBytes.baseAddress!)
    count = elements.count
  }

  /// Wraps `count` elements at `start` in `bytes`; the caller has checked
  /// the range.
  init(verified bytes: ArrowBytes, start: Int, count: Int) {
    owner = bytes.owner
    base = count == 0 ? nil : bytes.unsafeBaseAddress! + start
    self.count = count
  }

  /// 0.
  public var startIndex: Int { 0 }
  /// ``count``.
  public var endIndex: Int { count }

  /// The element at `index`.
  @inlinable public subscript(index: Int) -> Element {
    element(at: index)
  }

  @usableFromInline func element(at index: Int) -> Element {
    precondition(index >= 0 && index < count, "FlatStructs index out of range")
    return Element(flatAt: base! + index * Element.flatSize)
  }

  /// Equal when the elements are equal (at once when both read the same
  /// memory, which is immutable).
  public static func == (lhs: Self, rhs: Self) -> Bool {
    (lhs.base == rhs.base && lhs.count == rhs.count) || lhs.elementsEqual(rhs)
  }

  /// Hashes the elements.
  public func hash(into hasher: inout Hasher) {
    hasher.combine(count)
    for element in self { hasher.combine(element) }
  }
}
