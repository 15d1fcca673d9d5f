import Foundation
import PackagePlugin

/// `swift package benchmark-transports [--quick] [dipc bench options…]`:
/// builds `dipc` in release mode and runs `dipc bench` over every backend
/// built in, beside every baseline, with a sweep of body sizes, writing
/// the report (report.md and its SVG charts) to `Benchmarks/Reports/latest`,
/// the one the README shows. `--quick` runs one short round (under two
/// minutes) into `.build/transport-report` instead, leaving the checked-in
/// report alone. Other options go to `dipc bench` and win over these
/// defaults (`dipc bench --help` lists them).
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
  }
}

struct PluginFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
