#if UCX
internal import Synchronization

/// The progress threads (connections and listeners) still running in this
/// process. At exit they are closed, then reset, and waited for (1 s for
/// the close, 10 s for the reset), so that no worker is torn down while
/// UCX's library destructors run: that corrupted UCX's state (UCX-CLOSE-4).
enum ProgressThreads {
  private struct Entry {
    let close: @Sendable () -> Void
    let reset: @Sendable () -> Void
  }

  private static let live = Mutex<[ObjectIdentifier: Entry]>([:])
  private static let exitHook: Void = atProcessExit { ProgressThreads.stopAll() }

  /// A thread started for `owner`; `close` and `reset` stop it.
  static func started(_ owner: ObjectIdentifier, close: @escaping @Sendable () -> Void, reset: @escaping @Sendable () -> Void) {
    exitHook
    live.withLock { $0[owner] = Entry(close: close, reset: reset) }
  }

  /// The thread of `owner` released its worker.
  static func ended(_ owner: ObjectIdentifier) { _ = live.withLock { $0.removeValue(forKey: owner) } }

  /// Closes, then resets, every listed thread and waits for them.
  static func stopAll() {
    // A close gets a second to say goodbye; a reset only tears the worker
    // down, which a loaded machine may still take a while to schedule, so
    // it is given longer: exiting while a worker is torn down crashes UCX.
    for (step, patience) in [(\Entry.close, 1000), (\Entry.reset, 10_000)] as [(KeyPath<Entry, @Sendable () -> Void>, Int64)] {
      for entry in live.withLock({ Array($0.values) }) { entry[keyPath: step]() }
      let deadline = monotonicMilliseconds() + patience
      while monotonicMilliseconds() < deadline, !live.withLock({ $0.isEmpty }) { sleepThread(microseconds: 1000) }
    }
  }
}
#endif  // UCX
