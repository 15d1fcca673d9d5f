#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// An object that keeps a region of memory alive and unchanged while any
/// ``ArrowBytes`` view of it exists.
///
/// Conform a class to this protocol to hand memory the library did not
/// allocate — a mapped file, a shared-memory segment, a registered RDMA
/// region — to ``ArrowBytes`` without copying it. The memory must stay
/// valid and must not be written while the owner is alive.
public protocol ArrowBytesOwner: AnyObject, Sendable {}

/// An immutable, reference-counted view of contiguous bytes.
///
/// `ArrowBytes` is the currency type for Arrow data in this package: message
/// metadata, message bodies and column buffers are all `ArrowBytes`, and
/// slicing one never copies. The view retains the ``ArrowBytesOwner`` that
/// keeps its memory alive, so a slice of a memory-mapped file or a received
/// buffer outlives the reader that produced it.
public struct ArrowBytes: @unchecked Sendable {
  // Sendable: the memory behind `base` is immutable for as long as `owner`
  // lives, and `owner` is itself Sendable.
  @usableFromInline let owner: (any ArrowBytesOwner)?
  @usableFromInline let base: UnsafeRawPointer?

  /// The number of bytes in the view.
  public let count: Int

  /// An empty view.
  public init() {
    self.owner = nil
    self.base = nil
    self.count = 0
  }

  /// Wraps memory owned by `owner`. The caller promises that `base ..< base + count`
  /// stays valid and unmodified while `owner` is alive.
  public init(unsafeBase base: UnsafeRawPointer, count: Int, owner: any ArrowBytesOwner) {
    precondition(count >= 0, "negative byte count")
    self.owner = owner
    self.base = base
    self.count = count
  }

  /// Copies `bytes` into a new 64-byte-aligned allocation.
  public init(copying bytes: some Sequence<UInt8>) {
    let array = Array(bytes)
    let storage = AlignedStorage(capacity: array.count)
    array.withUnsafeBytes { storage.mutableBytes.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
    self = storage.freeze(count: array.count)
  }

  /// These bytes copied once into a new 64-byte-aligned allocation that
  /// the result alone owns.
  public func copied() -> ArrowBytes {
    let storage = AlignedStorage(capacity: count, zeroed: false)
    if let destination = storage.mutableBytes.baseAddress { copy(to: destination) }
    return storage.freeze(count: count)
  }

  /// Copies these bytes to `destination`, which has room for them;
  /// returns how many were copied.
  @discardableResult
  package func copy(to destination: UnsafeMutableRawPointer) -> Int {
    withUnsafeBytes { bytes in
      if let source = bytes.baseAddress { destination.copyMemory(from: source, byteCount: bytes.count) }
      return bytes.count
    }
  }

  /// Whether the view holds no bytes.
  @inlinable public var isEmpty: Bool { count == 0 }

  /// The byte at `index`; traps when `index` is outside `0 ..< count`.
  @inlinable public subscript(index: Int) -> UInt8 {
    precondition(index >= 0 && index < count, "ArrowBytes index out of range")
    return base!.load(fromByteOffset: index, as: UInt8.self)
  }

  /// A view of `count` bytes starting at `offset`, sharing this view's memory.
  ///
  /// - Throws: ``ArrowIPCError/Code/outOfBounds`` when the range does not lie
  ///   inside this view.
  @inlinable
  public func slice(offset: Int, count length: Int) throws(ArrowIPCError) -> ArrowBytes {
    guard offset >= 0, length >= 0, offset <= count, length <= count - offset else {
      throw ArrowIPCError(.outOfBounds, "range \(offset)+\(length) outside \(count) bytes")
    }
    return ArrowBytes(owner: owner, base: base.map { $0 + offset }, count: length)
  }

  /// The part of `count` bytes at `offset` that lies inside this view
  /// (empty when none does), sharing its memory: ``slice(offset:count:)``
  /// for ranges already checked, where a range that somehow is not must
  /// not trap.
  @inlinable
  public func clampedSlice(offset: Int, count length: Int) -> ArrowBytes {
    let start = min(max(offset, 0), count)
    let kept = min(max(length, 0), count - start)
    return ArrowBytes(owner: owner, base: base.map { $0 + start }, count: kept)
  }

  @usableFromInline init(owner: (any ArrowBytesOwner)?, base: UnsafeRawPointer?, count: Int) {
    self.owner = owner
    self.base = count == 0 ? nil : base
    self.count = count
  }

  /// Calls `body` with the bytes; the pointer is valid only inside `body`.
  @inlinable
  public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
    try withExtendedLifetime(owner) { () throws(E) -> R in
      try body(UnsafeRawBufferPointer(start: base, count: count))
    }
  }

  /// The bytes as a new array (a copy).
  public var array: [UInt8] {
    withUnsafeBytes { Array($0) }
  }

  /// Whether `address` lies in this view's memory; used to tell slices of one
  /// region apart from copies.
  public func contains(address: UnsafeRawPointer) -> Bool {
    guard let base else { return false }
    return address >= base && address < base + count
  }

  /// The object that keeps this view's memory alive (nil for an empty
  /// view). A transport checks it to recognise memory it can describe to
  /// its peer in place — a shared-memory buffer, a registered region —
  /// instead of copying it.
  public var memoryOwner: (any ArrowBytesOwner)? { owner }

  /// The address of the first byte, or `nil` for an empty view. Valid only
  /// while this value (or another view of the same owner) is alive.
  public var unsafeBaseAddress: UnsafeRawPointer? { base }
}

extension ArrowBytes: Hashable {
  /// Hashes the size and the first 64 bytes (consistent with `==`, cheap
  /// for large views).
  public func hash(into hasher: inout Hasher) {
    hasher.combine(count)
    withUnsafeBytes { hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: $0.prefix(64))) }
  }

  /// Two views are equal when they hold the same bytes.
  public static func == (lhs: ArrowBytes, rhs: ArrowBytes) -> Bool {
    guard lhs.count == rhs.count else { return false }
    if lhs.count == 0 || lhs.base == rhs.base { return true }
    return memcmp(lhs.base!, rhs.base!, lhs.count) == 0
  }
}

extension ArrowBytes: CustomStringConvertible {
  /// A short description: the size and the first bytes in hex.
  public var description: String {
    let shown = withUnsafeBytes { $0.prefix(16).map { byte in
      let hex = String(byte, radix: 16)
      return byte < 16 ? "0" + hex : hex
    } }
    return "ArrowBytes(\(count) bytes: \(shown.joined(separator: " "))\(count > 16 ? " …" : ""))"
  }
}

/// A 64-byte-aligned heap allocation that is written once and then frozen
/// into ``ArrowBytes``.
///
/// Writers fill `mutableBytes`, then call ``freeze(count:)``; after that the
/// memory must not be written again.
public final class AlignedStorage: ArrowBytesOwner, @unchecked Sendable {
  // Sendable: written only before `freeze`, read-only afterwards.

  /// The alignment of every allocation, Arrow's preferred buffer alignment.
  public static let alignment = 64

  /// The whole allocation, writable until frozen.
  public let mutableBytes: UnsafeMutableRawBufferPointer
  /// Where the allocation goes back to, and its size class there.
  private let pool: (pool: BufferPool, sizeClass: Int)?

  /// Allocates `capacity` bytes aligned to ``alignment``, zero-filled
  /// unless `zeroed` is false — for a receiver that overwrites every byte
  /// before freezing (and so never touches pages it will not use). With a
  /// `pool`, a large allocation is taken from it and returned to it when the
  /// storage is released.
  public init(capacity: Int, zeroed: Bool = true, pool: BufferPool? = nil) {
    precondition(capacity >= 0, "negative capacity")
    let pointer: UnsafeMutableRawPointer
    if let pool, let sizeClass = pool.sizeClass(capacity) {
      pointer = pool.take(sizeClass) ?? UnsafeMutableRawPointer.allocate(byteCount: sizeClass, alignment: Self.alignment)
      self.pool = (pool, sizeClass)
    } else {
      pointer = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1), alignment: Self.alignment)
      self.pool = nil
    }
    if zeroed { pointer.initializeMemory(as: UInt8.self, repeating: 0, count: max(capacity, 1)) }
    self.mutableBytes = UnsafeMutableRawBufferPointer(start: pointer, count: capacity)
  }

  /// A read-only view of the first `count` bytes. Stop writing after this.
  public func freeze(count: Int) -> ArrowBytes {
    precondition(count >= 0 && count <= mutableBytes.count, "freeze count out of range")
    return ArrowBytes(owner: self, base: UnsafeRawPointer(mutableBytes.baseAddress), count: count)
  }

  deinit {
    guard let base = mutableBytes.baseAddress else { return }
    if let pool, pool.pool.give(base, sizeClass: pool.sizeClass) { return }
    base.deallocate()
  }
}
