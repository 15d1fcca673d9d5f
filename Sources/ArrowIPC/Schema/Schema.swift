/// One key/value pair of custom metadata.
public struct KeyValue: Hashable, Sendable {
  /// The key.
  public var key: String
  /// The value.
  public var value: String

  /// Creates a pair.
  public init(_ key: String, _ value: String) {
    self.key = key
    self.value = value
  }
}

/// How a field is dictionary-encoded.
public struct DictionaryEncoding: Hashable, Sendable {
  /// The id that DictionaryBatch messages use for this dictionary.
  public var id: Int64
  /// The index type: bit width (8, 16, 32, 64) and signedness.
  public var indexBitWidth: Int
  /// Whether the index type is signed.
  public var indexSigned: Bool
  /// Whether the dictionary order is meaningful.
  public var isOrdered: Bool

  /// Creates an encoding; the index type defaults to signed 32-bit, as in
  /// the format.
  public init(id: Int64, indexBitWidth: Int = 32, indexSigned: Bool = true, isOrdered: Bool = false) {
    self.id = id
    self.indexBitWidth = indexBitWidth
    self.indexSigned = indexSigned
    self.isOrdered = isOrdered
  }
}

/// A named, typed column (or child of a nested column).
public struct Field: Hashable, Sendable {
  /// The name; may be empty.
  public var name: String
  /// Whether values may be null.
  public var nullable: Bool
  /// The value type. For a dictionary-encoded field this is the type of the
  /// dictionary's values; the indices' type is in ``dictionary``.
  public var type: ArrowType
  /// Present when the field is dictionary-encoded.
  public var dictionary: DictionaryEncoding?
  /// Child fields of nested types, in order.
  public var children: [Field]
  /// Custom metadata, in order.
  public var metadata: [KeyValue]

  /// Creates a field.
  public init(
    _ name: String, _ type: ArrowType, nullable: Bool = true,
    dictionary: DictionaryEncoding? = nil, children: [Field] = [], metadata: [KeyValue] = []
  ) {
    self.name = name
    self.nullable = nullable
    self.type = type
    self.dictionary = dictionary
    self.children = children
    self.metadata = metadata
  }
}

/// The byte order of record-batch bodies.
public enum Endianness: Int16, Hashable, Sendable {
  /// Little-endian (every platform this library runs on).
  case little = 0
  /// Big-endian.
  case big = 1
}

/// An optional format feature a schema declares.
public struct SchemaFeature: RawRepresentable, Hashable, Sendable {
  /// The feature's code in `Schema.fbs`.
  public var rawValue: Int64
  /// Creates a feature from its code; unknown codes are kept.
  public init(rawValue: Int64) { self.rawValue = rawValue }
  /// Dictionary batches may replace earlier dictionaries.
  public static let dictionaryReplacement = SchemaFeature(rawValue: 1)
  /// Bodies may be compressed.
  public static let compressedBody = SchemaFeature(rawValue: 2)
}

/// The schema of a stream: its top-level fields and metadata.
public struct Schema: Hashable, Sendable {
  /// The top-level fields (columns).
  public var fields: [Field]
  /// Custom metadata, in order.
  public var metadata: [KeyValue]
  /// The byte order of bodies.
  public var endianness: Endianness
  /// Declared optional features.
  public var features: [SchemaFeature]

  /// Creates a schema.
  public init(
    fields: [Field], metadata: [KeyValue] = [], endianness: Endianness = .little,
    features: [SchemaFeature] = []
  ) {
    self.fields = fields
    self.metadata = metadata
    self.endianness = endianness
    self.features = features
  }

  /// Every dictionary-encoded field in the schema tree, by dictionary id.
  public var dictionaryFields: [Int64: Field] {
    var result: [Int64: Field] = [:]
    func visit(_ field: Field) {
      if let dictionary = field.dictionary { result[dictionary.id] = field }
      field.children.forEach(visit)
    }
    fields.forEach(visit)
    return result
  }
}
