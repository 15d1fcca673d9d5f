public import ArrowIPC

/// One range of shared or remote memory: an address (or offset, depending on
/// the transport's remote handle) and a length.
public struct RemoteRange: Hashable, Sendable {
  /// The address or offset of the first byte.
  public var address: UInt64
  /// The number of bytes.
  public var length: UInt64

  /// Creates a range.
  public init(address: UInt64, length: UInt64) {
    self.address = address
    self.length = length
  }
}

/// The payload of a body-type-1 message (DIPC-BODY-3):
/// `[totalSize, count, address0, length0, …]`, all UInt64 little-endian.
///
/// The ranges, concatenated in order, are the IPC body byte for byte
/// (padding included), so `Buffer.offset` values in the metadata apply to
/// the concatenation, and `totalSize` equals the message's bodyLength.
public struct BodyDescriptor: Hashable, Sendable {
  /// The sum of the range lengths.
  public let totalSize: UInt64
  /// The ranges, in body order.
  public let ranges: [RemoteRange]

  /// Creates a descriptor; `totalSize` is the sum of the lengths.
  ///
  /// - Throws: `.malformedDescriptor` when a range is empty, overflows the
  ///   address space, or the lengths' sum overflows.
  public init(ranges: [RemoteRange]) throws(DissociatedIPCError) {
    self.ranges = ranges
    totalSize = try Self.checkedTotal(ranges)
  }

  private static func checkedTotal(_ ranges: [RemoteRange]) throws(DissociatedIPCError) -> UInt64 {
    var total: UInt64 = 0
    for range in ranges {
      guard range.length > 0 else {
        throw DissociatedIPCError(.malformedDescriptor, "range at \(range.address) is empty")
      }
      let (_, endOverflow) = range.address.addingReportingOverflow(range.length)
      let (sum, sumOverflow) = total.addingReportingOverflow(range.length)
      guard !endOverflow, !sumOverflow else {
        throw DissociatedIPCError(.malformedDescriptor, "range \(range.address)+\(range.length) overflows")
      }
      total = sum
    }
    return total
  }

  /// The payload bytes.
  public var encoded: [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(16 + 16 * ranges.count)
    bytes.appendLittleEndian(totalSize)
    bytes.appendLittleEndian(UInt64(ranges.count))
    for range in ranges {
      bytes.appendLittleEndian(range.address)
      bytes.appendLittleEndian(range.length)
    }
    return bytes
  }

  /// Parses and validates a received payload.
  ///
  /// - Throws: `.malformedDescriptor` when the payload is not 16 + 16·n
  ///   bytes for its declared n, n exceeds `maxRanges`, a range is empty or
  ///   overflows, or the lengths do not add up to `totalSize`.
  public static func decode(_ bytes: ArrowBytes, maxRanges: Int) throws(DissociatedIPCError) -> BodyDescriptor {
    guard bytes.count >= 16, bytes.count % 16 == 0 else {
      throw DissociatedIPCError(.malformedDescriptor, "descriptor of \(bytes.count) bytes is not 16 + 16·n")
    }
    let totalSize = bytes.loadLittleEndian(UInt64.self, at: 0)
    let count = bytes.loadLittleEndian(UInt64.self, at: 8)
    guard count == UInt64(bytes.count / 16 - 1) else {
      throw DissociatedIPCError(.malformedDescriptor, "descriptor declares \(count) ranges in \(bytes.count) bytes")
    }
    guard count <= UInt64(maxRanges) else {
      throw DissociatedIPCError(.limitExceeded, "descriptor with \(count) ranges exceeds \(maxRanges)")
    }
    let ranges = (0 ..< Int(count)).map { index in
      RemoteRange(address: bytes.loadLittleEndian(UInt64.self, at: 16 + 16 * index),
                  length: bytes.loadLittleEndian(UInt64.self, at: 24 + 16 * index))
    }
    let descriptor = try BodyDescriptor(ranges: ranges)
    guard descriptor.totalSize == totalSize else {
      throw DissociatedIPCError(.malformedDescriptor,
                                "ranges add up to \(descriptor.totalSize) bytes, totalSize says \(totalSize)")
    }
    return descriptor
  }
}

/// The payload of a free_data message (DIPC-FREE-1): one or more addresses,
/// the first element of ranges the server sent, as UInt64 little-endian.
public enum FreeDataPayload {
  /// Encodes `addresses` (at least one).
  public static func encode(_ addresses: [UInt64]) -> [UInt8] {
    precondition(!addresses.isEmpty, "free_data needs at least one address")
    var bytes: [UInt8] = []
    bytes.reserveCapacity(8 * addresses.count)
    for address in addresses { bytes.appendLittleEndian(address) }
    return bytes
  }

  /// Decodes a payload.
  ///
  /// - Throws: `.malformedFreeData` when it is empty or not a multiple of 8.
  public static func decode(_ bytes: ArrowBytes) throws(DissociatedIPCError) -> [UInt64] {
    guard !bytes.isEmpty, bytes.count % 8 == 0 else {
      throw DissociatedIPCError(.malformedFreeData, "free_data payload of \(bytes.count) bytes")
    }
    return (0 ..< bytes.count / 8).map { bytes.loadLittleEndian(UInt64.self, at: 8 * $0) }
  }
}
