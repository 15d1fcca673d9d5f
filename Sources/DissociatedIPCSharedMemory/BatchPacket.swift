internal import ArrowIPC

/// A batch (kind 10, SHM-CTRL-6) being filled: a header, then entries of
/// (length, message, zero padding to 8), in one buffer of the largest
/// packet size, sent whole with one `sendmsg`.
///
/// Unchecked `Sendable`: senders fill it under the connection's lock as
/// they queue messages, and the writer thread sends it after taking it
/// from the queue (under that lock); it is never shared otherwise, so it
/// needs no lock of its own.
final class BatchPacket: @unchecked Sendable {
  private let buffer: UnsafeMutableRawBufferPointer
  /// Bytes used so far (the header included).
  private(set) var length = SharedMemoryWire.headerLength

  /// An empty batch.
  init() {
    buffer = .allocate(byteCount: SharedMemoryWire.maxMessageLength, alignment: 64)
    SharedMemoryWire.write(.batch, tag: 0, words: (0, 0), count: 0, into: buffer.baseAddress!)
  }

  deinit { buffer.deallocate() }

  /// The packet as it goes on the wire.
  var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(rebasing: buffer[..<length]) }

  /// Whether a message of `messageLength` bytes fits in an empty batch.
  static func fitsEmpty(messageLength: Int) -> Bool {
    SharedMemoryWire.headerLength + SharedMemoryWire.batchedLength(messageLength) <= SharedMemoryWire.maxMessageLength
  }

  /// Copies `message` (header and parts) in as the next entry; false,
  /// leaving the packet as it was, when it does not fit.
  func append(_ message: SharedMemoryConnection.Outgoing) -> Bool {
    let messageLength = message.queuedBytes
    let end = length + SharedMemoryWire.batchedLength(messageLength)
    guard end <= SharedMemoryWire.maxMessageLength else { return false }
    let base = buffer.baseAddress!
    base.storeBytes(of: UInt64(messageLength).littleEndian, toByteOffset: length, as: UInt64.self)
    SharedMemoryWire.write(message.kind, tag: message.tag, words: message.words, count: message.wordCount,
                           into: base + length + 8)
    var cursor = length + 8 + SharedMemoryWire.length(words: message.wordCount)
    for part in message.parts { cursor += part.copy(to: base + cursor) }
    for part in message.trailingParts { cursor += part.copy(to: base + cursor) }
    if end > cursor { (base + cursor).initializeMemory(as: UInt8.self, repeating: 0, count: end - cursor) }
    length = end
    return true
  }

  /// Empties the batch for reuse.
  func reset() { length = SharedMemoryWire.headerLength }
}
