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
  func messages(limits: ArrowIPCLimits) -> AsyncThrowingStream<OutgoingMessage, any Error> {
    switch self {
    case .messages(let messages):
      return AsyncThrowingStream { continuation in
        for message in messages { continuation.yield(message) }
        continuation.finish()
      }
    case .producer(let make):
      return make()
    case .file(let path):
      return AsyncThrowingStream { continuation in
        do {
          var reader = IPCStreamReader(try ArrowBytes(mappingFileAt: path), limits: limits)
          while let message = try reader.next() { continuation.yield(try OutgoingMessage(message)) }
          continuation.finish()
        } catch {
          continuation.finish(throwing: error)
        }
      }
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
