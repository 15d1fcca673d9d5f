#if canImport(Glibc)
internal import Glibc
#elseif canImport(Darwin)
internal import Darwin
#endif

/// A read-only memory mapping of a whole file; unmapped when the last
/// ``ArrowBytes`` view of it goes away.
final class MappedRegion: ArrowBytesOwner, @unchecked Sendable {
  // Sendable: the mapping is read-only and never remapped.
  let base: UnsafeMutableRawPointer
  let length: Int

  init(base: UnsafeMutableRawPointer, length: Int) {
    self.base = base
    self.length = length
  }

  deinit {
    munmap(base, length)
  }
}

extension ArrowBytes {
  /// Maps the file at `path` read-only. Slices of the result (messages,
  /// bodies, column buffers) read the mapping in place.
  ///
  /// The mapping is of the file as it is: a process that truncates the
  /// file while it is mapped makes reads past its new end raise `SIGBUS`.
  /// To read a file that may change, use ``IPCFileReader``.
  ///
  /// - Throws: `.io` when the file cannot be opened, inspected or mapped,
  ///   or is not a regular file.
  public init(mappingFileAt path: String) throws(ArrowIPCError) {
    let descriptor = try openRegularFile(path)
    defer { close(descriptor) }
    var info = stat()
    guard fstat(descriptor, &info) == 0 else { throw ArrowIPCError(.io, "cannot stat \(path): errno \(errno)") }
    let length = Int(info.st_size)
    guard length > 0 else {
      self.init()
      return
    }
    let address = mmap(nil, length, PROT_READ, MAP_PRIVATE, descriptor, 0)
    guard let address, address != MAP_FAILED else {
      throw ArrowIPCError(.io, "cannot map \(path): errno \(errno)")
    }
    let region = MappedRegion(base: address, length: length)
    self.init(unsafeBase: address, count: length, owner: region)
  }
}
