public import ArrowIPC
import DissociatedIPCTransports
import Foundation

/// Where `dipc bench` runs the servers it measures.
public enum BenchDeployment: String, CaseIterable, Sendable {
  /// A `dipc serve` (or `dipc echo`) child process per server, as users
  /// deploy them; the client is the bench process.
  case separate
  /// Server and client in the bench process.
  case one
}

/// What the bench's client does with each body it receives.
public enum BenchConsumer: String, CaseIterable, Sendable {
  /// Reads every byte of the body once (a sum of its 64-bit words), as
  /// any consumer of the data does.
  case touch
  /// Receives and releases the batch without reading its body.
  case none

  /// Consumes `body`: returns a sum of its words under `.touch`, so that
  /// the compiler cannot drop the reads; 0 under `.none`.
  public func consume(_ body: ArrowBytes) -> UInt64 {
    guard self == .touch else { return 0 }
    return body.withUnsafeBytes { raw in
      var sum: UInt64 = 0
      let words = raw.count / 8
      if let base = raw.baseAddress, words > 0 {
        let typed = UnsafeBufferPointer(start: base.assumingMemoryBound(to: UInt64.self), count: words)
        for word in typed { sum &+= word }
      }
      for byte in raw[(words * 8)...] { sum &+= UInt64(byte) }
      return sum
    }
  }
}

/// The child processes and stream files of a `dipc bench` run: one server
/// per stream shape and settings, started when first needed and kept for
/// every round (as a long-running server keeps its buffers warm), all
/// stopped and the files removed by ``stopAll()``.
final class BenchServers: @unchecked Sendable {  // used by one case at a time
  /// A server for bench streams or echoes.
  struct Key: Hashable {
    var listen: String
    var rows: Int
    var batches: Int
    var options: [String]
    var environment: [String: String]
  }

  private let executable: URL
  private let folder: String
  private var servers: [Key: (process: Process, location: String)] = [:]
  private var files: [String: String] = [:]

  /// Servers run `executable` (this `dipc`); stream files go to `folder`
  /// (tmpfs, so that the server reads them at memory speed).
  init(executable: URL, folder: String = "/dev/shm") {
    self.executable = executable
    self.folder = folder
  }

  /// The location of a `dipc serve` of `batches` batches of one int64
  /// column of `rows` rows (distinct values, written once per shape),
  /// listening at `listen` with `options` and `environment` added.
  func streamLocation(listen: String, rows: Int, batches: Int, options: [String] = [],
                      environment: [String: String] = [:]) throws -> Location {
    let key = Key(listen: listen, rows: rows, batches: batches, options: options, environment: environment)
    return try location(of: key) { ["serve", try streamFile(rows: rows, batches: batches), "--listen", listen] + options }
  }

  /// The location of a `dipc echo` listening at `listen`.
  func echoLocation(listen: String, environment: [String: String] = [:]) throws -> Location {
    let key = Key(listen: listen, rows: 0, batches: 0, options: ["echo"], environment: environment)
    return try location(of: key) { ["echo", "--listen", listen] }
  }

  /// The location of the server of `key`, started as `dipc ARGUMENTS` with
  /// its environment when none runs yet.
  private func location(of key: Key, arguments: () throws -> [String]) throws -> Location {
    if let running = servers[key] { return try Location(parsing: running.location) }
    let server = try start(try arguments(), environment: key.environment)
    servers[key] = server
    return try Location(parsing: server.location)
  }

  /// Stops every server (SIGINT, then waits) and removes the stream files.
  func stopAll() {
    for (process, _) in servers.values where process.isRunning { process.interrupt() }
    for (process, _) in servers.values { process.waitUntilExit() }
    servers = [:]
    for file in files.values { try? FileManager.default.removeItem(atPath: file) }
    files = [:]
  }

  /// Starts `dipc ARGUMENTS` and reads the location it prints: the last
  /// tab-separated field of its first line.
  private func start(_ arguments: [String], environment: [String: String]) throws -> (process: Process, location: String) {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
    let output = Pipe()
    process.standardOutput = output
    try process.run()
    var text = ""
    while !text.contains("\n") {
      let data = output.fileHandleForReading.availableData
      if data.isEmpty { break }
      text += String(decoding: data, as: UTF8.self)
    }
    guard let line = text.split(separator: "\n").first, let location = line.split(separator: "\t").last else {
      if process.isRunning { process.interrupt() }
      process.waitUntilExit()
      throw BenchError("dipc \(arguments.joined(separator: " ")) printed no location")
    }
    return (process, String(location))
  }

  /// The stream file of `batches` batches of `rows` int64 rows, written on
  /// first use: batch b holds b·rows … (b+1)·rows − 1, so no page of it is
  /// the same as another.
  private func streamFile(rows: Int, batches: Int) throws -> String {
    let name = "dipc-bench-\(getpid())-\(rows)x\(batches).arrows"
    if let file = files[name] { return file }
    let path = "\(folder)/\(name)"
    let descriptor = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
    guard descriptor >= 0 else { throw BenchError("cannot create \(path): errno \(errno)") }
    defer { close(descriptor) }
    files[name] = path
    var writer = IPCStreamWriter(sink: FileDescriptorSink(descriptor: descriptor))
    var values = [Int64?](repeating: nil, count: rows)
    for batch in 0 ..< batches {
      for row in 0 ..< rows { values[row] = Int64(batch) * Int64(rows) + Int64(row) }
      var builder = RecordBatchBuilder()
      builder.append("v", values)
      if batch == 0 { try writer.write(Message(header: .schema(builder.schema))) }
      let (message, body) = builder.finish()
      try writer.write(message, body: body)
    }
    try writer.finish()
    return path
  }
}
