import FuzzTargets
import Glibc

// libFuzzer's entry points. The target is chosen once, from
// DIPC_FUZZ_TARGET (a `FuzzTarget` raw value). With DIPC_FUZZ_SEEDS=FOLDER
// and DIPC_FUZZ_STREAMS=FOLDER (Arrow IPC stream files), the target's seeds
// are written to FOLDER and the process exits.

/// The target this process fuzzes.
nonisolated(unsafe) private var target: FuzzTarget?

@_cdecl("LLVMFuzzerInitialize")
func initialize(_ argc: UnsafeMutablePointer<Int32>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>) -> Int32 {
  let names = FuzzTarget.allCases.map(\.rawValue).joined(separator: ", ")
  guard let name = getenv("DIPC_FUZZ_TARGET").map({ String(cString: $0) }), let chosen = FuzzTarget(rawValue: name) else {
    report("set DIPC_FUZZ_TARGET to one of: \(names)")
    exit(2)
  }
  target = chosen
  if let seeds = getenv("DIPC_FUZZ_SEEDS").map({ String(cString: $0) }) {
    let streams = getenv("DIPC_FUZZ_STREAMS").map { SeedFiles.read(folder: String(cString: $0)) } ?? []
    let written = SeedFiles.write(chosen.seeds(from: streams), to: seeds)
    report("\(written) seeds for \(name) in \(seeds)")
    exit(written > 0 ? 0 : 1)
  }
  return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
func testOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
  target?.run(size > 0 && data != nil ? Array(UnsafeBufferPointer(start: data, count: size)) : [])
  return 0
}

/// Writes `dipc-fuzz: TEXT` to standard error.
private func report(_ text: String) {
  let line = Array("dipc-fuzz: \(text)\n".utf8)
  _ = line.withUnsafeBytes { write(2, $0.baseAddress, $0.count) }
}
