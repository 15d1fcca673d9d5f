// Encoding of `Message` into a flatbuffer. Scalars whose schema default is
// not zero (Date.unit, Time.unit, Field.nullable, ...) are always written,
// so readers that drop defaults cannot misread them.

extension Message {
  /// Encodes this message as a `Message` flatbuffer, always as
  /// metadata version V5. The result's length is a multiple of 8.
  ///
  /// - Throws: nothing today; kept throwing for headers a later format
  ///   version may add.
  public func encode() throws(ArrowIPCError) -> [UInt8] {
    var builder = FlatBufferBuilder(capacity: 512)
    let headerOffset: FlatBufferBuilder.Offset
    switch header {
    case .schema(let schema): headerOffset = builder.schema(schema)
    case .recordBatch(let batch): headerOffset = builder.recordBatch(batch)
    case .dictionaryBatch(let dictionary):
      let data = builder.recordBatch(dictionary.data)
      builder.startTable()
      builder.add(0, dictionary.id, omitIfEqual: nil)
      builder.add(1, data)
      builder.add(2, dictionary.isDelta)
      headerOffset = builder.endTable()
    case .tensor(let tensor): headerOffset = builder.tensor(tensor)
    case .sparseTensor(let sparse): headerOffset = builder.sparseTensor(sparse)
    }
    let metadata = builder.keyValues(customMetadata)
    builder.startTable()
    builder.add(0, MetadataVersion.v5.rawValue, omitIfEqual: nil)
    builder.add(1, header.unionCode, omitIfEqual: nil)
    builder.add(2, headerOffset)
    builder.add(3, bodyLength, omitIfEqual: 0)
    builder.add(4, metadata)
    let root = builder.endTable()
    return builder.finish(root: root)
  }
}

extension FlatBufferBuilder {
  mutating func recordBatch(_ batch: RecordBatchHeader) -> Offset {
    let nodes = vector(ofInt64Pairs: batch.nodes.map { ($0.length, $0.nullCount) })
    let buffers = vector(ofInt64Pairs: batch.buffers.map { ($0.offset, $0.length) })
    var compression: Offset?
    if let codec = batch.compression?.codec {
      startTable()
      add(0, codec.rawValue, omitIfEqual: nil)
      add(1, Int8(0), omitIfEqual: nil)
      compression = endTable()
    }
    let variadic = batch.variadicBufferCounts.isEmpty ? nil : vector(of: Array(batch.variadicBufferCounts))
    startTable()
    add(0, batch.length, omitIfEqual: nil)
    add(1, nodes)
    add(2, buffers)
    add(3, compression)
    add(4, variadic)
    return endTable()
  }

  mutating func schema(_ schema: Schema) -> Offset {
    let fields = vector(of: schema.fields.map { field($0) })
    let metadata = keyValues(schema.metadata)
    let features = schema.features.isEmpty ? nil : vector(of: schema.features.map(\.rawValue))
    startTable()
    add(0, schema.endianness.rawValue, omitIfEqual: 0)
    add(1, fields)
    add(2, metadata)
    add(3, features)
    return endTable()
  }

  mutating func field(_ field: Field) -> Offset {
    let name = string(field.name)
    let type = typeTable(field.type)
    var dictionary: Offset?
    if let encoding = field.dictionary {
      startTable()
      add(0, Int32(encoding.indexBitWidth), omitIfEqual: nil)
      add(1, encoding.indexSigned, omitIfEqual: nil)
      let indexType = endTable()
      startTable()
      add(0, encoding.id, omitIfEqual: nil)
      add(1, indexType)
      add(2, encoding.isOrdered)
      dictionary = endTable()
    }
    let children = vector(of: field.children.map { self.field($0) })
    let metadata = keyValues(field.metadata)
    startTable()
    add(0, name)
    add(1, field.nullable, omitIfEqual: nil)
    add(2, field.type.unionCode, omitIfEqual: nil)
    add(3, type)
    add(4, dictionary)
    add(5, children)
    add(6, metadata)
    return endTable()
  }

  /// The parameter table of a type (an empty table for types without
  /// parameters, as the format requires).
  mutating func typeTable(_ type: ArrowType) -> Offset {
    let timezone: Offset?
    let typeIds: Offset?
    if case .timestamp(_, let zone?) = type { timezone = string(zone) } else { timezone = nil }
    if case .union(_, let ids?) = type { typeIds = vector(of: ids) } else { typeIds = nil }
    startTable()
    switch type {
    case .int(let bits, let signed):
      add(0, Int32(bits), omitIfEqual: nil)
      add(1, signed, omitIfEqual: nil)
    case .floatingPoint(let precision): add(0, precision.rawValue, omitIfEqual: nil)
    case .decimal(let precision, let scale, let bits):
      add(0, Int32(precision), omitIfEqual: nil)
      add(1, Int32(scale), omitIfEqual: nil)
      add(2, Int32(bits), omitIfEqual: nil)
    case .date(let unit): add(0, unit.rawValue, omitIfEqual: nil)
    case .time(let unit, let bits):
      add(0, unit.rawValue, omitIfEqual: nil)
      add(1, Int32(bits), omitIfEqual: nil)
    case .timestamp(let unit, _):
      add(0, unit.rawValue, omitIfEqual: nil)
      add(1, timezone)
    case .interval(let unit): add(0, unit.rawValue, omitIfEqual: nil)
    case .duration(let unit): add(0, unit.rawValue, omitIfEqual: nil)
    case .fixedSizeBinary(let width): add(0, Int32(width), omitIfEqual: nil)
    case .fixedSizeList(let size): add(0, Int32(size), omitIfEqual: nil)
    case .map(let keysSorted): add(0, keysSorted, omitIfEqual: nil)
    case .union(let mode, _):
      add(0, mode.rawValue, omitIfEqual: nil)
      add(1, typeIds)
    case .null, .bool, .binary, .utf8, .largeBinary, .largeUtf8, .binaryView, .utf8View,
         .list, .largeList, .listView, .largeListView, .struct, .runEndEncoded:
      break
    }
    return endTable()
  }

  mutating func tensor(_ tensor: TensorHeader) -> Offset {
    let type = typeTable(tensor.type)
    let shape = dimensions(tensor.shape)
    let strides = tensor.strides.isEmpty ? nil : vector(of: tensor.strides)
    startTable()
    add(0, tensor.type.unionCode, omitIfEqual: nil)
    add(1, type)
    add(2, shape)
    add(3, strides)
    add(4, int64Pair: (tensor.data.offset, tensor.data.length))
    return endTable()
  }

  mutating func sparseTensor(_ sparse: SparseTensorHeader) -> Offset {
    let type = typeTable(sparse.type)
    let shape = dimensions(sparse.shape)
    let index: Offset
    switch sparse.index {
    case .coordinate(let indicesType, let strides, let indices, let isCanonical):
      let typeOffset = integerTable(indicesType)
      let stridesOffset = strides.isEmpty ? nil : vector(of: strides)
      startTable()
      add(0, typeOffset)
      add(1, stridesOffset)
      add(2, int64Pair: (indices.offset, indices.length))
      add(3, isCanonical, omitIfEqual: nil)
      index = endTable()
    case .compressedMatrix(let axis, let indptrType, let indptr, let indicesType, let indices):
      let indptrTypeOffset = integerTable(indptrType)
      let indicesTypeOffset = integerTable(indicesType)
      startTable()
      add(0, axis.rawValue, omitIfEqual: nil)
      add(1, indptrTypeOffset)
      add(2, int64Pair: (indptr.offset, indptr.length))
      add(3, indicesTypeOffset)
      add(4, int64Pair: (indices.offset, indices.length))
      index = endTable()
    case .compressedFiber(let indptrType, let indptrBuffers, let indicesType, let indicesBuffers, let axisOrder):
      let indptrTypeOffset = integerTable(indptrType)
      let indptrOffset = vector(ofInt64Pairs: indptrBuffers.map { ($0.offset, $0.length) })
      let indicesTypeOffset = integerTable(indicesType)
      let indicesOffset = vector(ofInt64Pairs: indicesBuffers.map { ($0.offset, $0.length) })
      let axisOffset = vector(of: axisOrder)
      startTable()
      add(0, indptrTypeOffset)
      add(1, indptrOffset)
      add(2, indicesTypeOffset)
      add(3, indicesOffset)
      add(4, axisOffset)
      index = endTable()
    }
    startTable()
    add(0, sparse.type.unionCode, omitIfEqual: nil)
    add(1, type)
    add(2, shape)
    add(3, sparse.nonZeroLength, omitIfEqual: nil)
    add(4, sparse.index.unionCode, omitIfEqual: nil)
    add(5, index)
    add(6, int64Pair: (sparse.data.offset, sparse.data.length))
    return endTable()
  }

  mutating func dimensions(_ shape: [TensorDimension]) -> Offset {
    let tables = shape.map { dimension in
      let name = dimension.name.map { string($0) }
      startTable()
      add(0, dimension.size, omitIfEqual: nil)
      add(1, name)
      return endTable()
    }
    return vector(of: tables)
  }

  mutating func integerTable(_ type: IntegerType) -> Offset {
    startTable()
    add(0, Int32(type.bitWidth), omitIfEqual: nil)
    add(1, type.signed, omitIfEqual: nil)
    return endTable()
  }

  /// A vector of KeyValue tables, or nil when there are none.
  mutating func keyValues(_ pairs: [KeyValue]) -> Offset? {
    guard !pairs.isEmpty else { return nil }
    let tables = pairs.map { pair in
      let key = string(pair.key)
      let value = string(pair.value)
      startTable()
      add(0, key)
      add(1, value)
      return endTable()
    }
    return vector(of: tables)
  }
}
