import ArgumentParser
import DissociatedIPCBench
import DissociatedIPCTransports
import Foundation

/// `dipc bench`: transports side by side with the usual baselines, in
/// interleaved rounds, reported as medians and per-round ratios.
struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compare transports with iperf3 and Arrow Flight on this machine (medians of interleaved rounds).",
    discussion: """
      Each round runs every case once, grouped with the baselines it is
      compared with (bulk and copy; get; tiny; latency), every other round
      in reverse order; a ratio is the median over the rounds of each
      round's ratio, so a machine whose speed changes between groups (a
      shared one) moves both sides of a ratio alike. Values are medians. Cases:
        bulk     --bulk-bytes in --batch-bytes batches (default 1 GiB in 1 MiB);
                 bodies go as the server decides by default: as descriptors where
                 the transport has remote memory (over shm:// the body lives in a
                 SharedMemoryBuffer: no copy; ucx:// only where gets are native)
        copy     the same bodies inline (type 0), on transports with remote memory
        untouched  ucx:// with ucx_perftest only: the bulk batches with their bodies
                 in memory never written (all zeros, read from the kernel's zero
                 page), as ucx_perftest tag_bw sends its buffer: the like-for-like
                 comparison with tag_bw (bulk's real data comes from DRAM)
        get      ucx:// only: the same bodies as descriptors (type 1) read with
                 ucp_get, forced (descriptorBodies .always) whatever the lanes
        tiny     --tiny-batches batches of 2 rows (also shown as µs per batch)
        latency  median round trip of an 8-byte tagged message (1,000 of them)
      for each --transports scheme, over loopback. Servers run as child
      processes by default (--processes separate: a dipc serve of a stream
      file written to /dev/shm, whose batches hold distinct values, and a
      dipc echo for round trips; each kept for every round), or in this
      process (--processes one: the same body for every batch, over shm://
      in shared memory). The client is this process, with one set of
      transports for all rounds; it reads every byte of every body once
      (--consumer touch) or none (--consumer none). Bulk, copy and get
      count from the stream's first message to its last (the data phase, as
      ucx_perftest and iperf3 count theirs; the setup before it is shown
      apart); tiny batches count from the connect, as the Flight baseline
      counts its DoGet. Ratios to ucx_perftest's bandwidth compare rates
      after the first tenth of the batches, as ucx_perftest measures after
      a warm-up of a tenth of its iterations. The baselines: single-core
      memcpy of the bulk bytes (one hot source into destinations cycling
      through 64 MiB, beyond the caches; with shm, also through the shm://
      ring's first segment, 8 MiB, which the caches may hold), iperf3 -l
      BATCH (bulk), ucx_perftest tag_bw (BATCH and 16-byte messages: a tiny
      batch is two messages), tag_lat and ucp_get (beside ucx:// get) (when
      ucx is measured), with the same UCX_TLS (--ucx-tls, default tcp) and
      UCX_NET_DEVICES=lo as ucx:// itself, fi_pingpong -e rdm -m tagged
      (BATCH, 16- and 8-byte transfers; its one-way rate is BATCH over its
      usec/xfer) over --fabric-provider when fabric is measured, Arrow
      Flight DoGet via pyarrow (bulk and tiny), "just share a file" (bulk
      and tiny: pyarrow writes the batches to an IPC file in /dev/shm and
      a second process maps it and reads every batch, from the first write
      to the last read), both with a consumer that reads every value when
      ours reads every byte (their scripts are in --baseline-scripts, run
      from the repository root), and raw 8-byte ping-pongs over a TCP
      loopback socket (beside tcp://) and a Unix socket (beside shm://).
      """
  )

  @Option(help: "Comma-separated schemes to measure, or all (every backend built in but the in-process one).")
  var transports = "tcp"

  @Option(help: "Rounds (medians are reported).")
  var rounds = TransportBench.Defaults.rounds

  @Option(help: "Total bytes of the bulk case.")
  var bulkBytes = TransportBench.Defaults.bulkBytes

  @Option(help: "Body bytes per batch in the bulk case.")
  var batchBytes = TransportBench.Defaults.batchBytes

  @Option(help: "Batches in the tiny case.")
  var tinyBatches = TransportBench.Defaults.tinyBatches

  @Option(help: "Comma-separated case groups to run: bulk (with copy), get, tiny, latency.")
  var cases = TransportBench.Defaults.caseGroups.joined(separator: ",")

  @Option(help: "Comma-separated baselines: iperf3, flight, shared_file, sockets, ucx_perftest (with ucx), fi_pingpong (with fabric); empty for none.")
  var baselines = TransportBench.Defaults.baselines.joined(separator: ",")

  @Option(help: "The libfabric provider of fabric:// and fi_pingpong alike: tcp (tcp;ofi_rxm) or shm.")
  var fabricProvider = TransportBench.Defaults.fabricProvider

  #if Fabric
  @Option(help: "fabric:// engine threads: blocking (sleep when idle, the default) or polling (spin, as fi_pingpong does).")
  var fabricProgress = FabricTransport.ProgressMode.blocking
  #endif

  @Option(help: "UCX_TLS for ucx:// and ucx_perftest alike (UCX_NET_DEVICES is lo).")
  var ucxTLS = TransportBench.Defaults.ucxTLS

  #if UCX
  @Option(help: "ucx:// progress threads: blocking (sleep when idle, the default) or polling (spin, as ucx_perftest does; a core per connection).")
  var ucxProgress = UCXTransport.ProgressMode.blocking
  #endif

  @Option(help: "Where the measured servers run: separate (a dipc serve of a stream file in /dev/shm, or a dipc echo, as child processes: as users deploy them) or one (server and client in this process).")
  var processes = BenchDeployment.separate

  @Option(help: "What the client does with each body: touch (reads every byte once, as any consumer does) or none (receives and releases it).")
  var consumer = BenchConsumer.touch

  @Option(help: "Also measure the bulk group at each of these body sizes (e.g. 4K,64K,1M,16M,64M): a table, and a chart with --report.")
  var sweep: String?

  @Flag(help: "A quick run (under two minutes): one round, 64 MiB of bulk, 2,000 tiny batches.")
  var quick = false

  @Option(help: "Also write the report to this folder: report.md (figures, every case's range and path, the machine, the command) and its charts (throughput.svg, tiny.svg, latency.svg, sizes.svg).")
  var report: String?

  @Option(help: "The folder of the pyarrow baselines' scripts.")
  var baselineScripts = "Benchmarks/Baselines"

  func run() async throws {
    var registry = TransportRegistry.builtIn
    var forcedGets = registry
    #if UCX
    let ucxOptions = ["TLS": ucxTLS, "NET_DEVICES": "lo"]
    registry = .builtIn(ucxDescriptors: .automatic, ucxOptions: ucxOptions, ucxProgress: ucxProgress)
    forcedGets = .builtIn(ucxDescriptors: .always, ucxOptions: ucxOptions, ucxProgress: ucxProgress)
    #endif
    #if Fabric
    registry.register(FabricTransport(config: .init(defaultProvider: fabricProvider, progressMode: fabricProgress)))
    #endif
    var bench = TransportBench(registry: registry, forcedGets: forcedGets,
                               serverExecutable: Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0]))
    bench.schemes = transports == "all" ? registry.schemes.filter { $0 != "inproc" } : Self.list(transports)
    bench.rounds = quick ? 1 : rounds
    bench.bulkBytes = quick ? min(bulkBytes, 64 << 20) : bulkBytes
    bench.batchBytes = batchBytes
    bench.tinyBatches = quick ? min(tinyBatches, 2_000) : tinyBatches
    bench.caseGroups = Set(Self.list(cases))
    bench.baselines = Set(Self.list(baselines))
    bench.fabricProvider = fabricProvider
    bench.ucxTLS = ucxTLS
    bench.deployment = processes
    bench.consumer = consumer
    bench.baselineScripts = baselineScripts
    let progress = { (line: String) in FileHandle.standardError.write(Data((line + "\n").utf8)) }
    let sizes = try sweep.map { try Self.list($0).map(Self.size) } ?? []
    let results = try await bench.run(progress: progress)
    let sizeSweep = sizes.isEmpty ? nil : try await bench.sweep(sizes: sizes, progress: progress)
    print(results.report, terminator: "")
    if let sizeSweep { print("\nThroughput by body size (GB/s, medians):\n" + sizeSweep.markdown, terminator: "") }
    if let report { try write(results, sizeSweep, to: report) }
  }

  /// Bytes in `text`: a number with an optional K, M or G (binary) suffix.
  static func size(_ text: String) throws -> Int {
    let units: [Character: Int] = ["K": 1 << 10, "M": 1 << 20, "G": 1 << 30]
    let unit = text.last.flatMap { units[Character($0.uppercased())] }
    guard let number = Int(unit == nil ? text : String(text.dropLast())), number > 0,
          case let (bytes, overflow) = number.multipliedReportingOverflow(by: unit ?? 1), !overflow
    else { throw ValidationError("'\(text)' is not a size (a number with K, M or G)") }
    return bytes
  }

  /// Writes report.md and its charts into `folder` (made if missing):
  /// throughput.svg, tiny.svg and latency.svg for the groups that ran,
  /// and sizes.svg with a size sweep.
  func write(_ results: BenchResults, _ sweep: BenchSweep?, to folder: String) throws {
    try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
    let save = { (text: String, file: String) in
      try Data(text.utf8).write(to: URL(fileURLWithPath: folder).appendingPathComponent(file))
    }
    let command = (["dipc"] + CommandLine.arguments.dropFirst().map { $0.contains(" ") || $0.isEmpty ? "'\($0)'" : $0 })
      .joined(separator: " ")
    let charts = [(results.throughputChart, "throughput.svg", "Bulk throughput"),
                  (results.tinyChart, "tiny.svg", "Tiny batches per second"),
                  (results.latencyChart, "latency.svg", "Round trip")]
      .filter { $0.0.contains("<rect") }
    for (svg, file, _) in charts { try save(svg, file) }
    var markdown = results.markdown(machine: machine(), command: command, charts: charts.map { (file: $0.1, caption: $0.2) })
    if let sweep {
      markdown += "\n## Throughput by body size\n\n![Throughput by body size](sizes.svg)\n\nMedians, GB/s.\n\n" + sweep.markdown
      try save(sweep.chart, "sizes.svg")
    }
    try save(markdown, "report.md")
  }

  /// What the report says of the machine and the run's settings: cores,
  /// kernel, the native libraries' versions and the lanes and provider
  /// used, pyarrow's version.
  func machine() -> [String] {
    var system = utsname()
    uname(&system)
    let kernel = withUnsafeBytes(of: system.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
    var lines = ["\(ProcessInfo.processInfo.activeProcessorCount) cores, \(Units.bytes(Double(ProcessInfo.processInfo.physicalMemory))) of memory, Linux \(kernel)"]
    #if UCX
    lines.append("UCX \(UCXTransport.libraryVersion); ucx:// and ucx_perftest with UCX_TLS=\(ucxTLS), UCX_NET_DEVICES=lo")
    #endif
    #if Fabric
    lines.append("libfabric \(FabricTransport.libraryVersion) (providers: \(FabricTransport.availableProviders.joined(separator: ", "))); "
      + "fabric:// and fi_pingpong over \(fabricProvider)")
    #endif
    if let pyarrow = TransportBench.pyarrowVersion() { lines.append("pyarrow \(pyarrow) (Flight and the shared file)") }
    return lines
  }

  /// The items of a comma-separated option.
  static func list(_ option: String) -> [String] { option.split(separator: ",").map(String.init) }
}
