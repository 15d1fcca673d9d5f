#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// Reads the encapsulated messages of an Arrow IPC stream file with
/// `pread(2)`, each message's metadata and body into memory of its own.
///
/// Unlike a mapping (``ArrowBytes/init(mappingFileAt:)``), the file may
/// change while it is read: a file truncated under the reader gives
/// `.truncated`, a rewritten one a decoding error or other values, never a
/// `SIGBUS`. A server reads the files it serves this way (DIPC-FILE-1).
/// Only regular files are read: a FIFO or a device would block or never end.
public final class IPCFileReader {
  private let descriptor: Int32
  private let limits: ArrowIPCLimits
  private let pool: BufferPool?
  /// The file's size when last looked at; looked at again when a message
  /// seems to reach past it (the file may grow while it is served).
  private var knownSize: Int
  /// Byte offset of the next message.
  public private(set) var position = 0
  /// Whether the end-of-stream marker (or the end of the file) was reached.
  public private(set) var isFinished = false

  /// Opens the regular file at `path`; bodies of 64 KiB and more come
  /// from `pool` when given.
  ///
  /// - Throws: `.io` when the file cannot be opened or is not a regular file.
  public init(path: String, limits: ArrowIPCLimits = .defaults, pool: BufferPool? = nil) throws(ArrowIPCError) {
    descriptor = try openRegularFile(path)
    self.limits = limits
    self.pool = pool
    knownSize = 0
    knownSize = fileSize()
  }

  deinit { close(descriptor) }

  /// The next message, or nil at the end of the stream.
  ///
  /// - Throws: ``ArrowIPCError`` with `.truncated` when the file ends
  ///   inside a message, `.io` when it cannot be read, and what
  ///   ``IPCStreamReader/next()`` throws for bad framing or metadata.
  public func next() throws(ArrowIPCError) -> IPCMessage? {
    guard !isFinished else { return nil }
    var words: (UInt64) = 0
    let prefixBytes = try withUnsafeMutableBytes(of: &words) { (buffer) throws(ArrowIPCError) in
      try read(into: buffer.baseAddress!, count: 8, at: position)
    }
    guard prefixBytes > 0 else {
      // The end of the file ends the stream only if the file did not
      // shrink below a size it was seen to have.
      guard position >= knownSize else {
        let seen = knownSize
        knownSize = fileSize()
        throw ArrowIPCError(.truncated, "the file shrank from \(seen) to \(knownSize) bytes while it was read, at byte \(position)")
      }
      isFinished = true
      return nil
    }
    let prefix = try withUnsafeBytes(of: &words) { (buffer) throws(ArrowIPCError) in
      try MessagePrefix(UnsafeRawBufferPointer(rebasing: buffer.prefix(prefixBytes)), at: position, limits: limits)
    }
    guard case .message(let prefixLength, let metadataLength) = prefix else {
      if case .endOfStream(let prefixLength) = prefix { position += prefixLength }
      isFinished = true
      return nil
    }
    let metadata = try readExactly(metadataLength, at: position + prefixLength, what: "\(metadataLength) bytes of metadata")
    let message = try Message.decode(metadata, limits: limits)
    // bodyLength is at most limits.maxBodyLength (64 GiB): an Int.
    let body = try readExactly(Int(message.bodyLength), at: position + prefixLength + metadataLength,
                               what: "a body of \(message.bodyLength) bytes")
    position += prefixLength + metadataLength + body.count
    return IPCMessage(message: message, metadata: metadata, body: body)
  }

  /// `count` bytes at `offset` in a new 64-byte-aligned buffer; nothing is
  /// allocated for bytes the file does not have.
  private func readExactly(_ count: Int, at offset: Int, what: String) throws(ArrowIPCError) -> ArrowBytes {
    guard count > 0 else { return ArrowBytes() }
    if offset > knownSize || count > knownSize - offset { knownSize = fileSize() }
    guard offset <= knownSize, count <= knownSize - offset else { throw truncated(what, at: offset) }
    let storage = AlignedStorage(capacity: count, zeroed: false, pool: count >= 64 << 10 ? pool : nil)
    guard try read(into: storage.mutableBytes.baseAddress!, count: count, at: offset) == count else {
      throw truncated(what, at: offset)
    }
    return storage.freeze(count: count)
  }

  /// Reads up to `count` bytes at `offset`; fewer only at the end of the file.
  private func read(into buffer: UnsafeMutableRawPointer, count: Int, at offset: Int) throws(ArrowIPCError) -> Int {
    var done = 0
    while done < count {
      let got = pread(descriptor, buffer + done, count - done, off_t(offset + done))
      if got > 0 {
        done += got
      } else if got == 0 {
        break
      } else if errno != EINTR {
        throw ArrowIPCError(.io, "cannot read the stream file at byte \(offset + done): errno \(errno)")
      }
    }
    return done
  }

  private func fileSize() -> Int {
    var info = stat()
    return fstat(descriptor, &info) == 0 ? Int(info.st_size) : 0
  }

  private func truncated(_ what: String, at offset: Int) -> ArrowIPCError {
    ArrowIPCError(.truncated, "the file ends at byte \(knownSize), inside \(what) that starts at byte \(offset)")
  }
}

/// Opens `path` read-only if it is a regular file. Opening does not wait
/// (O_NONBLOCK: a FIFO with no writer would block `open` itself).
///
/// - Throws: `.io` when it cannot be opened or is not a regular file.
func openRegularFile(_ path: String) throws(ArrowIPCError) -> Int32 {
  let descriptor = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK)
  guard descriptor >= 0 else { throw ArrowIPCError(.io, "cannot open \(path): errno \(errno)") }
  var info = stat()
  guard fstat(descriptor, &info) == 0 else {
    let error = errno
    close(descriptor)
    throw ArrowIPCError(.io, "cannot stat \(path): errno \(error)")
  }
  guard info.st_mode & S_IFMT == S_IFREG else {
    close(descriptor)
    throw ArrowIPCError(.io, "\(path) is not a regular file")
  }
  return descriptor
}
