#if canImport(Glibc)
internal import Glibc
#endif
internal import Dispatch
internal import Synchronization

/// Runs `body` on a dedicated thread named `name` (at most 15 bytes, as
/// `top` and `perf` show it), never on Swift's concurrency pool: for a
/// backend's blocking readers, writers, acceptors and progress loops,
/// which would otherwise starve the pool's few threads. The thread is one
/// that finished an earlier body and waits for the next, if any; else a
/// new one (DIPC-THREAD-1).
package func startDedicatedThread(named name: StaticString, _ body: @escaping @Sendable () -> Void) {
  DedicatedThreads.shared.start(named: name, body)
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

  /// The process's threads: at most 16 wait, each for at most 10 s.
  static let shared = DedicatedThreads(maxIdle: 16, idleLifetime: .seconds(10))
  /// At most this many threads wait; more end at once.
  let maxIdle: Int
  /// A thread waiting longer than this for a body ends.
  let idleLifetime: DispatchTimeInterval

  init(maxIdle: Int, idleLifetime: DispatchTimeInterval) {
    self.maxIdle = maxIdle
    self.idleLifetime = idleLifetime
  }

  /// Waiting threads, the most recently parked last (it is reused first:
  /// its stack is the warmest).
  private let idle = Mutex<[Parking]>([])

  /// How many threads wait for a body now.
  var idleCount: Int { idle.withLock { $0.count } }

  /// Runs `body` on a thread named `name`: a waiting one, or a new one.
  func start(named name: StaticString, _ body: @escaping @Sendable () -> Void) {
    let body: @Sendable () -> Void = {
      Self.nameCurrentThread(name)
      body()
    }
    if let parking = idle.withLock({ $0.popLast() }) {
      parking.body = body
      parking.wake.signal()
      return
    }
    spawn(body)
  }

  private func spawn(_ body: @escaping @Sendable () -> Void) {
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
    precondition(created == 0, "pthread_create failed: \(created)")
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
      guard idle.withLock({ (list) -> Bool in
        guard list.count < maxIdle else { return false }
        list.append(parking)
        return true
      }) else { return }
      if parking.wake.wait(timeout: .now() + idleLifetime) == .timedOut {
        let stillIdle = idle.withLock { list -> Bool in
          guard let index = list.firstIndex(where: { $0 === parking }) else { return false }
          list.remove(at: index)
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
