import ArrowIPC
import Synchronization
import Testing
@testable import DissociatedIPC

/// The inbox's non-blocking wait for tagged room (ucx://'s read-ahead,
/// UCX-RECV-2).
@Suite("MessageInbox")
struct MessageInboxTests {
  /// Counts the wake-ups an inbox hands out.
  final class WakeCounter: Sendable {
    private let count = Mutex(0)
    var value: Int { count.withLock { $0 } }
    var wake: @Sendable () -> Void { { self.count.withLock { $0 += 1 } } }
  }

  static func message(_ tag: UInt64) -> TaggedMessage {
    TaggedMessage(tag: tag, payload: ArrowBytes(copying: [UInt8](repeating: UInt8(tag), count: 100)))
  }

  @Test("waitForTaggedRoom wakes once when receives leave less than its limit, and on close")
  func taggedRoom() async throws {
    let inbox = MessageInbox()
    let counter = WakeCounter()
    #expect(!inbox.waitForTaggedRoom(below: 250, then: counter.wake), "an empty inbox has room")
    for tag in 0 ..< 3 { inbox.deliverTagged(Self.message(UInt64(tag))) }
    inbox.deliverFrame(ArrowBytes(copying: [UInt8](repeating: 9, count: 1000)))  // frames do not count
    #expect(inbox.waitForTaggedRoom(below: 250, then: counter.wake), "300 bytes wait")
    _ = try await inbox.receiveFrame()
    #expect(counter.value == 0, "a frame received: still 300 tagged bytes")
    #expect(try await inbox.receiveTagged(matching: 0, mask: .max)?.tag == 0)
    #expect(counter.value == 1, "200 bytes left: woken")
    #expect(try await inbox.receiveTagged(matching: 1, mask: .max)?.tag == 1)
    #expect(counter.value == 1, "woken once only")
    #expect(!inbox.waitForTaggedRoom(below: 250, then: counter.wake), "100 bytes wait: room")
    #expect(inbox.waitForTaggedRoom(below: 50, then: counter.wake))
    inbox.close()
    #expect(counter.value == 2, "close wakes a waiting backend")
    #expect(!inbox.waitForTaggedRoom(below: 50, then: counter.wake), "a closed inbox never makes its backend wait")
  }
}
