public import ArrowIPC

/// Where a served stream's messages come from.
public enum StreamSource: Sendable {
  /// An Arrow IPC stream file, opened when a client asks for it and read
  /// message by message with `pread(2)`: a file truncated or rewritten
  /// while it is served fails that stream with a typed error and never
  /// harms the server (DIPC-FILE-1).
  case file(path: String)
  /// Messages held in memory.
  case messages([OutgoingMessage])
  /// A producer called once per client; it yields the messages in stream
  /// order, the Schema first.
  case producer(@Sendable () -> AsyncThrowingStream<OutgoingMessage, any Error>)

  /// The messages of this source for one client.
  func messages(limits: ArrowIPCLimits) -> MessageSource {
    switch self {
    case .messages(let messages): MessageSource(.array(messages))
    case .producer(let make): MessageSource(.producer(make().makeAsyncIterator()))
    case .file(let path): MessageSource(.file(path: path, limits: limits))
    }
  }
}

extension StreamSource {
  /// This source's messages in stream order for one consumer outside the
  /// protocol's own server (a Flight DoGet, say): a file is opened on the
  /// first ``StreamMessages/next()`` and read one message per call, with
  /// every message checked against `limits`.
  public func openMessages(limits: ArrowIPCLimits = .defaults) -> StreamMessages {
    StreamMessages(source: messages(limits: limits))
  }
}

/// The messages of one ``StreamSource`` for one consumer, in stream order
/// (the Schema first).
public struct StreamMessages {
  var source: MessageSource

  /// The next message; nil at the end.
  ///
  /// - Throws: the file's typed errors (a file truncated or rewritten
  ///   while served, a message over the limits), or a producer's error.
  public mutating func next() async throws -> OutgoingMessage? { try await source.next() }
}

/// One client's pull of a ``StreamSource``: arrays are read in place and
/// files one message per call, without a suspension in between; only
/// producers are awaited.
///
/// The position in an array and a file's reader are stored beside the
/// origin, not in its payload: advancing then writes an integer or the
/// reader in place instead of rebuilding an enum, which copied and
/// released the payload through generic witnesses once per message.
struct MessageSource {
  enum Origin {
    case array([OutgoingMessage])
    /// The file is opened on the first pull.
    case file(path: String, limits: ArrowIPCLimits)
    case producer(AsyncThrowingStream<OutgoingMessage, any Error>.Iterator)
  }

  private var origin: Origin
  /// The next message's index in an array origin.
  private var nextIndex = 0
  /// A file origin's reader, once opened.
  private var reader: IPCFileReader?

  /// Recycles the buffers file bodies are read into, once sent.
  static let fileBodyPool = BufferPool()

  init(_ origin: Origin) { self.origin = origin }

  /// Whether `next()` may return nil before the end because the task was
  /// cancelled (a producer's stream does; arrays and files do not).
  var endsWhenCancelled: Bool {
    if case .producer = origin { return true }
    return false
  }

  /// The next message, nil at the end; runs on the caller's actor.
  @inline(__always)
  mutating func next(isolation actor: isolated (any Actor)? = #isolation) async throws -> OutgoingMessage? {
    switch origin {
    case .array(let messages):
      guard nextIndex < messages.count else { return nil }
      nextIndex += 1
      return messages[nextIndex - 1]
    case .file(let path, let limits):
      if reader == nil { reader = try IPCFileReader(path: path, limits: limits, pool: Self.fileBodyPool) }
      return try reader!.next().map { message throws(ArrowIPCError) in try OutgoingMessage(message) }
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
