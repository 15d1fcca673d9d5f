internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// This side's segments and the peer's: reserving space, returning it,
/// and how much of the peer's memory received payloads may hold
/// (SHM-RING-2, SHM-RING-3, SHM-RING-7).
extension SharedMemoryConnection {
  /// Reserves a block of this side's segments for `count` bytes, waiting
  /// while none has room (backpressure, SHM-RING-2). A new segment is
  /// announced to the peer before anything can refer to it.
  func reserve(_ count: Int, kind: BlockKind) async throws(DissociatedIPCError) -> OutboundSegments.Reservation {
    while true {
      let placement = try state.withLock { (state) throws(DissociatedIPCError) -> (OutboundSegments.Placement, Int) in
        if let error = state.sendError { throw error }
        return (try state.outbound.place(count, kind: kind, config: config), state.spaceGeneration)
      }
      switch placement.0 {
      case .placed(let reservation, let added, let retired):
        reservation.segment.populate(through: reservation.payloadOffset + count)
        for id in retired { try submit(Outgoing(kind: .segmentRetired, words: (UInt64(id), 0), wordCount: 1)) }
        if let added {
          try submit(Outgoing(kind: .segmentAdded, words: (UInt64(added.id), UInt64(added.size)), wordCount: 2, segment: added))
        }
        return reservation
      case .full:
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
          let wait = state.withLock { state -> Bool in
            guard state.spaceGeneration == placement.1, state.sendError == nil else { return false }
            state.spaceWaiters.append(continuation)
            return true
          }
          if !wait { continuation.resume() }
        }
      }
    }
  }

  /// Frees blocks of this side's segments and wakes senders waiting for
  /// space; false when an address is not a live block of `kind`.
  func freeSpace(_ addresses: some Sequence<UInt64>, kind: BlockKind) -> Bool {
    let (known, waiters) = state.withLock { state in
      var known = true
      for address in addresses where !state.outbound.free(address, kind: kind) { known = false }
      state.spaceGeneration += 1
      defer { state.spaceWaiters = [] }
      return (known, state.spaceWaiters)
    }
    for waiter in waiters { waiter.resume() }
    return known
  }

  /// Counts a received payload of `length` bytes as held, unless held
  /// payloads would then pin more than `maxHeldPayloadBytes` of the
  /// peer's memory (one alone always may); false then (SHM-RING-7).
  func holdPayload(_ length: Int) -> Bool {
    state.withLock { $0.heldPayloads.hold(length, limit: config.maxHeldPayloadBytes) }
  }

  /// The application released a payload in the peer's segment: queue its
  /// address for the writer, which coalesces returns (SHM-RING-3); `held`
  /// is what ``holdPayload(_:)`` counted for it.
  func returnSpace(_ address: UInt64, held: Int = 0) {
    let writerNudge = state.withLock { state -> LazyWriter.Nudge in
      state.heldPayloads.release(held)
      guard state.sendError == nil else { return .nothing }
      state.returns.append(address)
      return state.nudgeWriter()
    }
    nudge(writerNudge)
  }
}
