#if canImport(Glibc)
internal import Glibc
#endif

/// CLOCK_MONOTONIC in nanoseconds (a vDSO call, no system call), for the
/// backends' threads, which time waits and bursts outside Swift's clocks.
public func monotonicNanoseconds() -> UInt64 {
  var time = timespec()
  clock_gettime(CLOCK_MONOTONIC, &time)
  return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
}

/// Tells a lone message (a request, a reply) from one of a stream, for a
/// backend that sends lone messages from the calling task and batches
/// streams on its writer thread (TCP-SOCK-3, SHM-THREAD-1): a message
/// submitted at least ``gap`` after the previous one came alone.
public struct LoneMessageDetector: Sendable {
  /// Submissions closer together than this (20 µs) are a stream.
  public static let gap: UInt64 = 20_000

  private var lastSubmit: UInt64 = 0

  /// No message submitted yet.
  public init() {}

  /// Records a submission now; true when it came alone.
  public mutating func submitted() -> Bool {
    let now = monotonicNanoseconds()
    defer { lastSubmit = now }
    return now &- lastSubmit >= Self.gap
  }
}
