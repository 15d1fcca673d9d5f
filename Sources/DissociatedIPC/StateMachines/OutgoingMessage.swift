public import ArrowIPC

/// One IPC message a server sends: its metadata flatbuffer and its body.
public struct OutgoingMessage: Sendable {
  /// What kind of message it is.
  public enum Kind: Sendable, Hashable {
    /// The Schema (no body).
    case schema
    /// A DictionaryBatch (has a body, possibly empty).
    case dictionaryBatch
    /// A RecordBatch (has a body, possibly empty).
    case recordBatch

    /// Whether a tagged body message goes with it (DIPC-BODY-1: every
    /// record and dictionary batch, even with an empty body).
    public var hasBody: Bool { self != .schema }
  }

  /// The kind.
  public let kind: Kind
  /// The `Message` flatbuffer.
  public let metadata: ArrowBytes
  /// The body, `bodyLength` bytes (empty for the Schema).
  public let body: ArrowBytes

  /// Wraps a message read from an IPC stream (no copy).
  ///
  /// - Throws: `.unsupportedFeature` for tensor messages.
  public init(_ message: IPCMessage) throws(ArrowIPCError) {
    try self.init(kind: Self.kind(of: message.message.header), metadata: message.metadata, body: message.body)
  }

  /// Encodes `message` and pairs it with `body`.
  public init(_ message: Message, body: ArrowBytes = ArrowBytes()) throws(ArrowIPCError) {
    guard Int64(body.count) == message.bodyLength else {
      throw ArrowIPCError(.layoutMismatch, "body of \(body.count) bytes for bodyLength \(message.bodyLength)")
    }
    try self.init(kind: Self.kind(of: message.header), metadata: ArrowBytes(copying: message.encode()), body: body)
  }

  init(kind: Kind, metadata: ArrowBytes, body: ArrowBytes) {
    self.kind = kind
    self.metadata = metadata
    self.body = body
  }

  static func kind(of header: MessageHeader) throws(ArrowIPCError) -> Kind {
    switch header {
    case .schema: .schema
    case .dictionaryBatch: .dictionaryBatch
    case .recordBatch: .recordBatch
    case .tensor, .sparseTensor: throw ArrowIPCError(.unsupportedFeature, "tensor messages cannot be streamed")
    }
  }
}
