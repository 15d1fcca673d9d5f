internal import Synchronization

/// Bounds how many connections a listener keeps at once (DIPC-LIM-7).
///
/// An acceptor takes a ``Slot`` for each connection before it starts any
/// thread or allocates anything for it, and refuses (closes at once) a
/// connection that finds none. The connection holds its slot until it is
/// freed, so a slot counts everything a connection holds: its threads, its
/// descriptors, its buffers.
public final class ConnectionSlots: Sendable {
  /// One connection's claim; given back when released.
  public final class Slot: Sendable {
    private let slots: ConnectionSlots
    fileprivate init(_ slots: ConnectionSlots) { self.slots = slots }
    deinit { slots.inUseCount.subtract(1, ordering: .relaxed) }
  }

  /// The most slots taken at once.
  public let limit: Int
  private let inUseCount = Atomic<Int>(0)

  /// Slots for at most `limit` connections.
  public init(limit: Int) { self.limit = limit }

  /// Slots taken now: the connections their listener holds.
  public var inUse: Int { inUseCount.load(ordering: .relaxed) }

  /// A slot, or nil when `limit` connections hold one.
  public func take() -> Slot? {
    var current = inUseCount.load(ordering: .relaxed)
    while current < limit {
      let (exchanged, original) = inUseCount.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
      if exchanged { return Slot(self) }
      current = original
    }
    return nil
  }
}

/// `bytes` in MiB, rounded up, as ``TransportListener/heldResources`` and
/// ``TransportConnection/heldResources`` texts show them.
public func mebibytes(_ bytes: Int) -> Int { bytes / (1 << 20) + (bytes % (1 << 20) > 0 ? 1 : 0) }
