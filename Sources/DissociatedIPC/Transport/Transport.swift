public import ArrowIPC

/// Where a transport listens or connects: the scheme, host, port and path of
/// a ``Location``, and the query parameters that choose how the backend
/// reaches it (such as fabric://'s `provider`), without the protocol's own
/// (want_data, free_data, remote_handle) and the ticket.
public struct TransportAddress: Hashable, Sendable, CustomStringConvertible {
  /// The scheme, lowercase.
  public var scheme: String
  /// A host name or address; empty for path-addressed transports.
  public var host: String
  /// The port; nil or 0 asks a listener for any free port.
  public var port: UInt16?
  /// A path (a socket file, a name), or empty.
  public var path: String
  /// The backend's own parameters, in order; the server's locations carry
  /// them, so clients reach the listener the same way (DIPC-URI-8).
  public var parameters: [Location.KeyValuePair]

  /// Creates an address.
  public init(scheme: String, host: String = "", port: UInt16? = nil, path: String = "",
              parameters: [Location.KeyValuePair] = []) {
    self.scheme = scheme.lowercased()
    self.host = host
    self.port = port
    self.path = path
    self.parameters = parameters
  }

  /// The value of the backend parameter `name`, if present.
  public func parameter(_ name: String) -> String? { parameters.first { $0.name == name }?.value }

  /// Parses `scheme://host[:port][/path][?name=value&…]` (no want_data needed).
  ///
  /// - Throws: `.invalidLocation` for text outside the location grammar.
  public init(parsing text: String) throws(DissociatedIPCError) {
    let location = try Location(parsing: text.contains("?") ? text + "&want_data=0" : text + "?want_data=0")
    self = location.address
  }

  /// `scheme://host:port/path`, then `?name=value&…` when it has parameters.
  public var description: String {
    let base = Location(scheme: scheme, host: host, port: port, path: path, wantData: 0).description
      .split(separator: "?", maxSplits: 1).first.map(String.init) ?? ""
    let query = parameters.map {
      Location.percentEncode($0.name, keeping: "") + "=" + Location.percentEncode($0.value, keeping: "")
    }
    return query.isEmpty ? base : base + "?" + query.joined(separator: "&")
  }

  /// A location of this address with `wantData`; its other parameters are
  /// this address's, then `extra`.
  public func location(wantData: UInt64, freeData: UInt64? = nil, remoteHandle: [UInt8]? = nil,
                       extra: [Location.KeyValuePair] = []) -> Location {
    Location(scheme: scheme, host: host, port: port, path: path, wantData: wantData, freeData: freeData,
             remoteHandle: remoteHandle, otherParameters: parameters + extra)
  }
}

extension Location {
  /// Query parameters that name a stream, not a way to reach the server.
  static let streamParameters: Set<String> = ["ticket", "ticket64"]

  /// The transport address part of this location: its parameters other
  /// than the ticket.
  public var address: TransportAddress {
    TransportAddress(scheme: scheme, host: host, port: port, path: path,
                     parameters: otherParameters.filter { !Location.streamParameters.contains($0.name) })
  }
}

/// What a backend can do beyond the required operations.
public struct TransportCapabilities: Hashable, Sendable {
  /// The backend can expose memory for body-type-1 descriptors.
  public var remoteMemory: Bool
  /// Fetched type-1 bodies are views of the server's memory (a mapping),
  /// not copies, so the client frees them only when the user is done.
  public var fetchesByMapping: Bool

  /// Creates capabilities.
  public init(remoteMemory: Bool, fetchesByMapping: Bool) {
    self.remoteMemory = remoteMemory
    self.fetchesByMapping = fetchesByMapping
  }
}

/// A Dissociated IPC transport backend for one URI scheme.
///
/// A backend offers connections with two kinds of messages:
/// - **framed** messages: delimited, untagged, in order (the metadata flow);
/// - **tagged** messages: each with a 64-bit tag, received by (tag, mask)
///   matching — `(sender tag & mask) == (tag & mask)`, UCX's rule — in the
///   order receives were posted (the body, initiation and free_data flows);
/// and, optionally, **remote memory** (``RemoteMemory``).
///
/// Contract, shared by every backend and checked by the conformance suite:
/// - `listen` binds at once (port 0 picks a free port) and reports the bound
///   address; `connect` to an address nothing listens on throws
///   `.connectionRefused`, never hangs.
/// - Messages keep their boundaries and bytes; payloads of 0 bytes are valid.
/// - When the peer closes, receives return nil after everything it sent
///   was received; when the connection breaks, they throw
///   `.connectionClosed`. Sends after close throw `.connectionClosed`.
/// - `close()` is idempotent and wakes every pending receive.
/// - Errors are ``DissociatedIPCError``s.
public protocol DissociatedTransport: Sendable {
  /// The URI scheme this backend serves (`tcp`, `shm`, `ucx`, …).
  var scheme: String { get }
  /// What the backend offers beyond the required operations.
  var capabilities: TransportCapabilities { get }
  /// Starts listening at `address`.
  func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener
  /// Connects to the server of `location` (its address; its remote handle,
  /// if the backend needs one to read the server's memory).
  func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection
}

/// A bound listener.
public protocol TransportListener: Sendable {
  /// The bound address, with the port actually chosen.
  var address: TransportAddress { get }
  /// A handle to publish as `remote_handle` in locations, if the backend
  /// exposes one memory region to every client; nil otherwise.
  var remoteHandle: [UInt8]? { get }
  /// The next accepted connection, or nil once the listener is closed.
  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)?
  /// Stops accepting; pending `accept` calls return nil. Idempotent.
  func close() async
  /// What the listener and its connections hold now — connections,
  /// shared or registered memory — in a few words for a server's stats
  /// (`dipc serve` prints them on SIGUSR1); nil when there is nothing
  /// worth telling (the default).
  var heldResources: String? { get }
}

extension TransportListener {
  /// nil: nothing worth telling.
  public var heldResources: String? { nil }
}

/// A received tagged message.
public struct TaggedMessage: Sendable, Hashable {
  /// The sender's tag (all 64 bits, whatever mask matched it).
  public var tag: UInt64
  /// The payload.
  public var payload: ArrowBytes

  /// Creates a message.
  public init(tag: UInt64, payload: ArrowBytes) {
    self.tag = tag
    self.payload = payload
  }
}

/// One connection between a client and a server.
public protocol TransportConnection: AnyObject, Sendable {
  /// Sends one framed message made of `parts` (gathered, not copied where
  /// the backend can avoid it).
  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError)
  /// The next framed message, or nil when the peer closed.
  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes?
  /// Sends one tagged message made of `parts`.
  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError)
  /// Sends a framed message made of `frame`, then a tagged one made of
  /// `parts` (a metadata frame and its inline body): the peer receives
  /// exactly what the two sends would give, but a backend may hand both
  /// over at once (one queue entry, one wake-up, one wire message). The
  /// default sends them one after the other.
  func sendFrame(_ frame: [ArrowBytes], thenTagged tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError)
  /// The next tagged message whose tag matches `tag` under `mask`, or nil
  /// when the peer closed. Several receives may wait at once; messages go to
  /// them in the order they were posted.
  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage?
  /// The next framed message if one is already here, without waiting:
  /// for a reader of many messages, which awaits ``receiveFrame()`` only
  /// on `.wouldWait`. Backends that cannot tell answer `.wouldWait` (the
  /// default).
  func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes>
  /// ``receiveTagged(matching:mask:)`` without waiting, as ``readyFrame()``.
  func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage>
  /// The remote-memory capability, when the backend offers it.
  var remoteMemory: (any RemoteMemory)? { get }
  /// A short description of the path in use (for example the UCX lanes), so
  /// users can see which transport really ran.
  var pathDescription: String { get }
  /// What the connection holds on its peer's behalf now — shared or
  /// registered memory, say — in a few words for a log line; nil when
  /// there is nothing worth telling (the default). A server logs it as a
  /// stream ends, so memory a client keeps alive is visible.
  var heldResources: String? { get }
  /// Closes the connection; idempotent.
  func close() async
  /// Ends the connection now, without flushing: pending and later calls
  /// fail, and a send blocked on a peer that stopped reading returns. A
  /// server's stall timeout (DIPC-LIM-10) and a non-graceful shutdown use
  /// it. Idempotent. The default starts ``close()`` in a task of its own.
  func abort()
}

extension TransportConnection {
  /// ``sendFrame(_:)``, then ``sendTagged(_:_:)``.
  public func sendFrame(_ frame: [ArrowBytes], thenTagged tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await sendFrame(frame)
    try await sendTagged(tag, parts)
  }

  /// Starts ``close()`` in a task of its own.
  public func abort() { Task { await close() } }

  /// nil: nothing worth telling.
  public var heldResources: String? { nil }

  /// `.wouldWait`: every receive goes through ``receiveFrame()``.
  public func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> { .wouldWait }
  /// `.wouldWait`: every receive goes through ``receiveTagged(matching:mask:)``.
  public func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    .wouldWait
  }
}

/// What a receive finds without waiting (``TransportConnection/readyFrame()``).
///
/// A stream's reader asks first and awaits only when nothing is there: a
/// message that is already queued then costs no asynchronous call.
public enum ReadyReceive<Message: Sendable>: Sendable {
  /// The next message.
  case message(Message)
  /// The peer closed in order and nothing is left (the receive would
  /// return nil).
  case ended
  /// Nothing yet: the receive would wait.
  case wouldWait

  /// The message, nil at the end, or what `receive` (the waiting receive)
  /// returns when nothing was here.
  @inline(__always)
  public func orWaiting(
    _ receive: () async throws(DissociatedIPCError) -> Message?
  ) async throws(DissociatedIPCError) -> Message? {
    switch self {
    case .message(let message): message
    case .ended: nil
    case .wouldWait: try await receive()
    }
  }
}

/// A memory region exposed to the peer for body-type-1 descriptors.
public struct ExposedRegion: Sendable, Hashable {
  /// An id unique on this connection, used to release it.
  public var id: UInt64
  /// The ranges that, concatenated, hold the exposed bytes; the addresses
  /// are what the peer passes back to ``RemoteMemory/fetch(_:)`` and in
  /// free_data.
  public var ranges: [RemoteRange]

  /// Creates a region.
  public init(id: UInt64, ranges: [RemoteRange]) {
    self.id = id
    self.ranges = ranges
  }
}

/// Shared or remote memory between the two ends of a connection.
///
/// Ordering (DIPC-RM-1): a region is readable by the client once the
/// client has received any message the server sent after ``expose(_:)``
/// returned (the protocol always sends the descriptor next), and a
/// released one is refused once a message sent after ``release(_:)`` was
/// received. A backend may tell the client of regions in its own message
/// flow, as fabric:// does.
public protocol RemoteMemory: Sendable {
  /// Server side: makes `bytes` readable by the peer until released.
  func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion
  /// Server side: the peer no longer needs the region.
  func release(_ region: UInt64) async
  /// Client side: the bytes of `ranges`, concatenated. A mapping backend
  /// returns a view of the server's memory; others return a copy.
  ///
  /// - Throws: `.malformedDescriptor` when a range does not lie inside
  ///   memory the peer exposed.
  func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes
}
