import ArrowIPC
import DissociatedIPCTransports
import Foundation
import TestSupport
import Testing

/// shm:// peers killed with SIGKILL mid-stream: the survivor reclaims every
/// segment, mapping and descriptor, and serves on or fails with a typed
/// error (Spec/shm.md).
@Suite("shm:// peers killed mid-stream", .serialized)
struct SharedMemoryCrashTests {
  /// Inode numbers of the memfd segments a process holds open.
  static func memfdInodes(pid: Int32) -> Set<UInt64> {
    let folder = "/proc/\(pid)/fd"
    var inodes: Set<UInt64> = []
    for entry in (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? [] {
      let path = "\(folder)/\(entry)"
      guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: path), target.hasPrefix("/memfd:") else {
        continue
      }
      var info = stat()
      if stat(path, &info) == 0 { inodes.insert(UInt64(info.st_ino)) }
    }
    return inodes
  }

  /// Inode numbers of the memfd segments mapped into a process.
  static func mappedMemfdInodes(pid: Int32) -> Set<UInt64> {
    let maps = readProcFile("/proc/\(pid)/maps")
    var inodes: Set<UInt64> = []
    for line in maps.split(separator: "\n") where line.contains("/memfd:") {
      let fields = line.split(separator: " ", omittingEmptySubsequences: true)
      if fields.count > 4, let inode = UInt64(fields[4]) { inodes.insert(inode) }
    }
    return inodes
  }

  /// The inode and path of the mapping of this process that holds `address`.
  static func mapping(containing address: UnsafeRawPointer) -> (inode: UInt64, path: String)? {
    let maps = readProcFile("/proc/self/maps")
    let value = UInt(bitPattern: address)
    for line in maps.split(separator: "\n") {
      let fields = line.split(separator: " ", maxSplits: 5, omittingEmptySubsequences: true)
      let bounds = fields.first?.split(separator: "-").compactMap { UInt($0, radix: 16) } ?? []
      guard fields.count > 4, bounds.count == 2, value >= bounds[0], value < bounds[1] else { continue }
      return (UInt64(fields[4]) ?? 0, fields.count > 5 ? String(fields[5]).trimmingCharacters(in: .whitespaces) : "")
    }
    return nil
  }

  /// Open sockets and memfds of a process (what a connection holds; the
  /// runtime's own timer and event descriptors are not counted).
  static func descriptorCount(pid: Int32) -> Int {
    let folder = "/proc/\(pid)/fd"
    return ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).count { entry in
      guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(folder)/\(entry)") else { return false }
      return target.hasPrefix("socket:") || target.hasPrefix("/memfd:")
    }
  }

  static func devShmEntries() -> Set<String> {
    Set((try? FileManager.default.contentsOfDirectory(atPath: "/dev/shm")) ?? [])
  }

  /// /dev/shm entries that appeared since `before`, except UCX's own
  /// (ucx:// tests in the same process use UCX's posix transport) and
  /// the regions of libfabric's shm provider that fabric:// tests hold
  /// meanwhile: this process's (`PID:…`, `dipc-PID-…`) and listeners',
  /// in this process or a `dipc serve` (`HOST:PORT`, FABRIC-ADDR-1), and
  /// the stream files of a `dipc bench` test running beside (`dipc-bench-…`).
  static func newDevShmEntries(since before: Set<String>) -> Set<String> {
    devShmEntries().subtracting(before).filter { name in
      !name.hasPrefix("ucx_") && !name.hasPrefix("\(getpid()):") && !name.hasPrefix("dipc-\(getpid())-")
        && !name.hasPrefix("dipc-bench-")
        && !isFabricListenerName(name)
    }
  }

  /// `a.b.c.d:port`: the region of a fabric:// shm listener.
  static func isFabricListenerName(_ name: String) -> Bool {
    let parts = name.split(separator: ":")
    return parts.count == 2 && UInt16(parts[1]) != nil && parts[0].split(separator: ".").count == 4
      && parts[0].split(separator: ".").allSatisfy { UInt8($0) != nil }
  }

  /// Polls `condition` every 20 ms for up to `seconds`.
  static func eventually(within seconds: Int = 10, _ condition: () -> Bool) async -> Bool {
    for _ in 0 ..< seconds * 50 {
      if condition() { return true }
      try? await Task.sleep(for: .milliseconds(20))
    }
    return condition()
  }

  /// A stream of `batches` batches of `rows` int64 rows, written by pyarrow.
  static func writeStream(batches: Int, rows: Int) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-crash-\(UUID()).arrows").path
    let script = """
      import sys, pyarrow as pa
      schema = pa.schema([("v", pa.int64())])
      with pa.OSFile(sys.argv[1], "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
          for b in range(\(batches)):
              writer.write_batch(pa.record_batch([pa.array(range(b * \(rows), (b + 1) * \(rows)), pa.int64())], schema=schema))
      """
    try ChildProcess.run(["python3", "-c", script, path])
    return path
  }

  @Test("a client killed mid-stream: the server unmaps and closes everything it shared and keeps serving")
  func clientKilled() async throws {
    let file = try Self.writeStream(batches: 64, rows: 131_072)  // 64 bodies of 1 MiB
    defer { try? FileManager.default.removeItem(atPath: file) }
    let server = try Processes.Server(files: [file], listen: "shm://")
    defer { server.stop() }
    let serverPID = server.process.processIdentifier
    let ticket = URL(fileURLWithPath: file).lastPathComponent
    let location = server.locations[ticket]!["combined"]!
    let devShmBefore = Self.devShmEntries()
    let descriptorsBefore = Self.descriptorCount(pid: serverPID)

    // Nobody reads the fetch's output: it stops mid-stream holding mapped batches.
    let fetch = Process()
    fetch.executableURL = try Processes.dipc
    fetch.arguments = ["fetch", location, "--out", "-"]
    let unread = Pipe()
    fetch.standardOutput = unread
    try fetch.run()
    #expect(await Self.eventually { !Self.mappedMemfdInodes(pid: serverPID).isEmpty }, "the server never shared a segment")
    #expect(await Self.eventually { fetch.isRunning && Self.descriptorCount(pid: serverPID) > descriptorsBefore })
    kill(fetch.processIdentifier, SIGKILL)
    fetch.waitUntilExit()

    #expect(await Self.eventually { Self.mappedMemfdInodes(pid: serverPID).isEmpty },
            "the server still maps segments of the dead client's stream")
    #expect(await Self.eventually { Self.descriptorCount(pid: serverPID) == descriptorsBefore },
            "server descriptors: \(Self.descriptorCount(pid: serverPID)), before: \(descriptorsBefore)")
    #expect(Self.newDevShmEntries(since: devShmBefore).isEmpty)
    // The server goes on serving.
    let copy = file + ".copy"
    defer { try? FileManager.default.removeItem(atPath: copy) }
    try Processes.run(try Processes.dipc, ["fetch", location, "--out", copy])
    let hashes = try ChildProcess.run(["python3", Processes.root.appendingPathComponent("Tests/Interop/arrow_check.py").path,
                                       "hash", file, copy]).split(separator: "\n")
    #expect(hashes.count == 2 && hashes[0].split(separator: " ").first == hashes[1].split(separator: " ").first)
  }

  @Test("a server killed mid-stream: the client gets a typed error, held batches stay readable, then everything is unmapped")
  func serverKilled() async throws {
    let file = try Self.writeStream(batches: 64, rows: 131_072)
    defer { try? FileManager.default.removeItem(atPath: file) }
    // At most 4 bodies ahead of the client: the kill lands mid-stream.
    let server = try Processes.Server(files: [file], listen: "shm://", options: ["--max-outstanding-bytes", "\(4 << 20)"])
    let serverPID = server.process.processIdentifier
    let location = try Location(parsing: server.locations[URL(fileURLWithPath: file).lastPathComponent]!["combined"]!)
    let devShmBefore = Self.devShmEntries()
    let me = getpid()
    var heldSegments: Set<UInt64> = []

    do {
      var iterator = DissociatedClient(registry: .builtIn).stream(from: location).makeAsyncIterator()
      var held: [RecordBatch] = []
      while held.count < 3, let item = try await iterator.next() {
        if case .recordBatch(let batch) = item { held.append(batch) }
      }
      // Each held body is a view of a segment the server shares (no copy).
      for batch in held {
        let mapping = batch.body.unsafeBaseAddress.flatMap { Self.mapping(containing: $0) }
        #expect(mapping?.path.hasPrefix("/memfd:") == true, "a body is not in shared memory: \(String(describing: mapping))")
        if let mapping { heldSegments.insert(mapping.inode) }
      }
      kill(serverPID, SIGKILL)
      server.process.waitUntilExit()

      // Held batches are views of memory that outlives its creator: still readable.
      for (index, batch) in held.enumerated() {
        let values = try batch.column(0).values(as: Int64.self)
        #expect(values.first == Int64(index * 131_072) && values.last == Int64((index + 1) * 131_072 - 1))
      }
      await #expect(throws: DissociatedIPCError.self) {
        while try await iterator.next() != nil {}
      }
    }
    // Batches and iterator released: nothing of the dead server stays mapped or open.
    #expect(await Self.eventually { Self.mappedMemfdInodes(pid: me).isDisjoint(with: heldSegments) },
            "the client still maps segments of the dead server")
    #expect(await Self.eventually { Self.memfdInodes(pid: me).isDisjoint(with: heldSegments) },
            "the client still holds descriptors of the dead server's segments")
    #expect(Self.newDevShmEntries(since: devShmBefore).isEmpty)
  }
}
