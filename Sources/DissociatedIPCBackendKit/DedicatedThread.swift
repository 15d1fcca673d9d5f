#if canImport(Glibc)
internal import Glibc
#endif
public import DissociatedIPC
internal import Dispatch
internal import Synchronization

/// Runs `body` on a dedicated thread named `name` (at most 15 bytes, as
/// `top` and `perf` show it), never on Swift's concurrency pool: for a
/// backend's blocking readers, writers, acceptors and progress loops,
/// which would otherwise starve the pool's few threads. The thread is one
/// that finished an earlier body and waits for the next, if any; else a
/// new one (DIPC-THREAD-1).
///
/// - Throws: `.resourceExhausted` when the process already runs
///   ``DedicatedThreads/maxThreads`` of them or the system refuses a new
///   thread (DIPC-LIM-8); `body` is not run then.
public func startDedicatedThread(named name: StaticString, _ body: @escaping @Sendable () -> Void) throws(DissociatedIPCError) {
  try DedicatedThreads.shared.start(named: name, body)
}

/// Threads that ran a body and wait a while for the next one, so a
/// connection's reader and writer cost no thread creation (a `clone`, an
/// 8 MiB stack mapped and its first pages faulted in, then unmapped) each
/// time a stream starts (DIPC-THREAD-1).
final class DedicatedThreads: Sendable {
  /// One thread's parking place: the wake-up, and the body handed to it.
  private final class Parking: @unchecked Sendable {
    // Unchecked: `body` is written by the starter after it took this
    // parking out of the idle list, and read by the thread only after the
    // semaphore's signal (which orders the two).
    let wake = DispatchSemaphore(value: 0)
    var body: (@Sendable () -> Void)?
  }

  /// The process's threads: at most 4,096 in all (DIPC-LIM-8), at most 16
  /// waiting, each for at most 10 s.
  static let shared = DedicatedThreads(maxIdle: 16, idleLifetime: .seconds(10), maxThreads: 4096)
  /// At most this many threads wait; more end at once.
  let maxIdle: Int
  /// A thread waiting longer than this for a body ends.
  let idleLifetime: DispatchTimeInterval
  /// At most this many threads exist, running or waiting (DIPC-LIM-8).
  let maxThreads: Int

  init(maxIdle: Int, idleLifetime: DispatchTimeInterval, maxThreads: Int = .max) {
    self.maxIdle = maxIdle
    self.idleLifetime = idleLifetime
    self.maxThreads = maxThreads
  }

  /// Waiting threads, the most recently parked last (it is reused first:
  /// its stack is the warmest), and how many threads exist.
  private let threads = Mutex<(idle: [Parking], count: Int)>(([], 0))

  /// How many threads wait for a body now.
  var idleCount: Int { threads.withLock { $0.idle.count } }

  /// How many threads exist now, running a body or waiting for one.
  var threadCount: Int { threads.withLock { $0.count } }

  /// Runs `body` on a thread named `name`: a waiting one, or a new one.
  ///
  /// - Throws: `.resourceExhausted` when ``maxThreads`` exist and none
  ///   waits, or when the system refuses a new thread.
  func start(named name: StaticString, _ body: @escaping @Sendable () -> Void) throws(DissociatedIPCError) {
    let body: @Sendable () -> Void = {
      Self.nameCurrentThread(name)
      body()
    }
    let reserved = threads.withLock { state -> Parking?? in
      if let parking = state.idle.popLast() { return .some(parking) }
      guard state.count < maxThreads else { return nil }
      state.count += 1
      return .some(nil)
    }
    switch reserved {
    case .some(let parking?):
      parking.body = body
      parking.wake.signal()
    case .some(nil):
      try spawn(body)
    case nil:
      throw DissociatedIPCError(.resourceExhausted, "\(maxThreads) threads are running: no thread for \(name)")
    }
  }

  /// Creates a thread for `body`; its slot in ``threadCount`` is already
  /// counted and is given back when creation fails.
  private func spawn(_ body: @escaping @Sendable () -> Void) throws(DissociatedIPCError) {
    final class Start: Sendable {
      let pool: DedicatedThreads
      let parking: Parking
      init(_ pool: DedicatedThreads, _ parking: Parking) {
        self.pool = pool
        self.parking = parking
      }
    }
    let parking = Parking()
    parking.body = body
    let start = Unmanaged.passRetained(Start(self, parking)).toOpaque()
    var thread = pthread_t()
    let created = pthread_create(&thread, nil, { context in
      let start = Unmanaged<Start>.fromOpaque(context!).takeRetainedValue()
      start.pool.serve(start.parking)
      return nil
    }, start)
    guard created == 0 else {
      Unmanaged<Start>.fromOpaque(start).release()
      threads.withLock { $0.count -= 1 }
      throw DissociatedIPCError(.resourceExhausted, "the system refused a new thread (error \(created))")
    }
    pthread_detach(thread)
  }

  /// Names the calling thread (`prctl(PR_SET_NAME)`, which Swift cannot
  /// call, is this write); a name that cannot be set is left as it was.
  static func nameCurrentThread(_ name: StaticString) {
    let file = open("/proc/thread-self/comm", O_WRONLY | O_CLOEXEC)
    guard file >= 0 else { return }
    _ = write(file, name.utf8Start, min(name.utf8CodeUnitCount, 15))
    close(file)
  }

  /// A thread's life: run the body in its parking, park, and again, until
  /// it waited ``idleLifetime`` or the idle list was full.
  private func serve(_ parking: Parking) {
    while true {
      do {
        // Let go of the body before parking: it holds its connection.
        let body = parking.body!
        parking.body = nil
        body()
      }
      Self.nameCurrentThread("dipc-idle")
      guard threads.withLock({ (state) -> Bool in
        guard state.idle.count < maxIdle else {
          state.count -= 1
          return false
        }
        state.idle.append(parking)
        return true
      }) else { return }
      if parking.wake.wait(timeout: .now() + idleLifetime) == .timedOut {
        let stillIdle = threads.withLock { state -> Bool in
          guard let index = state.idle.firstIndex(where: { $0 === parking }) else { return false }
          state.idle.remove(at: index)
          state.count -= 1
          return true
        }
        if stillIdle { return }
        // A starter took this thread just as the wait ended: its signal
        // is coming.
        parking.wake.wait()
      }
    }
  }
}

/// Runs a blocking `body` (a `connect(2)`, say) on a dedicated thread and
/// returns what it returned, so the wait never holds a thread of Swift's
/// concurrency pool.
///
/// - Throws: what `body` threw, or `.resourceExhausted` when no thread
///   could be had.
public func onDedicatedThread<T: Sendable>(
  named name: StaticString, _ body: @escaping @Sendable () throws(DissociatedIPCError) -> T
) async throws(DissociatedIPCError) -> T {
  let result: Result<T, DissociatedIPCError> = await withCheckedContinuation { continuation in
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: name) {
        continuation.resume(returning: Result { () throws(DissociatedIPCError) in try body() })
      }
    } catch {
      continuation.resume(returning: .failure(error))
    }
  }
  return try result.get()
}
