#if UCX
internal import ArrowIPC
internal import DissociatedIPC
internal import Synchronization

/// Remote memory of a ucx:// connection (UCX-RM-*). Server side: bodies are
/// copied into blocks of the listener's registered pool. Client side:
/// ranges are checked against the regions of the location's remote_handle,
/// then read with `ucp_get_nbx` on the connection's progress thread.
struct UCXRemoteMemory: RemoteMemory {
  let connection: UCXConnection

  /// Copies `bytes` into a block of the listener's pool, waiting for room
  /// (UCX-RM-3).
  ///
  /// - Throws: `.unsupportedOperation` on a client connection,
  ///   `.limitExceeded` for a body larger than the pool,
  ///   `.connectionClosed` once the connection is gone.
  func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion {
    guard let pool = connection.exposedMemory else {
      throw DissociatedIPCError(.unsupportedOperation, "a ucx:// client connection exposes no memory")
    }
    return try await pool.expose(bytes, owner: ObjectIdentifier(connection))
  }

  /// Frees the block (its header is marked dead first, UCX-RM-4).
  func release(_ region: UInt64) async {
    connection.exposedMemory?.release(region, owner: ObjectIdentifier(connection))
  }

  /// A copy of the ranges, concatenated, in one 64-byte-aligned buffer.
  ///
  /// - Throws: `.malformedDescriptor` for a range outside the remote_handle's
  ///   regions, a block that is not live, a missing or unusable
  ///   remote_handle; `.connectionClosed` when the get fails.
  func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes {
    try await connection.fetch(ranges)
  }
}

// MARK: remote_handle

/// The remote_handle of a ucx:// location (UCX-RM-2): one or more regions,
/// each `[base u64][length u64][key length u32][key checksum u64][packed
/// rkey]`, little-endian; the checksum is the key's 64-bit FNV-1a.
enum UCXRemoteHandle {
  /// A registered region of the server and the rkey that reads it.
  struct Region: Sendable, Equatable {
    var base: UInt64
    var length: UInt64
    var packedKey: [UInt8]
  }

  static func encode(_ regions: [Region]) -> [UInt8] {
    var bytes: [UInt8] = []
    for region in regions {
      bytes.appendLittleEndian(region.base)
      bytes.appendLittleEndian(region.length)
      bytes.appendLittleEndian(UInt32(region.packedKey.count))
      bytes.appendLittleEndian(checksum(region.packedKey))
      bytes += region.packedKey
    }
    return bytes
  }

  /// 64-bit FNV-1a: damage to a key in transit or by hand is caught before
  /// UCX reads it (UCX-LIM-5).
  static func checksum(_ bytes: [UInt8]) -> UInt64 {
    bytes.reduce(0xCBF2_9CE4_8422_2325) { ($0 ^ UInt64($1)) &* 0x0000_0100_0000_01B3 }
  }

  /// - Throws: `.malformedDescriptor` for bytes that are not a list of
  ///   regions (truncated, empty, an empty key, a key whose checksum
  ///   differs, a region that wraps around).
  static func decode(_ bytes: [UInt8]) throws(DissociatedIPCError) -> [Region] {
    let view = ArrowBytes(copying: bytes)
    func malformed(_ why: String) -> DissociatedIPCError {
      DissociatedIPCError(.malformedDescriptor, "ucx:// remote_handle of \(bytes.count) bytes: \(why)")
    }
    var regions: [Region] = []
    var offset = 0
    while offset < bytes.count {
      guard bytes.count - offset >= 28 else { throw malformed("truncated region at byte \(offset)") }
      let base = view.loadLittleEndian(UInt64.self, at: offset)
      let length = view.loadLittleEndian(UInt64.self, at: offset + 8)
      let keyLength = Int(view.loadLittleEndian(UInt32.self, at: offset + 16))
      let keyChecksum = view.loadLittleEndian(UInt64.self, at: offset + 20)
      offset += 28
      guard keyLength > 0, keyLength <= bytes.count - offset else { throw malformed("rkey of \(keyLength) bytes does not fit") }
      guard length > 0, base.addingReportingOverflow(length).overflow == false else { throw malformed("region wraps around") }
      let key = Array(bytes[offset ..< offset + keyLength])
      guard checksum(key) == keyChecksum else { throw malformed("the rkey's checksum differs: it was damaged") }
      regions.append(Region(base: base, length: length, packedKey: key))
      offset += keyLength
    }
    guard !regions.isEmpty else { throw malformed("no region") }
    return regions
  }

  /// The index of the region that holds `range` and its block header
  /// (UCX-RM-5), checked before any byte is read.
  static func region(of range: RemoteRange, in regions: [Region]) throws(DissociatedIPCError) -> Int {
    let header = UInt64(ExposedMemoryPool.blockHeader)
    let (end, overflow) = range.address.addingReportingOverflow(range.length)
    // Offsets from each region's base, so no sum of peer numbers can wrap.
    if !overflow, range.address % header == 0, let index = regions.firstIndex(where: { region in
      range.address >= region.base && range.address - region.base >= header
        && end - region.base <= region.length
    }) {
      return index
    }
    throw DissociatedIPCError(.malformedDescriptor, "range \(range.address)+\(range.length): outside the remote_handle's regions")
  }
}

// MARK: The server's pool

/// The listener's registered memory (UCX-RM-1) cut into blocks for exposed
/// bodies (UCX-RM-3). Each block starts with a 64-byte header — a live
/// marker derived from the body's address, then its length — that a
/// fetch reads with the body and checks (UCX-RM-4). Blocks belong to the
/// connection that exposed them and are freed when it goes (UCX-RM-6).
final class ExposedMemoryPool: Sendable {
  /// Bytes before each body: `[live marker u64][length u64]`, then zeros.
  static let blockHeader = 64

  /// The live marker of the block whose body starts at `address`.
  static func liveMarker(_ address: UInt64) -> UInt64 { address ^ 0x5543_5842_4C4F_434B }  // "UCXBLOCK"

  private struct Block {
    var offset: Int
    var size: Int
    var owner: ObjectIdentifier
  }

  private struct Waiter {
    var owner: ObjectIdentifier
    var size: Int
    var continuation: CheckedContinuation<Int?, Never>
  }

  private struct State {
    var allocator: BlockAllocator
    /// Live blocks by the address of their body.
    var blocks: [UInt64: Block] = [:]
    var owners: Set<ObjectIdentifier> = []
    /// Exposes waiting for room, served in arrival order.
    var waiters: [Waiter] = []

    /// Allocates and records a block, or nil when none fits now.
    mutating func allocate(_ size: Int, owner: ObjectIdentifier, base: UInt64) -> Int? {
      guard let offset = allocator.allocate(size) else { return nil }
      blocks[base + UInt64(offset + ExposedMemoryPool.blockHeader)] = Block(offset: offset, size: size, owner: owner)
      return offset
    }

    /// Waiters, in order, whose blocks now fit (removed from the queue).
    mutating func servable(base: UInt64) -> [(CheckedContinuation<Int?, Never>, Int)] {
      var served: [(CheckedContinuation<Int?, Never>, Int)] = []
      while let first = waiters.first, let offset = allocate(first.size, owner: first.owner, base: base) {
        served.append((first.continuation, offset))
        waiters.removeFirst()
      }
      return served
    }
  }

  let registration: UCXMemoryRegistration
  /// The remote_handle every location of the listener carries.
  let remoteHandle: [UInt8]
  private let state: Mutex<State>

  init(registration: UCXMemoryRegistration) {
    self.registration = registration
    remoteHandle = UCXRemoteHandle.encode([UCXRemoteHandle.Region(
      base: UInt64(UInt(bitPattern: registration.base)), length: UInt64(registration.length), packedKey: registration.packedKey)])
    state = Mutex(State(allocator: BlockAllocator(capacity: registration.length, granule: Self.blockHeader)))
  }

  private var base: UInt64 { UInt64(UInt(bitPattern: registration.base)) }

  /// Blocks exposed and not yet released (tests check that none leak).
  var outstandingBlocks: Int { state.withLock { $0.blocks.count } }

  /// Bytes of the pool those blocks take, headers included.
  var outstandingBytes: Int { state.withLock { $0.blocks.values.reduce(0) { $0 + $1.size } } }

  /// `owner` (a connection) may expose from now on.
  func open(owner: ObjectIdentifier) { _ = state.withLock { $0.owners.insert(owner) } }

  func expose(_ bytes: ArrowBytes, owner: ObjectIdentifier) async throws(DissociatedIPCError) -> ExposedRegion {
    let size = Self.blockHeader + (bytes.count + Self.blockHeader - 1) / Self.blockHeader * Self.blockHeader
    guard size <= registration.length else {
      throw DissociatedIPCError(.limitExceeded, "a body of \(bytes.count) bytes exceeds the ucx:// exposed memory of \(registration.length) bytes")
    }
    let offset: Int? = await withCheckedContinuation { continuation in
      let outcome = state.withLock { state -> Int?? in
        guard state.owners.contains(owner) else { return .some(nil) }
        if state.waiters.isEmpty, let offset = state.allocate(size, owner: owner, base: base) { return offset }
        state.waiters.append(Waiter(owner: owner, size: size, continuation: continuation))
        return nil
      }
      if let outcome { continuation.resume(returning: outcome) }
    }
    guard let offset else { throw UCXConnection.closedError }
    let block = registration.base + offset
    let address = base + UInt64(offset + Self.blockHeader)
    bytes.copy(to: block + Self.blockHeader)
    block.storeBytes(of: Self.liveMarker(address), as: UInt64.self)
    block.storeBytes(of: UInt64(bytes.count), toByteOffset: 8, as: UInt64.self)
    return ExposedRegion(id: address, ranges: [RemoteRange(address: address, length: UInt64(bytes.count))])
  }

  /// Marks the block dead and frees it; unknown addresses and other
  /// connections' blocks are ignored.
  func release(_ address: UInt64, owner: ObjectIdentifier) {
    let served = state.withLock { state -> [(CheckedContinuation<Int?, Never>, Int)] in
      guard let block = state.blocks[address], block.owner == owner else { return [] }
      free(block, address: address, &state)
      return state.servable(base: base)
    }
    for (continuation, offset) in served { continuation.resume(returning: offset) }
  }

  /// `owner` is gone: frees its blocks and ends its waiting exposes.
  func close(owner: ObjectIdentifier) {
    let (served, failed) = state.withLock { state in
      state.owners.remove(owner)
      for (address, block) in state.blocks where block.owner == owner { free(block, address: address, &state) }
      let failed = state.waiters.filter { $0.owner == owner }.map(\.continuation)
      state.waiters.removeAll { $0.owner == owner }
      return (state.servable(base: base), failed)
    }
    for continuation in failed { continuation.resume(returning: nil) }
    for (continuation, offset) in served { continuation.resume(returning: offset) }
  }

  private func free(_ block: Block, address: UInt64, _ state: inout State) {
    // Dead before the space can be reused: a late fetch sees no live marker.
    (registration.base + block.offset).storeBytes(of: 0, as: UInt64.self)
    state.blocks[address] = nil
    state.allocator.free(offset: block.offset, size: block.size)
  }
}

/// First-fit allocation of `granule`-aligned blocks in `capacity` bytes,
/// coalescing freed neighbours.
struct BlockAllocator {
  /// Free extents, sorted by offset, never adjacent.
  private(set) var free: [(offset: Int, size: Int)]

  init(capacity: Int, granule: Int) {
    free = [(0, capacity / granule * granule)]
  }

  /// The offset of a block of `size` bytes (a multiple of the granule).
  mutating func allocate(_ size: Int) -> Int? {
    guard let index = free.firstIndex(where: { $0.size >= size }) else { return nil }
    let offset = free[index].offset
    if free[index].size == size {
      free.remove(at: index)
    } else {
      free[index] = (offset + size, free[index].size - size)
    }
    return offset
  }

  mutating func free(offset: Int, size: Int) {
    var index = free.firstIndex { $0.offset > offset } ?? free.count
    free.insert((offset, size), at: index)
    if index + 1 < free.count, free[index].offset + free[index].size == free[index + 1].offset {
      free[index].size += free.remove(at: index + 1).size
    }
    if index > 0, free[index - 1].offset + free[index - 1].size == free[index].offset {
      free[index - 1].size += free.remove(at: index).size
      index -= 1
    }
  }
}

// MARK: Fetching

/// One fetch: for every range a get of its block header and a get of its
/// bytes into one 64-byte-aligned buffer, issued and completed on the
/// progress thread (UCX-RM-5).
final class PendingFetch: @unchecked Sendable {
  // Sendable: `outstanding`, `failed` and the header scratch are touched
  // by the progress thread only; the result goes through `result`.
  struct Piece {
    var address: UInt64
    var length: Int
    /// Where its bytes go in the buffer.
    var offset: Int
    /// Which remote key reads it.
    var key: Int
  }

  let pieces: [Piece]
  let result = OneShot<ArrowBytes>()
  private let storage: AlignedStorage
  private let total: Int
  /// 16 bytes per piece: the `[marker, length]` of its block header.
  private let headers: UnsafeMutableRawPointer
  private var outstanding = 0
  private var failed: UCXFailure?

  init(pieces: [Piece], total: Int, pool: BufferPool) {
    self.pieces = pieces
    self.total = total
    storage = AlignedStorage(capacity: total, zeroed: false, pool: pool)
    headers = UnsafeMutableRawPointer.allocate(byteCount: 16 * max(pieces.count, 1), alignment: 8)
  }

  // Freed only when no get can still write: every completion retains self.
  deinit { headers.deallocate() }

  /// Issues the gets; `done` runs once, on the progress thread, when all
  /// completed (with the first failure, if any).
  func start(on endpoint: UCXEndpoint, keys: [UCXRemoteKey], done: @escaping (UCXFailure?) -> Void) {
    outstanding = pieces.count + pieces.count { $0.length > 0 }
    let base = storage.mutableBytes.baseAddress!
    for (index, piece) in pieces.enumerated() {
      let header = piece.address - UInt64(ExposedMemoryPool.blockHeader)
      endpoint.get(into: headers + 16 * index, count: 16, from: header, key: keys[piece.key]) { self.partDone($0, done) }
      if piece.length > 0 {
        endpoint.get(into: base + piece.offset, count: piece.length, from: piece.address, key: keys[piece.key]) {
          self.partDone($0, done)
        }
      }
    }
  }

  private func partDone(_ failure: UCXFailure?, _ done: (UCXFailure?) -> Void) {
    if failed == nil { failed = failure }
    outstanding -= 1
    guard outstanding == 0 else { return }
    if let failed {
      result.resume(.failure(DissociatedIPCError(.connectionClosed, "ucx:// get failed: \(failed)")))
    } else if let stale = pieces.indices.first(where: { index in
      headers.load(fromByteOffset: 16 * index, as: UInt64.self) != ExposedMemoryPool.liveMarker(pieces[index].address)
        || headers.load(fromByteOffset: 16 * index + 8, as: UInt64.self) < UInt64(pieces[index].length)
    }) {
      let piece = pieces[stale]
      result.resume(.failure(DissociatedIPCError(
        .malformedDescriptor, "range \(piece.address)+\(piece.length): not inside a live exposed block")))
    } else {
      result.resume(.success(storage.freeze(count: total)))
    }
    done(failed)
  }
}

/// A result handed once to one waiting task: by the progress thread, by
/// cancellation, or by the connection's end, whichever comes first.
final class OneShot<Value: Sendable>: Sendable {
  typealias Outcome = Result<Value, DissociatedIPCError>

  private enum State {
    case idle
    case waiting(CheckedContinuation<Outcome, Never>)
    /// Resumed before anyone waited; handed over by `install`.
    case early(Outcome)
    case finished
  }

  private let state = Mutex(State.idle)

  /// Stores the continuation; false (resuming it at once) when the result
  /// arrived before.
  func install(_ continuation: CheckedContinuation<Outcome, Never>) -> Bool {
    let early = state.withLock { state -> Outcome? in
      guard case .early(let outcome) = state else {
        state = .waiting(continuation)
        return nil
      }
      state = .finished
      return outcome
    }
    if let early { continuation.resume(returning: early) }
    return early == nil
  }

  /// Hands `outcome` over, the first time only.
  func resume(_ outcome: Outcome) {
    let continuation = state.withLock { state -> CheckedContinuation<Outcome, Never>? in
      switch state {
      case .idle:
        state = .early(outcome)
        return nil
      case .waiting(let continuation):
        state = .finished
        return continuation
      case .early, .finished:
        return nil
      }
    }
    continuation?.resume(returning: outcome)
  }
}
#endif  // UCX
