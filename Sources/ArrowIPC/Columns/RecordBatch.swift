/// A record batch: its schema, metadata and body, with every array's
/// layout matched and checked. Column buffers are slices of the body.
///
/// Immutable; a class so that handing a batch on (through a stream, a
/// queue, an async sequence) costs one reference count, not a copy of its
/// metadata.
public final class RecordBatch: Sendable {
  /// The stream's schema.
  public let schema: Schema
  /// The message the batch arrived in.
  public let message: Message
  /// The record-batch header of ``message`` (for a dictionary batch, its
  /// `data`).
  public var header: RecordBatchHeader { message.header.bodyDescription! }
  /// The number of rows.
  public let rowCount: Int
  private let compressed: Bool
  /// The body; column buffers are slices of it.
  public let body: ArrowBytes
  /// One layout per top-level field.
  public let layouts: [ArrayLayout]

  /// Matches `message` (a RecordBatch message) and `body` to `schema`.
  ///
  /// - Throws: `.invalidStream` when `message` is not a record batch,
  ///   `.layoutMismatch` when it does not fit the schema or the body.
  public convenience init(schema: Schema, message: consuming Message, body: ArrowBytes) throws(ArrowIPCError) {
    guard case .recordBatch(let header) = message.header else {
      throw ArrowIPCError(.invalidStream, "expected a RecordBatch message, got header type \(message.header.unionCode)")
    }
    try self.init(schema: schema, fields: schema.fields, message: message, header: header, body: body)
  }

  convenience init(schema: Schema, fields: [Field], message: consuming Message, header: RecordBatchHeader,
                   body: ArrowBytes) throws(ArrowIPCError) {
    let layouts = try BodyLayout.arrays(of: fields, in: header, bodyLength: message.bodyLength, version: message.version)
    try self.init(schema: schema, message: message, header: header, layouts: layouts, body: body)
  }

  /// `layouts` are `BodyLayout.arrays` of the schema's fields in `header`
  /// (computed for an equal header before).
  init(schema: Schema, message: consuming Message, header: RecordBatchHeader, layouts: [ArrayLayout],
       body: ArrowBytes) throws(ArrowIPCError) {
    guard Int64(body.count) == message.bodyLength else {
      throw ArrowIPCError(.layoutMismatch, "body of \(body.count) bytes, bodyLength \(message.bodyLength)")
    }
    self.schema = schema
    self.message = message
    self.rowCount = Int(header.length)
    self.compressed = header.compression != nil
    self.body = body
    self.layouts = layouts
  }

  /// The number of columns.
  public var columnCount: Int { layouts.count }

  /// The column at `index`.
  public func column(_ index: Int) -> ArrayView {
    ArrayView(layout: layouts[index], body: body, compressed: compressed,
              bigEndian: schema.endianness == .big)
  }

  /// The first column named `name`, if any.
  public func column(named name: String) -> ArrayView? {
    layouts.firstIndex { $0.field.name == name }.map(column)
  }
}

/// Values for one dictionary id, as carried by a DictionaryBatch message.
public struct DictionaryBatch: Sendable {
  /// The dictionary id.
  public let id: Int64
  /// Whether the values extend the previous dictionary.
  public let isDelta: Bool
  /// The values: one column whose field is the dictionary's value field.
  public let values: RecordBatch
}
