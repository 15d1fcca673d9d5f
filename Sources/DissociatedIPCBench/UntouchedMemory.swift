import ArrowIPC
import Foundation

/// Anonymous memory mapped and never written: every page reads as the
/// kernel's shared zero page, so copying out of it hits the caches whatever
/// its size. ucx_perftest's tag_bw sends from such a buffer (it allocates
/// its send buffer and never fills it: the sender's resident memory stays
/// far below the message size), so the bench's like-for-like case sends
/// from one too (Spec/ucx.md, UCX-BENCH-1).
final class UntouchedMemory: ArrowBytesOwner, @unchecked Sendable {  // never written after init
  private let base: UnsafeMutableRawPointer
  private let count: Int

  /// `count` bytes of it (read-only).
  init(count: Int) throws {
    self.count = count
    guard let mapped = mmap(nil, max(count, 1), PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), mapped != MAP_FAILED else {
      throw BenchError("mmap of \(count) bytes failed: errno \(errno)")
    }
    base = mapped
  }

  /// All of it (zeros).
  var bytes: ArrowBytes { ArrowBytes(unsafeBase: base, count: count, owner: self) }

  deinit { munmap(base, max(count, 1)) }
}
