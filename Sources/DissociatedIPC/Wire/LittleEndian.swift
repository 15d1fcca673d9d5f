internal import ArrowIPC

extension ArrowBytes {
  /// The little-endian integer at `offset`; the caller has checked the range.
  package func loadLittleEndian<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
    precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count)
    return withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
  }
}

extension Array where Element == UInt8 {
  /// Appends `value` as little-endian bytes.
  package mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
    Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
  }
}
