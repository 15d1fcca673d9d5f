import Foundation
import TestSupport
@testable import ArrowIPC

/// Runs the pyarrow scripts in Tests/Interop and finds the corpus they write.
///
/// The corpus is generated once per corpus version into
/// `.build/interop-corpus` (the generator returns at once when it is
/// current). pyarrow must be installed (scripts/setup.sh does it); a missing
/// pyarrow fails the tests rather than skipping them.
enum Interop {
  /// The repository root.
  static let root = ChildProcess.repositoryRoot

  static let scripts = root.appendingPathComponent("Tests/Interop")

  /// A scratch folder for files the tests write, removed by the caller.
  static func scratchFolder(_ name: String) throws -> URL {
    let url = root.appendingPathComponent(".build/interop-scratch/\(name)-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
  }

  /// The corpus folder, generated on first use.
  static var corpus: Result<URL, any Error> { InteropCorpus.folder }

  /// The corpus files by name, with the pyarrow content hash recorded when
  /// each was written.
  static func manifest() throws -> [(name: String, hash: String)] {
    let folder = try corpus.get()
    let data = try Data(contentsOf: folder.appendingPathComponent("manifest.json"))
    let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
    guard let files = json?["files"] as? [[String: Any]] else {
      throw InteropFailure("manifest.json has no files list")
    }
    return try files.map { entry in
      guard let name = entry["name"] as? String, let hash = entry["hash"] as? String else {
        throw InteropFailure("manifest entry without name or hash: \(entry)")
      }
      return (name, hash)
    }
  }

  /// Runs `python3 Tests/Interop/<arguments>` and returns its standard output.
  /// - Throws: ``ProcessFailure`` with the script's standard error when it
  ///   exits non-zero.
  @discardableResult
  static func python(_ arguments: [String]) throws -> String {
    try ChildProcess.run(["python3", scripts.appendingPathComponent(arguments[0]).path] + arguments.dropFirst())
  }
}

/// A failed interop step.
struct InteropFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
