internal import Glibc

/// The names in the directory at `path` (`.` and `..` included), or nil
/// when it cannot be opened.
///
/// The name is read where `readdir` put it, up to its terminating zero:
/// a record is only as long as its name, so copying the whole 256-byte
/// `d_name` array of the last record of a buffer reads past the end of
/// the mapping (a crash, seen).
package func directoryEntryNames(_ path: String) -> [String]? {
  guard let directory = opendir(path) else { return nil }
  defer { closedir(directory) }
  guard let nameOffset = MemoryLayout<dirent>.offset(of: \dirent.d_name) else { return nil }
  var names: [String] = []
  while let entry = readdir(directory) {
    names.append(String(cString: (UnsafeRawPointer(entry) + nameOffset).assumingMemoryBound(to: CChar.self)))
  }
  return names
}
