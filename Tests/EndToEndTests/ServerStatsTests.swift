import ArrowIPC
import DissociatedIPCTransports
import Foundation
import TestSupport
import Testing

/// `dipc serve` tells on SIGUSR1 what it serves and holds: memory a client
/// keeps alive is visible while it does, and gone once it lets go.
@Suite("dipc serve stats", .serialized)
struct ServerStatsTests {
  @Test("stats show the connection, the stream and the shared memory a client holds; all of it returns when the client lets go",
        arguments: ["tcp://127.0.0.1:0", "shm://"])
  func statsFollowAClient(listen: String) async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-stats-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("big.arrows").path
    try writeInt64Stream(to: path, batches: 32, rows: 1 << 17)  // 32 batches of 1 MiB
    // The client runs in this process, whose few concurrency threads
    // other suites may keep busy for seconds (ConnectionChurnTests).
    let server = try Processes.Server(files: [path], listen: listen, options: ["--initiation-timeout", "300"],
                                      capturingStandardError: true)
    defer { server.stop() }
    let location = try Location(parsing: server.locations["big.arrows"]!["combined"]!)
    var registry = TransportRegistry()
    registry.register(TCPTransport())
    registry.register(SharedMemoryTransport())

    do {
      var iterator = DissociatedClient(registry: registry).stream(from: location).makeAsyncIterator()
      var kept: [RecordBatch] = []
      while kept.count < 4, let item = try await iterator.next() {
        if case .recordBatch(let batch) = item { kept.append(batch) }
      }
      // Over shm:// the server waits for the bodies the client holds
      // (DIPC-FREE-2); tcp:// may have sent everything into socket
      // buffers and ended the stream already.
      if listen.hasPrefix("shm") {
        let during = try #require(await server.stats())
        #expect(during.hasPrefix("connections=1 active=1 served=0 failed=0 held=\"1 connections"), "\(during)")
        #expect(!during.contains("\"1 connections, 0 of"), "the shared segments the client reads from are not shown: \(during)")
      }
      while try await iterator.next() != nil {}
      #expect(kept.allSatisfy { $0.rowCount == 1 << 17 })
    }
    let expected = "connections=0 active=0 served=1 failed=0 held=\"0 connections"
      + (listen.hasPrefix("shm") ? ", 0 of 1024 MiB of shared segments, 0 peer segments (0 MiB) mapped\"" : "\"")
    #expect(await server.stats { $0 == expected } == expected)
  }

  @Test("a dipc fetch that exits after its last batch said goodbye: its server drops the connection before its peer timeout could (DIPC-FREE-6)",
        arguments: ["tcp://127.0.0.1:0", "shm://", "fabric://127.0.0.1:0?provider=tcp", "fabric://127.0.0.1:0?provider=shm"]
          .filter(Processes.built))
  func exitingClientSaysGoodbye(listen: String) async throws {
    let file = try Processes.corpus.get().appendingPathComponent("compressed_none.arrows").path
    let server = try Processes.Server(files: [file], listen: listen, capturingStandardError: true)
    defer { server.stop() }
    let location = server.locations["compressed_none.arrows"]!["combined"]!
    for round in 1 ... 4 {
      try await offPool { try Processes.run(try Processes.dipc, ["fetch", location, "--out", "/dev/null"]) }
      let exited = ContinuousClock.now
      let idle = "connections=0 active=0 served=\(round) failed=0"
      let stats = await server.stats { $0.hasPrefix(idle) }
      // A client that left without its goodbye is noticed only by its
      // silence: fabric://'s peer timeout is 10 s from the last message.
      #expect(stats?.hasPrefix(idle) == true, "\(stats ?? "no stats")")
      #expect(ContinuousClock.now - exited < .seconds(9), "round \(round): the server held the connection for \(ContinuousClock.now - exited)")
    }
  }

  @Test("a dipc fetch killed mid-stream: the server frees its stream and serves the next client (ucx:// over shared-memory lanes and tcp, fabric://)",
        arguments: [("ucx://127.0.0.1:0", "tcp,sm,self"), ("ucx://127.0.0.1:0", "tcp"),
                    ("fabric://127.0.0.1:0?provider=tcp", ""), ("fabric://127.0.0.1:0?provider=shm", "")].filter { Processes.built($0.0) })
  func killedClient(listen: String, tls: String) async throws {
    let environment = tls.isEmpty ? [:] : ["UCX_TLS": tls, "UCX_NET_DEVICES": "lo"]
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-killed-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: folder, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: folder) }
    let path = folder.appendingPathComponent("big.arrows").path
    // 256 batches of 1 MiB: more than a server can hand to its transport
    // (ucx://: 64 MiB of queued sends) and a client can read ahead, so the
    // stream is still running when the test looks.
    try writeInt64Stream(to: path, batches: 256, rows: 1 << 17)
    let server = try Processes.Server(files: [path], listen: listen, environment: environment, capturingStandardError: true)
    defer { server.stop() }
    let location = server.locations["big.arrows"]!["combined"]!

    // Nobody reads the fetch's output: it stops mid-stream.
    let fetch = Process()
    fetch.executableURL = try Processes.dipc
    fetch.arguments = ["fetch", location, "--out", "-"]
    fetch.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let unread = Pipe()
    fetch.standardOutput = unread
    fetch.standardError = FileHandle.nullDevice
    try fetch.run()
    let streaming = await server.stats(settling: { $0.hasPrefix("connections=1 active=1 ") })
    #expect(streaming?.hasPrefix("connections=1 active=1 ") == true, "\(streaming ?? "no stats")")
    kill(fetch.processIdentifier, SIGKILL)
    fetch.waitUntilExit()
    // The stream counts as served or failed, as far as the server had
    // handed it to its transport when the client died; either way it ends.
    func ended(_ streams: Int) -> (String) -> Bool {
      { $0.hasPrefix("connections=0 active=0 ") && Self.endedStreams($0) == streams }
    }
    let freed = await server.stats(settling: ended(1))
    #expect(freed.map(ended(1)) == true, "\(freed ?? "no stats")")
    try await offPool {
      try Processes.runRetryingUCXAsyncAbort(try Processes.dipc, ["fetch", location, "--out", "/dev/null"], environment: environment)
    }
    let after = await server.stats(settling: ended(2))
    #expect(after.map(ended(2)) == true, "\(after ?? "no stats")")
    // The killed client's shared-memory region is gone: the next fetch's
    // process removed it (FABRIC-SHM-1).
    let left = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix("dipc-\(fetch.processIdentifier)-") }
    #expect(left.isEmpty, "regions of the killed client left in /dev/shm: \(left)")
  }

  #if UCX
  /// Whether the UCX this build runs survives garbage on a listener's
  /// port: 1.22 (the wheel, built without assertions) does; Debian's 1.13
  /// aborts inside UCX (UCX-LIM-7).
  static var ucxSurvivesGarbage: Bool {
    let version = UCXTransport.libraryVersion.split(separator: ".").compactMap { Int($0) }
    return version.count >= 2 && (version[0], version[1]) >= (1, 22)
  }

  @Test("garbage sent to a ucx:// listener's port: UCX 1.22 drops it when the peer leaves and the server serves the next client; Debian's UCX 1.13 aborts the server, as UCX-LIM-7 documents",
        arguments: [("zeros", [UInt8](repeating: 0, count: 64)), ("ones", [UInt8](repeating: 0xFF, count: 64))])
  func ucxGarbageConnection(name: String, bytes: [UInt8]) async throws {
    let environment = ["UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"]
    let file = try Processes.corpus.get().appendingPathComponent("type_int32.arrows").path
    let server = try Processes.Server(files: [file], listen: "ucx://127.0.0.1:0", environment: environment, capturingStandardError: true)
    defer { server.stop() }
    let location = server.locations["type_int32.arrows"]!["combined"]!
    let port = try #require(try Location(parsing: location).port)
    func fetch() async throws {
      try await offPool { try Processes.run(try Processes.dipc, ["fetch", location, "--out", "/dev/null"], environment: environment) }
    }
    try await fetch()
    let pid = server.process.processIdentifier
    let baseline = ResourceCensus.take(of: pid).descriptors
    do {
      let peer = try #require(RawTCPPeer(port: port))
      #expect(peer.send(bytes), "\(name): the listener refused the bytes")
      if !Self.ucxSurvivesGarbage {
        #expect(server.waitForExit(within: 30), "\(name): UCX \(UCXTransport.libraryVersion) no longer aborts: UCX-LIM-7 is out of date")
        let output = server.errorOutput
        #expect(output.contains("tcp_sockcm_ep.c") && output.contains("Assertion"), "\(name): the server ended otherwise: \(output.suffix(2000))")
        return
      }
      // UCX holds the connection while its peer does (no handshake timeout).
      #expect(!peer.closedByPeer(within: 1))
    }
    #expect(await eventually { ResourceCensus.take(of: pid).descriptors <= baseline },
            "\(name): the server holds \(ResourceCensus.take(of: pid).descriptors) descriptors, \(baseline) before")
    #expect(server.process.isRunning, "\(name): the server died")
    try await fetch()
    let served = await server.stats(settling: { Self.endedStreams($0) == 2 })
    #expect(served.map { Self.endedStreams($0) == 2 && $0.contains(" failed=0 ") } == true, "\(served ?? "no stats")")
  }
  #endif

  /// served + failed in a stats line.
  static func endedStreams(_ stats: String) -> Int {
    stats.split(separator: " ").reduce(0) { total, field in
      let pair = field.split(separator: "=")
      guard pair.count == 2, pair[0] == "served" || pair[0] == "failed", let count = Int(pair[1]) else { return total }
      return total + count
    }
  }
}
