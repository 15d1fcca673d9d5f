import Foundation
import FuzzTargets
import TestSupport
import Testing

/// Every fuzz target runs in the ordinary test suite too: on its seeds, on
/// random inputs, and on every input that once crashed it (kept in
/// `Fuzz/Regressions/TARGET/`). libFuzzer runs them for longer under the
/// address sanitizer (`scripts/fuzz.sh`).
@Suite("Fuzz targets")
struct FuzzTargetTests {
  /// The pyarrow corpus's stream files, as the fuzz script seeds from them.
  static let streams: [[UInt8]] = {
    guard let folder = try? InteropCorpus.folder.get() else { return [] }
    return SeedFiles.read(folder: folder.path)
  }()

  @Test("each target has seeds and returns on every one of them", arguments: FuzzTarget.allCases)
  func seeds(target: FuzzTarget) {
    #expect(Self.streams.count > 50, "the pyarrow corpus should give the stream seeds")
    let seeds = target.seeds(from: Self.streams)
    #expect(!seeds.isEmpty)
    for seed in seeds { target.run(seed) }
  }

  @Test("each target returns on random inputs and on mutated seeds", arguments: FuzzTarget.allCases)
  func randomInputs(target: FuzzTarget) {
    var random = SystemRandomNumberGenerator()
    let seeds = target.seeds(from: Self.streams).filter { $0.count <= 64 << 10 }
    for round in 0 ..< 500 {
      var input: [UInt8]
      if round % 2 == 0 || seeds.isEmpty {
        input = (0 ..< Int.random(in: 0 ... 512, using: &random)).map { _ in UInt8.random(in: 0 ... 255, using: &random) }
      } else {
        input = seeds.randomElement(using: &random)!
        for _ in 0 ..< Int.random(in: 1 ... 4, using: &random) where !input.isEmpty {
          input[Int.random(in: 0 ..< input.count, using: &random)] = UInt8.random(in: 0 ... 255, using: &random)
        }
      }
      target.run(input)
    }
  }

  @Test("every input that once crashed a target returns now", arguments: FuzzTarget.allCases)
  func regressions(target: FuzzTarget) throws {
    let folder = ChildProcess.repositoryRoot.appendingPathComponent("Fuzz/Regressions/\(target.rawValue)")
    let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
    for name in names.sorted() {
      target.run(Array(try Data(contentsOf: folder.appendingPathComponent(name))))
    }
  }
}
