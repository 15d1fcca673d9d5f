import Foundation
import Synchronization
import Testing
@testable import DissociatedIPC
@testable import DissociatedIPCBackendKit

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
  static func sight(_ pool: DedicatedThreads, _ name: StaticString) async throws -> Sighting {
    try await withCheckedThrowingContinuation { continuation in
      do throws(DissociatedIPCError) {
        try pool.start(named: name) { continuation.resume(returning: Sighting.current) }
      } catch {
        continuation.resume(throwing: error)
      }
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
    let first = try await Self.sight(pool, "test-first")
    #expect(first.name == "test-first")
    #expect(try await Self.eventually { pool.idleCount == 1 })
    let second = try await Self.sight(pool, "test-second")
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
      try pool.start(named: "test-parallel") {
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
    let first = try await Self.sight(pool, "test-short")
    func alive() throws -> Bool {
      try FileManager.default.contentsOfDirectory(atPath: "/proc/self/task").contains(first.threadID)
    }
    #expect(try await Self.eventually { try pool.idleCount == 0 && !alive() }, "thread \(first.threadID) still runs")
  }

  @Test("past maxThreads a start throws resourceExhausted, runs nothing, and a later start gets the freed thread (DIPC-LIM-8)")
  func boundedThreadCount() async throws {
    let pool = DedicatedThreads(maxIdle: 1, idleLifetime: .seconds(3600), maxThreads: 2)
    let release = DispatchSemaphore(value: 0)
    let running = Mutex(0)
    for _ in 0 ..< 2 {
      try pool.start(named: "test-bounded") {
        running.withLock { $0 += 1 }
        release.wait()
      }
    }
    #expect(try await Self.eventually { running.withLock { $0 } == 2 })
    let ran = Mutex(false)
    #expect(throws: DissociatedIPCError.self) {
      try pool.start(named: "test-refused") { ran.withLock { $0 = true } }
    }
    do throws(DissociatedIPCError) {
      try pool.start(named: "test-refused") {}
    } catch {
      #expect(error.code == .resourceExhausted)
    }
    #expect(pool.threadCount == 2)
    // One body ends: its thread waits, and the next start runs on it.
    release.signal()
    #expect(try await Self.eventually { pool.idleCount == 1 })
    let next = try await Self.sight(pool, "test-after")
    #expect(next.name == "test-after")
    #expect(!ran.withLock { $0 })
    // The other body ends too: one thread may wait (maxIdle 1), the other ends.
    release.signal()
    #expect(try await Self.eventually { pool.threadCount == 1 && pool.idleCount == 1 })
  }
}
