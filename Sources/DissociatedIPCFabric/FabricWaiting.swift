#if Fabric
internal import CLibfabric
internal import DissociatedIPC
internal import Glibc

/// An eventfd that wakes a fabric:// thread from its sleep: callers that
/// queue work for it signal it while it sleeps (FABRIC-THREAD-2).
final class FabricWake: Sendable {
  let descriptor: Int32

  init() throws(DissociatedIPCError) {
    descriptor = clibfabric_eventfd()
    guard descriptor >= 0 else {
      throw DissociatedIPCError(.resourceExhausted, "fabric:// cannot create an eventfd (errno \(errno))")
    }
  }

  deinit { Glibc.close(descriptor) }

  /// Wakes the sleeper (or makes its next sleep return at once).
  func signal() {
    var one: UInt64 = 1
    _ = write(descriptor, &one, 8)
  }

  /// Clears pending signals.
  func drain() {
    var value: UInt64 = 0
    _ = read(descriptor, &value, 8)
  }
}

/// How a fabric:// thread waits for work when a round made no progress
/// (FABRIC-THREAD-2): on the completion queue's descriptor and the wake
/// eventfd where the provider has a descriptor; where it has none (shm),
/// or its descriptor keeps waking the thread with nothing to do, polling
/// with a back-off from a few spins to `maxIdleSleep`; never, in polling
/// mode.
struct FabricIdleWait {
  /// Rounds without progress that spin before the first sleep; also the
  /// fruitless wake-ups after which a descriptor is not slept on.
  static let spinRounds = 16
  /// The first sleep of the back-off; each later one doubles, up to the cap.
  static let firstSleepNanoseconds: Int64 = 16_000

  let polling: Bool
  let maxIdleNanoseconds: Int64
  private var idleRounds = 0
  /// The last sleep ended because the queue's descriptor was readable.
  private var wokeByQueue = false
  /// Wake-ups by the queue's descriptor in a row that brought nothing
  /// (tcp;ofi_rxm's stays readable while a broken connection lingers).
  private var fruitlessWakes = 0

  init(polling: Bool, maxIdleSleep: Duration) {
    self.polling = polling
    let (seconds, attoseconds) = maxIdleSleep.components
    let nanoseconds = min(seconds, 3_600) * 1_000_000_000 + attoseconds / 1_000_000_000
    maxIdleNanoseconds = max(Self.firstSleepNanoseconds, nanoseconds)
  }

  /// A round made progress: the next idle round spins again.
  mutating func progressed() {
    idleRounds = 0
    wokeByQueue = false
    fruitlessWakes = 0
  }

  /// Waits after a round without progress, at most `limit` nanoseconds.
  /// `mayBlock` runs last, under the caller's lock: it marks the thread
  /// asleep and says whether nothing arrived meanwhile (else no sleep).
  mutating func idle(queue: FabricCompletionQueue, wake: FabricWake, limit: Int64, mayBlock: () -> Bool, woke: () -> Void) {
    guard !polling else { return }
    idleRounds += 1
    if wokeByQueue { fruitlessWakes += 1 }
    wokeByQueue = false
    if let queueDescriptor = queue.waitDescriptor, fruitlessWakes <= Self.spinRounds, queue.readyToSleep() {
      guard mayBlock() else { return }
      wokeByQueue = sleep(on: [wake.descriptor, queueDescriptor], nanoseconds: limit)[1]
    } else {
      // No descriptor, or the provider says "not now" to sleeping on it
      // (tcp;ofi_rxm did, for ever, after a peer's connection broke), or
      // it wakes us for nothing: spin a little, then back off.
      guard idleRounds > Self.spinRounds else { return }
      let doublings = min(20, (idleRounds - Self.spinRounds) / 4)
      let timeout = min(limit, maxIdleNanoseconds, Self.firstSleepNanoseconds << doublings)
      guard mayBlock() else { return }
      _ = sleep(on: [wake.descriptor], nanoseconds: timeout)
    }
    wake.drain()
    woke()
  }

  /// Sleeps until one of `descriptors` is readable or `nanoseconds`
  /// passed; which of them were readable.
  private func sleep(on descriptors: [Int32], nanoseconds: Int64) -> [Bool] {
    var fds = descriptors.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
    _ = clibfabric_poll(&fds, UInt32(fds.count), nanoseconds)
    return fds.map { $0.revents != 0 }
  }
}
#endif  // Fabric
