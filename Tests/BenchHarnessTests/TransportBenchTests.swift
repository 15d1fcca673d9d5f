import ArrowIPC
@testable import DissociatedIPCBench
import DissociatedIPCTransports
import Foundation
import Testing

/// The harness behind `dipc bench`, as a library: its report's arithmetic,
/// its consumer, and a short run with the servers in this process (the
/// end-to-end tests run `dipc bench` with child servers).
@Suite("Transport bench harness")
struct TransportBenchTests {
  static func bench() -> TransportBench {
    TransportBench(registry: .builtIn, forcedGets: .builtIn, serverExecutable: URL(fileURLWithPath: "/nonexistent"))
  }

  @Test("the report gives each figure as the median of the rounds and each ratio as the median of the rounds' ratios")
  func reportArithmetic() {
    var bench = Self.bench()
    bench.schemes = ["tcp"]
    bench.rounds = 3
    // tcp:// at 1, 2 and 4 GB/s; iperf3 at 2, 2 and 2: ratios 0.5, 1, 2.
    let tcp = [1.0, 2.0, 4.0].map { BenchMeasurement(seconds: 1 / $0, bytes: 1_000_000_000, batches: 1000) }
    let iperf3 = [BenchMeasurement](repeating: BenchMeasurement(seconds: 0.5, bytes: 1_000_000_000, batches: 1000), count: 3)
    let memcpy = [BenchMeasurement](repeating: BenchMeasurement(seconds: 0.125, bytes: 1_000_000_000, batches: 1000), count: 3)
    let report = bench.summarize(["tcp bulk": tcp, "iperf3 bulk": iperf3, "memcpy": memcpy]).report
    let line = report.split(separator: "\n").first { $0.hasPrefix("tcp:// bulk") }.map(String.init) ?? ""
    #expect(line.contains("2.00 GB/s"), "\(report)")
    #expect(line.contains("1.00× iperf3"), "\(report)")
    #expect(line.contains("0.25× memcpy"), "\(report)")
    #expect(report.contains("iperf3 bulk") && report.contains("2.00 GB/s"), "\(report)")
  }

  @Test("the Markdown report lists every figure and every case with its rounds, range and path; each chart has a bar per case of its group")
  func markdownAndChart() {
    var bench = Self.bench()
    bench.schemes = ["tcp"]
    bench.rounds = 2
    let tcp = [1.0, 3.0].map { BenchMeasurement(seconds: 1 / $0, bytes: 1_000_000_000, batches: 1000, path: "tcp to 127.0.0.1:1") }
    let latency = [20e-6, 40e-6].map { BenchMeasurement(seconds: $0, bytes: 8, batches: 1) }
    let socket = [10e-6, 10e-6].map { BenchMeasurement(seconds: $0, bytes: 8, batches: 1) }
    let tiny = [2.0, 4.0].map { BenchMeasurement(seconds: $0 / 1000, bytes: 0, batches: 1000) }
    let results = bench.summarize(["tcp bulk": tcp, "tcp latency": latency, "socket tcp latency": socket, "tcp tiny": tiny])
    let markdown = results.markdown(machine: ["2 cores"], command: "dipc bench --rounds 2",
                                    charts: [("throughput.svg", "Bulk throughput"), ("latency.svg", "Round trip")])
    #expect(markdown.contains("- 2 cores\n"))
    #expect(markdown.contains("Reproduce: `dipc bench --rounds 2`"))
    #expect(markdown.contains("![Bulk throughput](throughput.svg)\n\n![Round trip](latency.svg)"))
    // The round trip against the raw socket under it: 2× and 4× in the two rounds.
    #expect(markdown.contains("| tcp:// latency | 40.0 µs round trip | 4.00× TCP loopback socket |"), "\(markdown)")
    #expect(markdown.contains("| TCP loopback socket | 10.0 µs round trip |"), "\(markdown)")
    #expect(markdown.contains("| tcp:// bulk | 3.00 GB/s |"), "\(markdown)")
    #expect(markdown.contains("| tcp bulk | 2 | 3.00 GB/s | 1.00–3.00 | tcp to 127.0.0.1:1 |"), "\(markdown)")
    #expect(markdown.contains("| tcp latency | 2 | 40.0 µs | 20.0–40.0 |  |"), "\(markdown)")
    let chart = results.throughputChart
    #expect(chart.hasPrefix("<svg") && chart.hasSuffix("</svg>\n"))
    #expect(chart.components(separatedBy: "<rect").count - 1 == 1, "\(chart)")
    #expect(chart.contains(">tcp bulk</text>") && chart.contains(">3.00</text>"), "\(chart)")
    let latencyChart = results.latencyChart
    #expect(latencyChart.components(separatedBy: "<rect").count - 1 == 2, "\(latencyChart)")
    // Transports first, in blue; the socket after, in grey; medians in µs.
    #expect(latencyChart.range(of: ">tcp latency</text>")!.lowerBound < latencyChart.range(of: ">socket tcp latency</text>")!.lowerBound)
    #expect(latencyChart.contains(">40</text>") && latencyChart.contains("fill=\"#999999\""), "\(latencyChart)")
    let tinyChart = results.tinyChart
    #expect(tinyChart.components(separatedBy: "<rect").count - 1 == 1 && tinyChart.contains(">500</text>"), "\(tinyChart)")
  }

  @Test("the raw socket ping-pongs measure a round trip over TCP loopback and a Unix socket, and close both sockets")
  func socketPingPong() async throws {
    /// What descriptor `fd` of this process is, nil when it is closed.
    func target(_ fd: Int32) -> String? { try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)") }
    for kind in [SocketPingPong.Kind.tcpLoopback, .unixStream] {
      let (near, far) = try SocketPingPong.connectedPair(kind)
      let sockets = [(near, target(near)), (far, target(far))]
      #expect(sockets.allSatisfy { $0.1?.hasPrefix("socket:") == true }, "\(sockets)")
      let measurement = try SocketPingPong.pingPong(near: near, far: far, label: kind.rawValue)
      #expect(measurement.seconds > 0 && measurement.seconds < 1, "\(kind): \(measurement.seconds)")
      // The echo thread closes its end once it sees ours closed: wait for
      // it (a descriptor number other tests reuse names another socket).
      let deadline = ContinuousClock.now + .seconds(30)
      while sockets.contains(where: { target($0.0) == $0.1 }), ContinuousClock.now < deadline {
        try await Task.sleep(for: .milliseconds(10))
      }
      #expect(!sockets.contains { target($0.0) == $0.1 }, "\(kind): a socket is still open")
    }
  }

  @Test("a size sweep tables and charts the cases measured at every size, transports before baselines")
  func sweepTableAndChart() {
    func runs(_ gigabytesPerSecond: Double) -> [BenchMeasurement] {
      [BenchMeasurement(seconds: 1 / gigabytesPerSecond, bytes: 1_000_000_000, batches: 100)]
    }
    let sweep = BenchSweep(sizes: [65536, 1 << 20], measurements: [
      65536: ["tcp bulk": runs(1), "memcpy": runs(10), "tcp latency": runs(1)],
      1 << 20: ["tcp bulk": runs(2), "memcpy": runs(12), "shm bulk": runs(3)],
    ])
    #expect(sweep.cases == ["tcp bulk", "memcpy"])
    #expect(sweep.markdown == "| case | 64.0 KiB | 1.0 MiB |\n|---|---|---|\n| tcp bulk | 1.00 | 2.00 |\n| memcpy | 10.00 | 12.00 |\n")
    let chart = sweep.chart
    #expect(chart.components(separatedBy: "<polyline").count - 1 == 2, "\(chart)")
    #expect(chart.contains(">tcp bulk</text>") && chart.contains(">memcpy</text>") && chart.contains(">1.0 MiB</text>"), "\(chart)")
  }

  @Test("the touching consumer reads every byte, the tail past the last whole word included; the other reads none")
  func consumer() {
    let bytes: [UInt8] = (0 ..< 21).map { UInt8($0) }
    let body = ArrowBytes(copying: bytes)
    var expected: UInt64 = 0
    for word in 0 ..< 2 {
      var value: UInt64 = 0
      for index in 0 ..< 8 { value |= UInt64(bytes[word * 8 + index]) << (8 * index) }
      expected &+= value
    }
    for byte in bytes[16...] { expected &+= UInt64(byte) }
    #expect(BenchConsumer.touch.consume(body) == expected)
    #expect(BenchConsumer.none.consume(body) == 0)
  }

  @Test("a short run with the servers in this process measures every batch of every case over tcp:// and shm://")
  func shortRunInProcess() async throws {
    var bench = Self.bench()
    bench.schemes = ["tcp", "shm"]
    bench.rounds = 2
    bench.bulkBytes = 4 << 20
    bench.batchBytes = 1 << 20
    bench.tinyBatches = 100
    bench.baselines = []
    bench.deployment = .one
    var rounds: [String] = []
    let results = try await bench.run { rounds.append($0) }
    #expect(rounds == ["round 1/2", "round 2/2"])
    for scheme in ["tcp", "shm"] {
      #expect(results.measurements["\(scheme) bulk"]?.map(\.bytes) == [4 << 20, 4 << 20])
      #expect(results.measurements["\(scheme) tiny"]?.map(\.batches) == [100, 100])
      #expect(results.measurements["\(scheme) latency"]?.count == 2)
      #expect(results.measurements["\(scheme) latency"]?.allSatisfy { $0.seconds > 0 } == true)
    }
    #expect(results.measurements["shm copy"]?.map(\.bytes) == [4 << 20, 4 << 20])
    #expect(results.report.contains("servers in this process"))
  }
}
