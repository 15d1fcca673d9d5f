public import ArrowIPC

/// Which flows a server stream produces (DIPC-TOPO-*).
public enum StreamRole: Sendable, Hashable {
  /// Metadata frames and bodies on one connection.
  case combined
  /// Metadata frames only (the metadata server of the two-server topology).
  case metadata
  /// Bodies only (the data server of the two-server topology).
  case data

  var sendsMetadata: Bool { self != .data }
  var sendsBodies: Bool { self != .metadata }
}

/// What a server stream does with one message: the metadata frame to send
/// and what to do with the body. Holds no heap storage of its own.
public struct ServerSend: Sendable {
  /// The metadata frame to send, if this role sends metadata.
  public var metadata: MetadataFrame?
  /// The body action, if this role sends bodies and the message has one.
  public var body: ServerBody?
}

/// How a body goes out.
public enum ServerBody: Sendable {
  /// Send `bytes` as a tagged message with `tag` (body type 0).
  case inline(tag: Tag, bytes: ArrowBytes)
  /// Expose `bytes` through the transport's remote memory, then report the
  /// ranges with ``ServerStreamStateMachine/bodyExposed(sequence:region:ranges:)``,
  /// which returns the descriptor to send (body type 1).
  case expose(sequence: UInt32, bytes: ArrowBytes)
}

/// Tuning of a server stream.
public struct ServerStreamConfig: Sendable, Hashable {
  /// Bodies of at least this many bytes go as descriptors when the
  /// transport offers remote memory; smaller ones inline (DIPC-BODY-7).
  public var rendezvousThreshold: Int
  /// Most descriptor bytes one client may hold before the server waits for
  /// free_data (DIPC-BP-1).
  public var maxOutstandingBytes: Int

  /// 64 KiB threshold, 256 MiB outstanding.
  public static let defaults = ServerStreamConfig(rendezvousThreshold: 64 << 10, maxOutstandingBytes: 256 << 20)

  /// Creates a configuration.
  public init(rendezvousThreshold: Int, maxOutstandingBytes: Int) {
    self.rendezvousThreshold = rendezvousThreshold
    self.maxOutstandingBytes = maxOutstandingBytes
  }
}

/// The server side of one stream, without I/O (sans-I/O).
///
/// ```
///            message(…) ─┐ (sequence += 1)
///                        v
///   ┌──────────────► streaming ── sourceFinished() ──► draining ──(nothing outstanding)──► finished
///   │                  │  ▲                              │  ▲
///   │     bodyExposed  │  │ freeData                     │  │ freeData
///   └──────────────────┘  └──────────────                └──┘
///   peerClosed() from any state: releases everything  ──► closed
/// ```
/// The driver pulls a message from the source only while
/// ``mayAcceptMessage`` (backpressure on outstanding descriptor bytes), sends
/// what ``message(_:)`` returns, exposes bodies it is asked to, and feeds
/// free_data and closures back in. Sequence numbers start at 0 and wrap at
/// `UInt32.max` (DIPC-SEQ-1, DIPC-SEQ-2).
public struct ServerStreamStateMachine: Sendable {
  private enum State: Sendable {
    case streaming
    case draining
    case finished
    case closed
  }

  private struct Region: Sendable {
    var remainingRanges: Int
    var bytes: Int
  }

  private var state: State = .streaming
  private var nextSequence: UInt32
  private var sentMessages = 0
  private let role: StreamRole
  private let config: ServerStreamConfig
  private let remoteMemory: Bool
  /// Outstanding range address → the region it belongs to.
  private var outstanding: [UInt64: UInt64] = [:]
  /// Region id → what is left of it.
  private var regions: [UInt64: Region] = [:]
  /// Descriptor bytes the client still holds.
  public private(set) var outstandingBytes = 0

  /// A stream for `role`; `remoteMemory` says whether the transport can
  /// expose memory (else every body goes inline).
  public init(role: StreamRole, remoteMemory: Bool, config: ServerStreamConfig = .defaults) {
    self.init(role: role, remoteMemory: remoteMemory, config: config, firstSequence: 0)
  }

  /// For tests of sequence rollover: starts at `firstSequence`.
  init(role: StreamRole, remoteMemory: Bool, config: ServerStreamConfig, firstSequence: UInt32) {
    self.role = role
    self.remoteMemory = remoteMemory
    self.config = config
    self.nextSequence = firstSequence
  }

  /// Whether the driver may hand over the next message: the stream is
  /// still streaming and the client holds less than the outstanding limit
  /// (DIPC-BP-1). A single body larger than the limit still goes once
  /// nothing else is outstanding.
  public var mayAcceptMessage: Bool {
    state == .streaming && (outstandingBytes == 0 || outstandingBytes < config.maxOutstandingBytes)
  }

  /// Whether nothing is left to do.
  public var isFinished: Bool { state == .finished || state == .closed }

  /// Assigns the next sequence number to `message` and says what to send.
  ///
  /// - Throws: `.sourceFailed` when the source breaks the stream order
  ///   (the first message is not the Schema, or a second Schema), which
  ///   is the server's own fault and must not reach the wire.
  public mutating func message(_ message: OutgoingMessage) throws(DissociatedIPCError) -> ServerSend {
    try checkOpen()
    precondition(state == .streaming, "message after the source finished")
    guard (message.kind == .schema) == (sentMessages == 0) else {
      throw DissociatedIPCError(.sourceFailed, sentMessages == 0
        ? "the source's first message is not a Schema" : "the source sent a second Schema")
    }
    let sequence = nextSequence
    nextSequence &+= 1
    sentMessages += 1
    var send = ServerSend()
    if role.sendsMetadata { send.metadata = .message(sequence: sequence, flatbuffer: message.metadata) }
    if role.sendsBodies, message.kind.hasBody {
      if remoteMemory, !message.body.isEmpty, message.body.count >= config.rendezvousThreshold {
        send.body = .expose(sequence: sequence, bytes: message.body)
      } else {
        send.body = .inline(tag: Tag(sequence: sequence, bodyType: .inline), bytes: message.body)
      }
    }
    return send
  }

  /// Records that the body of `sequence` is exposed as `ranges` of
  /// `region` (an id the driver chooses, unique per stream), and returns the
  /// tag and descriptor to send.
  public mutating func bodyExposed(sequence: UInt32, region: UInt64, ranges: [RemoteRange])
    throws(DissociatedIPCError) -> (tag: Tag, descriptor: BodyDescriptor) {
    try checkOpen()
    precondition(regions[region] == nil, "region id reused while outstanding")
    let descriptor = try BodyDescriptor(ranges: ranges)
    for range in ranges {
      precondition(outstanding[range.address] == nil, "address exposed twice while outstanding")
      outstanding[range.address] = region
    }
    regions[region] = Region(remainingRanges: ranges.count, bytes: Int(descriptor.totalSize))
    outstandingBytes += Int(descriptor.totalSize)
    return (Tag(sequence: sequence, bodyType: .descriptor), descriptor)
  }

  /// The client went away while the driver was busy (the driver's events
  /// race with the client's close): not a bug, a truncated stream.
  private func checkOpen() throws(DissociatedIPCError) {
    guard state != .closed else {
      throw DissociatedIPCError(.streamTruncated, "the client closed the connection mid-stream")
    }
  }

  /// The source has no more messages; returns the end-of-stream frame to
  /// send (for roles that send metadata), or nil when the client is gone.
  public mutating func sourceFinished() -> MetadataFrame? {
    if state == .closed { return nil }
    precondition(state == .streaming, "sourceFinished twice")
    state = outstanding.isEmpty ? .finished : .draining
    return role.sendsMetadata ? .endOfStream(sequence: nextSequence) : nil
  }

  /// The client returned `addresses`; returns the regions now free to
  /// release.
  ///
  /// - Throws: `.unknownFreeAddress` when an address was not handed to
  ///   this client or was already freed (DIPC-FREE-3).
  public mutating func freeData(_ addresses: [UInt64]) throws(DissociatedIPCError) -> [UInt64] {
    var released: [UInt64] = []
    for address in addresses {
      guard let region = outstanding.removeValue(forKey: address) else {
        throw DissociatedIPCError(.unknownFreeAddress, "free_data for address \(address), which this client does not hold")
      }
      regions[region]!.remainingRanges -= 1
      if regions[region]!.remainingRanges == 0 {
        outstandingBytes -= regions.removeValue(forKey: region)!.bytes
        released.append(region)
      }
    }
    if state == .draining, outstanding.isEmpty { state = .finished }
    return released
  }

  /// The client is gone (or the stream is being torn down): every region
  /// it held may be released (DIPC-FREE-4). Returns them.
  public mutating func peerClosed() -> [UInt64] {
    state = .closed
    let held = Array(regions.keys)
    outstanding.removeAll()
    regions.removeAll()
    outstandingBytes = 0
    return held
  }
}
