internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// One tcp:// connection: a reader thread that parses the byte stream into
/// the inbox, and a writer thread that drains the send queue, started when
/// the first message has to wait for it (TCP-THREAD-2).
final class TCPConnection: InboxReceiving, LazyWriterOwner {
  /// A queued message: its kind and tag (the writer encodes the header)
  /// and its payload parts.
  private struct Outgoing {
    /// nil for raw bytes sent without a header (the hello).
    var kind: TCPWire.Kind?
    var tag: UInt64
    var parts: [ArrowBytes]
    /// Bytes on the wire, header included.
    var size: Int
  }

  private struct WriteState {
    var queue: [Outgoing] = []
    var queuedBytes = 0
    var closing = false
    var failure: DissociatedIPCError?
    /// Senders waiting for the queue to drain below its limit.
    var blockedSenders: [CheckedContinuation<Void, Never>] = []
    /// `close()` callers waiting for the writer to finish.
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
    var writerDone = false
    /// The writer thread: started once a message has to wait for it
    /// (TCP-THREAD-2); it sleeps on ``writerWake``, signalled only then.
    var writer = LazyWriter()
    /// The writer is sending messages it took from the queue: a direct
    /// send now would overtake them.
    var writerBusy = false
    /// Tells lone messages from streams (TCP-SOCK-3).
    var submissions = LoneMessageDetector()

    /// What must happen for the writer to see a message just queued:
    /// nothing (it is busy), a wake-up, or its start (the first message).
    mutating func nudgeWriter() -> LazyWriter.Nudge { writer.nudge(pendingWork: true, ending: false) }
  }

  private let socket: Socket
  private let config: TCPTransport.Config
  let inbox: MessageInbox
  private let writeState = Mutex(WriteState())
  let writerWake = DispatchSemaphore(value: 0)
  let pathDescription: String

  /// The listener's claim on this connection (DIPC-LIM-7), given back when
  /// the connection is freed.
  private let slot: ConnectionSlots.Slot?

  /// Starts the reader thread and sends the hello; the writer thread
  /// starts when a message first has to wait for it.
  ///
  /// - Throws: `.resourceExhausted` when no reader thread can be had;
  ///   `socket` is closed then, as the connection is freed.
  init(socket: Socket, config: TCPTransport.Config, peer: String, slot: ConnectionSlots.Slot? = nil) throws(DissociatedIPCError) {
    self.socket = socket
    self.config = config
    self.slot = slot
    self.pathDescription = "tcp to \(peer)"
    self.inbox = MessageInbox(maxBufferedBytes: Int.max)
    socket.configure(bufferSize: config.socketBufferSize)
    // 16 bytes into an empty socket: written at once, in all but theory.
    let hello = ArrowBytes(copying: TCPWire.hello)
    let written = (try? socket.writeAvailable([UnsafeRawBufferPointer(start: hello.unsafeBaseAddress, count: hello.count)])) ?? 0
    if written < hello.count {
      let rest = ArrowBytes(copying: TCPWire.hello.dropFirst(written))
      enqueue(Outgoing(kind: nil, tag: 0, parts: [rest], size: rest.count))
    }
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "tcp-reader") { [self] in readLoop() }
    } catch {
      // The writer may run already (the hello's rest): stop it before
      // the caller closes the descriptor.
      abort()
      throw error
    }
  }

  var remoteMemory: (any RemoteMemory)? { nil }

  // MARK: Sending

  func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send(.frame, tag: 0, parts)
  }

  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    try await send(.tagged, tag: tag, parts)
  }

  /// Sends a lone small message at once (TCP-SOCK-3), else queues it for
  /// the writer; waits while the queue is over its limit. Returns before
  /// the bytes reach the peer, as send(2) does.
  private func send(_ kind: TCPWire.Kind, tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
    let length = parts.reduce(0) { $0 + $1.count }
    let message = Outgoing(kind: kind, tag: tag, parts: parts, size: TCPWire.headerLength + length)
    if length <= Self.directSendLimit, try sendDirectly(message) { return }
    guard let queued = enqueue(message)
    else { return try checkWritable() }
    guard queued > config.writeQueueBytes else { return }
    // Backpressure: wait until the writer has drained the queue enough.
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let wait = writeState.withLock { state -> Bool in
        guard state.queuedBytes > config.writeQueueBytes, state.failure == nil, !state.writerDone else { return false }
        state.blockedSenders.append(continuation)
        return true
      }
      if !wait { continuation.resume() }
    }
    try checkWritable()
  }

  /// Messages up to this size may be sent by the sending task itself.
  static let directSendLimit = 64 << 10

  /// Writes `message` from the calling task when it comes alone (the
  /// previous one was submitted over ``LoneMessageDetector/gap`` ago), the queue is
  /// empty and the writer idle; what the socket does not take now is
  /// queued first for the writer. False when the message must be queued.
  private func sendDirectly(_ message: Outgoing) throws(DissociatedIPCError) -> Bool {
    let outcome = writeState.withLock { state -> Result<LazyWriter.Nudge, DissociatedIPCError>? in
      guard state.submissions.submitted(), state.queue.isEmpty, !state.writerBusy,
            !state.closing, state.failure == nil
      else { return nil }
      let parts = message.parts.filter { !$0.isEmpty }
      let attempt = withUnsafeTemporaryAllocation(byteCount: TCPWire.headerLength, alignment: 8) { header in
        TCPWire.writeHeader(message.kind!, tag: message.tag, length: message.size - TCPWire.headerLength,
                            into: header.baseAddress!)
        let pieces = [UnsafeRawBufferPointer(header)]
          + parts.map { UnsafeRawBufferPointer(start: $0.unsafeBaseAddress, count: $0.count) }
        return Result { () throws(DissociatedIPCError) -> Outgoing? in
          let written = try withExtendedLifetime(parts) { () throws(DissociatedIPCError) in try socket.writeAvailable(pieces) }
          // What the socket did not take (the header's rest is copied out of this frame).
          return written < message.size ? Self.unsent(pieces: pieces, parts: parts, skipping: written) : nil
        }
      }
      let remainder: Outgoing
      switch attempt {
      case .failure(let error): return .failure(error)
      case .success(nil): return .success(.nothing)
      case .success(let rest?): remainder = rest
      }
      // The socket buffer is full: the rest goes first in the queue.
      state.queue.append(remainder)
      state.queuedBytes += remainder.size
      return .success(state.nudgeWriter())
    }
    switch outcome {
    case nil: return false
    case .failure(let error)?:
      fail(error)
      throw error
    case .success(let nudge)?:
      perform(nudge)
      return true
    }
  }

  /// Wakes or starts the writer; a writer that cannot start fails the
  /// connection (what it was to send can never go).
  private func perform(_ nudge: LazyWriter.Nudge) { perform(nudge, threadName: "tcp-writer") }

  /// The bytes of a partly written message after its first `written`
  /// bytes, as raw pieces (the header's rest copied, payloads sliced).
  private static func unsent(pieces: [UnsafeRawBufferPointer], parts: [ArrowBytes], skipping written: Int) -> Outgoing {
    var remaining: [ArrowBytes] = []
    var skip = written
    for (index, piece) in pieces.enumerated() {
      if skip >= piece.count {
        skip -= piece.count
        continue
      }
      if index == 0 {
        remaining.append(ArrowBytes(copying: UnsafeRawBufferPointer(rebasing: piece[skip...])))
      } else {
        let part = parts[index - 1]
        remaining.append(part.clampedSlice(offset: skip, count: part.count - skip))
      }
      skip = 0
    }
    return Outgoing(kind: nil, tag: 0, parts: remaining, size: remaining.reduce(0) { $0 + $1.count })
  }

  private func checkWritable() throws(DissociatedIPCError) {
    let (closing, failure) = writeState.withLock { ($0.closing, $0.failure) }
    if let failure { throw failure }
    if closing { throw DissociatedIPCError(.connectionClosed, "the tcp:// connection is closed") }
  }

  /// Queues `message`; wakes the writer if it sleeps. Returns the bytes
  /// queued, or nil when the connection is closing or failed.
  @discardableResult
  private func enqueue(_ message: Outgoing) -> Int? {
    let (queued, nudge) = writeState.withLock { state -> (Int?, LazyWriter.Nudge) in
      guard !state.closing, state.failure == nil else { return (nil, .nothing) }
      state.queue.append(message)
      state.queuedBytes += message.size
      return (state.queuedBytes, state.nudgeWriter())
    }
    perform(nudge)
    return queued
  }

  /// The writer thread: sends everything queued, many messages per
  /// system call; on close, flushes and sends FIN.
  func writeLoop() {
    var scratch = GatherScratch()
    while true {
      let (batch, closing, failed) = writeState.withLock { state in
        defer { state.queue.removeAll(keepingCapacity: true) }
        // Nothing to do: sleep until a sender, close() or fail() signals.
        state.writer.sleeping = state.queue.isEmpty && !state.closing && state.failure == nil
        state.writerBusy = !state.queue.isEmpty
        return (state.queue, state.closing, state.failure != nil)
      }
      if failed { break }
      if batch.isEmpty, !closing {
        writerWake.wait()
        continue
      }
      if !batch.isEmpty {
        do throws(DissociatedIPCError) {
          try write(batch, using: &scratch)
        } catch {
          fail(error)
          break
        }
        let size = batch.reduce(0) { $0 + $1.size }
        let released = writeState.withLock { state -> [CheckedContinuation<Void, Never>] in
          state.writerBusy = false
          state.queuedBytes -= size
          guard state.queuedBytes <= config.writeQueueBytes else { return [] }
          defer { state.blockedSenders = [] }
          return state.blockedSenders
        }
        for sender in released { sender.resume() }
      }
      let drainedAndClosing = writeState.withLock { $0.closing && $0.queue.isEmpty }
      if closing || drainedAndClosing {
        socket.shutdown(reading: false, writing: true)  // FIN after the last byte (TCP-CLOSE-1)
        break
      }
    }
    finishWriting()
  }

  /// The writer's end (or, when it never ran, its stand-in's): wakes
  /// `close()` callers and blocked senders.
  func finishWriting() {
    let waiters = writeState.withLock { state in
      state.writerDone = true
      defer {
        state.closeWaiters = []
        state.blockedSenders = []
      }
      return state.closeWaiters + state.blockedSenders
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Sends `batch` with as few system calls as possible: headers are
  /// encoded into `scratch`, payloads are gathered where they lie.
  private func write(_ batch: [Outgoing], using scratch: inout GatherScratch) throws(DissociatedIPCError) {
    // Every payload is an ArrowBytes whose owner keeps its memory in place;
    // `batch` holds them all until the write returns.
    try withExtendedLifetime(batch) { () throws(DissociatedIPCError) in
      let headers = scratch.headers(count: batch.count)
      scratch.pieces.removeAll(keepingCapacity: true)
      for (index, message) in batch.enumerated() {
        if let kind = message.kind {
          let header = headers + index * TCPWire.headerLength
          TCPWire.writeHeader(kind, tag: message.tag, length: message.size - TCPWire.headerLength, into: header)
          scratch.pieces.append(UnsafeRawBufferPointer(start: header, count: TCPWire.headerLength))
        }
        for part in message.parts where !part.isEmpty {
          scratch.pieces.append(UnsafeRawBufferPointer(start: part.unsafeBaseAddress, count: part.count))
        }
      }
      try socket.write(scratch.pieces)
    }
  }

  /// The connection broke: fail senders and receivers, stop both threads.
  func fail(_ error: DissociatedIPCError) {
    let senders = writeState.withLock { state in
      if state.failure == nil { state.failure = error }
      defer { state.blockedSenders = [] }
      return state.blockedSenders
    }
    for sender in senders { sender.resume() }
    inbox.close(error: error)
    socket.shutdown(reading: true, writing: true)
    // Let the writer thread see the failure and stop; with no writer, end
    // its part here (`.finish`).
    perform(writeState.withLock { $0.writer.nudge(pendingWork: false, ending: true) })
  }

  // MARK: Receiving

  /// The reader thread: hello, then messages until the peer's FIN (orderly)
  /// or an error.
  private func readLoop() {
    let reader = StreamReader(socket: socket, pool: config.receiveBufferPool)
    do throws(DissociatedIPCError) {
      guard try reader.readHello() else { return inbox.close() }
      while let (header, payload) = try reader.readMessage(maxLength: config.maxMessageSize) {
        switch header.kind {
        case .frame: inbox.deliverFrame(payload)
        case .tagged: inbox.deliverTagged(TaggedMessage(tag: header.tag, payload: payload))
        }
        inbox.waitForRoom(below: config.readAheadBytes)
        if inbox.isClosed { break }  // closed locally: nobody will receive more
      }
      inbox.close()
    } catch {
      fail(error)
    }
  }

  // MARK: Closing

  /// Flushes what was queued, sends FIN, stops reading; idempotent.
  func close() async {
    let nudge = writeState.withLock { state -> LazyWriter.Nudge in
      state.closing = true
      return state.writer.nudge(pendingWork: !state.queue.isEmpty, ending: true)
    }
    // No writer ever ran, so nothing was queued: FIN now (TCP-CLOSE-1).
    if nudge == .finish { socket.shutdown(reading: false, writing: true) }
    perform(nudge)
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = writeState.withLock { state -> Bool in
        if state.writerDone { return true }
        state.closeWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
    // Closing with messages still unread abandons the peer's stream: reset
    // rather than FIN, so a peer blocked sending to us fails now instead of
    // probing a zero window for minutes (TCP-CLOSE-3).
    if inbox.holdsUnreceivedMessages { socket.resetOnClose() }
    socket.shutdown(reading: true, writing: true)
    inbox.close()
  }

  /// Closes at once without flushing: the socket is shut down, so a
  /// writer blocked on a peer that stopped reading returns.
  func abort() {
    writeState.withLock { $0.closing = true }
    fail(DissociatedIPCError(.connectionClosed, "the tcp:// connection was aborted"))
  }

  /// The descriptor is closed only here: the reader and writer threads
  /// hold the connection while they run, so no call can reach a descriptor
  /// number that was closed and reused by another socket.
  deinit { socket.close() }
}

/// Parses the byte stream: a staging buffer gathers small messages with
/// few system calls; a large payload's remainder is received straight into
/// its own 64-byte-aligned buffer (TCP-RECV-1).
final class StreamReader {
  static let stagingSize = 64 << 10
  let socket: Socket
  /// Recycles large payload buffers once their batches are released.
  let pool: BufferPool
  /// Small payloads are copied out of staging into shared chunks.
  private var slab: SlabAllocator
  private let staging = UnsafeMutableRawPointer.allocate(byteCount: stagingSize, alignment: 64)
  private var start = 0
  private var end = 0
  /// Small messages read since the last large payload. Right after a large
  /// payload (a batch's metadata frame and the next body are likely to
  /// follow) staging reads only what the next step needs, so the start of
  /// the next large body is not copied through staging.
  private var smallSinceLarge = Int.max

  init(socket: Socket, pool: BufferPool) {
    self.socket = socket
    self.pool = pool
    self.slab = SlabAllocator(pool: pool)
  }

  deinit { staging.deallocate() }

  /// Makes at least `count` bytes available in staging; false at a clean
  /// end of stream (no partial data), throws on a cut-off one.
  private func fill(_ count: Int) throws(DissociatedIPCError) -> Bool {
    if end - start >= count { return true }
    if start > 0 {
      staging.copyMemory(from: UnsafeRawPointer(staging + start), byteCount: end - start)
      end -= start
      start = 0
    }
    let exact = smallSinceLarge < 2
    while end < count {
      let received = try socket.read(into: staging + end, count: exact ? count - end : Self.stagingSize - end)
      if received == 0 {
        if end == 0 { return false }
        throw DissociatedIPCError(.connectionClosed, "the tcp:// peer closed in the middle of a message")
      }
      end += received
    }
    return true
  }

  func readHello() throws(DissociatedIPCError) -> Bool {
    guard try fill(TCPWire.helloLength) else { return false }
    try TCPWire.checkHello(UnsafeRawBufferPointer(start: staging + start, count: TCPWire.helloLength))
    start += TCPWire.helloLength
    return true
  }

  func readMessage(maxLength: Int) throws(DissociatedIPCError) -> (TCPWire.Header, ArrowBytes)? {
    guard try fill(TCPWire.headerLength) else { return nil }
    let header = try TCPWire.readHeader(staging + start, maxLength: maxLength)
    start += TCPWire.headerLength
    if header.length <= SlabAllocator.maxSlabSize {
      guard try fill(header.length) else {
        throw DissociatedIPCError(.connectionClosed, "the tcp:// peer closed in the middle of a \(header.length)-byte message")
      }
      defer {
        start += header.length
        smallSinceLarge = smallSinceLarge == .max ? .max : smallSinceLarge + 1
      }
      return (header, slab.copy(staging + start, count: header.length))
    }
    smallSinceLarge = 0
    return (header, try readLargePayload(length: header.length))
  }

  /// A large payload's first buffer holds this much (or the whole
  /// payload, if smaller); each later one four times more (TCP-RECV-5).
  static let firstLargeCapacity = 4 << 20

  /// Receives a payload too large for staging into a 64-byte-aligned
  /// buffer of its own that grows as its bytes arrive (TCP-RECV-5): a peer
  /// that announces `length` bytes and sends fewer makes this side hold at
  /// most four times what it sent, plus ``firstLargeCapacity``, never the
  /// length it announced.
  private func readLargePayload(length: Int) throws(DissociatedIPCError) -> ArrowBytes {
    var storage = AlignedStorage(capacity: min(length, Self.firstLargeCapacity), zeroed: false, pool: pool)
    // Staging holds at most its 64 KiB, less than the first buffer.
    var received = min(end - start, length)
    if received > 0 {
      storage.mutableBytes.baseAddress!.copyMemory(from: staging + start, byteCount: received)
      start += received
    }
    while received < length {
      if received == storage.mutableBytes.count {
        let grown = AlignedStorage(capacity: min(length, received * 4), zeroed: false, pool: pool)
        grown.mutableBytes.baseAddress!.copyMemory(from: storage.mutableBytes.baseAddress!, byteCount: received)
        storage = grown
      }
      // One blocking receive (MSG_WAITALL) fills the buffer.
      guard try socket.readFully(into: storage.mutableBytes.baseAddress! + received,
                                 count: storage.mutableBytes.count - received)
      else {
        throw DissociatedIPCError(.connectionClosed, "the tcp:// peer closed in the middle of a \(length)-byte message")
      }
      received = storage.mutableBytes.count
    }
    return storage.freeze(count: length)
  }
}

/// The writer thread's reusable memory: encoded message headers and the
/// list of pieces for one scatter-gather write (no allocation per message).
struct GatherScratch: ~Copyable {
  private var headerMemory = UnsafeMutableRawPointer.allocate(byteCount: 64 * TCPWire.headerLength, alignment: 8)
  private var headerCapacity = 64
  /// The pieces of the write being prepared.
  var pieces: [UnsafeRawBufferPointer] = []

  /// Room for `count` headers, valid until the next call.
  mutating func headers(count: Int) -> UnsafeMutableRawPointer {
    if count > headerCapacity {
      headerMemory.deallocate()
      headerCapacity = max(count, headerCapacity * 2)
      headerMemory = UnsafeMutableRawPointer.allocate(byteCount: headerCapacity * TCPWire.headerLength, alignment: 8)
    }
    return headerMemory
  }

  deinit { headerMemory.deallocate() }
}
