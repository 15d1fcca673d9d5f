internal import ArrowIPC
internal import DissociatedIPC
internal import Synchronization

/// Remote memory of a shm:// connection (SHM-RM-*): bytes in a
/// ``SharedMemoryBuffer`` are described in place (SHM-ARENA-*); other bytes
/// are copied into this side's segment. Fetching returns a view of the
/// peer's segment, checked against the segment (and, in a ring segment,
/// the block's live header) first.
struct SharedMemoryRemoteMemory: RemoteMemory {
  let connection: SharedMemoryConnection

  /// Describes `bytes` in place when they lie in a ``SharedMemoryBuffer``;
  /// otherwise copies them into a block of this side's segments (waiting
  /// for room). One range either way.
  func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion {
    if bytes.count > 0, let buffer = bytes.memoryOwner as? SharedMemoryBuffer, let offset = buffer.offset(of: bytes),
       let region = try connection.exposeInPlace(bytes, buffer: buffer, offset: offset) {
      return region
    }
    let block = try await connection.reserve(bytes.count, kind: .exposed)
    bytes.copy(to: block.pointer)
    return ExposedRegion(id: block.address, ranges: [RemoteRange(address: block.address, length: UInt64(bytes.count))])
  }

  /// Marks the block dead and reuses its space, or lets go of bytes
  /// exposed in place (retiring their buffer's announcement when it is no
  /// longer among the recently used ones).
  func release(_ region: UInt64) async {
    if ArenaTable.isArenaRegion(region) { return connection.releaseInPlace(region) }
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
    if segment.isArena {
      // A buffer described in place: any range inside it (SHM-ARENA-2).
      guard range.length <= UInt64(segment.size), segment.contains(offset: offset, length: Int(range.length)) else {
        throw malformed("outside buffer segment \(id) of \(segment.size) bytes")
      }
      return segment.view(offset: offset, length: Int(range.length), owner: segment)
    }
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

extension SharedMemoryConnection {
  /// Exposes `bytes` (at `offset` in `buffer`) in place, announcing the
  /// buffer first if this connection has not yet (SHM-ARENA-1); nil when it
  /// must be copied instead (SHM-ARENA-4). The announcement is submitted
  /// under the same lock, so it precedes anything that names it.
  func exposeInPlace(_ bytes: ArrowBytes, buffer: SharedMemoryBuffer, offset: Int) throws(DissociatedIPCError) -> ExposedRegion? {
    let (region, outcome) = try state.withLock { (state) throws(DissociatedIPCError) -> (ExposedRegion?, (SubmitOutcome, Outgoing)?) in
      if let error = state.sendError { throw error }
      switch state.arenas.expose(bytes, in: buffer, offset: offset, outbound: &state.outbound) {
      case .copy:
        return (nil, nil)
      case .exposed(let region, nil):
        return (region, nil)
      case .exposed(let region, let id?):
        let message = Outgoing(kind: .arenaAdded, words: (UInt64(id), UInt64(buffer.size)), wordCount: 2, arena: buffer)
        return (region, (try enqueue(message, &state), message))
      }
    }
    if let outcome { try complete(outcome.0, outcome.1) }
    return region
  }

  /// Lets go of an in-place region; retires arenas that fell out of the
  /// idle set (SHM-ARENA-3).
  func releaseInPlace(_ region: UInt64) {
    let outcomes = state.withLock { state -> [(SubmitOutcome, Outgoing)] in
      let retired = state.arenas.release(region)
      guard state.sendError == nil else { return [] }
      // Queued behind anything a direct send holds; never sent directly
      // here, as only one direct send may run at a time.
      return retired.map { id in
        let message = Outgoing(kind: .segmentRetired, words: (UInt64(id), 0), wordCount: 1)
        state.queue.append(message)
        state.queuedBytes += message.queuedBytes
        return (.queued(nudge: state.nudgeWriter(), over: false), message)
      }
    }
    for outcome in outcomes { _ = try? complete(outcome.0, outcome.1) }
  }

}
