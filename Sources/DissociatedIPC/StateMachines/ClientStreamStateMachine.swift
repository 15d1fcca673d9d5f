public import ArrowIPC

/// Tuning and limits of a client stream.
public struct ClientStreamConfig: Sendable, Hashable {
  /// Most messages that may be held waiting for an earlier sequence number
  /// (DIPC-LIM-3).
  public var reorderWindow: Int
  /// Most body bytes that may be held waiting for earlier messages (DIPC-LIM-3).
  public var maxBufferedBytes: Int
  /// Most ranges in one body descriptor (DIPC-LIM-2).
  public var maxDescriptorRanges: Int
  /// Limits on the Arrow metadata.
  public var arrowLimits: ArrowIPCLimits

  /// A window of 1,024 messages and 512 MiB, 4,096 ranges per descriptor.
  public static let defaults = ClientStreamConfig(
    reorderWindow: 1024, maxBufferedBytes: 512 << 20, maxDescriptorRanges: 4096, arrowLimits: .defaults)

  /// Creates a configuration.
  public init(reorderWindow: Int, maxBufferedBytes: Int, maxDescriptorRanges: Int, arrowLimits: ArrowIPCLimits) {
    precondition(reorderWindow > 0, "the reorder window needs room for one message")
    self.reorderWindow = reorderWindow
    self.maxBufferedBytes = maxBufferedBytes
    self.maxDescriptorRanges = maxDescriptorRanges
    self.arrowLimits = arrowLimits
  }
}

/// What the client stream delivers, in sequence order.
public enum ClientItem: Sendable {
  /// The schema (always first).
  case schema(Schema)
  /// Dictionary values; `remoteAddresses` as for record batches.
  case dictionary(DictionaryBatch, remoteAddresses: [UInt64])
  /// A record batch. `remoteAddresses` lists the addresses to return with
  /// free_data once nothing reads the body any more (empty for inline
  /// bodies and for bodies already copied — see ``ClientStreamStateMachine/bodyFetched(sequence:bytes:release:)``).
  case recordBatch(RecordBatch, remoteAddresses: [UInt64])
}

/// The client side of one stream, without I/O (sans-I/O).
///
/// ```
///   metadata frames ─┐                        ┌─► nextItem(): schema, dictionaries,
///   tagged bodies  ──┼─► reorder window ──────┤   batches in sequence order
///   fetched bodies ──┘   (by sequence number) └─► bodyFetch actions for type-1 bodies
///
///   receiving ──(end of stream seen, everything delivered)──► complete
///   any protocol violation ──► failed (the error is thrown; the driver closes)
/// ```
/// Messages and bodies may arrive in any order, on one connection or two.
/// Every protocol violation is thrown as a ``DissociatedIPCError``; after a
/// throw the stream is failed and every further event throws the same error.
public struct ClientStreamStateMachine: Sendable {
  private enum BodyState: Sendable {
    case none
    /// A type-1 body whose bytes are being fetched.
    case fetching(BodyDescriptor)
    case ready(ArrowBytes, remoteAddresses: [UInt64])

    var isPresent: Bool {
      if case .none = self { return false }
      return true
    }
  }

  /// One sequence number's message and body. The flags are kept beside
  /// the message so that checks never copy it (a Message is large).
  private struct Slot: Sendable {
    private(set) var message: Message?
    private(set) var hasMessage = false
    /// Whether the message (once present) has a body.
    private(set) var hasBody = false
    /// The message's bodyLength (once present).
    private(set) var bodyLength: Int64 = 0
    var body: BodyState = .none

    var isEmpty: Bool { !hasMessage && !body.isPresent }

    /// Moves the message out (no copy).
    mutating func takeMessage() -> Message {
      var taken: Message?
      swap(&taken, &message)
      return taken!
    }

    mutating func store(_ message: consuming Message) {
      hasMessage = true
      hasBody = message.header.hasBody
      bodyLength = message.bodyLength
      self.message = message
    }
  }


  private let config: ClientStreamConfig
  /// Ring of `reorderWindow` slots: the next expected sequence number's
  /// is `expectedSlot`, and the one `d` ahead of it `d` slots further
  /// (wrapping). Relative, not `sequence % window`: no division per
  /// message, and a window that does not divide 2^32 still maps the
  /// sequence numbers around the wrap to distinct slots.
  private var slots: [Slot]
  private var expected: UInt32
  private var expectedSlot = 0
  private var delivered = 0
  private var endOfStream: UInt32?
  private var bufferedBytes = 0
  private var validator = ArrowStreamValidator()
  private var decoder: RepeatedMessageDecoder
  private var failure: DissociatedIPCError?

  /// A client stream expecting sequence 0 first.
  public init(config: ClientStreamConfig = .defaults) {
    self.init(config: config, firstSequence: 0)
  }

  /// For tests of sequence rollover: expects `firstSequence` first.
  init(config: ClientStreamConfig, firstSequence: UInt32) {
    self.config = config
    self.slots = Array(repeating: Slot(), count: config.reorderWindow)
    self.expected = firstSequence
    self.decoder = RepeatedMessageDecoder(limits: config.arrowLimits)
  }

  // The helpers the events and the driver call for every message are
  // inlined: a call passes the machine (about 470 bytes) as a copy, which
  // cost several memcpys of it per batch.

  /// Whether the end of stream arrived and every message was delivered.
  @inline(__always)
  public var isComplete: Bool {
    failure == nil && delivered > 0 && endOfStream == expected
  }

  /// The number of messages delivered so far.
  public var deliveredCount: Int { delivered }

  /// What the next delivery waits for.
  public enum Need: Sendable, Hashable {
    /// A metadata frame: the next message's, or the end of stream.
    case metadata
    /// The next message's body.
    case body
    /// The next message's body is a descriptor whose bytes are being
    /// fetched: the fetch of body `sequence` must finish.
    case fetch(sequence: UInt32)
    /// Nothing: ``nextItem()`` delivers, or the stream is complete or failed.
    case nothing
  }

  /// What the next delivery waits for. A driver reads the flow this names
  /// and lets the other wait, so a flow that runs ahead is held back by the
  /// transport's flow control rather than filling the reorder window
  /// (DIPC-CLIENT-3).
  @inline(__always)
  public var need: Need {
    guard failure == nil, !isComplete else { return .nothing }
    // Read the slot in place: copying it would copy a whole Message.
    let index = expectedSlot
    guard slots[index].hasMessage else { return .metadata }
    guard slots[index].hasBody else { return .nothing }
    switch slots[index].body {
    case .ready: return .nothing
    case .fetching: return .fetch(sequence: expected)
    case .none: return .body
    }
  }

  // MARK: Events

  /// A metadata frame arrived.
  public mutating func metadataReceived(_ frame: ArrowBytes) throws(DissociatedIPCError) {
    if let failure { throw failure }
    do throws(DissociatedIPCError) {
      switch try MetadataFrame.decode(frame) {
      case .error(let code, let text):
        throw DissociatedIPCError(.peerError, "server reported \(code): \(text)")
      case .endOfStream(let sequence):
        guard endOfStream == nil else {
          throw DissociatedIPCError(.duplicateSequence, "a second end-of-stream frame (\(sequence))")
        }
        // The end is at most a window ahead of what was delivered.
        guard sequence &- expected <= UInt32(config.reorderWindow) else {
          throw DissociatedIPCError(.unexpectedMessage, "end of stream at \(sequence) while expecting \(expected)")
        }
        endOfStream = sequence
        try checkBeforeEnd()
      case .message(let sequence, let flatbuffer):
        let index = try slotIndex(sequence)
        guard !slots[index].hasMessage else {
          throw DissociatedIPCError(.duplicateSequence, "metadata \(sequence) arrived twice")
        }
        let message: Message
        do throws(ArrowIPCError) { message = try decoder.decode(flatbuffer) } catch {
          throw DissociatedIPCError(error)
        }
        guard message.header.hasBody || !slots[index].body.isPresent else {
          throw DissociatedIPCError(.unexpectedMessage, "a body arrived for message \(sequence), which has none")
        }
        slots[index].store(consume message)
        try checkLength(slot: index, sequence: sequence)
      }
    } catch {
      throw fail(error)
    }
  }

  /// A tagged body message arrived. Returns the descriptor to fetch when it
  /// is a type-1 body; report the bytes with ``bodyFetched(sequence:bytes:release:)``.
  public mutating func bodyReceived(tag rawTag: UInt64, payload: ArrowBytes) throws(DissociatedIPCError) -> BodyDescriptor? {
    if let failure { throw failure }
    do throws(DissociatedIPCError) {
      let tag = try Tag(validatingBodyTag: rawTag)
      let index = try slotIndex(tag.sequence)
      guard !slots[index].body.isPresent else {
        throw DissociatedIPCError(.duplicateSequence, "body \(tag.sequence) arrived twice")
      }
      if slots[index].hasMessage, !slots[index].hasBody {
        throw DissociatedIPCError(.unexpectedMessage, "a body arrived for message \(tag.sequence), which has none")
      }
      switch tag.bodyType {
      case .inline:
        try reserve(payload.count)
        slots[index].body = .ready(payload, remoteAddresses: [])
        try checkLength(slot: index, sequence: tag.sequence)
        return nil
      case .descriptor:
        let descriptor = try BodyDescriptor.decode(payload, maxRanges: config.maxDescriptorRanges)
        slots[index].body = .fetching(descriptor)
        try checkLength(slot: index, sequence: tag.sequence)
        return descriptor
      default:
        throw DissociatedIPCError(.unknownBodyType, "body \(tag.sequence) has \(tag.bodyType)")
      }
    } catch {
      throw fail(error)
    }
  }

  /// The bytes of a type-1 body arrived. `release` says whether they still
  /// reference the server's memory (a mapping, not a copy): then the item
  /// carries the addresses to free when the user is done; otherwise they
  /// are returned by this call, to send in free_data now.
  public mutating func bodyFetched(sequence: UInt32, bytes: ArrowBytes, release: Bool) throws(DissociatedIPCError) -> [UInt64] {
    if let failure { throw failure }
    do throws(DissociatedIPCError) {
      let index = try slotIndex(sequence)
      guard case .fetching(let descriptor) = slots[index].body else {
        throw DissociatedIPCError(.unexpectedMessage, "fetched bytes for body \(sequence), which is not being fetched")
      }
      guard UInt64(bytes.count) == descriptor.totalSize else {
        throw DissociatedIPCError(.bodyLengthMismatch, "fetched \(bytes.count) bytes of a \(descriptor.totalSize)-byte body")
      }
      try reserve(bytes.count)
      let addresses = descriptor.ranges.map(\.address)
      slots[index].body = .ready(bytes, remoteAddresses: release ? addresses : [])
      return release ? [] : addresses
    } catch {
      throw fail(error)
    }
  }

  /// The peer closed a connection of this stream. Fine once complete.
  ///
  /// - Throws: `.streamTruncated` when the stream is not complete.
  public mutating func peerClosed() throws(DissociatedIPCError) {
    if let failure { throw failure }
    do throws(DissociatedIPCError) {
      guard isComplete else {
        let what = endOfStream == nil ? "before the end of stream" : "with messages missing"
        throw DissociatedIPCError(.streamTruncated,
                                  "the server closed \(what) (\(delivered) messages delivered)")
      }
    } catch {
      throw fail(error)
    }
  }

  /// The next item in sequence order, when it is ready.
  public mutating func nextItem() throws(DissociatedIPCError) -> ClientItem? {
    if let failure { throw failure }
    do throws(DissociatedIPCError) { return try takeNext() } catch { throw fail(error) }
  }

  // MARK: Internals

  private mutating func takeNext() throws(DissociatedIPCError) -> ClientItem? {
    let index = expectedSlot
    guard slots[index].hasMessage else { return nil }
    if slots[index].hasBody {
      guard case .ready = slots[index].body else { return nil }
    }
    // Move the slot out (no copy of its message), leaving it empty.
    var slot = Slot()
    swap(&slot, &slots[index])
    let message = slot.takeMessage()
    var body = ArrowBytes()
    var addresses: [UInt64] = []
    if case .ready(let bytes, let remote) = slot.body {
      body = bytes
      addresses = remote
    }
    bufferedBytes -= body.count
    expected &+= 1
    expectedSlot = expectedSlot + 1 == slots.count ? 0 : expectedSlot + 1
    delivered += 1
    let item: StreamItem?
    do throws(ArrowIPCError) { item = try validator.accept(consume message, body: body) } catch { throw DissociatedIPCError(error) }
    switch item {
    case nil: return .schema(validator.schema!)
    case .dictionary(let dictionary): return .dictionary(dictionary, remoteAddresses: addresses)
    case .recordBatch(let batch): return .recordBatch(batch, remoteAddresses: addresses)
    }
  }

  /// The slot of `sequence`, which must lie in the window ahead of the next
  /// expected message and before the end of stream.
  @inline(__always)
  private func slotIndex(_ sequence: UInt32) throws(DissociatedIPCError) -> Int {
    let distance = sequence &- expected
    if let endOfStream, distance >= endOfStream &- expected {
      throw DissociatedIPCError(.unexpectedMessage, "message \(sequence) at or after the end of stream (\(endOfStream))")
    }
    guard distance < UInt32(slots.count) else {
      // Far behind: already delivered. Far ahead: outside the window.
      if distance > UInt32.max / 2 {
        throw DissociatedIPCError(.duplicateSequence, "message \(sequence) was already delivered")
      }
      throw DissociatedIPCError(.reorderWindowExceeded,
                                "message \(sequence) is \(distance) ahead of \(expected); the window is \(slots.count)")
    }
    let index = expectedSlot + Int(distance)
    return index >= slots.count ? index - slots.count : index
  }

  private mutating func reserve(_ bytes: Int) throws(DissociatedIPCError) {
    bufferedBytes += bytes
    guard bufferedBytes <= config.maxBufferedBytes || bufferedBytes == bytes else {
      throw DissociatedIPCError(.reorderWindowExceeded,
                                "\(bufferedBytes) body bytes waiting for earlier messages exceed \(config.maxBufferedBytes)")
    }
  }

  /// A body whose metadata is known must have the metadata's length (DIPC-BODY-5).
  /// Reads the slot in place (a copy would copy its whole message).
  @inline(__always)
  private func checkLength(slot index: Int, sequence: UInt32) throws(DissociatedIPCError) {
    guard slots[index].hasMessage, slots[index].hasBody else { return }
    let length: UInt64
    switch slots[index].body {
    case .none: return
    case .fetching(let descriptor): length = descriptor.totalSize
    case .ready(let bytes, _): length = UInt64(bytes.count)
    }
    let bodyLength = slots[index].bodyLength
    guard length == UInt64(bodyLength) else {
      throw DissociatedIPCError(.bodyLengthMismatch, "body \(sequence) has \(length) bytes, its metadata says \(bodyLength)")
    }
  }

  /// Messages already held must come before the end of stream.
  private func checkBeforeEnd() throws(DissociatedIPCError) {
    guard let endOfStream else { return }
    for slot in slots.indices where !slots[slot].isEmpty {
      let sequence = expected &+ UInt32((slot - expectedSlot + slots.count) % slots.count)
      guard sequence &- expected < endOfStream &- expected else {
        throw DissociatedIPCError(.unexpectedMessage, "message \(sequence) at or after the end of stream (\(endOfStream))")
      }
    }
  }

  /// Records `error`: the stream is failed for good, and every later
  /// event reports it again.
  private mutating func fail(_ error: DissociatedIPCError) -> DissociatedIPCError {
    failure = error
    return error
  }
}
