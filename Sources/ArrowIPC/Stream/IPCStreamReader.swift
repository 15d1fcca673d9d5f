/// One encapsulated message of an IPC stream: its decoded metadata and the
/// memory it was read from.
public struct IPCMessage: Sendable {
  /// The decoded metadata.
  public let message: Message
  /// The metadata flatbuffer bytes (including any padding), a slice of the
  /// stream's memory.
  public let metadata: ArrowBytes
  /// The body, `message.bodyLength` bytes, a slice of the stream's memory.
  public let body: ArrowBytes
}

/// Reads the encapsulated messages of an Arrow IPC stream held in memory.
///
/// Nothing is copied: each message's metadata and body are slices of the
/// input, so reading a memory-mapped file costs time per message, not per
/// byte. Accepts the current framing (`0xFFFFFFFF`, int32 length) and the
/// pre-0.15 framing (int32 length alone). Reading stops at the
/// end-of-stream marker or at the end of the input.
///
/// This type checks framing and metadata only; ``ArrowStreamReader`` adds
/// the stream rules and body layouts.
public struct IPCStreamReader: Sendable {
  private let bytes: ArrowBytes
  private let limits: ArrowIPCLimits
  /// Byte offset of the next message.
  public private(set) var position = 0
  /// Whether the end-of-stream marker (or the end of input) was reached.
  public private(set) var isFinished = false

  /// Reads from `bytes`, enforcing `limits` on every message.
  public init(_ bytes: ArrowBytes, limits: ArrowIPCLimits = .defaults) {
    self.bytes = bytes
    self.limits = limits
  }

  /// The next message, or nil at the end of the stream.
  ///
  /// - Throws: ``ArrowIPCError`` with `.truncated` when the input ends inside
  ///   a message, `.invalidValue` for a negative length, `.limitExceeded`
  ///   past the limits, and any metadata decoding error.
  public mutating func next() throws(ArrowIPCError) -> IPCMessage? {
    guard !isFinished else { return nil }
    let remaining = bytes.count - position
    guard remaining > 0 else {
      isFinished = true
      return nil
    }
    guard remaining >= 4 else { throw truncated("a message prefix") }
    var prefixLength = 4
    var length = Int32(bitPattern: word(at: position))
    if length == -1 {  // 0xFFFFFFFF continuation marker
      guard remaining >= 8 else { throw truncated("a metadata length") }
      prefixLength = 8
      length = Int32(bitPattern: word(at: position + 4))
    }
    if length == 0 {
      position += prefixLength
      isFinished = true
      return nil
    }
    guard length > 0 else {
      throw ArrowIPCError(.invalidValue, "metadata length \(length) at byte \(position) is negative")
    }
    guard Int(length) <= limits.maxMetadataSize else {
      throw ArrowIPCError(.limitExceeded, "metadata length \(length) at byte \(position) exceeds \(limits.maxMetadataSize)")
    }
    guard remaining - prefixLength >= Int(length) else { throw truncated("\(length) bytes of metadata") }
    let metadata = try bytes.slice(offset: position + prefixLength, count: Int(length))
    let message = try Message.decode(metadata, limits: limits)
    let bodyStart = position + prefixLength + Int(length)
    guard message.bodyLength <= Int64(bytes.count - bodyStart) else {
      throw truncated("a body of \(message.bodyLength) bytes")
    }
    let body = try bytes.slice(offset: bodyStart, count: Int(message.bodyLength))
    position = bodyStart + body.count
    return IPCMessage(message: message, metadata: metadata, body: body)
  }

  private func word(at offset: Int) -> UInt32 {
    bytes.withUnsafeBytes { UInt32(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: UInt32.self)) }
  }

  private func truncated(_ what: String) -> ArrowIPCError {
    ArrowIPCError(.truncated, "stream ends at byte \(bytes.count) inside \(what) that starts at byte \(position)")
  }
}
