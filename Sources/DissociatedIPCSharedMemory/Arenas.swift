internal import ArrowIPC
internal import DissociatedIPC

/// The ``SharedMemoryBuffer``s a connection announced to its peer and the
/// regions exposed from them in place (SHM-ARENA-*). Exposed bytes are
/// retained until released; an arena nothing is exposed from any more stays
/// announced while it is one of the ``idleLimit`` most recently used idle
/// ones, and is retired (its buffer no longer retained, the peer unmaps it)
/// when it falls out of that set.
struct ArenaTable {
  /// An announced buffer.
  struct Arena {
    let id: UInt16
    let buffer: SharedMemoryBuffer
    /// Regions exposed from it and not released.
    var live = 0
  }

  /// An exposed region: the bytes stay retained until it is released.
  struct Region {
    let key: ObjectIdentifier
    let address: UInt64
    let bytes: ArrowBytes
  }

  /// Region ids of in-place exposures: segment id 0xFFFF (never a segment,
  /// SHM-ADDR-3) and a counter, so they never equal a ring block's address.
  static let regionBase: UInt64 = 0xFFFF << SharedMemoryWire.offsetBits
  /// Idle arenas kept announced (SHM-ARENA-3).
  static let idleLimit = 4

  private var arenas: [ObjectIdentifier: Arena] = [:]
  private var regions: [UInt64: Region] = [:]
  /// Addresses outstanding: the core refuses one address twice, so a range
  /// exposed again while outstanding is copied instead.
  private var addresses: Set<UInt64> = []
  /// Idle arenas, least recently used first.
  private var idle: [ObjectIdentifier] = []
  private var nextRegion: UInt64 = 0

  /// What exposing in place did.
  enum Exposure {
    /// Exposed; `announce` is an arena to announce before the descriptor.
    case exposed(ExposedRegion, announce: Arena?)
    /// Not possible (the address is outstanding, or no segment id is
    /// left): copy into the ring instead.
    case copy
  }

  /// Whether `region` is an in-place exposure's id.
  static func isArenaRegion(_ region: UInt64) -> Bool { region & regionBase == regionBase }

  /// Exposes `bytes`, which lie at `offset` in `buffer`, announcing the
  /// buffer if it is not announced yet.
  mutating func expose(_ bytes: ArrowBytes, in buffer: SharedMemoryBuffer, offset: Int,
                       outbound: inout OutboundSegments) -> Exposure {
    let key = ObjectIdentifier(buffer)
    var announce: Arena?
    if let arena = arenas[key] {
      guard !addresses.contains(SharedMemoryWire.address(segment: arena.id, offset: offset)) else { return .copy }
    } else {
      guard let id = outbound.takeArenaID() else { return .copy }
      announce = Arena(id: id, buffer: buffer)
      arenas[key] = announce
    }
    let id = arenas[key]!.id
    arenas[key]!.live += 1
    if arenas[key]!.live == 1, let index = idle.firstIndex(of: key) { idle.remove(at: index) }
    let address = SharedMemoryWire.address(segment: id, offset: offset)
    let region = Self.regionBase | nextRegion
    nextRegion += 1
    addresses.insert(address)
    regions[region] = Region(key: key, address: address, bytes: bytes)
    return .exposed(ExposedRegion(id: region, ranges: [RemoteRange(address: address, length: UInt64(bytes.count))]),
                    announce: announce)
  }

  /// Releases `region`; returns the ids of arenas to retire now.
  mutating func release(_ region: UInt64) -> [UInt16] {
    guard let released = regions.removeValue(forKey: region) else { return [] }
    addresses.remove(released.address)
    arenas[released.key]!.live -= 1
    guard arenas[released.key]!.live == 0 else { return [] }
    idle.append(released.key)
    var retired: [UInt16] = []
    while idle.count > Self.idleLimit { retired.append(arenas.removeValue(forKey: idle.removeFirst())!.id) }
    return retired
  }

  /// Announced arenas (for tests and diagnostics).
  var announcedCount: Int { arenas.count }

  /// Forgets everything (the connection closed).
  mutating func removeAll() {
    arenas.removeAll()
    regions.removeAll()
    addresses.removeAll()
    idle.removeAll()
  }
}
