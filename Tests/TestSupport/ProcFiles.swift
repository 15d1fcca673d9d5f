#if canImport(Glibc)
import Glibc
#endif

/// The whole text of a /proc file. Foundation's `String(contentsOfFile:)`
/// may stop after the first read (the kernel returns a page at a time and
/// reports size 0), so this reads until end of file.
public func readProcFile(_ path: String) -> String {
  let descriptor = open(path, O_RDONLY | O_CLOEXEC)
  guard descriptor >= 0 else { return "" }
  defer { _ = close(descriptor) }
  var bytes: [UInt8] = []
  var chunk = [UInt8](repeating: 0, count: 1 << 16)
  while true {
    let count = chunk.withUnsafeMutableBytes { read(descriptor, $0.baseAddress, $0.count) }
    if count < 0, errno == EINTR { continue }
    guard count > 0 else { break }
    bytes += chunk[..<count]
  }
  return String(decoding: bytes, as: UTF8.self)
}
