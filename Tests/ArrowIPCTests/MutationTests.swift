import Foundation
import FuzzTargets
import TestSupport
import Testing
@testable import ArrowIPC

/// A bounded random-mutation loop: small streams (Swift-built and from the
/// pyarrow corpus) are corrupted and read end to end, with typed access to
/// every readable column. Every outcome must be a value or an
/// ``ArrowIPCError``; a trap or an out-of-bounds read fails the run
/// (scripts/fuzz-asan.sh runs this same loop under the address sanitizer).
///
/// `ARROWIPC_MUTATIONS` sets the number of mutations (default 100,000);
/// `ARROWIPC_MUTATION_SEED` the seed.
@Suite("Random mutations")
struct MutationTests {
  static func seeds() throws -> [[UInt8]] {
    var seeds = [pyarrowInt32Stream, try StreamFormatTests.builtStream(rows: 20).bytes]
    var everyType: [UInt8] = []
    try everyType.write(contentsOf: IPCFraming.encapsulate(metadata: Message(header: .schema(everyTypeSchema)).encode()))
    seeds.append(everyType)
    let folder = try Interop.corpus.get()
    for (name, _) in try Interop.manifest() {
      let bytes = try ArrowBytes(mappingFileAt: folder.appendingPathComponent(name).path)
      // The schema and up to two more messages, when they are small.
      var reader = IPCStreamReader(bytes)
      for _ in 0 ..< 3 where try reader.next() != nil {}
      if reader.position <= 256 << 10 { seeds.append(Array(try bytes.slice(offset: 0, count: reader.position).array)) }
    }
    return seeds
  }

  static func mutate(_ bytes: inout [UInt8], using random: inout SplitMix64) {
    guard !bytes.isEmpty else { return }
    let interesting: [UInt32] = [0, 1, 4, 7, 8, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFF_FFFF, 0x8000_0000, 0xFFFF_FFFF]
    for _ in 0 ..< Int.random(in: 1 ... 3, using: &random) {
      let at = Int.random(in: 0 ..< bytes.count, using: &random)
      switch Int.random(in: 0 ..< 5, using: &random) {
      case 0: bytes[at] ^= 1 << UInt8.random(in: 0 ..< 8, using: &random)
      case 1: bytes[at] = UInt8.random(in: 0 ... 255, using: &random)
      case 2:
        let value = interesting.randomElement(using: &random)!
        for index in 0 ..< 4 where at + index < bytes.count { bytes[at + index] = UInt8(truncatingIfNeeded: value >> (8 * index)) }
      case 3: bytes[at] = bytes[at] &+ UInt8.random(in: 1 ... 4, using: &random)
      default: bytes.removeLast(Int.random(in: 1 ... min(16, bytes.count), using: &random))
      }
      if bytes.isEmpty { return }
    }
  }

  /// Reads `bytes` as a stream and touches every value it can; returns
  /// whether it read to the end without an error.
  static func exercise(_ bytes: [UInt8], checksum: inout Int) -> Bool {
    do throws(ArrowIPCError) {
      try StreamExerciser.read(ArrowBytes(copying: bytes), checksum: &checksum)
      return true
    } catch {
      if ProcessInfo.processInfo.environment["ARROWIPC_MUTATION_DEBUG"] != nil { print("rejected: \(error)") }
      checksum &+= error.code.hashValue & 1
      return false
    }
  }

  @Test("random mutations of valid streams give values or typed errors, never a crash")
  func mutations() throws {
    let environment = ProcessInfo.processInfo.environment
    let count = environment["ARROWIPC_MUTATIONS"].flatMap(Int.init) ?? 100_000
    var random = SplitMix64(seed: environment["ARROWIPC_MUTATION_SEED"].flatMap(UInt64.init) ?? 0xA770_1BC)
    let seeds = try Self.seeds()
    #expect(seeds.count > 50, "the corpus should provide most seeds")
    var checksum = 0
    for seed in seeds { #expect(Self.exercise(seed, checksum: &checksum), "unmutated seeds must read cleanly") }
    // Tensor and sparse tensor messages too: decoded, then refused by the
    // stream rules (so not among the clean seeds above).
    let tensors = try MessageCodecTests.tensorHeaders.map { header in
      IPCFraming.encapsulate(metadata: try Message(header: header, bodyLength: 136).encode()) + [UInt8](repeating: 7, count: 136)
    }
    let all = seeds + tensors
    var failures = 0
    for _ in 0 ..< count {
      var bytes = all.randomElement(using: &random)!
      Self.mutate(&bytes, using: &random)
      if !Self.exercise(bytes, checksum: &checksum) { failures += 1 }
    }
    // Both outcomes must occur, or the loop is not exercising the decoder.
    #expect(failures > count / 20 && failures < count, "\(failures) of \(count) mutations were rejected")
  }
}
