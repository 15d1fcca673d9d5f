/// Decodes `Message` flatbuffers one after another, reusing the previous
/// record batch's result when the next metadata is byte-for-byte the same.
///
/// A stream of batches of one shape (the same row count, null counts and
/// buffer sizes: fixed-width columns, fixed batch sizes) repeats its
/// metadata exactly. Comparing those bytes costs a fraction of decoding and
/// verifying them again, and equal bytes decode to an equal message, so the
/// result is the same as ``Message/decode(_:limits:)``'s.
///
/// The remembered message reads its nodes and buffers from a private copy
/// of the bytes, never from the caller's buffer, so it keeps no receive
/// buffer or shared-memory segment alive.
public struct RepeatedMessageDecoder: Sendable {
  /// Metadata larger than this is decoded without being remembered: the
  /// copy would cost more than the comparison saves.
  public static let maxRememberedBytes = 4096

  /// The limits every message is decoded within.
  public let limits: ArrowIPCLimits
  private var lastBytes = ArrowBytes()
  private var lastBatch: Message?

  /// A decoder that remembers nothing yet.
  public init(limits: ArrowIPCLimits = .defaults) {
    self.limits = limits
  }

  /// Decodes and verifies `flatbuffer`, as ``Message/decode(_:limits:)``.
  ///
  /// - Throws: ``ArrowIPCError`` as ``Message/decode(_:limits:)``.
  public mutating func decode(_ flatbuffer: ArrowBytes) throws(ArrowIPCError) -> Message {
    if let lastBatch, flatbuffer == lastBytes { return lastBatch }
    guard flatbuffer.count <= Self.maxRememberedBytes else { return try Message.decode(flatbuffer, limits: limits) }
    let owned = flatbuffer.copied()
    let message = try Message.decode(owned, limits: limits)
    if case .recordBatch = message.header {
      lastBytes = owned
      lastBatch = message
    }
    return message
  }
}
