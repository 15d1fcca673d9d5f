public import ArrowIPC
public import DissociatedIPC

/// Shared memory a producer fills once and that any `shm://` connection can
/// describe to its peer in place, with no copy (SHM-ARENA-*).
///
/// A buffer is a sealed memfd (it can never shrink or grow, so a peer's
/// mapping of it can never fault) mapped read-write in this process. Fill
/// ``mutableBytes``, then ``freeze(count:)`` it: the returned bytes (and any
/// slice of them) are owned by the buffer, and when a body-type-1 body lying
/// in them is exposed on a `shm://` connection, the connection passes the
/// buffer's descriptor to the peer once and describes the body by its
/// offset: the peer reads the very pages the producer wrote.
///
/// ```swift
/// let buffer = try SharedMemoryBuffer(capacity: body.count)
/// buffer.mutableBytes.copyMemory(from: …)          // or build the body in place
/// let shared = buffer.freeze(count: body.count)
/// let message = try OutgoingMessage(header, body: shared)
/// ```
///
/// A connection keeps the buffer alive while anything exposed from it is
/// outstanding (and while it stays announced to the peer); the mapping and
/// the descriptor go with the last reference.
public final class SharedMemoryBuffer: ArrowBytesOwner, @unchecked Sendable {
  // Sendable: the fields never change; the memory is written by the
  // producer before it freezes it, and only read afterwards.

  /// The bytes the producer may use (``capacity`` of them).
  public let capacity: Int
  /// The memfd (sealed: it never shrinks or grows); passed to peers,
  /// closed by `deinit`.
  let descriptor: Int32
  /// The mapping, `size` bytes.
  let base: UnsafeMutableRawPointer
  /// The memfd's size: `capacity`, at least 1 (nothing maps 0 bytes).
  let size: Int

  /// A new buffer of `capacity` bytes, zero-filled, named `name` in `/proc/PID/maps` and
  /// `/proc/PID/fd` (`/memfd:NAME`).
  ///
  /// - Throws: `.transportFailure` when the memfd cannot be created, sized,
  ///   sealed or mapped (for example when memory is exhausted).
  public init(capacity: Int, name: String = "dipc-shm-buffer") throws(DissociatedIPCError) {
    precondition(capacity >= 0, "a SharedMemoryBuffer needs a capacity of at least 0 bytes")
    let size = max(1, capacity)
    (descriptor, base) = try createSegment(size: size, name: name)
    self.capacity = capacity
    self.size = size
  }

  /// The writable memory. Write it before ``freeze(count:)``; once bytes
  /// were frozen (and possibly exposed to a peer), the producer must not
  /// write them again.
  public var mutableBytes: UnsafeMutableRawBufferPointer {
    UnsafeMutableRawBufferPointer(start: base, count: capacity)
  }

  /// The first `count` bytes as immutable bytes owned by this buffer; slices
  /// of them are recognised by `shm://` connections and exposed in place.
  /// After freezing, the producer must not write the memory.
  public func freeze(count: Int) -> ArrowBytes {
    precondition(count >= 0 && count <= capacity, "freezing \(count) bytes of a \(capacity)-byte SharedMemoryBuffer")
    return ArrowBytes(unsafeBase: UnsafeRawPointer(base), count: count, owner: self)
  }

  /// The offset of `bytes` in this buffer, if they lie inside it.
  func offset(of bytes: ArrowBytes) -> Int? {
    guard let start = bytes.unsafeBaseAddress else { return nil }
    let offset = start - UnsafeRawPointer(base)
    guard offset >= 0, offset <= capacity, bytes.count <= capacity - offset else { return nil }
    return offset
  }

  deinit {
    unmapSegment(base, size: size)
    closeDescriptor(descriptor)
  }
}
