internal import Synchronization

/// Recycles large 64-byte-aligned allocations for receivers.
///
/// A receiver that allocates a fresh buffer for every message pays for page
/// faults and cold caches on each one; with a pool, a buffer whose last
/// ``ArrowBytes`` view was released is handed to the next message of the
/// same size class instead. Sizes are rounded up to a power of two; buffers
/// below ``minimumSize`` are not pooled; at most ``maxPooledBytes`` are
/// kept idle.
public final class BufferPool: Sendable {
  /// A pooled allocation (the pointer is owned by the pool while idle).
  private struct Idle: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
  }

  private struct State {
    var idle: [Int: [Idle]] = [:]
    var idleBytes = 0
  }

  private let state = Mutex(State())
  /// Buffers smaller than this are allocated and freed normally.
  public let minimumSize: Int
  /// The most bytes kept idle.
  public let maxPooledBytes: Int

  /// A pool keeping at most `maxPooledBytes` idle, for buffers of at least
  /// `minimumSize` bytes.
  public init(maxPooledBytes: Int = 64 << 20, minimumSize: Int = 64 << 10) {
    self.maxPooledBytes = maxPooledBytes
    self.minimumSize = minimumSize
  }

  /// The size class of `capacity`, or nil when it is not pooled.
  func sizeClass(_ capacity: Int) -> Int? {
    guard capacity >= minimumSize, capacity <= 1 << 40 else { return nil }
    return 1 << (Int.bitWidth - (capacity - 1).leadingZeroBitCount)
  }

  /// An idle buffer of `sizeClass` bytes, if any.
  func take(_ sizeClass: Int) -> UnsafeMutableRawPointer? {
    state.withLock { state in
      guard let buffer = state.idle[sizeClass]?.popLast() else { return nil }
      state.idleBytes -= sizeClass
      return buffer.pointer
    }
  }

  /// Keeps `pointer` (of `sizeClass` bytes) for reuse; false when the pool
  /// is full and the caller must free it.
  func give(_ pointer: UnsafeMutableRawPointer, sizeClass: Int) -> Bool {
    state.withLock { state in
      guard state.idleBytes + sizeClass <= maxPooledBytes else { return false }
      state.idle[sizeClass, default: []].append(Idle(pointer: pointer))
      state.idleBytes += sizeClass
      return true
    }
  }

  deinit {
    state.withLock { state in
      for buffers in state.idle.values { for buffer in buffers { buffer.pointer.deallocate() } }
    }
  }
}
