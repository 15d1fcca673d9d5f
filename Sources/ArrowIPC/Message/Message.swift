/// The version of the metadata format.
public enum MetadataVersion: Int16, Hashable, Sendable, Comparable {
  /// 0.1.0 (rejected).
  case v1 = 0
  /// 0.2.0 (rejected).
  case v2 = 1
  /// 0.3.0 – 0.7.1 (rejected).
  case v3 = 2
  /// 0.8.0 – 0.17: unions carry a validity buffer. Read only.
  case v4 = 3
  /// 1.0.0 and later. Always written.
  case v5 = 4

  /// Orders versions by age.
  public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// The length and null count of one array in a record batch (Arrow's
/// `FieldNode` struct).
public struct FieldNode: Hashable, Sendable {
  /// Number of value slots.
  public var length: Int64
  /// Number of null slots.
  public var nullCount: Int64

  /// Creates a node.
  public init(length: Int64, nullCount: Int64) {
    self.length = length
    self.nullCount = nullCount
  }
}

/// Where one buffer lies in a message body (Arrow's `Buffer` struct).
public struct BodyBuffer: Hashable, Sendable {
  /// Byte offset from the start of the body.
  public var offset: Int64
  /// Length in bytes, without padding.
  public var length: Int64

  /// Creates a buffer range.
  public init(offset: Int64, length: Int64) {
    self.offset = offset
    self.length = length
  }
}

/// How a body's buffers are compressed.
public struct BodyCompression: Hashable, Sendable {
  /// The codec of every buffer.
  public enum Codec: Int8, Hashable, Sendable {
    /// One LZ4 frame per buffer.
    case lz4Frame = 0
    /// One Zstandard frame per buffer.
    case zstd = 1
  }
  /// The codec.
  public var codec: Codec

  /// Creates a compression descriptor (method: whole buffers, the only one
  /// Arrow defines).
  public init(codec: Codec) { self.codec = codec }
}

/// The header of a record batch: its length and the nodes and buffers of
/// its arrays.
///
/// A decoded header reads ``nodes``, ``buffers`` and
/// ``variadicBufferCounts`` straight out of the verified flatbuffer, so
/// decoding allocates nothing.
public struct RecordBatchHeader: Hashable, Sendable {
  /// Number of rows.
  public var length: Int64
  /// One node per array, in pre-order depth-first field order.
  public var nodes: FlatStructs<FieldNode>
  /// Every buffer of every array, in the same order.
  public var buffers: FlatStructs<BodyBuffer>
  /// Present when the body is compressed.
  public var compression: BodyCompression?
  /// For each view-typed array in order, its number of variadic data buffers.
  public var variadicBufferCounts: FlatStructs<Int64>

  /// Creates a header for writing.
  public init(
    length: Int64, nodes: [FieldNode], buffers: [BodyBuffer],
    compression: BodyCompression? = nil, variadicBufferCounts: [Int64] = []
  ) {
    self.init(length: length, nodes: FlatStructs(nodes), buffers: FlatStructs(buffers),
              compression: compression, variadicBufferCounts: FlatStructs(variadicBufferCounts))
  }

  init(
    length: Int64, nodes: FlatStructs<FieldNode>, buffers: FlatStructs<BodyBuffer>,
    compression: BodyCompression?, variadicBufferCounts: FlatStructs<Int64>
  ) {
    self.length = length
    self.nodes = nodes
    self.buffers = buffers
    self.compression = compression
    self.variadicBufferCounts = variadicBufferCounts
  }
}

/// The header of a dictionary batch.
public struct DictionaryBatchHeader: Hashable, Sendable {
  /// The dictionary this batch fills, as in ``DictionaryEncoding/id``.
  public var id: Int64
  /// The dictionary values as a one-column record batch.
  public var data: RecordBatchHeader
  /// Whether the values extend the dictionary (true) or replace it.
  public var isDelta: Bool

  /// Creates a header.
  public init(id: Int64, data: RecordBatchHeader, isDelta: Bool) {
    self.id = id
    self.data = data
    self.isDelta = isDelta
  }
}

/// The header of an IPC message.
public indirect enum MessageHeader: Hashable, Sendable {
  /// The stream's schema; always the first message.
  case schema(Schema)
  /// Values for a dictionary.
  case dictionaryBatch(DictionaryBatchHeader)
  /// A record batch.
  case recordBatch(RecordBatchHeader)
  /// A dense tensor (experimental in Arrow).
  case tensor(TensorHeader)
  /// A sparse tensor (experimental in Arrow).
  case sparseTensor(SparseTensorHeader)

  /// The code of this header in the flatbuffer `MessageHeader` union.
  public var unionCode: UInt8 {
    switch self {
    case .schema: 1
    case .dictionaryBatch: 2
    case .recordBatch: 3
    case .tensor: 4
    case .sparseTensor: 5
    }
  }

  /// Whether a body follows: true for record and dictionary batches.
  public var hasBody: Bool {
    switch self {
    case .recordBatch, .dictionaryBatch: true
    default: false
    }
  }

  /// The record batch of a record or dictionary batch, which describes
  /// the body; nil for other headers.
  public var bodyDescription: RecordBatchHeader? {
    switch self {
    case .recordBatch(let batch): batch
    case .dictionaryBatch(let dictionary): dictionary.data
    default: nil
    }
  }
}

/// One Arrow IPC message's metadata (the `Message` flatbuffer table).
public struct Message: Hashable, Sendable {
  /// The metadata version it was written with.
  public var version: MetadataVersion
  /// The header.
  public var header: MessageHeader
  /// The length of the body that follows the metadata, a multiple of 8.
  public var bodyLength: Int64
  /// Custom metadata, in order.
  public var customMetadata: [KeyValue]

  /// Creates a message; new messages are written as V5.
  public init(header: MessageHeader, bodyLength: Int64 = 0, version: MetadataVersion = .v5,
              customMetadata: [KeyValue] = []) {
    self.version = version
    self.header = header
    self.bodyLength = bodyLength
    self.customMetadata = customMetadata
  }
}

/// An integer type as tensors and dictionary indices use it.
public struct IntegerType: Hashable, Sendable {
  /// 8, 16, 32 or 64.
  public var bitWidth: Int
  /// Whether values are signed.
  public var signed: Bool

  /// Creates an integer type.
  public init(bitWidth: Int, signed: Bool) {
    self.bitWidth = bitWidth
    self.signed = signed
  }
}

/// One axis of a tensor.
public struct TensorDimension: Hashable, Sendable {
  /// The length of the axis.
  public var size: Int64
  /// An optional name.
  public var name: String?

  /// Creates an axis.
  public init(size: Int64, name: String? = nil) {
    self.size = size
    self.name = name
  }
}

/// The header of a dense tensor message (`Tensor.fbs`).
public struct TensorHeader: Hashable, Sendable {
  /// The value type (fixed width).
  public var type: ArrowType
  /// The axes.
  public var shape: [TensorDimension]
  /// Byte offsets to advance one cell along each axis (may be empty).
  public var strides: [Int64]
  /// Where the values lie in the body.
  public var data: BodyBuffer

  /// Creates a header.
  public init(type: ArrowType, shape: [TensorDimension], strides: [Int64], data: BodyBuffer) {
    self.type = type
    self.shape = shape
    self.strides = strides
    self.data = data
  }
}

/// How a sparse tensor locates its non-zero values (`SparseTensor.fbs`).
public enum SparseTensorIndex: Hashable, Sendable {
  /// Coordinates: an N×M index matrix.
  case coordinate(indicesType: IntegerType, indicesStrides: [Int64], indices: BodyBuffer, isCanonical: Bool)
  /// A compressed sparse row or column matrix.
  case compressedMatrix(axis: CompressedAxis, indptrType: IntegerType, indptr: BodyBuffer,
                        indicesType: IntegerType, indices: BodyBuffer)
  /// Compressed sparse fibers.
  case compressedFiber(indptrType: IntegerType, indptrBuffers: [BodyBuffer], indicesType: IntegerType,
                       indicesBuffers: [BodyBuffer], axisOrder: [Int32])

  /// The compressed axis of a CSR/CSC matrix.
  public enum CompressedAxis: Int16, Hashable, Sendable {
    /// CSR.
    case row = 0
    /// CSC.
    case column = 1
  }

  /// The code of this member in the `SparseTensorIndex` union.
  public var unionCode: UInt8 {
    switch self {
    case .coordinate: 1
    case .compressedMatrix: 2
    case .compressedFiber: 3
    }
  }

  /// Every buffer the index uses.
  public var buffers: [BodyBuffer] {
    switch self {
    case .coordinate(_, _, let indices, _): [indices]
    case .compressedMatrix(_, _, let indptr, _, let indices): [indptr, indices]
    case .compressedFiber(_, let indptr, _, let indices, _): indptr + indices
    }
  }
}

/// The header of a sparse tensor message.
public struct SparseTensorHeader: Hashable, Sendable {
  /// The value type (fixed width).
  public var type: ArrowType
  /// The axes.
  public var shape: [TensorDimension]
  /// The number of non-zero values.
  public var nonZeroLength: Int64
  /// Where the non-zero values are.
  public var index: SparseTensorIndex
  /// Where the values lie in the body.
  public var data: BodyBuffer

  /// Creates a header.
  public init(type: ArrowType, shape: [TensorDimension], nonZeroLength: Int64, index: SparseTensorIndex, data: BodyBuffer) {
    self.type = type
    self.shape = shape
    self.nonZeroLength = nonZeroLength
    self.index = index
    self.data = data
  }
}
