// A toy Dissociated IPC backend written as a third party would: public API
// only (no @testable, no package helpers), with the backend kit's message
// inbox and accept queue. Messages move between in-memory inboxes, so it
// reads in one sitting yet meets the whole contract on
// `DissociatedTransport`. Use: `registry.register(ToyTransport())`, then
// `toy://NAME` locations. Bottom up:
// - `ToyConnection`: one end of a pair; sends deliver into the peer's inbox.
// - `ToyListener`, `ToyNamespace`: names to listeners, per transport.
// - `ToyTransport`: the backend itself.

import ArrowIPC
import DissociatedIPC
import DissociatedIPCBackendKit
import Synchronization

/// One end of a toy connection. Sending pushes into the peer's inbox;
/// receiving pops from this end's own.
final class ToyConnection: InboxReceiving {
  let inbox: MessageInbox
  /// The other end's inbox (not the other end: neither keeps the other alive).
  private let peerInbox: MessageInbox
  private let closed = Atomic<Bool>(false)

  private init(inbox: MessageInbox, peerInbox: MessageInbox) {
    self.inbox = inbox
    self.peerInbox = peerInbox
  }

  /// Two connected ends.
  static func pair() -> (client: ToyConnection, server: ToyConnection) {
    let (a, b) = (MessageInbox(), MessageInbox())
    return (ToyConnection(inbox: a, peerInbox: b), ToyConnection(inbox: b, peerInbox: a))
  }

  var remoteMemory: (any RemoteMemory)? { nil }
  var pathDescription: String { "toy (in-memory inboxes)" }

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try deliver { $0.deliverFrame(Self.join(parts)) }
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try deliver { $0.deliverTagged(TaggedMessage(tag: tag, payload: Self.join(parts))) }
  }

  /// Orderly close: both ends' receives drain what was sent, then get nil.
  func close() async {
    guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
    inbox.close()
    peerInbox.close()
  }

  /// Breaks the link, as a network failure would: pending and later
  /// receives on both ends throw `.connectionClosed`, unread messages are lost.
  func sever(_ why: String = "the toy connection was severed") {
    let error = DissociatedIPCError(.connectionClosed, why)
    inbox.close(error: error)
    peerInbox.close(error: error)
  }

  /// An end dropped without `close()` breaks the link (like a reset socket),
  /// so the peer never waits for ever.
  deinit {
    if !closed.load(ordering: .acquiring) { sever("the peer went away without closing") }
  }

  private func deliver(_ push: (MessageInbox) -> Bool) throws(DissociatedIPCError) {
    guard !closed.load(ordering: .acquiring) else {
      throw DissociatedIPCError(.connectionClosed, "send on a closed toy connection")
    }
    guard !peerInbox.isClosed else {
      throw DissociatedIPCError(.connectionClosed, "the toy peer is gone")
    }
    guard push(peerInbox) else { throw DissociatedIPCError(.limitExceeded, "the toy peer holds too many unread messages") }
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
  private let incoming = AcceptQueue<ToyConnection>()

  fileprivate init(name: String, namespace: ToyNamespace) {
    address = TransportAddress(scheme: "toy", host: name)
    self.namespace = namespace
  }

  var remoteHandle: [UInt8]? { nil }

  /// Queues a server end; false once the listener is closed.
  fileprivate func enqueue(_ connection: ToyConnection) -> Bool { incoming.offer(connection) }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await incoming.next()
  }

  /// Unbinds the name, wakes pending accepts with nil and closes the
  /// connections nobody accepted (their clients see an orderly close).
  func close() async {
    namespace.unbind(address.host, self)
    for connection in incoming.close() { await connection.close() }
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
