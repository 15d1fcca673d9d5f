internal import DissociatedIPC
internal import Glibc

/// Reading stream files for seeds and writing seeds, with the C library
/// only (the fuzz driver has no Foundation).
public enum SeedFiles {
  /// The contents of the regular files in `folder` whose names end in
  /// `.arrows`, at most 1 MiB each (larger ones slow every run).
  public static func read(folder: String) -> [[UInt8]] {
    var files: [[UInt8]] = []
    for name in directoryEntryNames(folder) ?? [] {
      guard name.hasSuffix(".arrows"), let bytes = contents(of: folder + "/" + name, limit: 1 << 20) else { continue }
      files.append(bytes)
    }
    return files
  }

  /// Writes each seed to `folder` as `seed-N`; returns how many were written.
  public static func write(_ seeds: [[UInt8]], to folder: String) -> Int {
    mkdir(folder, 0o755)
    var written = 0
    for (index, seed) in seeds.enumerated() {
      guard let file = fopen(folder + "/seed-\(index)", "wb") else { continue }
      if seed.isEmpty || fwrite(seed, 1, seed.count, file) == seed.count { written += 1 }
      fclose(file)
    }
    return written
  }

  /// The bytes of the file at `path`, nil when it cannot be read or is
  /// longer than `limit`.
  public static func contents(of path: String, limit: Int) -> [UInt8]? {
    guard let file = fopen(path, "rb") else { return nil }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 64 << 10)
    while true {
      let count = fread(&chunk, 1, chunk.count, file)
      guard count > 0 else { break }
      bytes += chunk[0 ..< count]
      guard bytes.count <= limit else { return nil }
    }
    return ferror(file) == 0 ? bytes : nil
  }
}
