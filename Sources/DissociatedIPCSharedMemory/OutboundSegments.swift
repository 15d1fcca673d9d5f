internal import DissociatedIPC
internal import Synchronization

/// A memfd segment this side writes and its peer maps read-only. The
/// mapping and the descriptor go away with the last reference (a sender
/// copying into it holds one, so closing never unmaps under a copy).
final class OutboundSegment: @unchecked Sendable {
  // Sendable: the fields never change; the memory is written only in
  // blocks the ring handed out to one sender.
  let id: UInt16
  let descriptor: Int32
  let base: UnsafeMutableRawPointer
  let size: Int
  /// The bytes from the start whose pages are populated (SHM-MEM-5).
  private let populated = Atomic<Int>(0)
  /// What the segment's size was reserved from (SHM-RING-8).
  private let budget: SharedMemoryBudget

  /// A new segment of `size` bytes, whose size `budget` already counts;
  /// `budget` gets it back when the segment goes (or when creating fails).
  init(id: UInt16, size: Int, name: String, budget: SharedMemoryBudget) throws(DissociatedIPCError) {
    do throws(DissociatedIPCError) {
      (descriptor, base) = try createSegment(size: size, name: name)
    } catch {
      budget.release(size)
      throw error
    }
    self.id = id
    self.size = size
    self.budget = budget
  }

  /// How far ahead of a write the pages are populated at once.
  static let populateStep = 2 << 20

  /// Populates the pages before `end` and up to ``populateStep`` beyond,
  /// unless that was done: one system call instead of a page fault per
  /// page on the first pass through the segment (SHM-MEM-5). Concurrent
  /// writers each populate a different range.
  func populate(through end: Int) {
    let done = populated.load(ordering: .relaxed)
    guard end > done else { return }
    let target = min(size, (max(end, done + Self.populateStep) + pageSize - 1) / pageSize * pageSize)
    guard populated.compareExchange(expected: done, desired: target, ordering: .relaxed).exchanged else { return }
    populatePages(base + done, count: target - done)
  }

  deinit {
    unmapSegment(base, size: size)
    closeDescriptor(descriptor)
    budget.release(size)
  }
}

/// What a ring block holds, so a peer can return only what it was sent
/// and a local release frees only what was exposed.
enum BlockKind {
  /// A payload-in-segment message; the peer returns it (space returned).
  case payload
  /// A region exposed for a body descriptor; freed by `release`.
  case exposed
}

/// Allocates blocks of one segment in ring order; blocks may be freed in
/// any order, and space is reused once every older block was freed too
/// (SHM-RING-1). Every block starts with a 64-byte header in shared memory
/// (``blockHeader``), then the payload, so payloads are 64-byte aligned.
struct Ring {
  /// Bytes before each payload: a live marker and the payload length, so
  /// the peer can tell a released region from a live one (SHM-RM-3).
  static let blockHeader = 64

  private struct Block {
    let offset: Int
    let size: Int
    let kind: BlockKind
    var freed = false
  }

  let size: Int
  private var blocks: [Block] = []
  /// The sequence number of `blocks[0]` (blocks are numbered as allocated).
  private var firstSequence = 0
  private var sequenceByOffset: [Int: Int] = [:]
  private var head = 0
  private var tail = 0
  /// The live blocks run from `head` to the end, then from 0 to `tail`.
  private var wrapped = false

  init(size: Int) { self.size = size }

  var isEmpty: Bool { sequenceByOffset.isEmpty }

  /// The block size for a payload of `count` bytes.
  static func blockSize(payload count: Int) -> Int { blockHeader + (count + 63) / 64 * 64 }

  /// Reserves `blockSize` bytes; returns the block's offset, or nil when
  /// the ring has no contiguous room.
  mutating func allocate(_ blockSize: Int, kind: BlockKind) -> Int? {
    let offset: Int
    if wrapped {
      guard head - tail >= blockSize else { return nil }
      offset = tail
    } else if size - tail >= blockSize {
      offset = tail
    } else if head >= blockSize, !isEmpty {
      offset = 0
      wrapped = true
    } else {
      return nil
    }
    tail = offset + blockSize
    sequenceByOffset[offset] = firstSequence + blocks.count
    blocks.append(Block(offset: offset, size: blockSize, kind: kind))
    return offset
  }

  /// Frees the block at `offset` if it is a live block of `kind`; false
  /// otherwise (an address that was never handed out, or freed twice).
  mutating func free(_ offset: Int, kind: BlockKind) -> Bool {
    guard let sequence = sequenceByOffset[offset], blocks[sequence - firstSequence].kind == kind else { return false }
    sequenceByOffset[offset] = nil
    blocks[sequence - firstSequence].freed = true
    // Reclaim from the oldest block on.
    var reclaimed = 0
    while reclaimed < blocks.count, blocks[reclaimed].freed { reclaimed += 1 }
    guard reclaimed > 0 else { return true }
    blocks.removeFirst(reclaimed)
    firstSequence += reclaimed
    if let oldest = blocks.first {
      if oldest.offset < head { wrapped = false }
      head = oldest.offset
    } else {
      head = 0
      tail = 0
      wrapped = false
    }
    return true
  }
}

/// The segments a connection sends through, and the policy that places
/// payloads in them (SHM-RING-2): the first segment is created on first
/// use; when no segment has room, another is added while the total stays
/// within `maxSharedBytes` (empty segments are retired to make room for a
/// larger one); otherwise the sender must wait for space to come back.
struct OutboundSegments {
  private var segments: [(segment: OutboundSegment, ring: Ring)] = []
  /// The largest segment growth adds for payloads that fit in it.
  static let largestGrownSegment = 64 << 20
  private var nextID: UInt16 = 1
  private(set) var totalBytes = 0

  /// A reserved block.
  struct Reservation {
    let segment: OutboundSegment
    /// Where the payload goes (64 bytes after the block's start).
    let payloadOffset: Int
    var address: UInt64 { SharedMemoryWire.address(segment: segment.id, offset: payloadOffset) }
    var pointer: UnsafeMutableRawPointer { segment.base + payloadOffset }
  }

  /// What placing a payload did.
  enum Placement {
    /// Placed; `added` is a new segment to announce before the payload,
    /// `retired` are empty segments the peer may unmap.
    case placed(Reservation, added: OutboundSegment?, retired: [UInt16])
    /// No room now; wait for returned space.
    case full
  }

  /// Places a payload of `count` bytes, adding or retiring segments as the
  /// policy allows.
  mutating func place(_ count: Int, kind: BlockKind, config: SharedMemoryTransport.Config) throws(DissociatedIPCError) -> Placement {
    let blockSize = Ring.blockSize(payload: count)
    if let reservation = reserve(blockSize, kind: kind, count: count) { return .placed(reservation, added: nil, retired: []) }
    let emptyBytes = segments.reduce(0) { $0 + ($1.ring.isEmpty ? $1.segment.size : 0) }
    // Segments added later double the total, up to 64 MiB each and within
    // the budget, so a client that holds many batches costs few segments
    // (SHM-RING-2).
    let grown = min(max(totalBytes, config.segmentSize), max(Self.largestGrownSegment, config.segmentSize),
                    config.maxSharedBytes - (totalBytes - emptyBytes))
    let newSize = max(grown / pageSize * pageSize, (blockSize + pageSize - 1) / pageSize * pageSize)
    // A payload larger than the bound still goes when nothing is in use.
    guard totalBytes - emptyBytes + newSize <= config.maxSharedBytes || emptyBytes == totalBytes else { return .full }
    // Every connection of this configuration shares one budget (SHM-RING-8);
    // one with nothing in use may exceed it, so it never waits for space
    // that only other connections could return.
    guard config.sharedBudget.reserve(newSize, evenIfOver: emptyBytes == totalBytes) else { return .full }
    var retired: [UInt16] = []
    while totalBytes + newSize > config.maxSharedBytes, let empty = segments.firstIndex(where: { $0.ring.isEmpty }) {
      retired.append(segments[empty].segment.id)
      totalBytes -= segments.remove(at: empty).segment.size
    }
    guard nextID < UInt16.max else {
      config.sharedBudget.release(newSize)
      throw DissociatedIPCError(.limitExceeded, "shm:// connection used up its 65,534 segment ids")
    }
    let segment = try OutboundSegment(id: nextID, size: newSize, name: config.segmentName, budget: config.sharedBudget)
    nextID += 1
    segments.append((segment, Ring(size: newSize)))
    totalBytes += newSize
    return .placed(reserve(blockSize, kind: kind, count: count)!, added: segment, retired: retired)
  }

  /// Segment ids left for arenas: the last 256 stay for ring segments, so
  /// a connection that announced very many buffers still has room for its
  /// payloads (exposing then falls back to copying, SHM-ARENA-4).
  mutating func takeArenaID() -> UInt16? {
    guard nextID < UInt16.max - 256 else { return nil }
    defer { nextID += 1 }
    return nextID
  }

  private mutating func reserve(_ blockSize: Int, kind: BlockKind, count: Int) -> Reservation? {
    for index in segments.indices {
      guard let offset = segments[index].ring.allocate(blockSize, kind: kind) else { continue }
      let segment = segments[index].segment
      let payloadOffset = offset + Ring.blockHeader
      // The block header (SHM-RM-3): live marker, then the payload length.
      segment.base.storeBytes(of: Self.liveMarker(payloadOffset), toByteOffset: offset, as: UInt64.self)
      segment.base.storeBytes(of: UInt64(count), toByteOffset: offset + 8, as: UInt64.self)
      return Reservation(segment: segment, payloadOffset: payloadOffset)
    }
    return nil
  }

  /// Frees the block whose payload is at `address`; false when no live
  /// block of `kind` is there.
  mutating func free(_ address: UInt64, kind: BlockKind) -> Bool {
    let (id, payloadOffset) = SharedMemoryWire.split(address)
    guard payloadOffset >= Ring.blockHeader, let index = segments.firstIndex(where: { $0.segment.id == id }),
          segments[index].ring.free(payloadOffset - Ring.blockHeader, kind: kind)
    else { return false }
    // Mark the header dead before the space can be reused (SHM-RM-3).
    segments[index].segment.base.storeBytes(of: 0 as UInt64, toByteOffset: payloadOffset - Ring.blockHeader, as: UInt64.self)
    return true
  }

  /// Bytes of the segments that hold a block not yet freed.
  var bytesInUse: Int { segments.reduce(0) { $0 + ($1.ring.isEmpty ? 0 : $1.segment.size) } }

  /// Drops every segment (each unmaps once no copy into it runs).
  mutating func removeAll() {
    segments.removeAll()
    totalBytes = 0
  }

  /// The first word of a live block's header: "DIPCLIVE" mixed with the
  /// payload offset, so stale bytes at another offset do not pass for it.
  static func liveMarker(_ payloadOffset: Int) -> UInt64 { 0x4449_5043_4C49_5645 ^ UInt64(payloadOffset) }
}

/// Bounds the bytes of outbound segments that every connection made with
/// one ``SharedMemoryTransport/Config`` holds together (SHM-RING-8): a
/// server with many clients adds ring segments only while the sum stays
/// within ``maxBytes``; past it, a connection waits for its own client to
/// return space, as it does at its own bound (`maxSharedBytes`).
public final class SharedMemoryBudget: Sendable {
  /// The most segment bytes held at once, except by connections with
  /// nothing in use (each may take one segment beyond it).
  public let maxBytes: Int
  private let used = Atomic<Int>(0)

  /// A budget of `maxBytes`.
  public init(maxBytes: Int) { self.maxBytes = maxBytes }

  /// Segment bytes held now.
  public var usedBytes: Int { used.load(ordering: .relaxed) }

  /// Counts `bytes` when they fit, or anyway when `evenIfOver`; false when
  /// they do not fit.
  func reserve(_ bytes: Int, evenIfOver: Bool) -> Bool {
    var current = used.load(ordering: .relaxed)
    while evenIfOver || bytes <= maxBytes - current {
      let (exchanged, original) = used.compareExchange(expected: current, desired: current + bytes, ordering: .relaxed)
      if exchanged { return true }
      current = original
    }
    return false
  }

  /// Gives back bytes counted by ``reserve(_:evenIfOver:)``.
  func release(_ bytes: Int) { used.subtract(bytes, ordering: .relaxed) }
}
