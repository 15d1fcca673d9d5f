internal import ArrowIPC
internal import DissociatedIPC

/// A segment the peer passed, mapped read-only. Views of it retain it;
/// the last one unmaps it (SHM-MEM-3).
final class MappedSegment: ArrowBytesOwner, @unchecked Sendable {
  // Sendable: read-only memory and constant fields.
  let id: UInt16
  let base: UnsafeRawPointer
  let size: Int
  /// A ``SharedMemoryBuffer`` described in place (kind 9): no block
  /// headers, ranges at any offset (SHM-ARENA-2).
  let isArena: Bool

  init(id: UInt16, base: UnsafeRawPointer, size: Int, isArena: Bool = false) {
    self.id = id
    self.base = base
    self.size = size
    self.isArena = isArena
  }

  /// Whether `offset ..< offset + length` lies inside the segment
  /// (overflow-safe).
  func contains(offset: Int, length: Int) -> Bool {
    offset >= 0 && length >= 0 && offset <= size && length <= size - offset
  }

  /// A view of `length` bytes at `offset` owned by `owner` (which must
  /// retain this segment); the range must have been checked.
  func view(offset: Int, length: Int, owner: any ArrowBytesOwner) -> ArrowBytes {
    ArrowBytes(unsafeBase: base + offset, count: length, owner: owner)
  }

  deinit { unmapSegment(base, size: size) }
}

/// Owns a payload the peer placed in one of its segments: when the last
/// view is released, the space goes back to the peer (SHM-RING-3). The
/// connection is referenced weakly: its inbox holds leases of unreceived
/// messages, and a closed connection has nobody to return space to.
final class PayloadLease: ArrowBytesOwner {
  let segment: MappedSegment
  let address: UInt64
  /// The payload's length, counted as held until the lease goes (SHM-RING-7).
  let length: Int
  weak let connection: SharedMemoryConnection?

  init(segment: MappedSegment, address: UInt64, length: Int, connection: SharedMemoryConnection) {
    self.segment = segment
    self.address = address
    self.length = length
    self.connection = connection
  }

  deinit { connection?.returnSpace(address, held: length) }
}
