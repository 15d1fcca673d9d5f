/// Carves small 64-byte-aligned buffers out of shared chunks, so a stream
/// of small messages (metadata frames, tiny bodies) costs one allocation
/// per chunk instead of one per message.
///
/// A chunk is an ``AlignedStorage`` written region by region: each buffer
/// is written once by the allocator's single owner (a reader thread, a
/// session) before its view is published, and no view overlaps a region
/// still being written. Views retain the chunk; it is freed (or returned
/// to its pool) when its last view is released, so a held view keeps its
/// whole chunk (``chunkSize`` bytes) alive.
package struct SlabAllocator {
  /// The size of each chunk.
  package static let chunkSize = 64 << 10
  /// The largest buffer taken from a chunk; larger ones get their own
  /// ``AlignedStorage``.
  package static let maxSlabSize = 4 << 10

  private var chunk: AlignedStorage?
  private var used = 0
  /// Where chunks come from and go back to (warm, already-faulted memory).
  private let pool: BufferPool?

  /// An allocator with no chunk yet, taking chunks from `pool` if given.
  package init(pool: BufferPool? = nil) {
    self.pool = pool
  }

  /// A copy of `count` bytes at `source`.
  package mutating func copy(_ source: UnsafeRawPointer, count: Int) -> ArrowBytes {
    allocate(count) { $0.copyMemory(from: source, byteCount: count) }
  }

  /// `count` bytes filled by `fill` (which must write all of them), frozen.
  package mutating func allocate<E: Error>(
    _ count: Int, fill: (UnsafeMutableRawPointer) throws(E) -> Void
  ) throws(E) -> ArrowBytes {
    guard count > 0 else { return ArrowBytes() }
    guard count <= Self.maxSlabSize else {
      let storage = AlignedStorage(capacity: count, zeroed: false)
      try fill(storage.mutableBytes.baseAddress!)
      return storage.freeze(count: count)
    }
    let rounded = (count + AlignedStorage.alignment - 1) & ~(AlignedStorage.alignment - 1)
    if chunk == nil || used + rounded > Self.chunkSize {
      chunk = AlignedStorage(capacity: Self.chunkSize, zeroed: false, pool: pool)
      used = 0
    }
    let start = chunk!.mutableBytes.baseAddress! + used
    used += rounded
    try fill(start)
    return ArrowBytes(unsafeBase: UnsafeRawPointer(start), count: count, owner: chunk!)
  }
}
