public import DissociatedIPC
internal import Synchronization

/// Hands connections accepted by a backend's acceptor (a thread, a
/// callback) to ``TransportListener/accept()`` callers: at most one waiting
/// caller, accepted connections queued in order until taken, and after
/// ``close()`` nothing queued or accepted any more.
public final class AcceptQueue<Connection: AnyObject & Sendable>: Sendable {
  private struct State {
    var ready: [Connection] = []
    var waiter: CheckedContinuation<Result<Connection?, DissociatedIPCError>, Never>?
    var closed = false
  }

  private let state = Mutex(State())

  /// An open, empty queue.
  public init() {}

  /// Passes `connection` to a waiting `next()` or queues it; false when the
  /// queue is closed (the caller then aborts the connection).
  public func offer(_ connection: Connection) -> Bool {
    let (waiter, accepted) = state.withLock { state -> (CheckedContinuation<Result<Connection?, DissociatedIPCError>, Never>?, Bool) in
      if state.closed { return (nil, false) }
      if let waiter = state.waiter {
        state.waiter = nil
        return (waiter, true)
      }
      state.ready.append(connection)
      return (nil, true)
    }
    waiter?.resume(returning: .success(connection))
    return accepted
  }

  /// The next accepted connection, or nil once the queue is closed.
  ///
  /// - Throws: `.cancelled` when the waiting task is cancelled (a server's
  ///   cancelled `run()` stops accepting).
  public func next() async throws(DissociatedIPCError) -> Connection? {
    let result: Result<Connection?, DissociatedIPCError> = await withTaskCancellationHandler {
      await withCheckedContinuation { (continuation: CheckedContinuation<Result<Connection?, DissociatedIPCError>, Never>) in
        let immediate: Result<Connection?, DissociatedIPCError>? = state.withLock { state in
          if !state.ready.isEmpty { return .success(state.ready.removeFirst()) }
          if state.closed { return .success(nil) }
          // Checked under the lock: a cancellation either happened already
          // (seen here) or will find the waiter installed.
          if Task.isCancelled { return .failure(Self.cancelled) }
          state.waiter = continuation
          return nil
        }
        if let immediate { continuation.resume(returning: immediate) }
      }
    } onCancel: {
      let waiter = state.withLock { state in
        defer { state.waiter = nil }
        return state.waiter
      }
      waiter?.resume(returning: .failure(Self.cancelled))
    }
    return try result.get()
  }

  private static var cancelled: DissociatedIPCError { DissociatedIPCError(.cancelled, "accept cancelled") }

  /// Closes the queue: a waiting `next()` returns nil; returns the
  /// connections nobody took (the caller aborts them). Idempotent.
  public func close() -> [Connection] {
    let (waiter, pending) = state.withLock { state -> (CheckedContinuation<Result<Connection?, DissociatedIPCError>, Never>?, [Connection]) in
      guard !state.closed else { return (nil, []) }
      state.closed = true
      defer {
        state.waiter = nil
        state.ready = []
      }
      return (state.waiter, state.ready)
    }
    waiter?.resume(returning: .success(nil))
    return pending
  }
}
