internal import Synchronization

/// Hands connections accepted by a backend's acceptor (a thread, a
/// callback) to ``TransportListener/accept()`` callers: at most one waiting
/// caller, accepted connections queued in order until taken, and after
/// ``close()`` nothing queued or accepted any more.
package final class AcceptQueue<Connection: AnyObject & Sendable>: Sendable {
  private struct State {
    var ready: [Connection] = []
    var waiter: CheckedContinuation<Connection?, Never>?
    var closed = false
  }

  private let state = Mutex(State())

  /// An open, empty queue.
  package init() {}

  /// Passes `connection` to a waiting `next()` or queues it; false when the
  /// queue is closed (the caller then aborts the connection).
  package func offer(_ connection: Connection) -> Bool {
    let (waiter, accepted) = state.withLock { state -> (CheckedContinuation<Connection?, Never>?, Bool) in
      if state.closed { return (nil, false) }
      if let waiter = state.waiter {
        state.waiter = nil
        return (waiter, true)
      }
      state.ready.append(connection)
      return (nil, true)
    }
    waiter?.resume(returning: connection)
    return accepted
  }

  /// The next accepted connection, or nil once the queue is closed.
  package func next() async -> Connection? {
    await withCheckedContinuation { (continuation: CheckedContinuation<Connection?, Never>) in
      let immediate: Connection?? = state.withLock { state in
        if !state.ready.isEmpty { return .some(state.ready.removeFirst()) }
        if state.closed { return .some(nil) }
        state.waiter = continuation
        return nil
      }
      if let immediate { continuation.resume(returning: immediate) }
    }
  }

  /// Closes the queue: a waiting `next()` returns nil; returns the
  /// connections nobody took (the caller aborts them). Idempotent.
  package func close() -> [Connection] {
    let (waiter, pending) = state.withLock { state -> (CheckedContinuation<Connection?, Never>?, [Connection]) in
      guard !state.closed else { return (nil, []) }
      state.closed = true
      defer {
        state.waiter = nil
        state.ready = []
      }
      return (state.waiter, state.ready)
    }
    waiter?.resume(returning: nil)
    return pending
  }
}
