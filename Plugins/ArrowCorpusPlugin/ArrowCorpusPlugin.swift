import Foundation
import PackagePlugin

/// `swift package arrow-corpus [FOLDER]`: writes the pyarrow test corpus
/// (every Arrow type, dictionaries, compression, 10,000 tiny batches, a
/// 64 MiB batch) into FOLDER (default `.build/interop-corpus`), so the
/// streams the tests use can be inspected with `dipc inspect`.
///
/// Thin on purpose: the generator is `Tests/Interop/arrow_corpus.py`.
@main
struct ArrowCorpusPlugin: CommandPlugin {
  func performCommand(context: PluginContext, arguments: [String]) async throws {
    let root = context.package.directoryURL
    let folder = arguments.first ?? root.appending(path: ".build/interop-corpus").path
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", root.appending(path: "Tests/Interop/arrow_corpus.py").path, folder]
    try process.run()
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
      throw PluginFailure("arrow_corpus.py exited \(process.terminationStatus); is pyarrow installed (scripts/setup.sh)?")
    }
    print("corpus in \(folder)")
  }
}

struct PluginFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
