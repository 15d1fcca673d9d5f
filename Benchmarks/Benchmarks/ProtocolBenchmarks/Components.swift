// Each side of a stream alone, so its per-batch work can be told from the
// transport's and from the other side's (Spec/shm.md, "Tiny batches"): a
// client fed by a connection that already holds every message, and a
// server whose connection discards what it sends.

import ArrowIPC
import DissociatedIPC
import Synchronization

/// A connection that hands out prepared frames and tagged messages at once
/// and ignores what it is sent: a transport that costs nothing.
final class PreparedConnection: TransportConnection {
  private let frames: [ArrowBytes]
  private let tagged: [TaggedMessage]
  private let next = Mutex((frame: 0, tagged: 0))

  init(frames: [ArrowBytes], tagged: [TaggedMessage]) {
    self.frames = frames
    self.tagged = tagged
  }

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {}
  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {}
  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? { nextFrame() }
  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? { nextTagged() }
  func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> { nextFrame().map { .message($0) } ?? .ended }
  func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    nextTagged().map { .message($0) } ?? .ended
  }
  var remoteMemory: (any RemoteMemory)? { nil }
  var pathDescription: String { "prepared" }
  func close() async {}

  private func nextFrame() -> ArrowBytes? {
    next.withLock { next in
      guard next.frame < frames.count else { return nil }
      defer { next.frame += 1 }
      return frames[next.frame]
    }
  }

  private func nextTagged() -> TaggedMessage? {
    next.withLock { next in
      guard next.tagged < tagged.count else { return nil }
      defer { next.tagged += 1 }
      return tagged[next.tagged]
    }
  }

  /// The messages of a stream of `messages` (inline bodies), as a server
  /// with one connection sends them.
  static func stream(_ messages: [OutgoingMessage]) -> (frames: [ArrowBytes], tagged: [TaggedMessage]) {
    var machine = ServerStreamStateMachine(role: .combined, remoteMemory: false)
    var frames: [ArrowBytes] = []
    var tagged: [TaggedMessage] = []
    for message in messages {
      let send = try! machine.message(message)
      frames.append(ArrowBytes(copying: send.metadata!.encoded))
      if case .inline(let tag, let body)? = send.body { tagged.append(TaggedMessage(tag: tag.rawValue, payload: body)) }
    }
    frames.append(ArrowBytes(copying: machine.sourceFinished()!.encoded))
    return (frames, tagged)
  }
}

/// Connects every client to a new ``PreparedConnection`` of one stream.
struct PreparedTransport: DissociatedTransport {
  let frames: [ArrowBytes]
  let tagged: [TaggedMessage]
  var scheme: String { "prepared" }
  var capabilities: TransportCapabilities { TransportCapabilities(remoteMemory: false, fetchesByMapping: false) }
  func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    throw DissociatedIPCError(.unsupportedOperation, "prepared:// only connects")
  }
  func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    PreparedConnection(frames: frames, tagged: tagged)
  }
}

/// A connection that asks for one stream and discards what is sent; `sent`
/// resumes once `expected` frames went out.
final class DiscardingConnection: TransportConnection {
  private let expected: Int
  private let frames = Mutex(0)
  private let asked = Mutex(false)
  private let sent: AsyncStream<Void>.Continuation

  init(expected: Int, sent: AsyncStream<Void>.Continuation) {
    self.expected = expected
    self.sent = sent
  }

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    if frames.withLock({ $0 += 1; return $0 }) == expected { sent.yield() }
  }
  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {}
  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? { nil }
  /// The want_data first, then nothing until the server closes the stream.
  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    if !asked.withLock({ asked in defer { asked = true }; return asked }) {
      return TaggedMessage(tag: ControlTag.combined, payload: ArrowBytes(copying: Array("tiny".utf8)))
    }
    try? await Task.sleep(for: .seconds(3600))
    return nil
  }
  var remoteMemory: (any RemoteMemory)? { nil }
  var pathDescription: String { "discarding" }
  func close() async {}
}

/// A listener that accepts one ``DiscardingConnection``.
final class DiscardingListener: TransportListener {
  private let connection: DiscardingConnection
  private let accepted = Mutex(false)

  init(_ connection: DiscardingConnection) { self.connection = connection }

  var address: TransportAddress { TransportAddress(scheme: "discarding", host: "here") }
  var remoteHandle: [UInt8]? { nil }
  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    if !accepted.withLock({ accepted in defer { accepted = true }; return accepted }) { return connection }
    try? await Task.sleep(for: .seconds(3600))
    return nil
  }
  func close() async {}
}

/// Listens with a ``DiscardingListener``.
struct DiscardingTransport: DissociatedTransport {
  let listener: DiscardingListener
  var scheme: String { "discarding" }
  var capabilities: TransportCapabilities { TransportCapabilities(remoteMemory: false, fetchesByMapping: false) }
  func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener { listener }
  func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    throw DissociatedIPCError(.unsupportedOperation, "discarding:// only listens")
  }
}
