/// The node and buffers of one array in a record batch body, with its
/// children's layouts.
public struct ArrayLayout: Sendable {
  /// The field's siblings (the schema's fields, or its parent's children)
  /// and its position among them: shared, so a layout never copies a Field.
  private let siblings: [Field]
  private let position: Int
  /// The field this array holds (for a dictionary batch, the dictionary's
  /// value field).
  public var field: Field { siblings[position] }
  /// Length and null count.
  public let node: FieldNode
  /// This array's own buffers in format order (for view types, the
  /// variadic data buffers follow the views): a slice of the batch's
  /// buffer list, so its indices start at ``buffers``.startIndex.
  public let buffers: Slice<FlatStructs<BodyBuffer>>
  /// The layouts of the child arrays; empty for dictionary-encoded fields,
  /// whose values live in dictionary batches.
  public let children: [ArrayLayout]

  init(siblings: [Field], position: Int, node: FieldNode, buffers: Slice<FlatStructs<BodyBuffer>>, children: [ArrayLayout]) {
    self.siblings = siblings
    self.position = position
    self.node = node
    self.buffers = buffers
    self.children = children
  }
}

/// Matches a record batch's nodes and buffers to a schema.
///
/// Fields are walked in pre-order; each takes one node and the number of
/// buffers its layout requires (``bufferCount(of:version:)``). The walk
/// fails unless every node, buffer and variadic count is used exactly once,
/// every buffer lies inside the body, and every node is consistent.
public enum BodyLayout {
  /// The number of buffers (not counting children or variadic data buffers)
  /// an array of `field` has in a record batch of metadata `version`.
  public static func bufferCount(of field: Field, version: MetadataVersion = .v5) -> Int {
    if field.dictionary != nil { return 2 }  // validity, indices
    switch field.type {
    case .null, .runEndEncoded: return 0
    case .struct, .fixedSizeList: return 1
    case .bool, .int, .floatingPoint, .decimal, .date, .time, .timestamp, .interval, .duration,
         .fixedSizeBinary, .list, .largeList, .map, .binaryView, .utf8View:
      return 2
    case .binary, .utf8, .largeBinary, .largeUtf8, .listView, .largeListView: return 3
    case .union(let mode, _):
      // V4 unions have a validity buffer; V5 unions do not.
      return (mode == .sparse ? 1 : 2) + (version < .v5 ? 1 : 0)
    }
  }

  /// The layouts of `fields` in `batch`, whose body is `bodyLength` bytes.
  ///
  /// - Throws: `.layoutMismatch` when the batch does not fit the fields or
  ///   the body.
  public static func arrays(
    of fields: [Field], in batch: RecordBatchHeader, bodyLength: Int64, version: MetadataVersion
  ) throws(ArrowIPCError) -> [ArrayLayout] {
    var walker = Walker(bodyLength: bodyLength, version: version)
    var result: [ArrayLayout] = []
    result.reserveCapacity(fields.count)
    for index in fields.indices {
      let array = try walker.layout(of: fields, at: index, in: batch)
      guard array.node.length == batch.length else {
        throw ArrowIPCError(.layoutMismatch,
                            "column '\(fields[index].name)' has \(array.node.length) rows, the batch \(batch.length)")
      }
      result.append(array)
    }
    guard walker.nodeIndex == batch.nodes.count, walker.bufferIndex == batch.buffers.count,
          walker.variadicIndex == batch.variadicBufferCounts.count
    else {
      throw ArrowIPCError(.layoutMismatch, """
        schema uses \(walker.nodeIndex) nodes, \(walker.bufferIndex) buffers, \(walker.variadicIndex) variadic counts; \
        batch has \(batch.nodes.count), \(batch.buffers.count), \(batch.variadicBufferCounts.count)
        """)
    }
    return result
  }

  /// Walks the fields; the batch is passed to each call (borrowed, not
  /// stored: a stored copy would cost a retain per vector).
  private struct Walker {
    let bodyLength: Int64
    let version: MetadataVersion
    var nodeIndex = 0
    var bufferIndex = 0
    var variadicIndex = 0

    init(bodyLength: Int64, version: MetadataVersion) {
      self.bodyLength = bodyLength
      self.version = version
    }

    /// The layout of `siblings[position]`. The field is read in place
    /// through the array (copying a Field costs several retains).
    mutating func layout(of siblings: [Field], at position: Int, in batch: borrowing RecordBatchHeader)
      throws(ArrowIPCError) -> ArrayLayout {
      guard nodeIndex < batch.nodes.count else {
        throw Self.mismatch("no field node left for '\(siblings[position].name)'")
      }
      let node = batch.nodes[nodeIndex]
      nodeIndex += 1
      guard node.length >= 0, node.nullCount >= 0, node.nullCount <= node.length else {
        throw Self.mismatch("field '\(siblings[position].name)': node length \(node.length), null count \(node.nullCount)")
      }
      // What the walk needs of the field, read through a pointer: reading
      // properties through the array's subscript copies the whole Field.
      let (fixedCount, isView, walksChildren) = siblings.withUnsafeBufferPointer { fields in
        let encoded = fields[position].dictionary != nil
        let view = !encoded && (fields[position].type == .binaryView || fields[position].type == .utf8View)
        return (BodyLayout.bufferCount(of: fields[position], version: version), view,
                !encoded && !fields[position].children.isEmpty)
      }
      var count = fixedCount
      if isView {
        guard variadicIndex < batch.variadicBufferCounts.count else {
          throw Self.mismatch("no variadic buffer count for view field '\(siblings[position].name)'")
        }
        let variadic = batch.variadicBufferCounts[variadicIndex]
        variadicIndex += 1
        guard variadic >= 0, variadic <= Int64(batch.buffers.count) else {
          throw Self.mismatch("field '\(siblings[position].name)': variadic buffer count \(variadic)")
        }
        count += Int(variadic)
      }
      guard count <= batch.buffers.count - bufferIndex else {
        throw Self.mismatch("field '\(siblings[position].name)' needs \(count) buffers, \(batch.buffers.count - bufferIndex) left")
      }
      let first = bufferIndex
      for _ in 0 ..< count {
        let buffer = batch.buffers[bufferIndex]
        bufferIndex += 1
        guard buffer.offset >= 0, buffer.length >= 0, buffer.offset <= bodyLength,
              buffer.length <= bodyLength - buffer.offset
        else {
          throw Self.mismatch("""
            field '\(siblings[position].name)': buffer \(buffer.offset)+\(buffer.length) outside the \(bodyLength)-byte body
            """)
        }
      }
      let buffers = batch.buffers[first ..< bufferIndex]
      var children: [ArrayLayout] = []
      if walksChildren {
        let fieldChildren = siblings[position].children
        children.reserveCapacity(fieldChildren.count)
        for index in fieldChildren.indices { children.append(try layout(of: fieldChildren, at: index, in: batch)) }
      }
      return ArrayLayout(siblings: siblings, position: position, node: node, buffers: buffers, children: children)
    }

    /// A `.layoutMismatch` error, built out of line: the walk runs once per
    /// column of every batch, and its messages inline made it several
    /// times larger than its checks.
    @inline(never)
    static func mismatch(_ detail: @autoclosure () -> String) -> ArrowIPCError {
      ArrowIPCError(.layoutMismatch, detail())
    }
  }
}
