import ArgumentParser
import ArrowIPC
import DissociatedIPCBench
#if Flight
import DissociatedIPCFlight
#endif
import DissociatedIPCTransports
import Foundation
import Logging

/// `dipc fetch URI`: receive a stream and write it as an IPC stream.
struct Fetch: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Fetch a stream by location URI and write it as an Arrow IPC stream.",
    discussion: """
      The output is an Arrow IPC stream file that pyarrow reads
      (pyarrow.ipc.open_stream). The ticket comes from --ticket or the URI's
      `ticket` parameter. On a terminal, progress (batches, bytes, rate) is
      shown on standard error.

      A grpc://HOST:PORT URI (or grpc+tcp://) asks that Arrow Flight service
      for the stream named --ticket (a path of one element; --command sends
      it as a command instead), reads it from the first location of its
      FlightInfo that this dipc has a transport for and that answers, and
      falls back to Flight DoGet; the summary says which path ran and why
      the others were passed over.
      """
  )

  @Argument(help: "The location URI (the metadata location with --data).")
  var location: String

  @Option(help: "The data location, for streams served by separate metadata and data servers.")
  var data: String?

  @Option(help: "The ticket, when the URI carries none; with a grpc:// URI, the stream's name.")
  var ticket: String?

  @Flag(help: "With a grpc:// URI: name the stream by a Flight command (its bytes: --ticket) instead of a path.")
  var command = false

  @Option(name: .shortAndLong, help: "Output file, or - for standard output. A file is written under a temporary name beside it and renamed once the whole stream arrived: a failed fetch leaves an existing file as it was.")
  var out = "-"

  @Option(help: "Seconds the stream may go without anything arriving before the fetch fails (timedOut); 0: wait for ever.")
  var idleTimeout = 30.0

  @Option(help: "Descriptor bodies (read from the server's memory) fetched at once.")
  var fetchesInFlight = DissociatedClient.Config.defaults.maxFetchesInFlight

  @OptionGroup var common: CommonOptions

  func validate() throws {
    guard idleTimeout >= 0 else { throw ValidationError("--idle-timeout must not be negative") }
    guard fetchesInFlight > 0 else { throw ValidationError("--fetches-in-flight must be positive") }
  }

  func run() async throws {
    let flightService = Self.flightService(location)
    let metadataLocation = flightService == nil ? try Location(parsing: location) : nil
    let dataLocation = try data.map { try Location(parsing: $0) }
    // A file goes to a temporary file beside it, renamed over it only when
    // complete; standard output, a device or a pipe is written directly.
    var info = stat()
    let isSpecial = out != "-" && stat(out, &info) == 0 && info.st_mode & S_IFMT != S_IFREG
    let partial = out == "-" || isSpecial ? nil : out + ".partial-\(getpid())"
    let descriptor: Int32
    if let partial {
      descriptor = open(partial, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0o644)
    } else {
      descriptor = out == "-" ? STDOUT_FILENO : open(out, O_WRONLY | O_CLOEXEC)
    }
    guard descriptor >= 0 else { throw ValidationError("cannot create \(partial ?? out): \(String(cString: strerror(errno)))") }
    var complete = false
    defer {
      if descriptor != STDOUT_FILENO { close(descriptor) }
      if let partial, !complete { unlink(partial) }
    }

    var config = DissociatedClient.Config.defaults
    config.idleTimeout = idleTimeout > 0 ? .seconds(idleTimeout) : nil
    config.maxFetchesInFlight = fetchesInFlight
    let output = StreamOutput(descriptor: descriptor, progress: Progress(enabled: isatty(STDERR_FILENO) != 0))
    let logger = common.makeLogger("dipc.fetch")
    let paths: [String]
    let finished: ContinuousClock.Instant
    if let metadataLocation {
      let client = DissociatedClient(registry: .builtIn, config: config)
      let stream = client.stream(from: metadataLocation, ticket: ticket.map { Array($0.utf8) }, dataLocation: dataLocation)
      var iterator = stream.makeAsyncIterator()
      while let item = try await iterator.next() {
        if output.progress.firstItem == nil {
          // Which transport path really ran (logs at info; the summary says it too).
          for path in iterator.paths { logger.info("connected", metadata: ["path": "\(path)"]) }
        }
        try output.write(item)
      }
      try output.finish()
      (paths, finished) = (iterator.paths, ContinuousClock.now)
      // The server hears the goodbye now, not after its peer timeout.
      await iterator.close()
    } else {
      #if Flight
      guard let (host, port) = flightService, let ticket else {
        throw ValidationError("a grpc:// URI needs --ticket, the stream's name")
      }
      let fetcher = FlightFetcher(registry: .builtIn, clientConfig: config)
      let report = try await fetcher.fetch(host: host, port: port, name: command ? .command(Array(ticket.utf8)) : .path(ticket)) {
        try output.write($0)
      }
      try output.finish()
      finished = ContinuousClock.now
      paths = [report.description]
      #else
      throw ValidationError("this dipc was built without the Flight trait: it cannot read grpc:// URIs")
      #endif
    }
    if let partial {
      guard fsync(descriptor) == 0, rename(partial, out) == 0 else {
        throw ValidationError("cannot write \(out): \(String(cString: strerror(errno)))")
      }
      complete = true
    }
    output.progress.finish()
    FileHandle.standardError.write(Data((output.progress.summary(paths: paths, end: finished) + "\n").utf8))
  }

  /// The host and port of a Flight service URI (`grpc://HOST:PORT`,
  /// `grpc+tcp://…`, `[v6]` hosts), nil for any other URI.
  static func flightService(_ uri: String) -> (host: String, port: Int)? {
    guard let range = uri.range(of: "://"), ["grpc", "grpc+tcp"].contains(uri[..<range.lowerBound].lowercased()) else { return nil }
    guard let address = hostAndPort(uri[range.upperBound...].prefix { $0 != "/" && $0 != "?" }), address.port > 0 else { return nil }
    return address
  }
}

/// Where `dipc fetch` writes what arrives, in order, as an IPC stream, with
/// its progress. Items come one at a time (from the client's loop or the
/// Flight fetcher's callback), never concurrently.
final class StreamOutput: @unchecked Sendable {
  private var writer: IPCStreamWriter<FileDescriptorSink>
  var progress: Progress

  init(descriptor: Int32, progress: Progress) {
    writer = IPCStreamWriter(sink: FileDescriptorSink(descriptor: descriptor))
    self.progress = progress
  }

  /// Writes `item`; the first marks the end of the stream's setup.
  func write(_ item: ReceivedItem) throws {
    if progress.firstItem == nil { progress.firstItem = .now }
    switch item {
    case .schema(let schema): try writer.write(Message(header: .schema(schema)))
    case .dictionary(let dictionary): try writer.write(dictionary.values.message, body: dictionary.values.body)
    case .recordBatch(let batch):
      try writer.write(batch.message, body: batch.body)
      progress.add(batch: batch.body.count)
    }
  }

  /// Writes the end-of-stream marker.
  func finish() throws { try writer.finish() }
}

/// Progress on a terminal (batches, bytes and rate, redrawn at most 10
/// times a second) and the summary every fetch prints on standard error.
struct Progress {
  let enabled: Bool
  let started = ContinuousClock.now
  /// When the first item (the schema) arrived: the stream was set up.
  var firstItem: ContinuousClock.Instant?
  var lastDrawn = ContinuousClock.now
  var batches = 0
  var bytes = 0

  mutating func add(batch bodyBytes: Int) {
    batches += 1
    bytes += bodyBytes
    guard enabled, ContinuousClock.now - lastDrawn > .milliseconds(100) else { return }
    lastDrawn = ContinuousClock.now
    let elapsed = max(Units.seconds(ContinuousClock.now - started), 1e-9)
    let line = "\(batches) batches, \(Units.bytes(Double(bytes))), \(Units.bytes(Double(bytes) / elapsed))/s"
    FileHandle.standardError.write(Data(("\r\u{1B}[K" + line).utf8))
  }

  /// Clears the progress line.
  func finish() { if enabled { FileHandle.standardError.write(Data("\r\u{1B}[K".utf8)) } }

  /// `dipc fetch: N record batches, X of bodies in T s (R/s) after S s of
  /// setup; path: …` — the rate counts from the schema to the last batch,
  /// the setup from the start to the schema (connecting, the transport's
  /// own start-up); one path per connection, metadata first. `end`: when
  /// the last item was written.
  func summary(paths: [String], end: ContinuousClock.Instant) -> String {
    let first = firstItem ?? end
    let transfer = max(Units.seconds(end - first), 1e-9)
    let labelled = paths.count == 2 ? ["metadata: " + paths[0], "data: " + paths[1]] : paths
    return "dipc fetch: \(batches) record batches, \(Units.bytes(Double(bytes))) of bodies in "
      + String(format: "%.3f s (%@/s) after %.3f s of setup", transfer, Units.bytes(Double(bytes) / transfer), Units.seconds(first - started))
      + "; path: " + (labelled.isEmpty ? "none" : labelled.joined(separator: "; "))
  }
}
