internal import ArrowIPC
public import DissociatedIPC

/// The backend under test and how to reach it.
public struct ConformanceHarness: Sendable {
  /// The backend.
  public var transport: any DissociatedTransport
  /// Where servers listen (port 0 / empty name: any free one).
  public var listenAddress: TransportAddress
  /// The largest message size the round-trip cases send (64 MiB by
  /// default, the bound).
  public var largestMessage: Int
  /// How long any single case may take before it fails as a hang.
  public var timeout: Duration

  /// A harness for `transport` listening at `listenAddress`.
  public init(transport: any DissociatedTransport, listenAddress: TransportAddress,
              largestMessage: Int = 64 << 20, timeout: Duration = .seconds(60)) {
    self.transport = transport
    self.listenAddress = listenAddress
    self.largestMessage = largestMessage
    self.timeout = timeout
  }

  /// A registry holding the backend under test.
  public var registry: TransportRegistry {
    var registry = TransportRegistry()
    registry.register(transport)
    return registry
  }
}

/// A failed conformance check: which case, and what went wrong.
public struct ConformanceFailure: Error, CustomStringConvertible, Sendable {
  /// The case.
  public var testCase: ConformanceCase
  /// What was expected and what happened.
  public var message: String

  /// Creates a failure.
  public init(_ testCase: ConformanceCase, _ message: String) {
    self.testCase = testCase
    self.message = message
  }

  /// `case: message`.
  public var description: String { "\(testCase.rawValue): \(message)" }
}

/// Checks inside a case; each throws a ``ConformanceFailure``.
struct Checker {
  let testCase: ConformanceCase

  func expect(_ condition: Bool, _ message: @autoclosure () -> String) throws(ConformanceFailure) {
    if !condition { throw ConformanceFailure(testCase, message()) }
  }

  func fail(_ message: String) -> ConformanceFailure { ConformanceFailure(testCase, message) }

  /// Runs `body`, turning a transport error into a failure.
  func step<T>(_ what: String, _ body: () async throws(DissociatedIPCError) -> T) async throws(ConformanceFailure) -> T {
    do throws(DissociatedIPCError) { return try await body() } catch {
      throw ConformanceFailure(testCase, "\(what) failed: \(error)")
    }
  }

  /// Runs `body`, which must fail with `code`.
  func expectError(_ code: DissociatedIPCError.Code, _ what: String,
                   _ body: () async throws(DissociatedIPCError) -> Void) async throws(ConformanceFailure) {
    do throws(DissociatedIPCError) {
      try await body()
    } catch {
      try expect(error.code == code, "\(what): expected \(code), got \(error)")
      return
    }
    throw fail("\(what): expected \(code), got no error")
  }
}

/// Deterministic test payloads: 64-bit words that encode their position
/// and a seed, so a reordered, shifted or truncated copy never compares
/// equal.
enum Payload {
  static func make(count: Int, seed: UInt64) -> ArrowBytes {
    let storage = AlignedStorage(capacity: count)
    let words = count / 8
    let raw = storage.mutableBytes
    for index in 0 ..< words {
      raw.storeBytes(of: (UInt64(index) &* 0x9E37_79B9_7F4A_7C15) ^ seed, toByteOffset: index * 8, as: UInt64.self)
    }
    for index in words * 8 ..< count { raw[index] = UInt8(truncatingIfNeeded: index) ^ UInt8(truncatingIfNeeded: seed) }
    return storage.freeze(count: count)
  }
}
