import DissociatedIPCTransports
import Foundation
import Synchronization
import TestSupport

/// Runs the `dipc` executable and the pyarrow checker as real processes.
enum Processes {
  static let root = ChildProcess.repositoryRoot

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

  /// Whether this build has the backend of `location` (a URI, or a bare
  /// scheme): ucx:// and fabric:// are left out of builds without their
  /// traits, and so are their test cases.
  static func built(_ location: String) -> Bool {
    let scheme = location.components(separatedBy: "://")[0]
    return TransportRegistry.builtIn.schemes.contains(scheme)
  }

  /// The pyarrow corpus (generated on first use by Tests/Interop/arrow_corpus.py).
  static var corpus: Result<URL, any Error> { InteropCorpus.folder }

  /// Runs `executable` with `arguments` to completion, with `environment`
  /// added to this process's; returns standard output.
  @discardableResult
  static func run(_ executable: URL, _ arguments: [String], environment: [String: String] = [:],
                  launcher: [String] = []) throws -> String {
    // ChildProcess starts programs through /usr/bin/env, which takes NAME=VALUE first.
    let command = assignments(environment) + [executable.path] + arguments
    return try ChildProcess.run(launcher.isEmpty ? command : launcher + ["/usr/bin/env"] + command)
  }

  /// ``run(_:_:environment:)``, run again (twice at most) when the process
  /// died of UCX 1.13's async-handler assertion (UCX-LIM-4, fixed
  /// upstream): two UCX workers in one `dipc fetch` (the split topology)
  /// can hit it, and it says nothing about the code under test. Any other
  /// failure is thrown at once.
  @discardableResult
  static func runRetryingUCXAsyncAbort(_ executable: URL, _ arguments: [String],
                                       environment: [String: String] = [:], launcher: [String] = []) throws -> String {
    var attempt = 0
    while true {
      do {
        return try run(executable, arguments, environment: environment, launcher: launcher)
      } catch let failure as ProcessFailure where attempt < 2 && failure.description.contains("handler->async == async") {
        attempt += 1
        print("ucx:// UCX-LIM-4 abort in a child (known UCX 1.13 bug); running it again")
      }
    }
  }

  /// `NAME=VALUE` for each variable, sorted by name.
  static func assignments(_ environment: [String: String]) -> [String] {
    environment.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
  }

  /// A running `dipc serve`, stopped with SIGINT by ``stop()``.
  final class Server: @unchecked Sendable {
    let process = Process()
    /// ticket → (combined, metadata, data) locations.
    private(set) var locations: [String: [String: String]] = [:]
    /// Its standard error so far, when captured (else it goes to this
    /// process's).
    private let standardError = Mutex("")

    /// What the server wrote to standard error so far (when captured).
    var errorOutput: String { standardError.withLock { $0 } }

    /// Serves `files` at `listen`, with `environment` added to this
    /// process's, started by `launcher` when one is given; keeps what it
    /// writes to standard error for ``stats()`` when
    /// `capturingStandardError`.
    init(files: [String], listen: String, options: [String] = [], environment: [String: String] = [:],
         capturingStandardError: Bool = false, launcher: [String] = []) throws {
      let arguments = ["serve"] + files + ["--listen", listen, "--split"] + options
      if let program = launcher.first {
        // A launcher that ends by exec-ing dipc (`ip netns exec NS`), so
        // the process signalled is the server.
        process.executableURL = URL(fileURLWithPath: program)
        process.arguments = Array(launcher.dropFirst()) + [try Processes.dipc.path] + arguments
      } else {
        process.executableURL = try Processes.dipc
        process.arguments = arguments
      }
      process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
      let output = Pipe()
      process.standardOutput = output
      if capturingStandardError {
        let errors = Pipe()
        // Read on a thread of its own that holds the handle until the
        // server's end closes: a readabilityHandler can fire after the
        // handle was freed, and crash.
        let reading = errors.fileHandleForReading
        Thread.detachNewThread { [weak self] in
          while case let data = reading.availableData, !data.isEmpty {
            let text = String(decoding: data, as: UTF8.self)
            self?.standardError.withLock { $0 += text }
          }
        }
        process.standardError = errors
      } else {
        process.standardError = FileHandle.standardError
      }
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

    /// The server's stats line (`dipc serve: stats: …`, asked for with
    /// SIGUSR1) without its prefix; nil when none came within 30 s.
    /// Needs `capturingStandardError`.
    func stats() async -> String? {
      let prefix = "dipc serve: stats: "
      func lines() -> [Substring] { standardError.withLock { $0 }.split(separator: "\n").filter { $0.hasPrefix(prefix) } }
      let before = lines().count
      kill(process.processIdentifier, SIGUSR1)
      guard await eventually(within: 30, { lines().count > before }) else { return nil }
      return lines().last.map { String($0.dropFirst(prefix.count)) }
    }

    /// The server's stats once `settled` holds for them, asked for every
    /// 50 ms for up to 30 s; the last ones otherwise.
    func stats(settling settled: (String) -> Bool) async -> String? {
      let deadline = ContinuousClock.now + .seconds(30)
      var latest = await stats()
      while !(latest.map(settled) ?? false), ContinuousClock.now < deadline {
        try? await Task.sleep(for: .milliseconds(50))
        latest = await stats()
      }
      return latest
    }

    /// Interrupts the server and waits for it; one that is still running
    /// after `seconds` is killed, and false returned.
    @discardableResult
    func stop(within seconds: Int = 60) -> Bool {
      process.interrupt()
      return waitForExit(within: seconds)
    }

    /// Waits until the server exits; kills it (SIGKILL) and returns false
    /// when it still runs after `seconds`.
    func waitForExit(within seconds: Int) -> Bool {
      let deadline = ContinuousClock.now + .seconds(seconds)
      while process.isRunning, ContinuousClock.now < deadline { usleep(10_000) }
      guard process.isRunning else { return true }
      kill(process.processIdentifier, SIGKILL)
      process.waitUntilExit()
      return false
    }
  }
}

