import Foundation

/// Runs the `dipc` executable and the pyarrow checker as real processes.
enum Processes {
  static let root = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// The `dipc` built next to this test bundle.
  static var dipc: URL {
    get throws {
      var folder = Bundle.main.bundleURL
      for _ in 0 ..< 4 {
        let candidate = folder.appendingPathComponent("dipc")
        if FileManager.default.isExecutableFile(atPath: candidate.path) { return candidate }
        folder.deleteLastPathComponent()
      }
      throw ProcessFailure("dipc was not built next to the tests (\(Bundle.main.bundleURL.path))")
    }
  }

  /// The pyarrow corpus (generated on first use by Tests/Interop/arrow_corpus.py).
  static let corpus: Result<URL, any Error> = Result {
    let folder = root.appendingPathComponent(".build/interop-corpus")
    _ = try run(URL(fileURLWithPath: "/usr/bin/env"),
                ["python3", root.appendingPathComponent("Tests/Interop/arrow_corpus.py").path, folder.path])
    return folder
  }

  /// Runs a process to completion; returns standard output.
  @discardableResult
  static func run(_ executable: URL, _ arguments: [String], timeout: Duration = .seconds(120)) throws -> String {
    let process = Process()
    process.executableURL = executable
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let deadline = DispatchTime.now() + .seconds(Int(timeout.components.seconds))
    let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: deadline, execute: killer)
    let errorData = readInBackground(errors)
    let data = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    guard process.terminationStatus == 0 else {
      throw ProcessFailure("\(executable.lastPathComponent) \(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
        + String(decoding: errorData(), as: UTF8.self))
    }
    return String(decoding: data, as: UTF8.self)
  }

  static func readInBackground(_ pipe: Pipe) -> () -> Data {
    final class Box: @unchecked Sendable { var data = Data() }
    let box = Box()
    let done = DispatchSemaphore(value: 0)
    Thread.detachNewThread {
      box.data = pipe.fileHandleForReading.readDataToEndOfFile()
      done.signal()
    }
    return {
      done.wait()
      return box.data
    }
  }

  /// A running `dipc serve`, stopped with SIGINT by ``stop()``.
  final class Server: @unchecked Sendable {
    let process = Process()
    /// ticket → (combined, metadata, data) locations.
    private(set) var locations: [String: [String: String]] = [:]

    init(files: [String], listen: String) throws {
      process.executableURL = try Processes.dipc
      process.arguments = ["serve"] + files + ["--listen", listen, "--split"]
      let output = Pipe()
      process.standardOutput = output
      process.standardError = FileHandle.standardError
      try process.run()
      // One line per file and role, written at once before serving.
      var text = ""
      let expected = files.count * 3
      while text.split(separator: "\n").count < expected {
        let chunk = output.fileHandleForReading.availableData
        if chunk.isEmpty { throw ProcessFailure("dipc serve exited before printing its locations: \(text)") }
        text += String(decoding: chunk, as: UTF8.self)
      }
      for line in text.split(separator: "\n") {
        let fields = line.split(separator: "\t").map(String.init)
        let role = fields.count == 3 ? fields[1] : "combined"
        locations[fields[0], default: [:]][role] = fields.last!
      }
    }

    func stop() {
      process.interrupt()
      process.waitUntilExit()
    }
  }
}

struct ProcessFailure: Error, CustomStringConvertible {
  let description: String
  init(_ description: String) { self.description = description }
}
