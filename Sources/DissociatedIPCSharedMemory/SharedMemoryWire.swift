package import DissociatedIPC

/// The control messages of `shm://` (Spec/shm.md, SHM-CTRL-*). One
/// SOCK_SEQPACKET message each; all integers little-endian.
///
/// ```
/// header      0: kind u8 | 1..7: zero | 8..15: tag u64 (kinds 2, 4 and 11 only, else 0)
/// kind 1 frame              | payload
/// kind 2 tagged             | payload
/// kind 3 frame in segment   | address u64 | length u64
/// kind 4 tagged in segment  | address u64 | length u64
/// kind 5 segment added      | segment id u64 | size u64     + one descriptor (SCM_RIGHTS)
/// kind 6 space returned     | address u64 × n (1 ≤ n ≤ 1024)
/// kind 7 segment retired    | segment id u64
/// kind 8 hello              | "DIPCSHM\0" | version u32 | flags u32   (first message each way)
/// kind 9 arena added        | segment id u64 | size u64     + one descriptor (SCM_RIGHTS)
/// kind 10 batch             | (length u32 | zero u32 | message | zero padding to 8) × n, n ≥ 1
/// kind 11 frame and tagged  | frame length u64 | frame payload | tagged payload
/// ```
/// A batch holds whole messages of kinds 1, 2, 3, 4, 6, 7 and 11
/// (SHM-CTRL-6); kind 11 is a frame followed by a tagged message (SHM-CTRL-7).
/// An address is `segment id << 48 | offset` (SHM-ADDR-3).
package enum SharedMemoryWire {
  static let headerLength = 16
  static let magic: [UInt8] = Array("DIPCSHM".utf8) + [0]
  static let version: UInt32 = 3
  /// The largest inline payload a sender may use; receivers accept
  /// messages up to ``maxMessageLength``.
  static let maxInlinePayload = 64 << 10
  static let maxMessageLength = headerLength + maxInlinePayload
  /// Addresses per space-returned message.
  static let maxReturnsPerMessage = 1024

  package enum Kind: UInt8 {
    case frame = 1
    case tagged = 2
    case frameInSegment = 3
    case taggedInSegment = 4
    case segmentAdded = 5
    case spaceReturned = 6
    case segmentRetired = 7
    case hello = 8
    /// A ``SharedMemoryBuffer`` whose bytes are described in place: no
    /// block headers, any offset (SHM-ARENA-2).
    case arenaAdded = 9
    /// Several messages in one packet (SHM-CTRL-6).
    case batch = 10
    /// A frame, then a tagged message: a metadata frame and its inline
    /// body in one message (SHM-CTRL-7).
    case frameAndTagged = 11

    /// Whether a message of this kind may travel inside a batch.
    var batchable: Bool {
      switch self {
      case .frame, .tagged, .frameInSegment, .taggedInSegment, .spaceReturned, .segmentRetired, .frameAndTagged: true
      case .segmentAdded, .hello, .arenaAdded, .batch: false
      }
    }

    /// Whether the header's tag belongs to the message (else it is 0).
    var carriesTag: Bool { self == .tagged || self == .taggedInSegment || self == .frameAndTagged }
  }

  /// Bytes a message of `length` bytes takes inside a batch.
  static func batchedLength(_ length: Int) -> Int { 8 + (length + 7) / 8 * 8 }

  // MARK: Addresses

  static let offsetBits: UInt64 = 48

  /// `segment << 48 | offset`.
  static func address(segment: UInt16, offset: Int) -> UInt64 {
    UInt64(segment) << offsetBits | UInt64(offset)
  }

  /// The segment id and offset of `address`.
  static func split(_ address: UInt64) -> (segment: UInt16, offset: Int) {
    (UInt16(address >> offsetBits), Int(address & (1 << offsetBits - 1)))
  }

  // MARK: Writing

  /// The bytes a header followed by `words` words takes.
  static func length(words: Int) -> Int { headerLength + 8 * words }

  /// Writes a header and the first `count` of `words` after it into
  /// `buffer` (``length(words:)`` bytes).
  static func write(_ kind: Kind, tag: UInt64, words: (UInt64, UInt64), count: Int, into buffer: UnsafeMutableRawPointer) {
    buffer.storeBytes(of: UInt64(kind.rawValue).littleEndian, as: UInt64.self)
    buffer.storeBytes(of: tag.littleEndian, toByteOffset: 8, as: UInt64.self)
    if count > 0 { buffer.storeBytes(of: words.0.littleEndian, toByteOffset: headerLength, as: UInt64.self) }
    if count > 1 { buffer.storeBytes(of: words.1.littleEndian, toByteOffset: headerLength + 8, as: UInt64.self) }
  }

  /// The hello message.
  package static var hello: [UInt8] {
    var bytes = [UInt8](repeating: 0, count: headerLength)
    bytes[0] = Kind.hello.rawValue
    bytes += magic
    withUnsafeBytes(of: version.littleEndian) { bytes += $0 }
    bytes += [0, 0, 0, 0]
    return bytes
  }

  // MARK: Reading

  /// A parsed control message; payloads are ranges of the received bytes.
  package enum Message: Equatable {
    case hello
    case inline(Kind, tag: UInt64, payloadOffset: Int, payloadLength: Int)
    /// Kind 11: the frame's bytes at `frameOffset`, the tagged payload
    /// right after them, up to the end of the message.
    case frameAndTagged(tag: UInt64, frameOffset: Int, frameLength: Int, payloadLength: Int)
    case inSegment(Kind, tag: UInt64, address: UInt64, length: Int)
    case segmentAdded(id: UInt16, size: Int, arena: Bool)
    case spaceReturned(count: Int)
    case segmentRetired(id: UInt16)
    /// A batch: its messages follow at `headerLength` (see ``batchEntries(_:into:)``).
    case batch
  }

  /// Parses one received message (SHM-FAULT-2): the kind must be known,
  /// reserved bytes zero, a tag only on tagged kinds, the length exact.
  package static func parse(_ bytes: UnsafeRawBufferPointer) throws(DissociatedIPCError) -> Message {
    func malformed(_ why: String) -> DissociatedIPCError {
      DissociatedIPCError(.transportFailure, "malformed shm:// control message: \(why)")
    }
    guard bytes.count >= headerLength else { throw malformed("\(bytes.count) bytes, shorter than a header") }
    let first = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    guard first & ~0xFF == 0, let kind = Kind(rawValue: UInt8(first)) else {
      throw malformed("kind/reserved bytes \(first)")
    }
    let tag = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    guard tag == 0 || kind.carriesTag else { throw malformed("a tag on kind \(kind)") }
    let bodyLength = bytes.count - headerLength
    func word(_ index: Int) -> UInt64 {
      UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: headerLength + 8 * index, as: UInt64.self))
    }
    func expectBody(_ length: Int) throws(DissociatedIPCError) {
      guard bodyLength == length else { throw malformed("kind \(kind) with \(bodyLength) body bytes, expected \(length)") }
    }
    func segmentID(_ value: UInt64) throws(DissociatedIPCError) -> UInt16 {
      guard value > 0, value <= UInt64(UInt16.max) else { throw malformed("segment id \(value)") }
      return UInt16(value)
    }
    switch kind {
    case .frame, .tagged:
      return .inline(kind, tag: tag, payloadOffset: headerLength, payloadLength: bodyLength)
    case .frameAndTagged:
      guard bodyLength >= 8, word(0) <= UInt64(bodyLength - 8) else {
        throw malformed("a frame of \(bodyLength >= 8 ? word(0) : 0) bytes in \(bodyLength) body bytes")
      }
      let frameLength = Int(word(0))
      return .frameAndTagged(tag: tag, frameOffset: headerLength + 8, frameLength: frameLength,
                             payloadLength: bodyLength - 8 - frameLength)
    case .frameInSegment, .taggedInSegment:
      try expectBody(16)
      guard word(1) > 0, word(1) <= UInt64(Int.max) else { throw malformed("payload length \(word(1))") }
      return .inSegment(kind, tag: tag, address: word(0), length: Int(word(1)))
    case .segmentAdded, .arenaAdded:
      try expectBody(16)
      guard word(1) > 0, word(1) <= 1 << offsetBits else { throw malformed("segment size \(word(1))") }
      return .segmentAdded(id: try segmentID(word(0)), size: Int(word(1)), arena: kind == .arenaAdded)
    case .spaceReturned:
      guard bodyLength > 0, bodyLength % 8 == 0, bodyLength / 8 <= maxReturnsPerMessage else {
        throw malformed("space returned with \(bodyLength) body bytes")
      }
      return .spaceReturned(count: bodyLength / 8)
    case .segmentRetired:
      try expectBody(8)
      return .segmentRetired(id: try segmentID(word(0)))
    case .batch:
      guard bodyLength >= 8 else { throw malformed("an empty batch") }
      return .batch
    case .hello:
      try expectBody(16)
      guard Array(bytes[headerLength ..< headerLength + 8]) == magic else { throw malformed("bad hello") }
      let peerVersion = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: headerLength + 8, as: UInt32.self))
      guard peerVersion == version else {
        throw DissociatedIPCError(.transportFailure, "the peer speaks shm:// version \(peerVersion), this side \(version)")
      }
      return .hello
    }
  }

  /// The messages of a batch (whose header was parsed already), in
  /// `entries` (emptied first; the reader reuses one array, as a batch
  /// holds a hundred messages or more): each a range of `bytes`, checked
  /// to lie inside it, be of a batchable kind, and be followed only by
  /// zero padding.
  package static func batchEntries(_ bytes: UnsafeRawBufferPointer, into entries: inout [Range<Int>]) throws(DissociatedIPCError) {
    func malformed(_ why: String) -> DissociatedIPCError {
      DissociatedIPCError(.transportFailure, "malformed shm:// batch: \(why)")
    }
    entries.removeAll(keepingCapacity: true)
    var position = headerLength
    while position < bytes.count {
      guard bytes.count - position >= 8 else { throw malformed("\(bytes.count - position) trailing bytes") }
      let prefix = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: position, as: UInt64.self))
      let length = Int(prefix & 0xFFFF_FFFF)
      guard prefix >> 32 == 0, length >= headerLength, length <= bytes.count - position - 8 else {
        throw malformed("entry prefix \(prefix) at \(position)")
      }
      let start = position + 8
      guard let kind = Kind(rawValue: bytes[start]), kind.batchable else { throw malformed("kind \(bytes[start]) inside a batch") }
      let end = start + length
      let padded = min(bytes.count, start + (length + 7) / 8 * 8)
      guard bytes[end ..< padded].allSatisfy({ $0 == 0 }) else { throw malformed("non-zero padding at \(end)") }
      entries.append(start ..< end)
      position = padded
    }
  }

  /// The `index`th address of a space-returned message.
  package static func returnedAddress(_ bytes: UnsafeRawBufferPointer, _ index: Int) -> UInt64 {
    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: headerLength + 8 * index, as: UInt64.self))
  }
}
