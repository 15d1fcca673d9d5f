/// One item of an Arrow IPC stream after the schema.
public enum StreamItem: Sendable {
  /// Dictionary values (new, replacement or delta).
  case dictionary(DictionaryBatch)
  /// A record batch.
  case recordBatch(RecordBatch)
}

/// Applies the IPC stream rules to messages as they arrive, in order
/// (IPC-STREAM-5), and matches each batch to the schema.
///
/// The first message must be the Schema; a DictionaryBatch must name a
/// dictionary of the schema, and a delta needs an earlier batch for its id;
/// a non-empty RecordBatch needs every dictionary sent before it. Used by
/// ``ArrowStreamReader`` and by the Dissociated IPC client, which receives
/// messages out of order and feeds them here in sequence.
public struct ArrowStreamValidator: Sendable {
  /// The schema, once the first message was accepted.
  public var schema: Schema? { hasSchema ? current : nil }
  /// Kept non-optional so batches read it in place (no copy per batch).
  private var current = Schema(fields: [])
  private var hasSchema = false
  private var dictionaryFields: [Int64: Field] = [:]
  private var seenDictionaries: Set<Int64> = []
  private var batchLayouts = LayoutMemo()

  /// A validator expecting the Schema first.
  public init() {}

  /// Accepts the next message of the stream. Returns nil for the Schema
  /// (stored in ``schema``), the checked item otherwise.
  ///
  /// - Throws: `.invalidStream` for rule violations, `.unsupportedFeature`
  ///   for tensors, `.layoutMismatch` for batches that do not fit.
  public mutating func accept(_ message: consuming Message, body: ArrowBytes) throws(ArrowIPCError) -> StreamItem? {
    guard hasSchema else {
      guard case .schema(let schema) = message.header else {
        throw ArrowIPCError(.invalidStream, "the first message has header type \(message.header.unionCode), not Schema")
      }
      current = schema
      hasSchema = true
      dictionaryFields = schema.dictionaryFields
      return nil
    }
    switch message.header {
    case .schema:
      throw ArrowIPCError(.invalidStream, "a second Schema message")
    case .tensor, .sparseTensor:
      throw ArrowIPCError(.unsupportedFeature, "tensor messages are not part of a record-batch stream")
    case .dictionaryBatch(let header):
      guard var valueField = dictionaryFields[header.id] else {
        throw ArrowIPCError(.invalidStream, "DictionaryBatch for unknown dictionary id \(header.id)")
      }
      guard !header.isDelta || seenDictionaries.contains(header.id) else {
        throw ArrowIPCError(.invalidStream, "delta for dictionary \(header.id) before its first batch")
      }
      valueField.dictionary = nil
      let values = try RecordBatch(schema: current, fields: [valueField], message: message,
                                   header: header.data, body: body)
      seenDictionaries.insert(header.id)
      return .dictionary(DictionaryBatch(id: header.id, isDelta: header.isDelta, values: values))
    case .recordBatch(let header):
      if header.length > 0, seenDictionaries.count < dictionaryFields.count {
        let missing = dictionaryFields.first { !seenDictionaries.contains($0.key) }!
        throw ArrowIPCError(.invalidStream,
                            "record batch uses dictionary \(missing.key) of field '\(missing.value.name)' before it was sent")
      }
      let layouts = try batchLayouts.layouts(of: current.fields, in: header, message: message)
      return .recordBatch(try RecordBatch(schema: current, message: consume message, header: header,
                                          layouts: layouts, body: body))
    }
  }
}

/// The layouts of the last record batch: a batch with the same header,
/// bodyLength and version has the same layouts, so a stream of batches of
/// one shape computes them once (IPC-MSG-11). Compared in place: copying
/// the remembered header out would cost more than the comparison.
private struct LayoutMemo: Sendable {
  private var header = RecordBatchHeader(length: 0, nodes: [], buffers: [])
  /// -1 until the first batch (a bodyLength is never negative).
  private var bodyLength: Int64 = -1
  private var version = MetadataVersion.v5
  private var layouts: [ArrayLayout] = []

  /// The layouts of `fields` in `header`, the header of `message`.
  mutating func layouts(of fields: [Field], in header: RecordBatchHeader,
                        message: borrowing Message) throws(ArrowIPCError) -> [ArrayLayout] {
    if bodyLength == message.bodyLength, version == message.version, self.header == header { return layouts }
    layouts = try BodyLayout.arrays(of: fields, in: header, bodyLength: message.bodyLength, version: message.version)
    self.header = header
    bodyLength = message.bodyLength
    version = message.version
    return layouts
  }
}

/// Reads an Arrow IPC stream held in memory, enforcing the stream rules.
///
/// Framing comes from ``IPCStreamReader``, the rules from
/// ``ArrowStreamValidator``. Items are slices of the input: nothing is
/// copied.
public struct ArrowStreamReader: Sendable {
  /// The stream's schema.
  public let schema: Schema
  private var messages: IPCStreamReader
  private var validator = ArrowStreamValidator()

  /// Reads the schema at the start of `bytes`.
  ///
  /// - Throws: `.invalidStream` when the stream is empty or does not start
  ///   with a Schema message; framing and metadata errors.
  public init(_ bytes: ArrowBytes, limits: ArrowIPCLimits = .defaults) throws(ArrowIPCError) {
    messages = IPCStreamReader(bytes, limits: limits)
    guard let first = try messages.next() else {
      throw ArrowIPCError(.invalidStream, "the stream has no schema message")
    }
    _ = try validator.accept(first.message, body: first.body)
    schema = validator.schema!
  }

  /// The next dictionary or record batch, or nil at the end of the stream.
  public mutating func next() throws(ArrowIPCError) -> StreamItem? {
    while let next = try messages.next() {
      if let item = try validator.accept(next.message, body: next.body) { return item }
    }
    return nil
  }
}
