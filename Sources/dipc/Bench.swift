import ArgumentParser
import ArrowIPC
import DissociatedIPCTransports
import Foundation

/// `dipc bench`: transports side by side with the usual baselines, in
/// interleaved rounds, reported as medians and ratios.
struct Bench: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Compare transports with iperf3 and Arrow Flight on this machine (medians of interleaved rounds).",
    discussion: """
      Each round runs every case once, in turn, so a slow phase of a shared
      machine hits all of them alike. Cases:
        bulk   --bulk-bytes in --batch-bytes batches (default 1 GiB in 1 MiB)
        tiny   --tiny-batches batches of 2 rows
      for each --transports scheme (server and client in this process, over
      loopback), and the baselines: iperf3 -l BATCH (bulk), Arrow Flight
      DoGet via pyarrow (bulk and tiny; needs Benchmarks/Baselines/
      flight_baseline.py, run from the repository root).
      """
  )

  @Option(help: "Comma-separated schemes to measure.")
  var transports = "tcp"

  @Option(help: "Rounds (medians are reported).")
  var rounds = 5

  @Option(help: "Total bytes of the bulk case.")
  var bulkBytes = 1 << 30

  @Option(help: "Body bytes per batch in the bulk case.")
  var batchBytes = 1 << 20

  @Option(help: "Batches in the tiny case.")
  var tinyBatches = 10_000

  @Option(help: "Comma-separated baselines: iperf3, flight (empty for none).")
  var baselines = "iperf3,flight"

  @Option(help: "The Flight baseline script.")
  var flightScript = "Benchmarks/Baselines/flight_baseline.py"

  func run() async throws {
    let schemes = transports.split(separator: ",").map(String.init)
    let baselineSet = Set(baselines.split(separator: ",").map(String.init))
    let bulkCount = max(1, bulkBytes / batchBytes)
    var results: [String: [Measurement]] = [:]
    for round in 1 ... rounds {
      FileHandle.standardError.write(Data("round \(round)/\(rounds)\n".utf8))
      for scheme in schemes {
        results["\(scheme) bulk", default: []].append(
          try await Self.measure(scheme: scheme, batches: bulkCount, rows: batchBytes / 8))
        results["\(scheme) tiny", default: []].append(
          try await Self.measure(scheme: scheme, batches: tinyBatches, rows: 2))
      }
      if baselineSet.contains("iperf3") {
        results["iperf3 bulk", default: []].append(try Self.iperf3(bytes: bulkCount * batchBytes, length: batchBytes))
      }
      if baselineSet.contains("flight") {
        results["flight bulk", default: []].append(try flight(batches: bulkCount, batchBytes: batchBytes))
        results["flight tiny", default: []].append(try flight(batches: tinyBatches, batchBytes: 16))
      }
    }
    report(results, schemes: schemes)
  }

  /// One timed transfer.
  struct Measurement {
    var seconds: Double
    var bytes: Int
    var batches: Int
    var bytesPerSecond: Double { Double(bytes) / seconds }
    var batchesPerSecond: Double { Double(batches) / seconds }
  }

  /// A server and a client over `scheme` in this process; `batches`
  /// batches of one int64 column of `rows` rows (the same body each time).
  static func measure(scheme: String, batches: Int, rows: Int) async throws -> Measurement {
    var builder = RecordBatchBuilder()
    builder.append("v", (0 ..< rows).map { Int64($0) as Int64? })
    let (message, body) = builder.finish()
    let schema = try OutgoingMessage(Message(header: .schema(builder.schema)))
    let batch = try OutgoingMessage(message, body: body)
    var catalog = StreamCatalog()
    catalog.add("bench", .messages([schema] + Array(repeating: batch, count: batches)))
    let server = try await DissociatedServer(listeningAt: localListenURI(scheme), catalog: catalog, registry: .builtIn)
    let running = Task { await server.run() }
    defer { running.cancel() }
    let started = ContinuousClock.now
    var received = 0
    var bytes = 0
    for try await item in DissociatedClient(registry: .builtIn).stream(from: server.location(for: "bench")) {
      if case .recordBatch(let batch) = item {
        received += 1
        bytes += batch.body.count
      }
    }
    let elapsed = seconds(ContinuousClock.now - started)
    await server.shutdown()
    guard received == batches else { throw ValidationError("\(scheme): received \(received) of \(batches) batches") }
    return Measurement(seconds: elapsed, bytes: bytes, batches: received)
  }

  /// iperf3 moving the same bytes with writes of `length` bytes.
  static func iperf3(bytes: Int, length: Int) throws -> Measurement {
    let port = String(Int.random(in: 20_000 ..< 60_000))
    let server = Process()
    server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    server.arguments = ["iperf3", "-s", "-1", "-p", port]
    server.standardOutput = FileHandle.nullDevice
    try server.run()
    defer { if server.isRunning { server.terminate() } }
    Thread.sleep(forTimeInterval: 0.3)
    let output = try runProcess(["iperf3", "-c", "127.0.0.1", "-p", port, "-l", String(length), "-n", String(bytes), "-J"])
    guard let json = try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any],
          let end = json["end"] as? [String: Any], let received = end["sum_received"] as? [String: Any],
          let seconds = received["seconds"] as? Double, let transferred = received["bytes"] as? Double
    else { throw ValidationError("cannot read iperf3's JSON output") }
    return Measurement(seconds: seconds, bytes: Int(transferred), batches: bytes / length)
  }

  /// Arrow Flight DoGet through pyarrow.
  func flight(batches: Int, batchBytes: Int) throws -> Measurement {
    let output = try Self.runProcess(["python3", flightScript, "--batches", String(batches), "--batch-bytes", String(batchBytes)])
    guard let line = output.split(separator: "\n").last,
          let json = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
          let seconds = json["seconds"] as? Double, let bytes = json["bytes"] as? Int, let count = json["batches"] as? Int
    else { throw ValidationError("cannot read the Flight baseline's output: \(output)") }
    return Measurement(seconds: seconds, bytes: bytes, batches: count)
  }

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
      throw ValidationError("\(arguments.joined(separator: " ")) exited \(process.terminationStatus)")
    }
    return String(decoding: data, as: UTF8.self)
  }

  func report(_ results: [String: [Measurement]], schemes: [String]) {
    func median(_ values: [Double]) -> Double {
      let sorted = values.sorted()
      return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
    }
    func rate(_ name: String) -> Double { median(results[name, default: []].map(\.bytesPerSecond)) }
    func batchRate(_ name: String) -> Double { median(results[name, default: []].map(\.batchesPerSecond)) }
    let gb = { (value: Double) in String(format: "%.2f GB/s", value / 1e9) }
    let kb = { (value: Double) in String(format: "%.0f k batches/s", value / 1e3) }
    print("dipc bench: \(rounds) rounds, medians; bulk = \(formatBytes(Double(bulkBytes))) in "
      + "\(formatBytes(Double(batchBytes))) batches, tiny = \(tinyBatches) batches of 2 rows")
    var lines: [(String, String, String)] = []
    for scheme in schemes {
      let bulk = rate("\(scheme) bulk")
      let tiny = batchRate("\(scheme) tiny")
      var bulkRatios: [String] = []
      if results["iperf3 bulk"] != nil { bulkRatios.append(String(format: "%.2f× iperf3", bulk / rate("iperf3 bulk"))) }
      if results["flight bulk"] != nil { bulkRatios.append(String(format: "%.2f× Flight", bulk / rate("flight bulk"))) }
      lines.append(("\(scheme):// bulk", gb(bulk), bulkRatios.joined(separator: ", ")))
      lines.append(("\(scheme):// tiny", kb(tiny),
                    results["flight tiny"] != nil ? String(format: "%.2f× Flight", tiny / batchRate("flight tiny")) : ""))
    }
    if results["iperf3 bulk"] != nil { lines.append(("iperf3 bulk", gb(rate("iperf3 bulk")), "")) }
    if results["flight bulk"] != nil {
      lines.append(("Flight DoGet bulk", gb(rate("flight bulk")), ""))
      lines.append(("Flight DoGet tiny", kb(batchRate("flight tiny")), ""))
    }
    for (name, value, ratio) in lines {
      print(name.padding(toLength: 20, withPad: " ", startingAt: 0) + value.padding(toLength: 22, withPad: " ", startingAt: 0) + ratio)
    }
  }
}
