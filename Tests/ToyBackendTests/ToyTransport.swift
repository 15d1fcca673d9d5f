// A toy Dissociated IPC backend written as a third party would: public API
// only (no @testable, no package helpers). Messages move between in-memory
// queues, so it reads in one sitting yet meets the whole contract on
// `DissociatedTransport`. Use: `registry.register(ToyTransport())`, then
// `toy://NAME` locations. Bottom up:
// - `MatchingQueue`: a FIFO whose receivers say which element they want:
//   the framed flow (anything), the tagged flow (tag under a mask), accept.
// - `ToyConnection`: one end of a pair; sends push into the peer's inbox.
// - `ToyListener`, `ToyNamespace`: names to listeners, per transport.
// - `ToyTransport`: the backend itself.

import ArrowIPC
import DissociatedIPC
import Synchronization

/// How a ``MatchingQueue`` ended.
enum QueueEnd: Sendable {
  /// The sender closed: queued elements are still received, then nil.
  case orderly
  /// The link broke: queued elements are dropped; receives throw.
  case broken(DissociatedIPCError)

  var isBroken: Bool { if case .broken = self { true } else { false } }

  /// What a receive gets once nothing it wants is queued.
  func outcome<T>() -> Result<T?, any Error> {
    switch self {
    case .orderly: .success(nil)
    case .broken(let error): .failure(error)
    }
  }
}

/// A queue of arrived elements and a list of posted receives, each with a
/// predicate. An arriving element goes to the first posted receive that
/// wants it (posting order), or waits in the queue (the "unexpected
/// message" queue) until a receive that wants it is posted.
final class MatchingQueue<Element: Sendable>: Sendable {
  private struct Receive {
    let id: UInt64
    let wants: @Sendable (Element) -> Bool
    let continuation: CheckedContinuation<Element?, any Error>
  }

  private struct State {
    var queued: [Element] = []
    var posted: [Receive] = []
    var nextID: UInt64 = 0
    var end: QueueEnd?
  }

  private let state = Mutex(State())

  /// Delivers `element`; false once the queue ended (nothing was delivered).
  func push(_ element: Element) -> Bool {
    let (accepted, receiver) = state.withLock { state -> (Bool, Receive?) in
      guard state.end == nil else { return (false, nil) }
      if let index = state.posted.firstIndex(where: { $0.wants(element) }) {
        return (true, state.posted.remove(at: index))
      }
      state.queued.append(element)
      return (true, nil)
    }
    receiver?.continuation.resume(returning: element)  // resumed outside the lock
    return accepted
  }

  /// Ends the queue (the first end wins) and wakes every posted receive.
  /// A broken end, or `discardQueued`, drops what is queued and returns it.
  @discardableResult
  func end(_ how: QueueEnd, discardQueued: Bool = false) -> [Element] {
    let (waiting, dropped) = state.withLock { state -> ([Receive], [Element]) in
      guard state.end == nil else { return ([], []) }
      state.end = how
      var dropped: [Element] = []
      if discardQueued || how.isBroken { swap(&dropped, &state.queued) }
      defer { state.posted.removeAll() }
      return (state.posted, dropped)
    }
    for receive in waiting { receive.continuation.resume(with: how.outcome()) }
    return dropped
  }

  /// The first element `wants` accepts: a queued one at once, otherwise the
  /// next to arrive; nil after an orderly end. Cancelling the waiting task
  /// withdraws the receive and throws `.cancelled`.
  func pop(where wants: @escaping @Sendable (Element) -> Bool = { _ in true })
    async throws(DissociatedIPCError) -> Element? {
    let id = state.withLock { state in
      state.nextID += 1
      return state.nextID
    }
    do {
      return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Element?, any Error>) in
          let ready = state.withLock { state -> Result<Element?, any Error>? in
            if let index = state.queued.firstIndex(where: wants) { return .success(state.queued.remove(at: index)) }
            if let end = state.end { return end.outcome() }
            // Checked under the lock, so a cancellation either happened
            // already (seen here) or will find the receive posted.
            if Task.isCancelled { return .failure(DissociatedIPCError(.cancelled, "toy receive cancelled")) }
            state.posted.append(Receive(id: id, wants: wants, continuation: continuation))
            return nil
          }
          if let ready { continuation.resume(with: ready) }
        }
      } onCancel: {
        let withdrawn = state.withLock { state in
          state.posted.firstIndex { $0.id == id }.map { state.posted.remove(at: $0) }
        }
        withdrawn?.continuation.resume(throwing: DissociatedIPCError(.cancelled, "toy receive cancelled"))
      }
    } catch let error as DissociatedIPCError {
      throw error
    } catch {
      throw DissociatedIPCError(.transportFailure, "\(error)")  // unreachable: only DissociatedIPCErrors are thrown
    }
  }
}

/// What one end receives: framed messages in order, tagged ones by match.
final class ToyInbox: Sendable {
  let frames = MatchingQueue<ArrowBytes>()
  let tagged = MatchingQueue<TaggedMessage>()

  func end(_ how: QueueEnd) {
    frames.end(how)
    tagged.end(how)
  }
}

/// One end of a toy connection. Sending pushes into the peer's inbox;
/// receiving pops from this end's own.
final class ToyConnection: TransportConnection {
  private let inbox: ToyInbox
  private let peerInbox: ToyInbox
  private let closed = Atomic<Bool>(false)

  private init(inbox: ToyInbox, peerInbox: ToyInbox) {
    self.inbox = inbox
    self.peerInbox = peerInbox
  }

  /// Two connected ends.
  static func pair() -> (client: ToyConnection, server: ToyConnection) {
    let (a, b) = (ToyInbox(), ToyInbox())
    return (ToyConnection(inbox: a, peerInbox: b), ToyConnection(inbox: b, peerInbox: a))
  }

  var remoteMemory: (any RemoteMemory)? { nil }
  var pathDescription: String { "toy (in-memory queues)" }

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try deliver { $0.frames.push(Self.join(parts)) }
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try deliver { $0.tagged.push(TaggedMessage(tag: tag, payload: Self.join(parts))) }
  }

  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? {
    try await inbox.frames.pop()
  }

  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    try await inbox.tagged.pop { ($0.tag & mask) == (tag & mask) }
  }

  /// Orderly close: both ends' receives drain what was sent, then get nil.
  func close() async {
    guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
    inbox.end(.orderly)
    peerInbox.end(.orderly)
  }

  /// Breaks the link, as a network failure would: pending and later
  /// receives on both ends throw `.connectionClosed`, unread messages are lost.
  func sever(_ why: String = "the toy connection was severed") {
    let error = DissociatedIPCError(.connectionClosed, why)
    inbox.end(.broken(error))
    peerInbox.end(.broken(error))
  }

  /// An end dropped without `close()` breaks the link (like a reset socket),
  /// so the peer never waits for ever.
  deinit {
    if !closed.load(ordering: .acquiring) { sever("the peer went away without closing") }
  }

  private func deliver(_ push: (ToyInbox) -> Bool) throws(DissociatedIPCError) {
    guard !closed.load(ordering: .acquiring) else {
      throw DissociatedIPCError(.connectionClosed, "send on a closed toy connection")
    }
    guard push(peerInbox) else { throw DissociatedIPCError(.connectionClosed, "the toy peer is gone") }
  }

  /// One payload from parts: a single part as is, several gathered into
  /// one aligned copy.
  private static func join(_ parts: [ArrowBytes]) -> ArrowBytes {
    if parts.count == 1 { return parts[0] }
    let total = parts.reduce(0) { $0 + $1.count }
    let storage = AlignedStorage(capacity: total)
    var offset = 0
    for part in parts where !part.isEmpty {
      part.withUnsafeBytes { storage.mutableBytes.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
      offset += part.count
    }
    return storage.freeze(count: total)
  }
}

/// A bound name; `accept` hands out the server ends of new pairs.
final class ToyListener: TransportListener {
  let address: TransportAddress
  private let namespace: ToyNamespace
  private let incoming = MatchingQueue<ToyConnection>()

  fileprivate init(name: String, namespace: ToyNamespace) {
    address = TransportAddress(scheme: "toy", host: name)
    self.namespace = namespace
  }

  var remoteHandle: [UInt8]? { nil }

  /// Queues a server end; false once the listener is closed.
  fileprivate func enqueue(_ connection: ToyConnection) -> Bool { incoming.push(connection) }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await incoming.pop()
  }

  /// Unbinds the name, wakes pending accepts with nil and closes the
  /// connections nobody accepted (their clients see an orderly close).
  func close() async {
    namespace.unbind(address.host, self)
    for connection in incoming.end(.orderly, discardQueued: true) { await connection.close() }
  }
}

/// The names listeners are bound to. Each ``ToyTransport`` has its own, so
/// separate transports never see each other (no process-wide state).
final class ToyNamespace: Sendable {
  private let state = Mutex<(listeners: [String: ToyListener], lastName: Int)>(([:], 0))

  fileprivate func bind(_ requested: String) throws(DissociatedIPCError) -> ToyListener {
    let listener = state.withLock { state -> ToyListener? in
      var name = requested
      if name.isEmpty {
        state.lastName += 1
        name = "toy\(state.lastName)"
      }
      guard state.listeners[name] == nil else { return nil }
      let listener = ToyListener(name: name, namespace: self)
      state.listeners[name] = listener
      return listener
    }
    guard let listener else { throw DissociatedIPCError(.transportFailure, "toy://\(requested) is already bound") }
    return listener
  }

  fileprivate func unbind(_ name: String, _ listener: ToyListener) {
    state.withLock { state in
      if state.listeners[name] === listener { state.listeners[name] = nil }
    }
  }

  fileprivate func listener(named name: String) -> ToyListener? { state.withLock { $0.listeners[name] } }
}

/// The toy backend, scheme `toy`: `toy://NAME` names a listener in this
/// transport's ``ToyNamespace``; `toy://` picks a fresh name. No remote
/// memory, so every body travels inline as a tagged message.
struct ToyTransport: DissociatedTransport {
  let scheme = "toy"
  let capabilities = TransportCapabilities(remoteMemory: false, fetchesByMapping: false)
  let namespace: ToyNamespace

  init(namespace: ToyNamespace = ToyNamespace()) { self.namespace = namespace }

  func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    try namespace.bind(address.host)
  }

  func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    guard let listener = namespace.listener(named: location.host) else {
      throw DissociatedIPCError(.connectionRefused, "nothing listens at toy://\(location.host)")
    }
    let (client, server) = ToyConnection.pair()
    guard listener.enqueue(server) else {
      throw DissociatedIPCError(.connectionRefused, "toy://\(location.host) closed")
    }
    return client
  }
}
