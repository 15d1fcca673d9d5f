import ArrowIPC
import Foundation
import Synchronization
import Testing
@testable import DissociatedIPC
@testable import DissociatedIPCBackendKit

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

/// The reader's read-ahead bound counts messages as well as bytes
/// (TCP-RECV-2): tiny messages must not queue by the hundred thousand.
@Suite("MessageInbox read-ahead")
struct MessageInboxReadAheadTests {
  @Test("a reader waits at readAheadMessages messages, however small, and resumes once half were received")
  func messageCap() async throws {
    let inbox = MessageInbox()
    let limit = MessageInbox.readAheadMessages
    let frame = ArrowBytes(copying: [1, 2, 3])
    for _ in 0 ..< limit - 1 { inbox.deliverFrame(frame) }
    inbox.waitForRoom(below: .max)  // one short of the cap: returns at once
    // 1,000 over the cap (a reader delivers a whole packet before it
    // checks), so the reader thread waits even if it starts late.
    inbox.deliver(Array(repeating: .frame(frame), count: 1_001))
    let resumed = MessageInboxTests.WakeCounter()
    let wake = resumed.wake
    Thread { inbox.waitForRoom(below: .max); wake() }.start()
    try await Task.sleep(for: .milliseconds(100))
    for _ in 0 ..< 1_000 + limit / 2 - 1 { _ = try await inbox.receiveFrame() }
    try await Task.sleep(for: .milliseconds(100))
    #expect(resumed.value == 0, "\(limit / 2 + 1) messages still wait: the reader must too")
    _ = try await inbox.receiveFrame()
    for _ in 0 ..< 500 where resumed.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(resumed.value == 1, "half the cap received: the reader resumes")
  }

  @Test("a receive that waits lifts the message cap: a parked reader resumes, a new check does not wait, the awaited frame arrives")
  func waitingReceiveLiftsCap() async throws {
    let inbox = MessageInbox()
    let body = TaggedMessage(tag: 1, payload: ArrowBytes(copying: [1]))
    // Full of tagged messages (a peer a whole reorder window ahead on the
    // body flow), none of them what the client will wait for.
    inbox.deliver(Array(repeating: .tagged(body), count: MessageInbox.readAheadMessages))
    let parked = MessageInboxTests.WakeCounter()
    let resume = parked.wake
    Thread { inbox.waitForRoom(below: .max); resume() }.start()
    try await Task.sleep(for: .milliseconds(100))
    #expect(parked.value == 0, "full and no receive waiting: the reader waits")
    async let frame = inbox.receiveFrame()
    for _ in 0 ..< 500 where parked.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(parked.value == 1, "a receive waits: the parked reader resumes")
    let checked = MessageInboxTests.WakeCounter()
    let done = checked.wake
    Thread { inbox.waitForRoom(below: .max); done() }.start()
    for _ in 0 ..< 500 where checked.value == 0 { try await Task.sleep(for: .milliseconds(10)) }
    #expect(checked.value == 1, "while the receive waits, the cap does not stop the reader")
    inbox.deliverFrame(ArrowBytes(copying: [9]))
    #expect(try await frame?.array == [9])
  }

  @Test("a batch delivery hands messages to waiting receives and queues the rest in order")
  func batchDelivery() async throws {
    let inbox = MessageInbox()
    async let first = inbox.receiveTagged(matching: 7, mask: .max)
    try await Task.sleep(for: .milliseconds(50))  // the receive is posted
    let bytes = { (value: UInt8) in ArrowBytes(copying: [value]) }
    inbox.deliver([.tagged(TaggedMessage(tag: 3, payload: bytes(3))), .frame(bytes(10)),
                   .tagged(TaggedMessage(tag: 7, payload: bytes(7))), .frame(bytes(11))])
    #expect(try await first?.payload.array == [7])
    #expect(try await inbox.receiveFrame()?.array == [10])
    #expect(try await inbox.receiveFrame()?.array == [11])
    #expect(try await inbox.receiveTagged(matching: 0, mask: 0)?.tag == 3)
  }
}

/// Receives without waiting (TransportConnection.readyFrame()).
@Suite("MessageInbox ready receives")
struct MessageInboxReadyTests {
  @Test("readyFrame and readyTagged: wouldWait when empty, the message when queued, ended after an orderly close, the error after a failed one")
  func ready() throws {
    let inbox = MessageInbox()
    guard case .wouldWait = try inbox.readyFrame() else { throw Failure("an empty inbox must answer wouldWait") }
    guard case .wouldWait = try inbox.readyTagged(matching: 0, mask: 0) else { throw Failure("no tagged message yet") }
    inbox.deliverFrame(ArrowBytes(copying: [5]))
    inbox.deliverTagged(TaggedMessage(tag: 9, payload: ArrowBytes(copying: [6])))
    guard case .wouldWait = try inbox.readyTagged(matching: 8, mask: .max) else { throw Failure("tag 8 was never sent") }
    guard case .message(let frame) = try inbox.readyFrame(), frame.array == [5] else { throw Failure("the queued frame") }
    guard case .message(let tagged) = try inbox.readyTagged(matching: 9, mask: .max), tagged.tag == 9 else {
      throw Failure("the queued tagged message")
    }
    inbox.close()
    guard case .ended = try inbox.readyFrame() else { throw Failure("after an orderly close: ended") }
    let failed = MessageInbox()
    failed.close(error: DissociatedIPCError(.connectionClosed, "broken"))
    #expect(throws: DissociatedIPCError.self) { try failed.readyTagged(matching: 0, mask: 0) }
  }

  struct Failure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }
}

/// The inbox's queue: FIFO order across growth and wrap-around, holes left
/// by out-of-order takes.
@Suite("RingQueue")
struct RingQueueTests {
  @Test("order survives wrap-around and growth; holes are dropped once they reach the front")
  func order() {
    var queue = RingQueue<Int>()
    var expected: [Int] = []
    var next = 0
    for round in 0 ..< 50 {
      for _ in 0 ..< 7 + round % 5 {
        queue.append(next)
        expected.append(next)
        next += 1
      }
      for _ in 0 ..< 5 { #expect(queue.popFirst() == expected.removeFirst()) }
    }
    #expect(queue.count == expected.count)
    // Take the second element: a hole, not yet at the front.
    #expect(queue.take(at: 1) == expected.remove(at: 1))
    #expect(queue.count == expected.count + 1)
    #expect(queue[1] == nil)
    // Taking the front drops the hole behind it too.
    #expect(queue.popFirst() == expected.removeFirst())
    #expect(queue.count == expected.count)
    while let value = queue.popFirst() { #expect(value == expected.removeFirst()) }
    #expect(expected.isEmpty && queue.isEmpty)
  }
}
