internal import DissociatedIPC

/// The cases every backend must pass; run them all with
/// ``ConformanceCase/runAll(using:)``.
///
/// Each case's doc comment gives its procedure and what it asserts. The
/// suite needs no XCTest: failures are thrown as ``ConformanceFailure``.
public enum ConformanceCase: String, CaseIterable, Sendable {
  /// Connect where nothing listens: `.connectionRefused`, promptly.
  case refusedConnection
  /// Framed messages of 0 B to 64 MiB echo back byte for byte, in order.
  case framedRoundTrip
  /// Tagged messages of 0 B to 64 MiB echo back with their full tags.
  case taggedRoundTrip
  /// Posted receives with masks get exactly the messages their (tag, mask)
  /// select, in posting order; unmatched messages wait as unexpected.
  case maskMatching
  /// Bodies sent in reverse sequence order are each received by posting
  /// (sequence, 0x00000000FFFFFFFF), whatever the arrival order.
  case outOfOrderBodies
  /// 16 connections at once, each echoing its own messages.
  case concurrentConnections
  /// After the peer's orderly close, queued messages are still received,
  /// then receives return nil; sends after close throw
  /// `.connectionClosed`; close is idempotent and wakes pending receives.
  case orderlyClose
  /// The server vanishes mid-stream: the client gets a typed error
  /// (`.streamTruncated`) within the case's timeout, never a hang.
  case vanishingPeer
  /// When offered: exposed bytes are fetched back byte for byte, ranges
  /// outside exposed memory are refused, released regions are gone.
  case remoteMemory
  /// A full protocol stream (schema, dictionary, batches from empty to
  /// above the rendezvous threshold) arrives equal to its source; once the
  /// client released it and closed, the server holds no connection.
  case fullStream
  /// Separate metadata and data connections (two locations, one listener)
  /// deliver the same stream.
  case twoConnectionTopology
  /// An unknown ticket gets the server's typed error, and the server keeps
  /// serving others.
  case unknownTicket
  /// free_data naming an address the server never handed to this client
  /// ends that stream with the server's `unknownFreeAddress` error frame;
  /// the server keeps serving others (DIPC-FREE-3).
  case foreignFreeData

  /// Runs every case, stopping at the first failure.
  public static func runAll(using harness: ConformanceHarness) async throws(ConformanceFailure) {
    for testCase in allCases { try await testCase.run(using: harness) }
  }

  /// Runs this case against `harness`, failing if it takes longer than
  /// the harness's timeout.
  public func run(using harness: ConformanceHarness) async throws(ConformanceFailure) {
    let check = Checker(testCase: self)
    let outcome: Result<Void, ConformanceFailure>? = await withTaskGroup(of: Result<Void, ConformanceFailure>?.self) { group in
      group.addTask {
        do throws(ConformanceFailure) {
          try await self.body(harness, check)
          return .success(())
        } catch {
          return .failure(error)
        }
      }
      group.addTask {
        try? await Task.sleep(for: harness.timeout)
        return nil
      }
      let first = await group.next()!
      group.cancelAll()
      return first
    }
    switch outcome {
    case .success?: return
    case .failure(let failure)?: throw failure
    case nil: throw check.fail("did not finish within \(harness.timeout) (a hang)")
    }
  }

  private func body(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    switch self {
    case .refusedConnection: try await Cases.refusedConnection(harness, check)
    case .framedRoundTrip: try await Cases.roundTrip(harness, check, tagged: false)
    case .taggedRoundTrip: try await Cases.roundTrip(harness, check, tagged: true)
    case .maskMatching: try await Cases.maskMatching(harness, check)
    case .outOfOrderBodies: try await Cases.outOfOrderBodies(harness, check)
    case .concurrentConnections: try await Cases.concurrentConnections(harness, check)
    case .orderlyClose: try await Cases.orderlyClose(harness, check)
    case .vanishingPeer: try await Cases.vanishingPeer(harness, check)
    case .remoteMemory: try await Cases.remoteMemory(harness, check)
    case .fullStream: try await Cases.fullStream(harness, check, twoConnections: false)
    case .twoConnectionTopology: try await Cases.fullStream(harness, check, twoConnections: true)
    case .unknownTicket: try await Cases.unknownTicket(harness, check)
    case .foreignFreeData: try await Cases.foreignFreeData(harness, check)
    }
  }
}
