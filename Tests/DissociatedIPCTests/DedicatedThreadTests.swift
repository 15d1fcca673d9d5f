import Foundation
import Synchronization
import Testing
@testable import DissociatedIPC

/// DIPC-THREAD-1: backends' threads are reused and named for their work.
/// Each test has a pool of its own, so other suites' threads cannot mix in.
@Suite("Dedicated threads")
struct DedicatedThreadTests {
  /// The kernel id and name of the thread a body ran on.
  struct Sighting: Equatable {
    var threadID: String
    var name: String

    /// The calling thread's.
    static var current: Sighting {
      let stat = (try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8)) ?? "?"
      let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
      return Sighting(threadID: String(stat.prefix { $0 != " " }), name: comm.trimmingCharacters(in: .newlines))
    }
  }

  /// Runs a body on a thread of `pool` named `name`; returns what it saw.
  static func sight(_ pool: DedicatedThreads, _ name: StaticString) async -> Sighting {
    await withCheckedContinuation { continuation in
      pool.start(named: name) { continuation.resume(returning: Sighting.current) }
    }
  }

  /// Waits until `done` holds; false after 60 s (the whole suite runs in
  /// parallel on two cores: the waiting task may be scheduled late).
  static func eventually(_ done: () throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + .seconds(60)
    while try !done() {
      guard ContinuousClock.now < deadline else { return false }
      try await Task.sleep(for: .milliseconds(2))
    }
    return true
  }

  @Test("a thread whose body returned runs the next body, under the new body's name")
  func reused() async throws {
    // Threads wait far longer than a slow test could take.
    let pool = DedicatedThreads(maxIdle: 4, idleLifetime: .seconds(3600))
    let first = await Self.sight(pool, "test-first")
    #expect(first.name == "test-first")
    #expect(try await Self.eventually { pool.idleCount == 1 })
    let second = await Self.sight(pool, "test-second")
    #expect(second.name == "test-second")
    #expect(second.threadID == first.threadID)
    #expect(try await Self.eventually { pool.idleCount == 1 })
  }

  @Test("bodies running at once get threads of their own; at most maxIdle then wait")
  func concurrentBodies() async throws {
    let pool = DedicatedThreads(maxIdle: 2, idleLifetime: .seconds(3600))
    let release = DispatchSemaphore(value: 0)
    let sightings = Mutex<[Sighting]>([])
    // Every body holds its thread until all three run.
    for _ in 0 ..< 3 {
      pool.start(named: "test-parallel") {
        let seen = Sighting.current
        sightings.withLock { $0.append(seen) }
        release.wait()
      }
    }
    #expect(try await Self.eventually { sightings.withLock { $0.count } == 3 })
    #expect(Set(sightings.withLock { $0.map(\.threadID) }).count == 3)
    for _ in 0 ..< 3 { release.signal() }
    #expect(try await Self.eventually { pool.idleCount == 2 })
  }

  @Test("a thread that waited its idle lifetime ends")
  func idleThreadsEnd() async throws {
    let pool = DedicatedThreads(maxIdle: 4, idleLifetime: .milliseconds(100))
    let first = await Self.sight(pool, "test-short")
    func alive() throws -> Bool {
      try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").contains(first.threadID)
    }
    #expect(try await Self.eventually { try pool.idleCount == 0 && !alive() }, "thread \(first.threadID) still runs")
  }
}
