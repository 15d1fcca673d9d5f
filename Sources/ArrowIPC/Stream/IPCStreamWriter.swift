#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A destination for the bytes of an IPC stream.
public protocol IPCByteSink {
  /// Writes all of `bytes` or throws.
  mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ArrowIPCError)
}

extension Array: IPCByteSink where Element == UInt8 {
  /// Appends `bytes`.
  public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ArrowIPCError) {
    append(contentsOf: bytes)
  }
}

extension IPCByteSink {
  /// Writes all of `array`.
  public mutating func write(contentsOf array: [UInt8]) throws(ArrowIPCError) {
    var failure: ArrowIPCError?
    array.withUnsafeBytes { raw in
      do throws(ArrowIPCError) { try write(raw) } catch { failure = error }
    }
    if let failure { throw failure }
  }
}

/// Writes to an open file descriptor (a file, a pipe, standard output).
/// The caller owns and closes the descriptor.
public struct FileDescriptorSink: IPCByteSink {
  /// The descriptor written to.
  public let descriptor: Int32

  /// Writes to `descriptor`.
  public init(descriptor: Int32) { self.descriptor = descriptor }

  /// Writes all of `bytes`, retrying on `EINTR` and partial writes.
  public mutating func write(_ bytes: UnsafeRawBufferPointer) throws(ArrowIPCError) {
    var offset = 0
    while offset < bytes.count {
      let written = Glibc.write(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
      if written < 0 {
        if errno == EINTR { continue }
        throw ArrowIPCError(.io, "write to descriptor \(descriptor) failed: errno \(errno)")
      }
      offset += written
    }
  }
}

/// The encapsulated message framing of the IPC stream format.
public enum IPCFraming {
  /// The end-of-stream marker: continuation and a zero length.
  public static let endOfStream: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0, 0]

  /// The bytes that precede a body: `0xFFFFFFFF`, the int32 metadata
  /// length, the flatbuffer, and zero padding to a multiple of 8.
  public static func encapsulate(metadata flatbuffer: [UInt8]) -> [UInt8] {
    let padded = (flatbuffer.count + 7) & ~7
    var result: [UInt8] = [0xFF, 0xFF, 0xFF, 0xFF]
    result.reserveCapacity(8 + padded)
    withUnsafeBytes(of: Int32(padded).littleEndian) { result.append(contentsOf: $0) }
    result.append(contentsOf: flatbuffer)
    result.append(contentsOf: repeatElement(0, count: padded - flatbuffer.count))
    return result
  }
}

/// Writes messages as an Arrow IPC stream (the current framing, metadata V5).
///
/// Bodies are written as given, without a copy into an intermediate buffer.
public struct IPCStreamWriter<Sink: IPCByteSink> {
  /// The destination.
  public private(set) var sink: Sink

  /// Writes to `sink`.
  public init(sink: Sink) { self.sink = sink }

  /// Writes one message and its body.
  ///
  /// - Throws: `.layoutMismatch` when `body.count` differs from
  ///   `message.bodyLength` or is not a multiple of 8; encoding and sink
  ///   errors.
  public mutating func write(_ message: Message, body: ArrowBytes = ArrowBytes()) throws(ArrowIPCError) {
    guard Int64(body.count) == message.bodyLength, body.count % 8 == 0 else {
      throw ArrowIPCError(.layoutMismatch,
                          "body of \(body.count) bytes for bodyLength \(message.bodyLength) (must match, multiple of 8)")
    }
    try sink.write(contentsOf: IPCFraming.encapsulate(metadata: try message.encode()))
    try body.withUnsafeBytes { (raw) throws(ArrowIPCError) in try sink.write(raw) }
  }

  /// Writes the end-of-stream marker.
  public mutating func finish() throws(ArrowIPCError) {
    try sink.write(contentsOf: IPCFraming.endOfStream)
  }
}
