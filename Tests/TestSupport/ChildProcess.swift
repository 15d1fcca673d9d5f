public import Foundation

/// Runs helper programs (pyarrow scripts, the dipc executable) from tests.
public enum ChildProcess {
  /// The repository root, found from this file's path.
  public static let repositoryRoot = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

  /// Runs `arguments` (looked up on PATH, or an absolute path) to completion
  /// and returns its standard output. A run longer than `timeout` is killed.
  ///
  /// - Throws: ``ProcessFailure`` with the program's standard error when it
  ///   exits non-zero.
  @discardableResult
  public static func run(_ arguments: [String], timeout: Duration = .seconds(300)) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let output = Pipe()
    let errors = Pipe()
    process.standardOutput = output
    process.standardError = errors
    try process.run()
    let killer = DispatchWorkItem { if process.isRunning { process.terminate() } }
    DispatchQueue.global().asyncAfter(deadline: .now() + .seconds(Int(timeout.components.seconds)), execute: killer)
    // Read both pipes before waiting, so a chatty program cannot block on a full pipe.
    let errorData = readToEnd(errors)
    let outputData = output.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    killer.cancel()
    guard process.terminationStatus == 0 else {
      throw ProcessFailure("\(arguments.joined(separator: " ")) exited \(process.terminationStatus): "
        + String(decoding: errorData(), as: UTF8.self))
    }
    return String(decoding: outputData, as: UTF8.self)
  }

  /// Reads `pipe` to its end on another thread; the returned closure waits
  /// for and returns the data.
  static func readToEnd(_ pipe: Pipe) -> () -> Data {
    final class Box: @unchecked Sendable {
      // Written by the reader thread before the semaphore is signalled, read after.
      var data = Data()
    }
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
}

/// A helper program that failed.
public struct ProcessFailure: Error, CustomStringConvertible {
  /// What ran and what it said.
  public let description: String
  /// Creates a failure.
  public init(_ description: String) { self.description = description }
}

/// The pyarrow interop corpus: Arrow IPC stream files written by pyarrow
/// (Tests/Interop/arrow_corpus.py) into `.build/interop-corpus`, generated
/// on first use (the generator returns at once when it is current).
public enum InteropCorpus {
  /// The corpus folder.
  public static let folder: Result<URL, any Error> = Result {
    let folder = ChildProcess.repositoryRoot.appendingPathComponent(".build/interop-corpus")
    try ChildProcess.run(["python3", ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/arrow_corpus.py").path, folder.path])
    return folder
  }
}

/// Runs `body` on a thread of its own and returns what it returns.
///
/// For blocking work in an async test — waiting for child processes —
/// that would otherwise hold one of the concurrency pool's threads (two on
/// these machines) for seconds and starve every other suite running
/// beside it. `body` must not record test issues (`#expect`): it runs
/// outside the test's task; check what it returns instead.
@discardableResult
public func offPool<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
  try await withCheckedThrowingContinuation { continuation in
    Thread.detachNewThread { continuation.resume(with: Result { try body() }) }
  }
}
