/// One item of an Arrow IPC stream after the schema.
public enum StreamItem: Sendable {
  /// Dictionary values (new, replacement or delta).
  case dictionary(DictionaryBatch)
  /// A record batch.
  case recordBatch(RecordBatch)
}

/// Reads an Arrow IPC stream held in memory, enforcing the stream rules.
///
/// The schema comes first; every DictionaryBatch names a dictionary of the
/// schema; a delta or a RecordBatch that uses a dictionary needs that
/// dictionary sent before; every batch's layout must fit the schema and its
/// body. Items are slices of the input: nothing is copied.
public struct ArrowStreamReader: Sendable {
  /// The stream's schema.
  public let schema: Schema
  private var messages: IPCStreamReader
  private let dictionaryFields: [Int64: Field]
  private var seenDictionaries: Set<Int64> = []

  /// Reads the schema at the start of `bytes`.
  ///
  /// - Throws: `.invalidStream` when the stream is empty or does not start
  ///   with a Schema message; framing and metadata errors.
  public init(_ bytes: ArrowBytes, limits: ArrowIPCLimits = .defaults) throws(ArrowIPCError) {
    messages = IPCStreamReader(bytes, limits: limits)
    guard let first = try messages.next() else {
      throw ArrowIPCError(.invalidStream, "the stream has no schema message")
    }
    guard case .schema(let schema) = first.message.header else {
      throw ArrowIPCError(.invalidStream, "the first message has header type \(first.message.header.unionCode), not Schema")
    }
    self.schema = schema
    dictionaryFields = schema.dictionaryFields
  }

  /// The next dictionary or record batch, or nil at the end of the stream.
  public mutating func next() throws(ArrowIPCError) -> StreamItem? {
    guard let next = try messages.next() else { return nil }
    let message = next.message
    switch message.header {
    case .schema:
      throw ArrowIPCError(.invalidStream, "a second Schema message at byte \(messages.position)")
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
      let values = try RecordBatch(schema: schema, fields: [valueField], message: message,
                                   header: header.data, body: next.body)
      seenDictionaries.insert(header.id)
      return .dictionary(DictionaryBatch(id: header.id, isDelta: header.isDelta, values: values))
    case .recordBatch(let header):
      for (id, field) in dictionaryFields where !seenDictionaries.contains(id) && header.length > 0 {
        throw ArrowIPCError(.invalidStream, "record batch uses dictionary \(id) of field '\(field.name)' before it was sent")
      }
      return .recordBatch(try RecordBatch(schema: schema, fields: schema.fields, message: message,
                                          header: header, body: next.body))
    }
  }
}
