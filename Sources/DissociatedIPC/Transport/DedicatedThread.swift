#if canImport(Glibc)
internal import Glibc
#endif

/// Runs `body` on a new detached thread, never on Swift's concurrency pool:
/// for a backend's blocking readers, writers, acceptors and progress loops,
/// which would otherwise starve the pool's few threads.
package func startDedicatedThread(_ body: @escaping @Sendable () -> Void) {
  final class Box: @unchecked Sendable {
    // Sendable: written once before the thread starts, read by it only.
    let body: @Sendable () -> Void
    init(_ body: @escaping @Sendable () -> Void) { self.body = body }
  }
  let box = Unmanaged.passRetained(Box(body)).toOpaque()
  var thread = pthread_t()
  let created = pthread_create(&thread, nil, { context in
    Unmanaged<Box>.fromOpaque(context!).takeRetainedValue().body()
    return nil
  }, box)
  precondition(created == 0, "pthread_create failed: \(created)")
  pthread_detach(thread)
}
