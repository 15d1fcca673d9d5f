internal import Synchronization

/// Bounds how many connections a listener keeps at once (DIPC-LIM-7).
///
/// An acceptor takes a ``Slot`` for each connection before it starts any
/// thread or allocates anything for it, and refuses (closes at once) a
/// connection that finds none. The connection holds its slot until it is
/// freed, so a slot counts everything a connection holds: its threads, its
/// descriptors, its buffers.
package final class ConnectionSlots: Sendable {
  /// One connection's claim; given back when released.
  package final class Slot: Sendable {
    private let slots: ConnectionSlots
    fileprivate init(_ slots: ConnectionSlots) { self.slots = slots }
    deinit { slots.inUseCount.subtract(1, ordering: .relaxed) }
  }

  /// The most slots taken at once.
  package let limit: Int
  private let inUseCount = Atomic<Int>(0)

  /// Slots for at most `limit` connections.
  package init(limit: Int) { self.limit = limit }

  /// Slots taken now: the connections their listener holds.
  package var inUse: Int { inUseCount.load(ordering: .relaxed) }

  /// A slot, or nil when `limit` connections hold one.
  package func take() -> Slot? {
    var current = inUseCount.load(ordering: .relaxed)
    while current < limit {
      let (exchanged, original) = inUseCount.compareExchange(expected: current, desired: current + 1, ordering: .relaxed)
      if exchanged { return Slot(self) }
      current = original
    }
    return nil
  }
}
