import Foundation
import PackagePlugin

/// `swift package benchmark-transports [--quick] [dipc bench options…]`:
/// builds `dipc` in release mode and runs `dipc bench` over every backend
/// built in, beside every baseline, with a sweep of body sizes, writing
/// the report (report.md and its SVG charts) to `Benchmarks/Reports/latest`,
/// the one the README shows. `--quick` runs one short round (under two
/// minutes) into `.build/transport-report` instead, leaving the checked-in
/// report alone. Other options go to `dipc bench` and win over these
/// defaults (`dipc bench --help` lists them). A report written to
/// `Benchmarks/Reports/latest` also replaces the figures table in the
/// README (between its `transport-report` markers).
///
/// Thin on purpose: the harness is the `DissociatedIPCBench` library.
@main
struct TransportBenchPlugin: CommandPlugin {
  func performCommand(context: PluginContext, arguments: [String]) async throws {
    let quick = arguments.contains("--quick")
    let defaults = quick
      ? ["--transports", "all", "--report", ".build/transport-report"]
      : ["--transports", "all", "--rounds", "3", "--bulk-bytes", "536870912", "--sweep", "4K,64K,1M,16M,64M",
         "--report", "Benchmarks/Reports/latest"]
    let build = try packageManager.build(.product("dipc"), parameters: .init(configuration: .release, logging: .concise))
    guard build.succeeded, let dipc = build.builtArtifacts.first(where: { $0.kind == .executable }) else {
      throw PluginFailure("building dipc failed:\n\(build.logText)")
    }
    let process = Process()
    process.executableURL = dipc.url
    process.arguments = ["bench"] + defaults + arguments
    // The baselines' scripts and the report's folder are relative to the package.
    process.currentDirectoryURL = context.package.directoryURL
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw PluginFailure("dipc bench exited \(process.terminationStatus)")
    }
    let all = defaults + arguments
    if let flag = all.lastIndex(of: "--report"), all.index(after: flag) < all.endIndex,
       all[all.index(after: flag)] == Self.checkedInReport {
      try updateReadme(root: context.package.directoryURL)
    }
  }

  /// The report the README shows.
  static let checkedInReport = "Benchmarks/Reports/latest"

  /// Replaces the README's lines between its markers with the figures
  /// table of the checked-in report.
  func updateReadme(root: URL) throws {
    let (begin, end) = ("<!-- transport-report:begin -->", "<!-- transport-report:end -->")
    let report = try String(contentsOf: root.appending(path: "\(Self.checkedInReport)/report.md"), encoding: .utf8)
    let lines = report.components(separatedBy: "\n")
    guard let first = lines.firstIndex(where: { $0.hasPrefix("| figure |") }) else { throw PluginFailure("report.md has no figures table") }
    let table = lines[first...].prefix { $0.hasPrefix("|") }.joined(separator: "\n")
    let readmeURL = root.appending(path: "README.md")
    let readme = try String(contentsOf: readmeURL, encoding: .utf8)
    guard let start = readme.range(of: begin), let stop = readme.range(of: end), start.upperBound <= stop.lowerBound else {
      throw PluginFailure("README.md lacks the \(begin) … \(end) markers")
    }
    let updated = readme[..<start.upperBound] + "\n" + table + "\n" + readme[stop.lowerBound...]
    try updated.write(to: readmeURL, atomically: true, encoding: .utf8)
    print("README.md: figures table updated from \(Self.checkedInReport)/report.md")
  }
}

struct PluginFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
