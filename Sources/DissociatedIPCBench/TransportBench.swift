import ArrowIPC
public import DissociatedIPCTransports
public import Foundation

/// Transports side by side with the usual baselines, in interleaved rounds,
/// reported as medians and per-round ratios: what `dipc bench` runs.
///
/// Each round runs every case once, grouped with the baselines it is
/// compared with (bulk and copy; get; tiny; latency), every other round in
/// reverse order; a ratio is the median over the rounds of each round's
/// ratio, so a machine whose speed changes between groups moves both sides
/// of a ratio alike. `dipc bench --help` describes the cases and baselines.
public struct TransportBench: Sendable {
  /// A run's settings unless changed (also `dipc bench`'s defaults).
  public enum Defaults {
    /// Rounds.
    public static let rounds = 5
    /// Total body bytes of the bulk case: 1 GiB.
    public static let bulkBytes = 1 << 30
    /// Body bytes per batch in the bulk case: 1 MiB.
    public static let batchBytes = 1 << 20
    /// Batches in the tiny case.
    public static let tinyBatches = 10_000
    /// Every case group.
    public static let caseGroups = ["bulk", "get", "tiny", "latency"]
    /// Every baseline.
    public static let baselines = ["iperf3", "flight", "shared_file", "sockets", "ucx_perftest", "fi_pingpong"]
    /// tcp;ofi_rxm.
    public static let fabricProvider = "tcp"
    /// UCX's tcp lanes only.
    public static let ucxTLS = "tcp"
  }

  /// The schemes measured.
  public var schemes = ["tcp"]
  /// Rounds; medians are reported.
  public var rounds = Defaults.rounds
  /// Total body bytes of the bulk case.
  public var bulkBytes = Defaults.bulkBytes
  /// Body bytes per batch in the bulk case.
  public var batchBytes = Defaults.batchBytes
  /// Batches of 2 rows in the tiny case.
  public var tinyBatches = Defaults.tinyBatches
  /// The case groups run: bulk (with copy), get, tiny, latency.
  public var caseGroups = Set(Defaults.caseGroups)
  /// The baselines run: iperf3, flight, shared_file (pyarrow writes an IPC
  /// file to /dev/shm, another process maps and reads it), sockets (raw
  /// 8-byte ping-pongs over TCP loopback and a Unix socket), ucx_perftest
  /// (with ucx), fi_pingpong (with fabric).
  public var baselines = Set(Defaults.baselines)
  /// The libfabric provider of fabric:// and fi_pingpong alike.
  public var fabricProvider = Defaults.fabricProvider
  /// UCX_TLS of ucx:// and ucx_perftest alike (UCX_NET_DEVICES is lo).
  public var ucxTLS = Defaults.ucxTLS
  /// Where the measured servers run.
  public var deployment = BenchDeployment.separate
  /// What the client does with each body.
  public var consumer = BenchConsumer.touch
  /// The folder of the Python baselines' scripts (relative to the
  /// working directory: the repository root).
  public var baselineScripts = "Benchmarks/Baselines"
  /// The client's transports, and the servers' in one process: every
  /// backend, ucx:// with ``ucxTLS`` and fabric:// with ``fabricProvider``.
  /// One set for every round, as a long-running server and client keep
  /// theirs: receive-buffer pools stay warm (a fresh pool per case made
  /// every ucx:// and tcp:// bulk case fault in its first read-ahead of
  /// buffers again).
  public var registry: TransportRegistry
  /// The same, with ucx:// servers sending every large body as a
  /// descriptor (the get case).
  public var forcedGets: TransportRegistry
  /// The program the child servers run: one with `serve` and `echo`
  /// commands, `dipc`.
  public var serverExecutable: URL

  /// A bench of `registry`'s transports (`forcedGets` for the get case),
  /// whose child servers run `serverExecutable`.
  public init(registry: TransportRegistry, forcedGets: TransportRegistry, serverExecutable: URL) {
    self.registry = registry
    self.forcedGets = forcedGets
    self.serverExecutable = serverExecutable
  }

  /// Where a server of `scheme` listens on this machine with every default
  /// (a free port on 127.0.0.1 for the socket-addressed tcp://, ucx:// and
  /// fabric://, a fresh socket or name otherwise).
  public static func localListenURI(_ scheme: String) -> String {
    ["tcp", "ucx", "fabric"].contains(scheme) ? "\(scheme)://127.0.0.1" : "\(scheme)://"
  }

  /// The environment of a process that uses UCX as ucx:// does here:
  /// `tls` lanes on lo.
  static func ucxEnvironment(tls: String) -> [String: String] { ["UCX_TLS": tls, "UCX_NET_DEVICES": "lo"] }

  /// Sends back every tagged message `connection` receives, with its tag,
  /// until the connection ends: the far end of the round-trip case
  /// (`dipc echo` runs it on every connection).
  public static func echo(on connection: any TransportConnection) async throws {
    while let message = try await connection.receiveTagged(matching: 0, mask: 0) {
      try await connection.sendTagged(message.tag, [message.payload])
    }
    await connection.close()
  }

  /// Runs every round, calling `progress` with a line as each starts, and
  /// returns every measurement with the report.
  public func run(progress: (String) -> Void = { _ in }) async throws -> BenchResults {
    let servers = deployment == .separate ? BenchServers(executable: serverExecutable) : nil
    defer { servers?.stopAll() }
    let stage = Stage(registry: registry, forcedGets: forcedGets, servers: servers, consumer: consumer,
                      fabricProvider: fabricProvider, ucxTLS: ucxTLS)
    let groups = try makeCaseGroups(stage: stage)
    var results: [String: [BenchMeasurement]] = [:]
    for round in 1 ... rounds {
      progress("round \(round)/\(rounds)")
      for group in groups {
        // Every other round runs each group backwards, so that a machine
        // speeding up or slowing down within a group favours no case.
        for item in round.isMultiple(of: 2) ? group.reversed() : group {
          results[item.name, default: []].append(try await item.measure())
        }
      }
    }
    return summarize(results)
  }

  /// What every case of a run shares: the client's transports (the
  /// server's too in one process), the child servers when they run
  /// apart, and what the client does with bodies.
  struct Stage {
    /// Every backend, ucx:// with `--ucx-tls` and fabric:// with `--fabric-provider`.
    var registry: TransportRegistry
    /// The same, with ucx:// servers sending every large body as a descriptor.
    var forcedGets: TransportRegistry
    /// The child servers, when servers run apart.
    var servers: BenchServers?
    var consumer: BenchConsumer
    var fabricProvider: String
    var ucxTLS: String

    /// Where a child server of `scheme` listens: as in one process, with
    /// fabric://'s provider named.
    func listenURI(_ scheme: String) -> String {
      scheme == "fabric" ? "\(TransportBench.localListenURI(scheme)):0?provider=\(fabricProvider)" : TransportBench.localListenURI(scheme)
    }

    /// What a child server of `scheme` needs in its environment: ucx://'s
    /// lanes as the client's.
    func environment(_ scheme: String) -> [String: String] {
      scheme == "ucx" ? TransportBench.ucxEnvironment(tls: ucxTLS) : [:]
    }
  }

  /// A named, timed case of a round.
  struct Case {
    var name: String
    var measure: () async throws -> BenchMeasurement
  }

  /// The cases of one round, grouped with the baselines they are compared
  /// with (bulk and copy; get; tiny; latency): a group runs back to back,
  /// so each ratio compares measurements taken seconds apart, and the
  /// report takes it per round.
  func makeCaseGroups(stage: Stage) throws -> [[Case]] {
    let registry = stage.registry
    let baselineSet = baselines
    let perftest = baselineSet.contains("ucx_perftest") && schemes.contains("ucx")
    let pingpong = baselineSet.contains("fi_pingpong") && schemes.contains("fabric")
    let fabricProvider = fabricProvider
    let bulkCount = max(1, bulkBytes / batchBytes)
    let (batchBytes, tinyBatches, ucxTLS) = (batchBytes, tinyBatches, ucxTLS)
    var bulk: [Case] = []
    var get: [Case] = []
    var tiny: [Case] = []
    var latency: [Case] = []
    for scheme in schemes {
      bulk.append(Case(name: "\(scheme) bulk") {
        try await Self.measure(scheme: scheme, batches: bulkCount, rows: batchBytes / 8, stage: stage)
      })
      if try registry.transport(forScheme: scheme).capabilities.remoteMemory {
        // The same bodies inline (type 0): the transport's copy path.
        bulk.append(Case(name: "\(scheme) copy") {
          try await Self.measure(scheme: scheme, batches: bulkCount, rows: batchBytes / 8, path: .inline, stage: stage)
        })
      }
      // An untouched body exists only in the bench's own memory.
      if scheme == "ucx", perftest, stage.servers == nil {
        bulk.append(Case(name: "ucx untouched") {
          try await Self.measure(scheme: scheme, batches: bulkCount, rows: batchBytes / 8, path: .untouched, stage: stage)
        })
      }
      if scheme == "ucx" {
        get.append(Case(name: "ucx get") {
          try await Self.measure(scheme: scheme, batches: bulkCount, rows: batchBytes / 8, path: .descriptors, stage: stage)
        })
      }
      tiny.append(Case(name: "\(scheme) tiny") {
        try await Self.measure(scheme: scheme, batches: tinyBatches, rows: 2, stage: stage)
      })
      latency.append(Case(name: "\(scheme) latency") { try await Self.roundTrip(scheme: scheme, stage: stage) })
    }
    bulk.append(Case(name: "memcpy") { Self.memcpy(bytes: bulkCount * batchBytes, chunk: batchBytes, span: 64 << 20) })
    if schemes.contains("shm") {
      bulk.append(Case(name: "memcpy ring") {
        Self.memcpy(bytes: bulkCount * batchBytes, chunk: batchBytes, span: Self.ringSpan)
      })
    }
    if perftest {
      bulk.append(Case(name: "ucx_perftest bulk") {
        try Self.ucxPerftest("tag_bw", length: batchBytes, iterations: bulkCount, tls: ucxTLS)
      })
      get.append(Case(name: "ucx_perftest get") {
        try Self.ucxPerftest("ucp_get", length: batchBytes, iterations: bulkCount, tls: ucxTLS)
      })
      // Small-message rate: a tiny batch is two such messages.
      tiny.append(Case(name: "ucx_perftest tiny") {
        try Self.ucxPerftest("tag_bw", length: 16, iterations: 100_000, tls: ucxTLS)
      })
      latency.append(Case(name: "ucx_perftest latency") {
        try Self.ucxPerftest("tag_lat", length: 8, iterations: 10_000, tls: ucxTLS)
      })
    }
    if pingpong {
      bulk.append(Case(name: "fi_pingpong bulk") {
        try Self.fiPingpong(provider: fabricProvider, length: batchBytes, iterations: max(100, bulkCount))
      })
      tiny.append(Case(name: "fi_pingpong tiny") {
        try Self.fiPingpong(provider: fabricProvider, length: 16, iterations: 20_000)
      })
      latency.append(Case(name: "fi_pingpong latency") {
        try Self.fiPingpong(provider: fabricProvider, length: 8, iterations: 10_000, roundTrip: true)
      })
    }
    if baselineSet.contains("iperf3") {
      bulk.append(Case(name: "iperf3 bulk") { try Self.iperf3(bytes: bulkCount * batchBytes, length: batchBytes) })
    }
    if baselineSet.contains("flight") {
      bulk.append(Case(name: "flight bulk") { try python("flight_baseline.py", batches: bulkCount, batchBytes: batchBytes) })
      tiny.append(Case(name: "flight tiny") { try python("flight_baseline.py", batches: tinyBatches, batchBytes: 16) })
    }
    if baselineSet.contains("shared_file") {
      bulk.append(Case(name: "shared file bulk") { try python("shared_file_baseline.py", batches: bulkCount, batchBytes: batchBytes) })
      tiny.append(Case(name: "shared file tiny") { try python("shared_file_baseline.py", batches: tinyBatches, batchBytes: 16) })
    }
    if baselineSet.contains("sockets") {
      if schemes.contains("tcp") { latency.append(Case(name: "socket tcp latency") { try SocketPingPong.measure(.tcpLoopback) }) }
      if schemes.contains("shm") { latency.append(Case(name: "socket unix latency") { try SocketPingPong.measure(.unixStream) }) }
    }
    let chosen = caseGroups
    let named = [("bulk", bulk), ("get", get), ("tiny", tiny), ("latency", latency)]
    if let unknown = chosen.subtracting(named.map(\.0)).first { throw BenchError("unknown case group '\(unknown)'") }
    return named.filter { chosen.contains($0.0) && !$0.1.isEmpty }.map(\.1)
  }

  /// How a case's bodies travel.
  enum BodyPath {
    /// As the server decides (descriptors where the transport has remote memory).
    case automatic
    /// Inline (type 0) whatever their size: the copy path.
    case inline
    /// In memory never written (``UntouchedMemory``), as the server decides; one process only.
    case untouched
    /// As descriptors read with ucp_get, whatever the lanes (ucx:// only).
    case descriptors
  }

  /// `batches` batches of one int64 column of `rows` rows over `scheme`,
  /// their bodies travelling as `path` says, from a child `dipc serve` or a
  /// server in this process (``Stage``); the client consumes each body as
  /// the stage says.
  static func measure(scheme: String, batches: Int, rows: Int, path: BodyPath = .automatic, stage: Stage) async throws -> BenchMeasurement {
    let registry = path == .descriptors ? stage.forcedGets : stage.registry
    guard let servers = stage.servers, path != .untouched else {
      return try await measureInProcess(scheme: scheme, batches: batches, rows: rows, path: path, registry: registry,
                                        consumer: stage.consumer)
    }
    let options = switch path {
    case .inline: ["--rendezvous-threshold", String(Int.max)]
    case .descriptors: ["--ucx-descriptors", "always"]
    case .automatic, .untouched: [String]()
    }
    let location = try servers.streamLocation(listen: stage.listenURI(scheme), rows: rows, batches: batches, options: options,
                                              environment: stage.environment(scheme))
    return try await receive(from: location, batches: batches, registry: registry, consumer: stage.consumer)
  }

  /// The server of ``measure(scheme:batches:rows:path:stage:)`` in this
  /// process: the same body for every batch, in a ``SharedMemoryBuffer``
  /// over shm:// unless inline.
  static func measureInProcess(scheme: String, batches: Int, rows: Int, path: BodyPath, registry: TransportRegistry,
                               consumer: BenchConsumer) async throws -> BenchMeasurement {
    var builder = RecordBatchBuilder()
    builder.append("v", (0 ..< rows).map { Int64($0) as Int64? })
    let (message, built) = builder.finish()
    let schema = try OutgoingMessage(Message(header: .schema(builder.schema)))
    let body = path == .untouched ? try UntouchedMemory(count: built.count).bytes
      : scheme == "shm" && path != .inline ? try Self.shared(built) : built
    let batch = try OutgoingMessage(message, body: body)
    var catalog = StreamCatalog()
    catalog.add("bench", .messages([schema] + Array(repeating: batch, count: batches)))
    var config = DissociatedServer.Config.defaults
    if path == .inline { config.stream.rendezvousThreshold = .max }
    let server = try await DissociatedServer(listeningAt: Self.localListenURI(scheme), catalog: catalog, registry: registry,
                                             config: config)
    let running = Task { await server.run() }
    defer { running.cancel() }
    let measurement = try await receive(from: server.location(for: "bench"), batches: batches, registry: registry,
                                        consumer: consumer)
    await server.shutdown()
    return measurement
  }

  /// Fetches the stream at `location`, which must hold `batches` record
  /// batches, consuming each body as `consumer` says: the time from the
  /// connect to the last batch, the setup before the first message, and
  /// the steady part after the first tenth of the batches.
  static func receive(from location: Location, batches: Int, registry: TransportRegistry,
                      consumer: BenchConsumer) async throws -> BenchMeasurement {
    let started = ContinuousClock.now
    var firstMessage: ContinuousClock.Instant?
    var warmedUp: (at: ContinuousClock.Instant, bytes: Int)?
    let warmupBatches = (batches + 9) / 10
    var received = 0
    var bytes = 0
    var checksum: UInt64 = 0
    var stream = DissociatedClient(registry: registry).stream(from: location).makeAsyncIterator()
    while let item = try await stream.next() {
      if firstMessage == nil { firstMessage = ContinuousClock.now }
      if case .recordBatch(let batch) = item {
        checksum &+= consumer.consume(batch.body)
        received += 1
        bytes += batch.body.count
        if received == warmupBatches, received < batches { warmedUp = (ContinuousClock.now, bytes) }
      }
    }
    let finished = ContinuousClock.now
    let path = stream.paths.joined(separator: " + ")
    await stream.close()
    withExtendedLifetime(checksum) {}
    guard received == batches, let firstMessage else {
      throw BenchError("\(location.scheme): received \(received) of \(batches) batches")
    }
    return BenchMeasurement(seconds: Units.seconds(finished - started), bytes: bytes, batches: received,
                       setupSeconds: Units.seconds(firstMessage - started),
                       steady: warmedUp.map { (Units.seconds(finished - $0.at), bytes - $0.bytes) }, path: path)
  }

  /// `body` copied once into a ``SharedMemoryBuffer``: what a producer
  /// that writes its batches into shared memory serves over shm:// with no
  /// copy at all.
  static func shared(_ body: ArrowBytes) throws -> ArrowBytes {
    let buffer = try SharedMemoryBuffer(capacity: max(body.count, 1))
    body.copy(to: buffer.mutableBytes.baseAddress!)
    return buffer.freeze(count: body.count)
  }

  /// The median round trip of an 8-byte tagged message over one
  /// connection of `scheme` (1,000 ping-pongs after 100 warm-up ones) to a
  /// `dipc echo` child, or to an echo task in this process; reported as
  /// `seconds` of one round trip.
  static func roundTrip(scheme: String, stage: Stage) async throws -> BenchMeasurement {
    let transport = try stage.registry.transport(forScheme: scheme)
    if let servers = stage.servers {
      let location = try servers.echoLocation(listen: stage.listenURI(scheme), environment: stage.environment(scheme))
      let client = try await transport.connect(to: location)
      do {
        let measurement = try await pingPong(client, scheme: scheme)
        await client.close()
        return measurement
      } catch {
        await client.close()
        throw error
      }
    }
    let listener = try await transport.listen(at: TransportAddress(parsing: Self.localListenURI(scheme)))
    async let accepted = listener.accept()
    let client = try await transport.connect(to: listener.address.location(wantData: 0))
    guard let server = try await accepted else { throw BenchError("\(scheme): the listener closed") }
    let echo = Task { try await Self.echo(on: server) }
    let measurement = try await pingPong(client, scheme: scheme)
    await client.close()
    _ = try? await echo.value
    await listener.close()
    return measurement
  }

  /// 1,100 ping-pongs of an 8-byte tagged message over `client`; the
  /// median of the last 1,000 round trips.
  static func pingPong(_ client: any TransportConnection, scheme: String) async throws -> BenchMeasurement {
    let ping = ArrowBytes(copying: [UInt8](repeating: 7, count: 8))
    var times: [Double] = []
    for index in 0 ..< 1_100 {
      let started = ContinuousClock.now
      try await client.sendTagged(UInt64(index), [ping])
      guard try await client.receiveTagged(matching: 0, mask: 0) != nil else { throw BenchError("\(scheme): echo ended") }
      if index >= 100 { times.append(Units.seconds(ContinuousClock.now - started)) }
    }
    return BenchMeasurement(seconds: times.sorted()[times.count / 2], bytes: 8, batches: 1)
  }

  /// The span of the shm:// ring's first segment, which its copy path
  /// cycles through.
  static let ringSpan = SharedMemoryTransport.Config.defaults.segmentSize

  /// Single-core memcpy of `bytes` in `chunk`-byte copies of one source
  /// (the bench sends one body again and again) into destinations that
  /// cycle through `span` bytes, as a transport's ring or receive buffers
  /// do: 64 MiB measures memory bandwidth; a span the caches hold
  /// measures the cache.
  static func memcpy(bytes: Int, chunk: Int, span: Int) -> BenchMeasurement {
    let slots = max(1, span / chunk)
    let source = UnsafeMutableRawPointer.allocate(byteCount: chunk, alignment: 64)
    let targets = UnsafeMutableRawPointer.allocate(byteCount: slots * chunk, alignment: 64)
    defer {
      source.deallocate()
      targets.deallocate()
    }
    source.initializeMemory(as: UInt8.self, repeating: 1, count: chunk)
    targets.initializeMemory(as: UInt8.self, repeating: 0, count: slots * chunk)  // faulted in before timing
    let copies = max(1, bytes / chunk)
    let started = ContinuousClock.now
    for index in 0 ..< copies {
      source.storeBytes(of: UInt8(truncatingIfNeeded: index), as: UInt8.self)  // each copy moves new bytes
      (targets + (index % slots) * chunk).copyMemory(from: source, byteCount: chunk)
    }
    let elapsed = Units.seconds(ContinuousClock.now - started)
    return BenchMeasurement(seconds: elapsed, bytes: copies * chunk, batches: copies)
  }

  /// iperf3 moving the same bytes with writes of `length` bytes, at most
  /// 1 MiB (iperf3's largest block).
  static func iperf3(bytes: Int, length: Int) throws -> BenchMeasurement {
    let length = min(length, 1 << 20)
    return try withServerProcess(["iperf3", "-s", "-1", "-p"]) { port in
      let output = try runProcess(["iperf3", "-c", "127.0.0.1", "-p", port, "-l", String(length), "-n", String(bytes), "-J"])
      guard let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
            let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
            let seconds = received["seconds"] as? Double, let transferred = received["bytes"] as? Double
      else { throw BenchError("cannot read iperf3's JSON output") }
      return BenchMeasurement(seconds: seconds, bytes: Int(transferred), batches: bytes / length)
    }
  }

  /// UCX's own benchmark over the path ucx:// uses here (UCX_TLS=tcp on
  /// lo): `test` with `length`-byte messages — `tag_bw` or `ucp_get`
  /// (bandwidth), or `tag_lat` (`seconds` = the median round trip, twice
  /// the one-way median it reports).
  static func ucxPerftest(_ test: String, length: Int, iterations: Int, tls: String) throws -> BenchMeasurement {
    let environment = ucxEnvironment(tls: tls).sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
    let bandwidth = test != "tag_lat"
    return try withServerProcess(environment + ["ucx_perftest", "-p"]) { port in
      let arguments = ["-t", test, "-s", String(length)]
      let output = try runProcess(environment + ["ucx_perftest", "127.0.0.1", "-p", port, "-n", String(iterations)] + arguments)
      // "Final: iterations, 50%ile, average, overall overhead (µs), average, overall bandwidth (MB/s), …"
      guard let final = output.split(separator: "\n").last(where: { $0.hasPrefix("Final:") })?.split(separator: " "),
            final.count >= 7, let median = Double(final[2]), let megabytes = Double(final[6])
      else { throw BenchError("cannot read ucx_perftest's output: \(output)") }
      let bytesPerSecond = megabytes * Double(1 << 20)
      return bandwidth
        ? BenchMeasurement(seconds: Double(length * iterations) / bytesPerSecond, bytes: length * iterations, batches: iterations)
        : BenchMeasurement(seconds: 2 * median / 1e6, bytes: 8, batches: 1)
    }
  }

  /// libfabric's own ping-pong (`fi_pingpong -e rdm -m tagged`) over
  /// `provider` on 127.0.0.1 with `length`-byte messages. It reports
  /// `usec/xfer`, the time of one one-way transfer (its MB/sec is both
  /// directions' bytes over both directions' time: the same rate), so a
  /// transfer's one-way rate is `length / usec/xfer`; with `roundTrip`,
  /// `seconds` is one round trip (two transfers).
  static func fiPingpong(provider: String, length: Int, iterations: Int, roundTrip: Bool = false) throws -> BenchMeasurement {
    let common = ["fi_pingpong", "-p", provider == "tcp" ? "tcp" : provider, "-e", "rdm", "-m", "tagged",
                  "-S", String(length), "-I", String(iterations)]
    return try withServerProcess(common + ["-B"]) { port in
      let output = try runProcess(common + ["-P", port, "127.0.0.1"])
      // "bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec", then the figures.
      guard let line = output.split(separator: "\n").last(where: { $0.contains("=") }),
            case let fields = line.split(separator: " ", omittingEmptySubsequences: true), fields.count >= 7,
            let microseconds = Double(fields[6]), microseconds > 0
      else { throw BenchError("cannot read fi_pingpong's output: \(output)") }
      return roundTrip
        ? BenchMeasurement(seconds: 2 * microseconds / 1e6, bytes: length, batches: 1)
        : BenchMeasurement(seconds: Double(iterations) * microseconds / 1e6, bytes: length * iterations, batches: iterations)
    }
  }

  /// Runs `server` plus a random port as a background process while
  /// `body` runs its client against that port. A client that fails is
  /// tried twice more, each time with a fresh server on a fresh port
  /// after half a second: a loaded machine may start the server later
  /// than the 0.3 s allowed, and a port taken meanwhile makes the server
  /// exit at once.
  static func withServerProcess<T>(_ server: [String], _ body: (String) throws -> T) throws -> T {
    var attempt = 1
    while true {
      let port = String(Int.random(in: 20_000 ..< 60_000))
      let process = Process()
      process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
      process.arguments = server + [port]
      process.standardOutput = FileHandle.nullDevice
      process.standardError = FileHandle.nullDevice
      try process.run()
      defer {
        if process.isRunning { process.terminate() }
        process.waitUntilExit()
      }
      Thread.sleep(forTimeInterval: 0.3)
      do {
        return try body(port)
      } catch where attempt < 3 {
        attempt += 1
        Thread.sleep(forTimeInterval: 0.5)
      }
    }
  }

  /// A pyarrow baseline (`script` in ``baselineScripts``: Arrow Flight
  /// DoGet, or a file shared through /dev/shm) moving `batches` batches of
  /// `batchBytes`, its consumer reading every value when ours reads every
  /// byte.
  func python(_ script: String, batches: Int, batchBytes: Int) throws -> BenchMeasurement {
    let output = try Self.runProcess(["python3", "\(baselineScripts)/\(script)", "--batches", String(batches),
                                      "--batch-bytes", String(batchBytes)] + (consumer == .touch ? ["--touch"] : []))
    guard let line = output.split(separator: "\n").last,
          let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
          let seconds = json["seconds"] as? Double, let bytes = json["bytes"] as? Int, let count = json["batches"] as? Int
    else { throw BenchError("cannot read \(script)'s output: \(output)") }
    return BenchMeasurement(seconds: seconds, bytes: bytes, batches: count)
  }

  /// The version of the pyarrow the baselines run, nil without one.
  public static func pyarrowVersion() -> String? {
    (try? runProcess(["python3", "-c", "import pyarrow; print(pyarrow.__version__)"]))?
      .trimmingCharacters(in: .whitespacesAndNewlines)
  }

  /// The standard output of `arguments` run through `env`; throws when it
  /// exits with a failure.
  static func runProcess(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw BenchError("\(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
    }
    return String(decoding: data, as: UTF8.self)
  }

  /// The figures of `results`: a header saying what ran, then one line per
  /// figure with its comparisons.
  func summarize(_ results: [String: [BenchMeasurement]]) -> BenchResults {
    let median = BenchResults.median
    func has(_ name: String) -> Bool { results[name] != nil }
    func values(_ name: String, _ metric: KeyPath<BenchMeasurement, Double>) -> [Double] {
      results[name, default: []].map { $0[keyPath: metric] }
    }
    func rate(_ name: String) -> Double { median(values(name, \.bytesPerSecond)) }
    func batchRate(_ name: String) -> Double { median(values(name, \.batchesPerSecond)) }
    /// `name` against `baseline` (labelled `label`): the median over the
    /// rounds of each round's ratio, `factor` times ours to theirs.
    func ratio(_ name: String, _ baseline: String, _ label: String,
               _ metric: KeyPath<BenchMeasurement, Double> = \.bytesPerSecond, factor: Double = 1) -> String {
      let ratios = zip(values(name, metric), values(baseline, metric)).map { factor * $0 / $1 }
      return String(format: "%.2f× %@", median(ratios), label)
    }
    /// `name` against a ucx_perftest bandwidth case: both after their
    /// warm-up tenth (UCX-BENCH-2).
    func perftestRatio(_ name: String, _ baseline: String, _ label: String) -> String {
      ratio(name, baseline, label, \.steadyBytesPerSecond)
    }
    let gb = { (value: Double) in String(format: "%.2f GB/s", value / 1e9) }
    let header = "dipc bench: \(rounds) rounds, medians (ratios: the median of each round's ratio); bulk = \(Units.bytes(Double(bulkBytes))) in "
      + "\(Units.bytes(Double(batchBytes))) batches (copy = the same bodies inline), tiny = \(tinyBatches) batches of 2 rows, "
      + "latency = round trip of an 8-byte tagged message; "
      + (deployment == .separate ? "servers in child processes (dipc serve, dipc echo)" : "servers in this process")
      + (consumer == .touch ? ", the client reads every byte" : ", the client reads no body")
    var lines: [(String, String, String)] = []
    for scheme in schemes {
      let bulk = "\(scheme) bulk"
      if has(bulk) {
        var bulkRatios: [String] = []
        if has("iperf3 bulk") { bulkRatios.append(ratio(bulk, "iperf3 bulk", "iperf3")) }
        if has("flight bulk") { bulkRatios.append(ratio(bulk, "flight bulk", "Flight")) }
        if has("shared file bulk") { bulkRatios.append(ratio(bulk, "shared file bulk", "shared file")) }
        if scheme != "tcp", has("tcp bulk") { bulkRatios.append(ratio(bulk, "tcp bulk", "tcp://")) }
        if scheme == "ucx", has("ucx_perftest bulk") { bulkRatios.append(perftestRatio(bulk, "ucx_perftest bulk", "ucx_perftest tag_bw")) }
        if scheme == "fabric", has("fi_pingpong bulk") { bulkRatios.append(ratio(bulk, "fi_pingpong bulk", "fi_pingpong one-way")) }
        bulkRatios.append(ratio(bulk, "memcpy", "memcpy"))
        lines.append(("\(scheme):// bulk", gb(rate(bulk)), bulkRatios.joined(separator: ", ")))
      }
      let copy = "\(scheme) copy"
      if has(copy) {
        var copyRatios = [ratio(copy, "memcpy", "memcpy")]
        if scheme == "shm", has("memcpy ring") { copyRatios.append(ratio(copy, "memcpy ring", "memcpy into \(Units.bytes(Double(Self.ringSpan)))")) }
        if scheme == "ucx", has("ucx_perftest bulk") { copyRatios.append(perftestRatio(copy, "ucx_perftest bulk", "ucx_perftest tag_bw")) }
        if scheme == "fabric", has("fi_pingpong bulk") { copyRatios.append(ratio(copy, "fi_pingpong bulk", "fi_pingpong one-way")) }
        lines.append(("\(scheme):// copy", gb(rate(copy)), copyRatios.joined(separator: ", ")))
      }
      let untouched = "\(scheme) untouched"
      if has(untouched) {
        lines.append(("\(scheme):// untouched", gb(rate(untouched)), perftestRatio(untouched, "ucx_perftest bulk", "ucx_perftest tag_bw (like for like)")))
      }
      let get = "\(scheme) get"
      if has(get) {
        lines.append(("\(scheme):// get (type 1)", gb(rate(get)),
                      has("ucx_perftest get") ? perftestRatio(get, "ucx_perftest get", "ucx_perftest ucp_get") : ""))
      }
      let tiny = "\(scheme) tiny"
      var tinyRatios: [String] = []
      if has("flight tiny") { tinyRatios.append(ratio(tiny, "flight tiny", "Flight", \.batchesPerSecond)) }
      if has("shared file tiny") { tinyRatios.append(ratio(tiny, "shared file tiny", "shared file", \.batchesPerSecond)) }
      if scheme == "ucx", has("ucx_perftest tiny") {
        // Two messages per batch against ucx_perftest's message rate.
        tinyRatios.append(ratio(tiny, "ucx_perftest tiny", "ucx_perftest tag_bw 16 B messages", \.batchesPerSecond, factor: 2))
      }
      if scheme == "fabric", has("fi_pingpong tiny") {
        // fi_pingpong has no streaming mode: its message rate is a ping-pong's, a diagnostic.
        tinyRatios.append(ratio(tiny, "fi_pingpong tiny", "fi_pingpong 16 B transfers (ping-pong)", \.batchesPerSecond, factor: 2))
      }
      if has(tiny) {
        let tinyRate = batchRate(tiny)
        lines.append(("\(scheme):// tiny", String(format: "%.0f k batches/s (%.2f µs each)", tinyRate / 1e3, 1e6 / tinyRate),
                      tinyRatios.joined(separator: ", ")))
      }
      if has(bulk) {
        let setup = median(values(bulk, \.setupSeconds))
        lines.append(("\(scheme):// setup", String(format: "%.1f ms", setup * 1e3), "connect and want_data, until the schema"))
      }
      let latency = "\(scheme) latency"
      // The raw round trip under each transport: its own library's, or the kernel socket it rides on.
      let floor = ["ucx": ("ucx_perftest latency", "ucx_perftest tag_lat"), "fabric": ("fi_pingpong latency", "fi_pingpong"),
                   "tcp": ("socket tcp latency", "TCP loopback socket"), "shm": ("socket unix latency", "Unix socket")][scheme]
      if has(latency) {
        let comparison = floor.flatMap { has($0.0) ? ratio(latency, $0.0, $0.1, \.seconds) : nil } ?? ""
        lines.append(("\(scheme):// latency", String(format: "%.1f µs round trip", median(values(latency, \.seconds)) * 1e6), comparison))
      }
    }
    if has("memcpy") { lines.append(("memcpy (one core)", gb(rate("memcpy")), "into 64 MiB")) }
    if has("memcpy ring") { lines.append(("memcpy (one core)", gb(rate("memcpy ring")), "into \(Units.bytes(Double(Self.ringSpan))) (the shm:// ring)")) }
    if has("ucx_perftest bulk") {
      lines.append(("ucx_perftest tag_bw", gb(rate("ucx_perftest bulk")), "UCX_TLS=\(ucxTLS), lo"))
    }
    if has("ucx_perftest get") { lines.append(("ucx_perftest ucp_get", gb(rate("ucx_perftest get")), "UCX_TLS=\(ucxTLS), lo")) }
    if has("ucx_perftest latency") {
      lines.append(("ucx_perftest tag_lat", String(format: "%.1f µs round trip", median(values("ucx_perftest latency", \.seconds)) * 1e6), ""))
    }
    if has("ucx_perftest tiny") {
      lines.append(("ucx_perftest tag_bw", String(format: "%.0f k messages/s", batchRate("ucx_perftest tiny") / 1e3),
                    "16-byte messages, UCX_TLS=\(ucxTLS), lo"))
    }
    if has("fi_pingpong bulk") {
      lines.append(("fi_pingpong one-way", gb(rate("fi_pingpong bulk")), "\(Units.bytes(Double(batchBytes))) transfers, provider \(fabricProvider)"))
    }
    if has("fi_pingpong latency") {
      lines.append(("fi_pingpong", String(format: "%.1f µs round trip", median(values("fi_pingpong latency", \.seconds)) * 1e6),
                    "8-byte transfers, provider \(fabricProvider)"))
    }
    if has("fi_pingpong tiny") {
      lines.append(("fi_pingpong", String(format: "%.0f k transfers/s", batchRate("fi_pingpong tiny") / 1e3), "16-byte ping-pong, provider \(fabricProvider)"))
    }
    if has("iperf3 bulk") { lines.append(("iperf3 bulk", gb(rate("iperf3 bulk")), "")) }
    if has("flight bulk") { lines.append(("Flight DoGet bulk", gb(rate("flight bulk")), "")) }
    if has("flight tiny") { lines.append(("Flight DoGet tiny", String(format: "%.0f k batches/s", batchRate("flight tiny") / 1e3), "")) }
    if has("shared file bulk") { lines.append(("shared file bulk", gb(rate("shared file bulk")), "pyarrow: write to /dev/shm, map and read in another process")) }
    if has("shared file tiny") {
      lines.append(("shared file tiny", String(format: "%.0f k batches/s", batchRate("shared file tiny") / 1e3), "the same with tiny batches"))
    }
    for (name, label) in [("socket tcp latency", "TCP loopback socket"), ("socket unix latency", "Unix socket")] where has(name) {
      lines.append((label, String(format: "%.1f µs round trip", median(values(name, \.seconds)) * 1e6), "8 bytes, two threads, no framework"))
    }
    return BenchResults(measurements: results, header: header,
                        lines: lines.map { BenchResults.Line(figure: $0.0, value: $0.1, comparison: $0.2) })
  }
}

/// A bench that cannot run a case or read a baseline's output.
public struct BenchError: Error, CustomStringConvertible {
  /// What went wrong.
  public var description: String

  init(_ description: String) { self.description = description }
}
