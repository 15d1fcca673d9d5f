import DissociatedIPC
import Foundation
import TestSupport
import Testing

/// `dipc serve` and `dipc fetch` in separate processes over tcp://, shm://,
/// ucx:// (UCX_TLS=tcp and tcp,sm,self on lo, set in both processes'
/// environment; and descriptor bodies forced over tcp) and fabric://
/// (providers tcp and shm); pyarrow checks every fetched file against the source
/// (content hash).
@Suite("End to end: dipc serve | dipc fetch", .serialized)
struct EndToEndTests {
  /// Where the server listens, its extra options, and the environment of
  /// both processes.
  struct Setup: Sendable, CustomTestStringConvertible {
    var listen: String
    var serveOptions: [String] = []
    var environment: [String: String] = [:]
    var testDescription: String { ([listen] + serveOptions + Processes.assignments(environment)).joined(separator: " ") }
  }

  /// The transports under test.
  static let setups = [
    Setup(listen: "tcp://127.0.0.1:0"),
    Setup(listen: "shm://"),
    Setup(listen: "ucx://127.0.0.1:0", environment: ["UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"]),
    Setup(listen: "ucx://127.0.0.1:0", environment: ["UCX_TLS": "tcp,sm,self", "UCX_NET_DEVICES": "lo"]),
    // Large bodies as descriptors read with ucp_get across processes (the
    // default sends them inline over tcp lanes, UCX-RM-8).
    Setup(listen: "ucx://127.0.0.1:0", serveOptions: ["--ucx-descriptors", "always"],
          environment: ["UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"]),
    // libfabric's tcp (tcp;ofi_rxm) and shm providers; large bodies as
    // descriptors read with fi_read.
    Setup(listen: "fabric://127.0.0.1:0?provider=tcp"),
    Setup(listen: "fabric://127.0.0.1:0?provider=shm"),
  ].filter { Processes.built($0.listen) }

  /// Serves the pyarrow corpus, fetches every file (from the metadata and
  /// data locations when `topology` is "split") and has pyarrow compare
  /// each copy with its source; the server runs in `hosts.server`'s
  /// namespace and each fetch in `hosts.client`'s when `hosts` is given.
  /// Returns how many files were fetched and those whose copy differs.
  /// Checks nothing itself, so it may run off the test's task (``offPool(_:)``).
  static func fetchCorpus(topology: String, setup: Setup, hosts: NetworkPair? = nil) throws -> (files: Int, differing: [String]) {
    let corpus = try Processes.corpus.get()
    let files = try FileManager.default.contentsOfDirectory(atPath: corpus.path)
      .filter { $0.hasSuffix(".arrows") }.sorted()
    let server = try Processes.Server(files: files.map { corpus.appendingPathComponent($0).path }, listen: setup.listen,
                                      options: setup.serveOptions, environment: setup.environment,
                                      launcher: hosts.map { $0.command(in: $0.server, []) } ?? [])
    defer { server.stop() }
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-e2e-\(UUID())")
    try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: output) }
    let dipc = try Processes.dipc
    var pairs: [String] = []
    for file in files {
      let target = output.appendingPathComponent(file).path
      let locations = server.locations[file] ?? [:]
      let arguments = topology == "split"
        ? ["fetch", locations["metadata"]!, "--data", locations["data"]!, "--out", target]
        : ["fetch", locations["combined"]!, "--out", target]
      try Processes.runRetryingUCXAsyncAbort(dipc, arguments, environment: setup.environment,
                                             launcher: hosts.map { $0.command(in: $0.client, []) } ?? [])
      pairs += [corpus.appendingPathComponent(file).path, target]
    }
    // One pyarrow process hashes sources and copies; each pair must match.
    let lines = try ChildProcess.run(["python3", Processes.root.appendingPathComponent("Tests/Interop/arrow_check.py").path, "hash"] + pairs)
      .split(separator: "\n").map { $0.split(separator: " ").first.map(String.init) ?? "" }
    guard lines.count == pairs.count else { throw ProcessFailure("pyarrow hashed \(lines.count) of \(pairs.count) files") }
    let differing = stride(from: 0, to: lines.count - 1, by: 2).filter { lines[$0] != lines[$0 + 1] }.map { files[$0 / 2] }
    return (files.count, differing)
  }

  /// ``fetchCorpus(topology:setup:hosts:)``, checked: the whole corpus,
  /// every copy equal to its source. Its processes are waited for off the
  /// concurrency pool (``offPool(_:)``).
  static func fetchAll(topology: String, setup: Setup) async throws {
    let (files, differing) = try await offPool { try fetchCorpus(topology: topology, setup: setup) }
    #expect(files >= 60)
    #expect(differing.isEmpty, "fetched content differs from the source: \(differing)")
  }

  @Test("the pyarrow corpus fetched over one connection per stream equals the source", arguments: setups)
  func combined(setup: Setup) async throws { try await Self.fetchAll(topology: "combined", setup: setup) }

  @Test("the pyarrow corpus fetched from separate metadata and data locations equals the source", arguments: setups)
  func split(setup: Setup) async throws { try await Self.fetchAll(topology: "split", setup: setup) }

  @Test("dipc fetch ends with a summary on standard error: record batches, bytes, rate, setup and the path that ran", arguments: setups)
  func fetchSummary(setup: Setup) async throws {
    let file = try Processes.corpus.get().appendingPathComponent("compressed_none.arrows").path
    let server = try Processes.Server(files: [file], listen: setup.listen, options: setup.serveOptions, environment: setup.environment)
    defer { server.stop() }
    let location = server.locations["compressed_none.arrows"]!["combined"]!
    // Standard error onto standard output; the stream goes to /dev/null.
    let printed = try await offPool {
      try Processes.runRetryingUCXAsyncAbort(try Processes.dipc, ["fetch", location, "--out", "/dev/null"], environment: setup.environment,
                                             launcher: ["sh", "-c", "exec \"$@\" 2>&1", "sh"])
    }
    let summary = try #require(printed.split(separator: "\n").last { $0.hasPrefix("dipc fetch: ") }, "\(printed)")
    let scheme = String(setup.listen.prefix { $0 != ":" })
    #expect(summary.contains(" record batches, ") && summary.contains(" of bodies in ") && summary.contains(" s of setup; path: "), "\(summary)")
    #expect(!summary.hasPrefix("dipc fetch: 0 record batches"), "\(summary)")
    #expect(summary.split(separator: "; path: ").last?.hasPrefix(scheme) == true, "\(summary)")
    // Same-host ucx:// takes shared-memory lanes where UCX_TLS allows them (UCX-LANE-1).
    if setup.environment["UCX_TLS"]?.contains("sm") == true {
      #expect(["sysv/", "posix/", "cma/", "xpmem/", "knem/"].contains { summary.contains($0) }, "no shared-memory lane: \(summary)")
    }
  }

  /// `dipc serve` of the corpus's int32 file over tcp://: the file, the
  /// server and the file's combined location.
  static func serveInt32() throws -> (file: String, server: Processes.Server, location: String) {
    let file = try Processes.corpus.get().appendingPathComponent("type_int32.arrows").path
    let server = try Processes.Server(files: [file], listen: "tcp://127.0.0.1:0")
    return (file, server, server.locations["type_int32.arrows"]!["combined"]!)
  }

  @Test("fetching an unknown ticket fails with the server's typed error, and the server keeps serving")
  func unknownTicket() throws {
    let (_, server, location) = try Self.serveInt32()
    defer { server.stop() }
    let dipc = try Processes.dipc
    #expect { try Processes.run(dipc, ["fetch", location, "--ticket", "nope", "--out", "/dev/null"]) } throws: {
      "\($0)".contains("unknownTicket")
    }
    try Processes.run(dipc, ["fetch", location, "--out", "/dev/null"])
  }

  @Test("fetch -o replaces its file only once the whole stream arrived; a failed fetch leaves it as it was")
  func fetchKeepsFileOnFailure() throws {
    let (file, server, location) = try Self.serveInt32()
    defer { server.stop() }
    let dipc = try Processes.dipc
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-out-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let target = folder.appendingPathComponent("kept.arrows").path
    #expect(FileManager.default.createFile(atPath: target, contents: Data("precious".utf8)))
    for failing in [["fetch", location, "--ticket", "nope", "--out", target],
                    ["fetch", "tcp://127.0.0.1:1?want_data=1&ticket=x", "--out", target]] {
      #expect(throws: (any Error).self) { try Processes.run(dipc, failing) }
      #expect(FileManager.default.contents(atPath: target) == Data("precious".utf8))
    }
    try Processes.run(dipc, ["fetch", location, "--out", target])
    // The fetched stream (re-encoded, so compared by reading it back).
    #expect(FileManager.default.contents(atPath: target) != Data("precious".utf8))
    #expect(try Processes.run(dipc, ["inspect", target]) == Processes.run(dipc, ["inspect", file]))
    // Nothing but the file is left in its folder.
    #expect(try FileManager.default.contentsOfDirectory(atPath: folder.path) == ["kept.arrows"])
  }

  @Test("serve refuses a FIFO and two files of one name; it warns when it listens on every interface")
  func serveRefusals() throws {
    let corpus = try Processes.corpus.get()
    let file = corpus.appendingPathComponent("type_int32.arrows").path
    let dipc = try Processes.dipc
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-serve-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let fifo = folder.appendingPathComponent("pipe.arrows").path
    #expect(mkfifo(fifo, 0o600) == 0)
    let twin = folder.appendingPathComponent("type_int32.arrows").path
    try FileManager.default.copyItem(atPath: file, toPath: twin)
    #expect { try Processes.run(dipc, ["serve", fifo]) } throws: { "\($0)".contains("not a regular file") }
    #expect { try Processes.run(dipc, ["inspect", fifo]) } throws: { "\($0)".contains("not a regular file") }
    #expect { try Processes.run(dipc, ["serve", file, twin]) } throws: { "\($0)".contains("rename one") }
    // Every interface: a warning on standard error, then serving as asked.
    let process = Process()
    process.executableURL = dipc
    process.arguments = ["serve", file, "--listen", "tcp://:0"]
    let errors = Pipe()
    process.standardError = errors
    process.standardOutput = Pipe()
    try process.run()
    defer {
      // Only the warning matters here: the server may not handle signals yet.
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
    }
    var text = ""
    while !text.contains("\n") {
      let chunk = errors.fileHandleForReading.availableData
      if chunk.isEmpty { break }
      text += String(decoding: chunk, as: UTF8.self)
    }
    #expect(text.contains("listens on every interface"), "\(text)")
  }

  @Test("dipc serve: SIGTERM lets a stalled stream run for the grace period only; a second SIGTERM ends it at once (DIPC-TEAR-5)")
  func shutdownDeadline() throws {
    let file = try Processes.corpus.get().appendingPathComponent("type_int32.arrows").path
    for (grace, signals) in [("1", 1), ("600", 2)] {
      let server = try Processes.Server(files: [file], listen: "tcp://127.0.0.1:0",
                                        options: ["--shutdown-grace", grace, "--stall-timeout", "0"])
      let location = try Location(parsing: server.locations["type_int32.arrows"]!["combined"]!)
      // A client that asks and never reads: its stream never ends by itself.
      let peer = RawTCPPeer.requesting(port: location.port!, wantData: location.wantData, ticket: "type_int32.arrows")
      #expect(peer != nil)
      let started = ContinuousClock.now
      for _ in 0 ..< signals {
        kill(server.process.processIdentifier, SIGTERM)
        usleep(200_000)  // let the first signal start the graceful shutdown
      }
      #expect(server.waitForExit(within: 30), "grace \(grace) s, \(signals) signal(s): still running after 30 s")
      #expect(ContinuousClock.now - started < .seconds(30))
      withExtendedLifetime(peer) {}
    }
  }

  @Test("connecting where nothing listens is a prompt typed error")
  func nothingListening() throws {
    let dipc = try Processes.dipc
    let started = ContinuousClock.now
    #expect { try Processes.run(dipc, ["fetch", "tcp://127.0.0.1:1?want_data=1&ticket=x", "--out", "/dev/null"]) } throws: {
      "\($0)".contains("connectionRefused")
    }
    #expect(ContinuousClock.now - started < .seconds(10))
  }
}
