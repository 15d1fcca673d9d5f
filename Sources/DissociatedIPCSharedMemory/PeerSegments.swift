internal import ArrowIPC
internal import DissociatedIPC
internal import Synchronization

/// Bounds the peer's segments one side maps (SHM-MEM-6): how many, and
/// how many bytes, per connection, and how many in the whole process, so
/// a peer that announces segment after segment is refused long before the
/// process runs out of mappings (`vm.max_map_count`, 65,530 by default)
/// or address space. A mapped segment holds its share until it is
/// unmapped, after its last view is gone.
final class MappingBudget: Sendable {
  /// The most segments mapped at once through this budget.
  let maxSegments: Int
  /// The most bytes mapped at once through this budget.
  let maxBytes: Int
  /// A budget every share of this one also counts against.
  let parent: MappingBudget?
  private let used = Mutex<(segments: Int, bytes: Int)>((0, 0))

  /// Every connection's peer segments in this process: at most 16,384.
  static let process = MappingBudget(maxSegments: 16384, maxBytes: .max, parent: nil)

  init(maxSegments: Int, maxBytes: Int, parent: MappingBudget? = MappingBudget.process) {
    self.maxSegments = maxSegments
    self.maxBytes = maxBytes
    self.parent = parent
  }

  /// What is mapped through this budget now.
  var usage: (segments: Int, bytes: Int) { used.withLock { $0 } }

  /// Takes a share for a segment of `size` bytes.
  ///
  /// - Throws: `.limitExceeded` past this connection's bounds,
  ///   `.resourceExhausted` past the process's.
  func reserve(_ size: Int) throws(DissociatedIPCError) {
    try used.withLock { (used) throws(DissociatedIPCError) in
      guard used.segments < maxSegments, size <= maxBytes - used.bytes else {
        throw DissociatedIPCError(parent == nil ? .resourceExhausted : .limitExceeded,
                                  "mapping a \(size)-byte segment would exceed \(maxSegments) segments or \(maxBytes) bytes mapped"
                                    + (parent == nil ? " in this process" : " for one peer"))
      }
      used.segments += 1
      used.bytes += size
    }
    do throws(DissociatedIPCError) {
      try parent?.reserve(size)
    } catch {
      release(size, includingParent: false)
      throw error
    }
  }

  /// Gives back a share taken by ``reserve(_:)``.
  func release(_ size: Int, includingParent: Bool = true) {
    used.withLock { used in
      used.segments -= 1
      used.bytes -= size
    }
    if includingParent { parent?.release(size) }
  }
}

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

  /// What this mapping counts against (SHM-MEM-6).
  private let budget: MappingBudget

  /// Takes over the mapping at `base`, whose share of `budget` was reserved.
  init(id: UInt16, base: UnsafeRawPointer, size: Int, isArena: Bool = false, budget: MappingBudget) {
    self.id = id
    self.base = base
    self.size = size
    self.isArena = isArena
    self.budget = budget
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

  deinit {
    unmapSegment(base, size: size)
    budget.release(size)
  }
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
