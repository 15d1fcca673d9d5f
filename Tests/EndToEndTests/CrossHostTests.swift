import Foundation
import TestSupport
import Testing

/// `dipc serve` and `dipc fetch` on two hosts: two network namespaces
/// joined by a link the test delays, drops, reorders and cuts
/// (``NetworkPair``). Every stream completes with the data pyarrow wrote,
/// or fails with a typed error within its timeout, and the server holds
/// nothing afterwards. `scripts/cross-host.sh` runs the larger matrix.
@Suite("Across two hosts", .serialized, .enabled(if: NetworkPair.isSupported, "needs root, ip and TUN devices"))
struct CrossHostTests {
  /// tcp://, ucx:// (UCX over its tcp lanes on the link's device) and
  /// fabric:// (libfabric's tcp provider).
  static func setups(_ hosts: NetworkPair) -> [EndToEndTests.Setup] {
    [EndToEndTests.Setup(listen: "tcp://\(hosts.server.address):0"),
     EndToEndTests.Setup(listen: "ucx://\(hosts.server.address):0",
                         environment: ["UCX_TLS": "tcp", "UCX_NET_DEVICES": hosts.server.device + "," + hosts.client.device]),
     EndToEndTests.Setup(listen: "fabric://\(hosts.server.address):0?provider=tcp")]
      .filter { Processes.built($0.listen) }
  }

  @Test("the pyarrow corpus crosses a clean link over tcp://, ucx:// and fabric:// and equals the source")
  func corpus() async throws {
    let hosts = try NetworkPair()
    defer { hosts.close() }
    for setup in Self.setups(hosts) {
      let (files, differing) = try await offPool { try EndToEndTests.fetchCorpus(topology: "combined", setup: setup, hosts: hosts) }
      #expect(files >= 60)
      #expect(differing.isEmpty, "\(setup.listen): fetched content differs from the source: \(differing)")
    }
    #expect(hosts.packets.carried > 1000)
  }

  /// A scratch folder with a stream file of `batches` int64 batches of
  /// `rows` rows, `big.arrows`; removed by the caller.
  static func scratch(batches: Int, rows: Int) throws -> (folder: URL, file: String) {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-hosts-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    let file = folder.appendingPathComponent("big.arrows").path
    try writeInt64Stream(to: file, batches: batches, rows: rows)
    return (folder, file)
  }

  /// Whether pyarrow reads the same content from `copy` as from `source`.
  static func sameContent(_ source: String, _ copy: String) throws -> Bool {
    let hashes = try ChildProcess.run(["python3", Processes.root.appendingPathComponent("Tests/Interop/arrow_check.py").path,
                                       "hash", source, copy]).split(separator: "\n").map { $0.split(separator: " ").first }
    return hashes.count == 2 && hashes[0] == hashes[1]
  }

  /// The impairments of the matrix: each alone, then together.
  static let impairments: [(name: String, impairment: NetworkPair.Impairment)] = [
    ("clean", .none),
    ("delay 10 ms", .init(delay: .milliseconds(10))),
    ("loss 2 %", .init(loss: 0.02)),
    ("reorder 10 %", .init(reorder: 0.1)),
    ("delay 5 ms, loss 1 %, reorder 5 %", .init(delay: .milliseconds(5), loss: 0.01, reorder: 0.05)),
  ]

  /// MiB per stream in the matrix: 4, or `DIPC_CROSS_HOST_MIB` (the
  /// larger run of scripts/cross-host.sh).
  static let matrixMebibytes = ProcessInfo.processInfo.environment["DIPC_CROSS_HOST_MIB"].flatMap(Int.init) ?? 4

  @Test("a stream crosses a delaying, lossy and reordering link over tcp://, ucx:// and fabric:// intact",
        arguments: ["tcp", "ucx", "fabric"].filter(Processes.built), 0 ..< impairments.count)
  func impairedLink(scheme: String, impairmentIndex: Int) async throws {
    let (name, impairment) = Self.impairments[impairmentIndex]
    let hosts = try NetworkPair()
    defer { hosts.close() }
    let setup = Self.setups(hosts).first { $0.listen.hasPrefix(scheme) }!
    // Batches of 128 KiB.
    let (folder, file) = try Self.scratch(batches: 8 * Self.matrixMebibytes, rows: 16_384)
    defer { try? FileManager.default.removeItem(at: folder) }
    hosts.impair(impairment)
    let server = try Processes.Server(files: [file], listen: setup.listen, environment: setup.environment,
                                      launcher: hosts.command(in: hosts.server, []))
    defer { server.stop() }
    let copy = folder.appendingPathComponent("copy.arrows").path
    let started = ContinuousClock.now
    let location = server.locations["big.arrows"]!["combined"]!
    try await offPool {
      try Processes.run(try Processes.dipc, ["fetch", location, "--out", copy],
                        environment: setup.environment, launcher: hosts.command(in: hosts.client, []))
    }
    let seconds = Double((ContinuousClock.now - started).components.attoseconds) / 1e18
      + Double((ContinuousClock.now - started).components.seconds)
    #expect(try await offPool { try Self.sameContent(file, copy) }, "\(scheme) over \(name): the copy differs from the source")
    if impairment.loss > 0 { #expect(hosts.packets.dropped > 0, "the link dropped nothing: \(hosts.packets)") }
    // One line per cell: scripts/cross-host.sh collects them.
    print("cross-host: \(scheme)://, \(name): \(Self.matrixMebibytes) MiB intact in \(String(format: "%.2f", seconds)) s, "
      + "\(hosts.packets.carried) packets carried, \(hosts.packets.dropped) dropped")
  }

  @Test("a link cut mid-stream: the client fails with a typed error within its idle timeout, the server frees the stream within its stall timeout and serves again once the link is back",
        arguments: ["tcp", "ucx", "fabric"].filter(Processes.built))
  func cutLink(scheme: String) async throws {
    let hosts = try NetworkPair()
    defer { hosts.close() }
    let setup = Self.setups(hosts).first { $0.listen.hasPrefix(scheme) }!
    // 16 MiB through a link of 1 MiB/s: 16 s of streaming to cut into,
    // however late this process notices that the stream started.
    let (folder, file) = try Self.scratch(batches: 128, rows: 16_384)
    defer { try? FileManager.default.removeItem(at: folder) }
    hosts.impair(.init(delay: .milliseconds(2), rate: 1 << 20))
    let server = try Processes.Server(files: [file], listen: setup.listen, options: ["--stall-timeout", "3"],
                                      environment: setup.environment, capturingStandardError: true,
                                      launcher: hosts.command(in: hosts.server, []))
    defer { server.stop() }
    let location = server.locations["big.arrows"]!["combined"]!

    // The client, in the background; its standard error to a file.
    let output = folder.appendingPathComponent("copy.arrows").path
    let errors = folder.appendingPathComponent("fetch.err")
    #expect(FileManager.default.createFile(atPath: errors.path, contents: nil))
    let fetch = Process()
    fetch.executableURL = URL(fileURLWithPath: "/usr/sbin/ip")
    fetch.arguments = Array(hosts.command(in: hosts.client, ["/usr/bin/env"]).dropFirst())
      + Processes.assignments(setup.environment) + [try Processes.dipc.path, "fetch", location, "--out", output, "--idle-timeout", "3"]
    fetch.standardError = try FileHandle(forWritingTo: errors)
    try fetch.run()
    defer { if fetch.isRunning { fetch.terminate() } }

    // Cut once the first bytes were written: the stream is running.
    let started = await eventually(within: 60) {
      let written = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
      return written.contains { $0.hasPrefix("copy.arrows.partial") && ((try? FileManager.default.attributesOfItem(
        atPath: folder.appendingPathComponent($0).path)[.size] as? Int) ?? 0) > 0 }
    }
    #expect(started, "nothing arrived in 60 s")
    try hosts.cut()
    let cutAt = ContinuousClock.now
    let exited = await eventually(within: 30) { !fetch.isRunning }
    let failedAfter = ContinuousClock.now - cutAt
    if !exited {
      kill(fetch.processIdentifier, SIGKILL)
      fetch.waitUntilExit()
    }
    #expect(exited, "the client still ran 30 s after the cut")
    let message = (try? String(contentsOf: errors, encoding: .utf8)) ?? ""
    #expect(fetch.terminationStatus != 0)
    #expect(["timedOut", "connectionClosed", "streamTruncated"].contains { message.contains($0) }, "client said: \(message)")
    #expect(failedAfter < .seconds(15), "the client failed \(failedAfter) after the cut, with an idle timeout of 3 s")
    #expect(!FileManager.default.fileExists(atPath: output), "a failed fetch left an output file")

    // The server holds nothing for the stream. Over tcp:// it failed it:
    // its sends stalled. UCX may have taken every send into its own
    // buffers before the cut, so a ucx:// server can count the stream as
    // served once its goodbye went unanswered (UCX-CLOSE-5).
    let ended = scheme == "tcp" ? ["served=0 failed=1"] : ["served=0 failed=1", "served=1 failed=0"]
    let freed = await server.stats { stats in ended.contains { stats.hasPrefix("connections=0 active=0 \($0)") } }
    #expect(ended.contains { freed?.hasPrefix("connections=0 active=0 \($0)") == true }, "\(freed ?? "no stats")")

    // The link is back: the next client is served in full.
    try hosts.restore()
    hosts.impair(.none)
    try await offPool {
      try Processes.run(try Processes.dipc, ["fetch", location, "--out", output], environment: setup.environment,
                        launcher: hosts.command(in: hosts.client, []))
    }
    #expect(try await offPool { try Self.sameContent(file, output) })
    let served = await server.stats { $0.hasPrefix("connections=0 active=0") && !$0.contains("served=0") }
    #expect(served?.contains("served=0") == false, "\(served ?? "no stats")")
  }

  @Test("shm:// works between processes in different mount and IPC namespaces that share only the socket's folder: memfd segments need no common /dev/shm")
  func sharedMemoryAcrossMountNamespaces() async throws {
    let (folder, file) = try Self.scratch(batches: 32, rows: 16_384)
    defer { try? FileManager.default.removeItem(at: folder) }
    // Each side gets a /dev/shm of its own (an empty tmpfs, with a marker
    // file nobody else can see) and IPC objects of its own.
    func isolated(_ marker: String) -> [String] {
      ["/usr/bin/unshare", "--mount", "--ipc", "--propagation", "private", "/bin/sh", "-c",
       "mount -t tmpfs tmpfs /dev/shm && touch /dev/shm/\(marker) && exec \"$@\"", "sh"]
    }
    let serverMarker = "dipc-server-only-\(getpid())"
    let clientMarker = "dipc-client-only-\(getpid())"
    let server = try Processes.Server(files: [file], listen: "shm://\(folder.path)/server.sock", capturingStandardError: true,
                                      launcher: isolated(serverMarker))
    defer { server.stop() }
    let copy = folder.appendingPathComponent("copy.arrows").path
    let location = server.locations["big.arrows"]!["combined"]!
    let client = isolated(clientMarker)
    try await offPool { try Processes.run(try Processes.dipc, ["fetch", location, "--out", copy], launcher: client) }
    #expect(try await offPool { try Self.sameContent(file, copy) })
    // Neither side's /dev/shm is this one: the segments went as memfds.
    #expect(!FileManager.default.fileExists(atPath: "/dev/shm/\(serverMarker)"))
    #expect(!FileManager.default.fileExists(atPath: "/dev/shm/\(clientMarker)"))
    let stats = await server.stats { $0.hasPrefix("connections=0 active=0 served=1") }
    #expect(stats?.hasPrefix("connections=0 active=0 served=1 failed=0") == true, "\(stats ?? "no stats")")
  }
}
