/// Carves small 64-byte-aligned buffers out of shared chunks, so a stream
/// of small messages (metadata frames, tiny bodies) costs one allocation
/// per chunk instead of one per message.
///
/// Each buffer is written once by the allocator's single owner (a reader
/// thread, a session) and then frozen into ``ArrowBytes`` that retain the
/// chunk; a chunk is freed when its last view is released. A held view
/// therefore keeps its whole chunk (``chunkSize`` bytes) alive.
package struct SlabAllocator {
  /// The size of each chunk.
  package static let chunkSize = 64 << 10
  /// The largest buffer taken from a chunk; larger ones get their own
  /// ``AlignedStorage``.
  package static let maxSlabSize = 4 << 10

  private var chunk: SlabChunk?
  private var used = 0

  /// An allocator with no chunk yet.
  package init() {}

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
      chunk = SlabChunk()
      used = 0
    }
    let start = chunk!.memory + used
    used += rounded
    try fill(start)
    return ArrowBytes(unsafeBase: UnsafeRawPointer(start), count: count, owner: chunk!)
  }
}

/// One chunk of a ``SlabAllocator``.
final class SlabChunk: ArrowBytesOwner, @unchecked Sendable {
  // Sendable: each region is written once, by the allocator's owner, before
  // the view of it is published; views never overlap a region still being
  // written.
  let memory = UnsafeMutableRawPointer.allocate(byteCount: SlabAllocator.chunkSize, alignment: AlignedStorage.alignment)

  deinit { memory.deallocate() }
}
