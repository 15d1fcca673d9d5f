import ArgumentParser
import ArrowIPC
#if Flight
import DissociatedIPCFlight
#endif
import DissociatedIPCTransports
import Foundation
import Logging
import Synchronization

/// `dipc serve`: serve IPC stream files until interrupted.
struct Serve: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Serve Arrow IPC stream files; print their locations; run until interrupted.",
    discussion: """
      Each file is offered under its file name as the ticket. For every file
      one location URI is printed (the combined stream) and, with --split,
      the metadata and data locations of the two-connection topology. SIGINT
      or SIGTERM stops accepting and lets running streams finish for at most
      --shutdown-grace seconds, then ends them; a second signal ends them at
      once. A stream whose client takes nothing for --stall-timeout seconds
      fails and its connection is closed.

      SIGUSR1 prints one stats line to standard error (also every
      --stats-interval seconds): connections and streams, and what the
      transport holds for its clients (shm:// shared segments, ucx://
      exposed bodies and memory registrations).

      Security: servers listen on 127.0.0.1 unless told otherwise, and a
      host of 0.0.0.0, :: or none (tcp://:7000) listens on every interface
      (with a warning): anyone who reaches the port can fetch every file
      served, unless --capabilities makes each printed location the only
      key to its file. With the UCX of Debian bookworm (1.13, built with
      assertions), a peer that sends a ucx:// listener's port anything
      but UCX's own handshake makes UCX abort the whole process: offer
      ucx:// only where every peer that can reach the port is trusted.
      """
  )

  @Argument(help: "Arrow IPC stream files (.arrows).")
  var files: [String]

  @Option(help: "Where to listen (scheme://host:port; port 0 picks a free one).")
  var listen = "tcp://127.0.0.1:0"

  @Flag(help: "Also print the metadata and data locations (two connections per stream).")
  var split = false

  @Flag(help: "Make every printed location a capability: a random want_data per file and role; clients without one are refused (accessDenied). Reference clients with fixed want_data values are refused too.")
  var capabilities = false

  @Option(help: "Bodies of at least this many bytes go as descriptors on transports with remote memory.")
  var rendezvousThreshold = ServerStreamConfig.defaults.rendezvousThreshold

  @Option(help: "Bytes of descriptor bodies a client may hold before the server waits for free_data.")
  var maxOutstandingBytes = ServerStreamConfig.defaults.maxOutstandingBytes

  #if UCX
  @Option(help: "When ucx:// sends large bodies as descriptors read with ucp_get: automatic (where the lanes have native gets), always, never.")
  var ucxDescriptors = UCXTransport.DescriptorBodies.automatic
  #endif

  @Option(help: "Seconds running streams may take to finish after SIGINT or SIGTERM.")
  var shutdownGrace = 10.0

  @Option(help: "Seconds a stream may wait for a client that takes nothing before it fails (0: for ever).")
  var stallTimeout = 60.0

  @Option(help: "Seconds a new connection may take to ask for a stream before it is closed.")
  var initiationTimeout = 10.0

  @Option(help: "Print a stats line to standard error every this many seconds (0: only on SIGUSR1).")
  var statsInterval = 0.0

  #if Flight
  @Option(help: "Also serve Arrow Flight on this address (PORT or HOST:PORT; 127.0.0.1 unless a host is given): ListFlights, GetFlightInfo with this server's locations, GetSchema and DoGet.")
  var flight: String?
  #endif

  @OptionGroup var common: CommonOptions

  func validate() throws {
    guard !files.isEmpty else { throw ValidationError("give at least one stream file") }
    guard shutdownGrace >= 0, stallTimeout >= 0, statsInterval >= 0, initiationTimeout > 0 else {
      throw ValidationError("--shutdown-grace, --stall-timeout and --stats-interval must not be negative, --initiation-timeout must be positive")
    }
    guard rendezvousThreshold > 0, maxOutstandingBytes > 0 else {
      throw ValidationError("--rendezvous-threshold and --max-outstanding-bytes must be positive")
    }
    for file in files where !FileManager.default.isReadableFile(atPath: file) {
      throw ValidationError("cannot read \(file)")
    }
    #if Flight
    if let flight { _ = try Self.flightAddress(flight) }
    #endif
    // A file's name is its ticket: two with one name would hide one.
    let byTicket = Dictionary(grouping: files) { URL(fileURLWithPath: $0).lastPathComponent }
    if let (ticket, clashing) = byTicket.first(where: { $0.value.count > 1 }) {
      throw ValidationError("\(clashing.joined(separator: " and ")) would both be served as '\(ticket)': rename one")
    }
  }

  /// Checks that `path` is a regular file whose stream starts with a
  /// Schema message, so a bad file is refused now, not when a client asks.
  private func checkStreamFile(_ path: String) throws {
    let reader = try IPCFileReader(path: path)
    guard let first = try reader.next() else {
      throw ArrowIPCError(.invalidStream, "\(path): the stream has no schema message")
    }
    var validator = ArrowStreamValidator()
    _ = try validator.accept(first.message, body: first.body)
  }

  func run() async throws {
    // An empty host is every interface for tcp://, 127.0.0.1 for ucx:// (UCX-ADDR-1).
    if let address = try? TransportAddress(parsing: listen),
       ["0.0.0.0", "::", "[::]"].contains(address.host) || (address.host.isEmpty && address.scheme == "tcp") {
      FileHandle.standardError.write(Data("dipc serve: warning: \(listen) listens on every interface: any host that reaches this port can fetch the files served\n".utf8))
    }
    var catalog = StreamCatalog()
    for file in files {
      // Check the file is a stream now, not when a client asks.
      try checkStreamFile(file)
      catalog.add(URL(fileURLWithPath: file).lastPathComponent, .file(path: file))
    }
    var config = DissociatedServer.Config.defaults
    config.logger = common.makeLogger("dipc.serve")
    config.stream.rendezvousThreshold = rendezvousThreshold
    config.stream.maxOutstandingBytes = maxOutstandingBytes
    config.stallTimeout = stallTimeout > 0 ? .seconds(stallTimeout) : nil
    config.access = capabilities ? .capabilities : .open
    config.initiationTimeout = .seconds(initiationTimeout)
    #if UCX
    let registry = TransportRegistry.builtIn(ucxDescriptors: ucxDescriptors)
    #else
    let registry = TransportRegistry.builtIn
    #endif
    let server = try await DissociatedServer(listeningAt: listen, catalog: catalog, registry: registry, config: config)
    #if Flight
    var flightServer: FlightServer?
    if let flight {
      let (host, port) = try Self.flightAddress(flight)
      flightServer = try await FlightServer(service: FlightCatalogService(catalog: catalog) { [server.location(for: $0)] }, host: host, port: port)
    }
    #endif
    // Unbuffered: scripts read the locations while the server runs.
    var lines = ""
    for file in files {
      let ticket = URL(fileURLWithPath: file).lastPathComponent
      lines += "\(ticket)\t\(server.location(for: ticket))\n"
      if split {
        lines += "\(ticket)\tmetadata\t\(server.location(for: ticket, role: .metadata))\n"
        lines += "\(ticket)\tdata\t\(server.location(for: ticket, role: .data))\n"
      }
    }
    #if Flight
    if let flightServer { lines += "flight\t\(flightServer.location)\n" }
    #endif
    // The first signal: streams may finish within the grace period; the
    // next: they end now (DIPC-TEAR-5). Handled before the locations are
    // printed: a signal ignored while the handler is set up would be lost,
    // and whoever read a location may signal at once.
    final class SignalCount: Sendable { let seen = Atomic(0) }
    let signalCount = SignalCount()
    let grace = Duration.seconds(shutdownGrace)
    let signals = Self.onSignals([SIGINT, SIGTERM]) {
      let first = signalCount.seen.add(1, ordering: .relaxed).newValue == 1
      Task { first ? await server.shutdown(gracePeriod: grace) : await server.shutdown(graceful: false) }
    } + Self.onSignals([SIGUSR1]) { Self.printStats(of: server) }
    let periodicStats = statsInterval > 0 ? Task { [statsInterval] in
      while (try? await Task.sleep(for: .seconds(statsInterval))) != nil { Self.printStats(of: server) }
    } : nil
    FileHandle.standardOutput.write(Data(lines.utf8))
    await server.run()
    #if Flight
    flightServer?.shutdown()
    await flightServer?.run()
    #endif
    periodicStats?.cancel()
    signals.forEach { $0.cancel() }
    let counts = server.streamCounts
    config.logger.info("stopped", metadata: ["served": "\(counts.served)", "failed": "\(counts.failed)"])
  }

  #if Flight
  /// The host and port of `--flight`: PORT (on 127.0.0.1) or HOST:PORT
  /// ([HOST]:PORT for IPv6).
  static func flightAddress(_ text: String) throws -> (host: String, port: Int) {
    guard let address = hostAndPort(text.contains(":") ? Substring(text) : "127.0.0.1:\(text)") else {
      throw ValidationError("--flight \(text): give PORT or HOST:PORT")
    }
    return address
  }
  #endif

  /// Writes `dipc serve: stats: …` (``DissociatedServer/Stats``) to
  /// standard error.
  static func printStats(of server: DissociatedServer) {
    FileHandle.standardError.write(Data("dipc serve: stats: \(server.stats)\n".utf8))
  }

  /// Calls `handler` on each of `signals`, which are no longer handled
  /// as by default.
  static func onSignals(_ signals: [Int32], _ handler: @escaping @Sendable () -> Void) -> [any DispatchSourceSignal] {
    signals.map { signalNumber in
      signal(signalNumber, SIG_IGN)
      let source = DispatchSource.makeSignalSource(signal: signalNumber)
      source.setEventHandler(handler: handler)
      // Returns once the source is armed, so no signal sent after this
      // returns is lost.
      let armed = DispatchSemaphore(value: 0)
      source.setRegistrationHandler { armed.signal() }
      source.resume()
      armed.wait()
      return source
    }
  }
}
