/// Bounds the work and memory a decoder spends on untrusted input.
///
/// Every decode entry point takes limits; ``defaults`` suits data from peers
/// you do not control. Spec/arrow-ipc.md gives the reasons for each value.
public struct ArrowIPCLimits: Hashable, Sendable {
  /// Largest metadata flatbuffer accepted, in bytes.
  public var maxMetadataSize: Int
  /// Largest message body accepted, in bytes.
  public var maxBodyLength: Int64
  /// Deepest nesting of fields (a struct in a list in a struct … counts one
  /// level each).
  public var maxNestingDepth: Int
  /// Most fields, counted over the whole schema tree.
  public var maxFieldCount: Int
  /// Most field nodes or buffers in one record batch.
  public var maxBuffersPerBatch: Int
  /// Most key/value pairs in one custom-metadata list.
  public var maxMetadataPairs: Int

  /// Limits for untrusted input: 16 MiB metadata, 64 GiB bodies, depth 64,
  /// one million fields, buffers or metadata pairs.
  public static let defaults = ArrowIPCLimits(
    maxMetadataSize: 16 << 20,
    maxBodyLength: 64 << 30,
    maxNestingDepth: 64,
    maxFieldCount: 1 << 20,
    maxBuffersPerBatch: 1 << 20,
    maxMetadataPairs: 1 << 20
  )

  /// Creates limits; see the properties for their meaning.
  public init(
    maxMetadataSize: Int, maxBodyLength: Int64, maxNestingDepth: Int,
    maxFieldCount: Int, maxBuffersPerBatch: Int, maxMetadataPairs: Int
  ) {
    self.maxMetadataSize = maxMetadataSize
    self.maxBodyLength = maxBodyLength
    self.maxNestingDepth = maxNestingDepth
    self.maxFieldCount = maxFieldCount
    self.maxBuffersPerBatch = maxBuffersPerBatch
    self.maxMetadataPairs = maxMetadataPairs
  }
}
