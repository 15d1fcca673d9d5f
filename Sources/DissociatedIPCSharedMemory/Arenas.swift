internal import ArrowIPC
internal import DissociatedIPC

/// The ``SharedMemoryBuffer``s a connection announced to its peer and the
/// regions exposed from them in place (SHM-ARENA-*). Exposed bytes are
/// retained until released; an arena nothing is exposed from any more stays
/// announced while it is one of the ``idleLimit`` most recently used idle
/// ones, and is retired (its buffer no longer retained, the peer unmaps it)
/// when it falls out of that set.
struct ArenaTable {
  /// A segment id a buffer is announced under, and the offsets exposed
  /// through it and not released.
  struct Alias {
    let id: UInt16
    var offsets: Set<Int> = []
  }

  /// An announced buffer.
  struct Arena {
    let buffer: SharedMemoryBuffer
    /// Usually one; more while the same offset is exposed several times at
    /// once (SHM-ARENA-4).
    var aliases: [Alias] = []
    /// Regions exposed from it and not released.
    var live = 0
  }

  /// An exposed region: the bytes stay retained until it is released.
  struct Region {
    let key: ObjectIdentifier
    let alias: UInt16
    let offset: Int
    let bytes: ArrowBytes
  }

  /// Region ids of in-place exposures: segment id 0xFFFF (never a segment,
  /// SHM-ADDR-3) and a counter, so they never equal a ring block's address.
  static let regionBase: UInt64 = 0xFFFF << SharedMemoryWire.offsetBits
  /// Idle arenas kept announced (SHM-ARENA-3).
  static let idleLimit = 4
  /// Segment ids one buffer may be announced under at once (SHM-ARENA-4).
  static let maxAliases = 512

  private var arenas: [ObjectIdentifier: Arena] = [:]
  private var regions: [UInt64: Region] = [:]
  /// Idle arenas, least recently used first.
  private var idle: [ObjectIdentifier] = []
  private var nextRegion: UInt64 = 0

  /// What exposing in place did.
  enum Exposure {
    /// Exposed; `announce` is a segment id under which the buffer must be
    /// announced before the descriptor.
    case exposed(ExposedRegion, announce: UInt16?)
    /// Not possible (no segment id or alias left): copy into the ring.
    case copy
  }

  /// Whether `region` is an in-place exposure's id.
  static func isArenaRegion(_ region: UInt64) -> Bool { region & regionBase == regionBase }

  /// Exposes `bytes`, which lie at `offset` in `buffer`. The peer's core
  /// refuses one address outstanding twice, so an offset already exposed
  /// through every alias of the buffer gets a new alias: the buffer is
  /// announced again under a new segment id (the peer maps it once more;
  /// still no copy).
  mutating func expose(_ bytes: ArrowBytes, in buffer: SharedMemoryBuffer, offset: Int,
                       outbound: inout OutboundSegments) -> Exposure {
    let key = ObjectIdentifier(buffer)
    var arena = arenas[key] ?? Arena(buffer: buffer)
    var announce: UInt16?
    var index = arena.aliases.firstIndex { !$0.offsets.contains(offset) }
    if index == nil {
      guard arena.aliases.count < Self.maxAliases, let id = outbound.takeArenaID() else { return .copy }
      arena.aliases.append(Alias(id: id))
      index = arena.aliases.count - 1
      announce = id
    }
    let alias = arena.aliases[index!].id
    arena.aliases[index!].offsets.insert(offset)
    arena.live += 1
    if arena.live == 1, let position = idle.firstIndex(of: key) { idle.remove(at: position) }
    arenas[key] = arena
    let region = Self.regionBase | nextRegion
    nextRegion += 1
    regions[region] = Region(key: key, alias: alias, offset: offset, bytes: bytes)
    let address = SharedMemoryWire.address(segment: alias, offset: offset)
    return .exposed(ExposedRegion(id: region, ranges: [RemoteRange(address: address, length: UInt64(bytes.count))]),
                    announce: announce)
  }

  /// Releases `region`; returns the segment ids to retire now.
  mutating func release(_ region: UInt64) -> [UInt16] {
    guard let released = regions.removeValue(forKey: region), var arena = arenas[released.key] else { return [] }
    if let index = arena.aliases.firstIndex(where: { $0.id == released.alias }) {
      arena.aliases[index].offsets.remove(released.offset)
    }
    arena.live -= 1
    arenas[released.key] = arena
    guard arena.live == 0 else { return [] }
    idle.append(released.key)
    var retired: [UInt16] = []
    while idle.count > Self.idleLimit {
      retired += arenas.removeValue(forKey: idle.removeFirst())!.aliases.map(\.id)
    }
    return retired
  }

  /// Forgets everything (the connection closed).
  mutating func removeAll() {
    arenas.removeAll()
    regions.removeAll()
    idle.removeAll()
  }
}
