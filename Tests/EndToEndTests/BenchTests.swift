import Foundation
import TestSupport
import Testing

/// `dipc bench` as users run it: the figures it prints exist for every
/// transport and case, with servers in child processes (the default) or
/// in the bench process, and a run leaves no server or stream file behind.
@Suite("dipc bench", .serialized)
struct BenchTests {
  static let schemes = ["tcp", "shm", "ucx", "fabric"].filter(Processes.built)

  @Test("a short bench run prints bulk, tiny, setup and round-trip figures for every transport, then stops its servers and removes its files",
        arguments: ["separate", "one"])
  func shortRun(processes: String) async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-bench-report-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = try await offPool {
      try Processes.run(try Processes.dipc, ["bench", "--transports", Self.schemes.joined(separator: ","), "--rounds", "1",
                                             "--bulk-bytes", String(4 << 20), "--batch-bytes", String(1 << 20),
                                             "--tiny-batches", "200", "--baselines", "", "--processes", processes,
                                             "--report", folder.path, "--sweep", "64K,1M"],
                        environment: ["UCX_TLS": "tcp", "UCX_NET_DEVICES": "lo"])
    }
    #expect(output.contains(processes == "separate" ? "servers in child processes" : "servers in this process"), "\(output)")
    #expect(output.contains("the client reads every byte"), "\(output)")
    for scheme in Self.schemes {
      for (label, unit) in [("bulk", "GB/s"), ("tiny", "k batches/s"), ("setup", "ms"), ("latency", "µs round trip")] {
        let line = output.split(separator: "\n").first { $0.hasPrefix("\(scheme):// \(label) ") }
        let figure = line?.dropFirst(22).split(separator: " ").first.flatMap { Double($0) }
        #expect(line?.contains(unit) == true && (figure ?? 0) > 0, "\(scheme):// \(label): \(line.map(String.init) ?? "missing")")
      }
    }
    let markdown = try String(contentsOf: folder.appendingPathComponent("report.md"), encoding: .utf8)
    let chart = try String(contentsOf: folder.appendingPathComponent("throughput.svg"), encoding: .utf8)
    for scheme in Self.schemes {
      #expect(markdown.contains("| \(scheme) bulk | 1 | "), "\(markdown)")
      #expect(chart.contains(">\(scheme) bulk</text>"), "\(chart)")
    }
    #expect(markdown.contains("Reproduce: `dipc bench --transports"), "\(markdown)")
    let sizes = try String(contentsOf: folder.appendingPathComponent("sizes.svg"), encoding: .utf8)
    #expect(markdown.contains("## Throughput by body size") && markdown.contains("| case | 64.0 KiB | 1.0 MiB |"), "\(markdown)")
    for scheme in Self.schemes { #expect(sizes.contains(">\(scheme) bulk</text>"), "\(sizes)") }
    let left = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix("dipc-bench-") }
    #expect(left.isEmpty, "stream files left: \(left)")
    let servers = try FileManager.default.contentsOfDirectory(atPath: "/proc").compactMap(Int32.init).filter { pid in
      let commandLine = (try? Data(contentsOf: URL(fileURLWithPath: "/proc/\(pid)/cmdline"))) ?? Data()
      return String(decoding: commandLine, as: UTF8.self).contains("/dev/shm/dipc-bench-")
    }
    #expect(servers.isEmpty, "bench servers still running: \(servers)")
  }

  @Test("the pyarrow and raw-socket baselines run beside tcp:// and shm://: Flight, the shared file and the socket round trips, each compared in the transports' lines and charted")
  func pyarrowAndSocketBaselines() async throws {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-bench-report-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    let output = try await offPool {
      try Processes.run(try Processes.dipc, ["bench", "--transports", "tcp,shm", "--rounds", "1", "--bulk-bytes", String(4 << 20),
                                             "--tiny-batches", "200", "--cases", "bulk,tiny,latency",
                                             "--baselines", "flight,shared_file,sockets", "--report", folder.path])
    }
    func line(_ prefix: String) -> String { output.split(separator: "\n").first { $0.hasPrefix(prefix) }.map(String.init) ?? "" }
    for scheme in ["tcp", "shm"] {
      #expect(line("\(scheme):// bulk ").contains("× Flight") && line("\(scheme):// bulk ").contains("× shared file"), "\(output)")
      #expect(line("\(scheme):// tiny ").contains("× Flight") && line("\(scheme):// tiny ").contains("× shared file"), "\(output)")
    }
    #expect(line("tcp:// latency ").contains("× TCP loopback socket"), "\(output)")
    #expect(line("shm:// latency ").contains("× Unix socket"), "\(output)")
    for figure in ["Flight DoGet bulk ", "shared file bulk ", "shared file tiny ", "TCP loopback socket ", "Unix socket "] {
      let value = line(figure).dropFirst(22).split(separator: " ").first.flatMap { Double($0) }
      #expect((value ?? 0) > 0, "\(figure): \(line(figure))")
    }
    let tiny = try String(contentsOf: folder.appendingPathComponent("tiny.svg"), encoding: .utf8)
    let latency = try String(contentsOf: folder.appendingPathComponent("latency.svg"), encoding: .utf8)
    #expect(tiny.contains(">shm tiny</text>") && tiny.contains(">shared file tiny</text>") && tiny.contains(">flight tiny</text>"), "\(tiny)")
    #expect(latency.contains(">tcp latency</text>") && latency.contains(">socket unix latency</text>"), "\(latency)")
    let markdown = try String(contentsOf: folder.appendingPathComponent("report.md"), encoding: .utf8)
    #expect(markdown.contains("![Tiny batches per second](tiny.svg)") && markdown.contains("![Round trip](latency.svg)"), "\(markdown)")
    let left = try FileManager.default.contentsOfDirectory(atPath: "/dev/shm").filter { $0.hasPrefix("dipc-bench-") }
    #expect(left.isEmpty, "files left: \(left)")
  }
}
