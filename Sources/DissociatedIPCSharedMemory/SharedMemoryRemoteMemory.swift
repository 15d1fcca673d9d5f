internal import ArrowIPC
internal import DissociatedIPC
internal import Synchronization

/// Remote memory of a shm:// connection (SHM-RM-*): exposing copies the
/// bytes into this side's segment; fetching returns a view of the peer's
/// segment, checked against the segment and the block's live header first.
struct SharedMemoryRemoteMemory: RemoteMemory {
  let connection: SharedMemoryConnection

  /// Copies `bytes` into a block of this side's segments (waiting for room)
  /// and describes it by one range.
  func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion {
    let block = try await connection.reserve(bytes.count, kind: .exposed)
    bytes.withUnsafeBytes { source in
      if let base = source.baseAddress { block.pointer.copyMemory(from: base, byteCount: source.count) }
    }
    return ExposedRegion(id: block.address, ranges: [RemoteRange(address: block.address, length: UInt64(bytes.count))])
  }

  /// Marks the block dead and reuses its space.
  func release(_ region: UInt64) async {
    _ = connection.freeSpace(CollectionOfOne(region), kind: .exposed)
  }

  /// A view of the peer's segment for one range, a copy for several.
  ///
  /// - Throws: `.malformedDescriptor` for a range whose segment is unknown,
  ///   that does not start at a live exposed block, or that runs past it.
  func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes {
    var pieces: [ArrowBytes] = []
    for range in ranges {
      pieces.append(try await connection.exposedView(range))
    }
    if pieces.count == 1 { return pieces[0] }
    let total = pieces.reduce(0) { $0 + $1.count }
    let storage = AlignedStorage(capacity: total, zeroed: false)
    var destination = storage.mutableBytes.baseAddress
    for piece in pieces {
      piece.withUnsafeBytes { source in
        guard let base = source.baseAddress, let target = destination else { return }
        target.copyMemory(from: base, byteCount: source.count)
        destination = target + source.count
      }
    }
    return storage.freeze(count: total)
  }
}

extension SharedMemoryConnection {
  /// How long a fetch waits for the announcement of a segment it does not
  /// know yet (SHM-RM-4).
  static let announcementGrace: Duration = .milliseconds(50)

  /// A view of the exposed block `range` names, validated before any byte
  /// of it is read (SHM-RM-2, SHM-RM-3).
  func exposedView(_ range: RemoteRange) async throws(DissociatedIPCError) -> ArrowBytes {
    let (id, offset) = SharedMemoryWire.split(range.address)
    let clock = ContinuousClock()
    let deadline = clock.now + Self.announcementGrace
    var segment = state.withLock { $0.peerSegments[id] }
    while segment == nil, clock.now < deadline, state.withLock({ $0.sendError == nil }) {
      try? await Task.sleep(for: .milliseconds(1))
      segment = state.withLock { $0.peerSegments[id] }
    }
    func malformed(_ why: String) -> DissociatedIPCError {
      DissociatedIPCError(.malformedDescriptor, "range \(range.address)+\(range.length): \(why)")
    }
    guard let segment else { throw malformed("segment \(id) was never shared on this connection") }
    guard range.length <= UInt64(segment.size), offset >= Ring.blockHeader, offset % 64 == 0,
          segment.contains(offset: offset, length: Int(range.length))
    else { throw malformed("outside segment \(id) of \(segment.size) bytes") }
    let marker = segment.base.load(fromByteOffset: offset - Ring.blockHeader, as: UInt64.self)
    let length = segment.base.load(fromByteOffset: offset - Ring.blockHeader + 8, as: UInt64.self)
    guard marker == OutboundSegments.liveMarker(offset), range.length <= length else {
      throw malformed("not inside a live exposed region")
    }
    return segment.view(offset: offset, length: Int(range.length), owner: segment)
  }
}
