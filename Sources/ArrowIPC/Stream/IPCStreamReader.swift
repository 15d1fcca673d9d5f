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
    let prefix = try bytes.withUnsafeBytes { (all) throws(ArrowIPCError) in
      try MessagePrefix(UnsafeRawBufferPointer(rebasing: all[position ..< position + min(remaining, 8)]),
                        at: position, limits: limits)
    }
    guard case .message(let prefixLength, let length) = prefix else {
      if case .endOfStream(let prefixLength) = prefix { position += prefixLength }
      isFinished = true
      return nil
    }
    guard remaining - prefixLength >= length else { throw truncated("\(length) bytes of metadata") }
    let metadata = try bytes.slice(offset: position + prefixLength, count: length)
    let message = try Message.decode(metadata, limits: limits)
    let bodyStart = position + prefixLength + length
    guard message.bodyLength <= Int64(bytes.count - bodyStart) else {
      throw truncated("a body of \(message.bodyLength) bytes")
    }
    let body = try bytes.slice(offset: bodyStart, count: Int(message.bodyLength))
    position = bodyStart + body.count
    return IPCMessage(message: message, metadata: metadata, body: body)
  }

  private func truncated(_ what: String) -> ArrowIPCError {
    ArrowIPCError(.truncated, "stream ends at byte \(bytes.count) inside \(what) that starts at byte \(position)")
  }
}

/// What the prefix of an encapsulated message says: the end-of-stream
/// marker, or the length of the metadata that follows. Accepts the current
/// framing (`0xFFFFFFFF`, int32 length) and the pre-0.15 one (int32 length).
enum MessagePrefix: Equatable {
  /// The end-of-stream marker, `prefixLength` bytes long.
  case endOfStream(prefixLength: Int)
  /// A message whose `metadataLength` bytes of metadata follow the prefix.
  case message(prefixLength: Int, metadataLength: Int)

  /// Parses the prefix at the start of `bytes` (at most its first 8 bytes
  /// are read), which starts at byte `position` of the stream.
  ///
  /// - Throws: `.truncated` when `bytes` end inside the prefix,
  ///   `.invalidValue` for a negative length, `.limitExceeded` for metadata
  ///   longer than `limits` allow.
  init(_ bytes: UnsafeRawBufferPointer, at position: Int, limits: ArrowIPCLimits) throws(ArrowIPCError) {
    func word(_ offset: Int) -> Int32 {
      Int32(bitPattern: UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
    }
    func truncated(_ what: String) -> ArrowIPCError {
      ArrowIPCError(.truncated, "the stream ends inside \(what) that starts at byte \(position)")
    }
    guard bytes.count >= 4 else { throw truncated("a message prefix") }
    var prefixLength = 4
    var length = word(0)
    if length == -1 {  // 0xFFFFFFFF continuation marker
      guard bytes.count >= 8 else { throw truncated("a metadata length") }
      prefixLength = 8
      length = word(4)
    }
    guard length != 0 else {
      self = .endOfStream(prefixLength: prefixLength)
      return
    }
    guard length > 0 else {
      throw ArrowIPCError(.invalidValue, "metadata length \(length) at byte \(position) is negative")
    }
    guard Int(length) <= limits.maxMetadataSize else {
      throw ArrowIPCError(.limitExceeded, "metadata length \(length) at byte \(position) exceeds \(limits.maxMetadataSize)")
    }
    self = .message(prefixLength: prefixLength, metadataLength: Int(length))
  }
}
