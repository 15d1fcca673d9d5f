internal import ArrowIPC

/// Where a served stream's messages come from.
public enum StreamSource: Sendable {
  /// An Arrow IPC stream file, memory-mapped when a client asks for it;
  /// bodies are sent from the mapping without a copy.
  case file(path: String)
  /// Messages held in memory.
  case messages([OutgoingMessage])
  /// A producer called once per client; it yields the messages in stream
  /// order, the Schema first.
  case producer(@Sendable () -> AsyncThrowingStream<OutgoingMessage, any Error>)

  /// The messages of this source for one client.
  func messages(limits: ArrowIPCLimits) -> MessageSource {
    switch self {
    case .messages(let messages): MessageSource(.array(messages, next: 0))
    case .producer(let make): MessageSource(.producer(make().makeAsyncIterator()))
    case .file(let path): MessageSource(.file(path: path, limits: limits, reader: nil))
    }
  }
}

/// One client's pull of a ``StreamSource``: arrays and files are read in
/// place, one message per call, without a suspension or a buffer in
/// between; only producers are awaited.
struct MessageSource {
  enum Origin {
    case array([OutgoingMessage], next: Int)
    /// The file is mapped on the first pull.
    case file(path: String, limits: ArrowIPCLimits, reader: IPCStreamReader?)
    case producer(AsyncThrowingStream<OutgoingMessage, any Error>.Iterator)
  }

  private var origin: Origin

  init(_ origin: Origin) { self.origin = origin }

  /// The next message, nil at the end; runs on the caller's actor.
  @inline(__always)
  mutating func next(isolation actor: isolated (any Actor)? = #isolation) async throws -> OutgoingMessage? {
    switch origin {
    case .array(let messages, let next):
      guard next < messages.count else { return nil }
      origin = .array(messages, next: next + 1)
      return messages[next]
    case .file(let path, let limits, var reader):
      if reader == nil { reader = IPCStreamReader(try ArrowBytes(mappingFileAt: path), limits: limits) }
      let message = try reader!.next().map { message throws(ArrowIPCError) in try OutgoingMessage(message) }
      origin = .file(path: path, limits: limits, reader: reader)
      return message
    case .producer(var iterator):
      let message = try await iterator.next(isolation: actor)
      origin = .producer(iterator)
      return message
    }
  }
}

/// The streams a server offers, by ticket (the opaque identifier a client
/// sends with want_data).
public struct StreamCatalog: Sendable {
  private var sources: [[UInt8]: StreamSource] = [:]

  /// An empty catalog.
  public init() {}

  /// Offers `source` under `ticket`.
  public mutating func add(_ ticket: [UInt8], _ source: StreamSource) { sources[ticket] = source }

  /// Offers `source` under the UTF-8 bytes of `ticket`.
  public mutating func add(_ ticket: String, _ source: StreamSource) { add(Array(ticket.utf8), source) }

  /// The tickets, in no particular order.
  public var tickets: [[UInt8]] { Array(sources.keys) }

  /// The source for `ticket`.
  public subscript(ticket: [UInt8]) -> StreamSource? { sources[ticket] }
}
