public import ArrowIPC
public import DissociatedIPC
internal import Dispatch
internal import Synchronization

/// Receive-side queues for backends that deliver messages in software
/// (in-process, TCP, shared memory): a FIFO of framed messages and a tag
/// matcher with an unexpected-message queue, as UCX has natively.
///
/// The backend's reader calls ``deliverFrame(_:)`` and
/// ``deliverTagged(_:)``; the connection's receive calls wait here. After
/// ``close(error:)`` waiting and later receives get nil (orderly close) or
/// the error. Unexpected messages are bounded by `maxBufferedBytes`: past
/// it ``deliverTagged(_:)`` reports false and the backend closes the
/// connection with `.limitExceeded`.
public final class MessageInbox: Sendable {
  private struct PostedReceive {
    let id: UInt64
    let tag: UInt64
    let mask: UInt64
    let continuation: CheckedContinuation<TaggedMessage?, any Error>
  }

  private struct FrameWaiter {
    let id: UInt64
    let continuation: CheckedContinuation<ArrowBytes?, any Error>
  }

  private struct State {
    /// Framed messages in arrival order; a received one leaves the queue
    /// at once, so the inbox never keeps a message (and the memory it
    /// views) alive after handing it out.
    var frames = RingQueue<ArrowBytes>()
    var frameWaiters: [FrameWaiter] = []
    /// Unmatched tagged messages in arrival order; taken from the front in
    /// O(1) (the usual case: mask 0 or in-order bodies).
    var unexpected = RingQueue<TaggedMessage>()
    var posted: [PostedReceive] = []
    var bufferedBytes = 0
    /// Messages queued (frames and unexpected tagged messages).
    var queuedMessages = 0
    /// The part of `bufferedBytes` that is unexpected tagged messages.
    var taggedBytes = 0
    /// Run once `taggedBytes` is below `limit` (``waitForTaggedRoom(below:then:)``).
    var taggedRoomWaiter: (limit: Int, wake: @Sendable () -> Void)?
    var nextID: UInt64 = 0
    var closed = false
    var error: DissociatedIPCError?
    /// A reader thread blocked in ``waitForRoom(below:)``, and its limit.
    var roomWaiter: (semaphore: DispatchSemaphore, limit: Int)?

    /// Queues `frame`, or returns the waiting receive to hand it to
    /// (resumed outside the lock). Dropped after a close.
    mutating func place(frame: ArrowBytes) -> CheckedContinuation<ArrowBytes?, any Error>? {
      guard !closed else { return nil }
      if !frameWaiters.isEmpty { return frameWaiters.removeFirst().continuation }
      frames.append(frame)
      bufferedBytes += frame.count
      queuedMessages += 1
      return nil
    }

    /// Queues `message` as unexpected, or returns the first matching
    /// posted receive to hand it to (resumed outside the lock). Dropped
    /// after a close.
    mutating func place(tagged message: TaggedMessage) -> CheckedContinuation<TaggedMessage?, any Error>? {
      guard !closed else { return nil }
      if let index = posted.firstIndex(where: { message.tag & $0.mask == $0.tag & $0.mask }) {
        return posted.remove(at: index).continuation
      }
      unexpected.append(message)
      bufferedBytes += message.payload.count
      queuedMessages += 1
      taggedBytes += message.payload.count
      return nil
    }

    /// Takes the next frame: the frame, nil after an orderly close with
    /// none left (or the close's error); nil itself while a receive must
    /// wait.
    mutating func takeFrame() -> Result<ArrowBytes?, DissociatedIPCError>? {
      guard let frame = frames.popFirst() else { return nothingQueued() }
      drained(frame.count)?.signal()
      return .success(frame)
    }

    /// Takes the first unexpected message matching `tag` under `mask`, as
    /// ``takeFrame()``; `wake` is the backend's tagged-room wake-up, if now
    /// due, to run outside the lock.
    mutating func takeTagged(matching tag: UInt64, mask: UInt64, wake: inout (@Sendable () -> Void)?)
      -> Result<TaggedMessage?, DissociatedIPCError>? {
      let wanted = tag & mask
      for offset in 0 ..< unexpected.count {
        guard let candidate = unexpected[offset], candidate.tag & mask == wanted else { continue }
        let message = unexpected.take(at: offset)!
        let semaphore: DispatchSemaphore?
        (semaphore, wake) = taggedDrained(message.payload.count)
        semaphore?.signal()
        return .success(message)
      }
      return nothingQueued()
    }

    /// What a take finds when no message is queued: nil (wait) while
    /// open; after a close, the end (nil) or the close's error.
    func nothingQueued<T>() -> Result<T?, DissociatedIPCError>? {
      closed ? (error.map { .failure($0) } ?? .success(nil)) : nil
    }

    /// Whether a reader asking for room below `limit` bytes must wait:
    /// that many bytes are queued, or ``MessageInbox/readAheadMessages``
    /// messages while no receive waits (a receive that waits with that
    /// many queued wants a message behind them, so the reader goes on).
    func isFull(below limit: Int) -> Bool {
      bufferedBytes >= limit || (queuedMessages >= MessageInbox.readAheadMessages && !receiveWaits)
    }

    /// Whether a receive (of a frame or a tagged message) waits.
    var receiveWaits: Bool { !frameWaiters.isEmpty || !posted.isEmpty }

    /// The reader parked in ``MessageInbox/waitForRoom(below:)``, if it
    /// may go on now (a receive started waiting); it is to be signalled.
    mutating func releaseReaderIfRoom() -> DispatchSemaphore? {
      guard let waiter = roomWaiter, !isFull(below: waiter.limit) else { return nil }
      roomWaiter = nil
      return waiter.semaphore
    }

    /// A message of `bytes` was received: wakes the blocked reader once
    /// the bytes are below its limit and half the message budget is free
    /// (so a reader that keeps up is not woken for every message).
    mutating func drained(_ bytes: Int) -> DispatchSemaphore? {
      bufferedBytes -= bytes
      queuedMessages -= 1
      guard let waiter = roomWaiter,
            closed || (bufferedBytes < waiter.limit && queuedMessages <= MessageInbox.readAheadMessages / 2)
      else { return nil }
      roomWaiter = nil
      return waiter.semaphore
    }

    /// A tagged message was received: ``drained(_:)``, and the wake-up of
    /// a backend waiting for tagged room, if it is now due.
    mutating func taggedDrained(_ bytes: Int) -> (DispatchSemaphore?, (@Sendable () -> Void)?) {
      taggedBytes -= bytes
      let semaphore = drained(bytes)
      guard let waiter = taggedRoomWaiter, taggedBytes < waiter.limit else { return (semaphore, nil) }
      taggedRoomWaiter = nil
      return (semaphore, waiter.wake)
    }
  }

  /// The most messages ``waitForRoom(below:)`` lets wait to be received
  /// while no receive waits, whatever their size: tiny messages would
  /// otherwise queue by the hundred thousand within a byte limit, each
  /// costing memory and cache, and a reader far ahead of its consumer
  /// only takes CPU from it (TCP-RECV-2). A receive that waits lifts the
  /// cap, so a peer any reorder window ahead on one flow never stalls it.
  public static let readAheadMessages = 2048

  private let state = Mutex(State())
  private let receiveWaitsHook = Mutex<ReceiveWaitsHook?>(nil)
  private let maxBufferedBytes: Int

  /// An inbox that holds at most `maxBufferedBytes` of unreceived messages.
  public init(maxBufferedBytes: Int = 1 << 30) {
    self.maxBufferedBytes = maxBufferedBytes
  }

  // MARK: Delivery (backend reader side)

  /// Queues or hands over a framed message; false when over the limit.
  @discardableResult
  public func deliverFrame(_ frame: ArrowBytes) -> Bool {
    let (waiter, withinLimit) = state.withLock { state in (state.place(frame: frame), state.bufferedBytes <= maxBufferedBytes) }
    waiter?.resume(returning: frame)
    return withinLimit
  }

  /// Hands a tagged message to the first matching posted receive or queues
  /// it as unexpected; false when over the limit.
  @discardableResult
  public func deliverTagged(_ message: TaggedMessage) -> Bool {
    let (waiter, withinLimit) = state.withLock { state in (state.place(tagged: message), state.bufferedBytes <= maxBufferedBytes) }
    waiter?.resume(returning: message)
    return withinLimit
  }

  /// One received message for ``deliver(_:)``.
  public enum Delivery: Sendable {
    /// A framed message.
    case frame(ArrowBytes)
    /// A tagged message.
    case tagged(TaggedMessage)
  }

  /// How many messages ``deliver(_:)`` places per lock: few enough that a
  /// receive arriving meanwhile waits a fraction of a microsecond,
  /// spinning, instead of sleeping in the kernel.
  static let deliveriesPerLock = 16

  /// Delivers `deliveries` in order as ``deliverFrame(_:)`` and
  /// ``deliverTagged(_:)`` would, ``deliveriesPerLock`` under each lock: a
  /// reader that received many messages at once (a batch packet) contends
  /// with the receives a few times, not once per message, and never holds
  /// them off for long. False when over the limit.
  @discardableResult
  public func deliver(_ deliveries: [Delivery]) -> Bool {
    var handedFrames: [(CheckedContinuation<ArrowBytes?, any Error>, ArrowBytes)] = []
    var handedTagged: [(CheckedContinuation<TaggedMessage?, any Error>, TaggedMessage)] = []
    var withinLimit = true
    var start = 0
    while start < deliveries.count {
      let end = min(start + Self.deliveriesPerLock, deliveries.count)
      let placed = state.withLock { state in
        for delivery in deliveries[start ..< end] {
          switch delivery {
          case .frame(let frame): if let waiter = state.place(frame: frame) { handedFrames.append((waiter, frame)) }
          case .tagged(let message): if let waiter = state.place(tagged: message) { handedTagged.append((waiter, message)) }
          }
        }
        return state.bufferedBytes <= maxBufferedBytes
      }
      withinLimit = withinLimit && placed
      start = end
    }
    for (waiter, frame) in handedFrames { waiter.resume(returning: frame) }
    for (waiter, message) in handedTagged { waiter.resume(returning: message) }
    return withinLimit
  }

  /// Blocks the calling thread (a backend's dedicated reader, never a
  /// task) while `limit` bytes or ``readAheadMessages`` messages wait to
  /// be received, so a slow consumer stops the reader and the transport's
  /// flow control takes over; it resumes once receives leave fewer than
  /// `limit` bytes and half the messages. Returns at once when the inbox
  /// is closed.
  public func waitForRoom(below limit: Int) {
    // A semaphore only when waiting: the reader calls this after every
    // message and rarely has to wait.
    let semaphore = state.withLock { state -> DispatchSemaphore? in
      guard state.isFull(below: limit), !state.closed else { return nil }
      let semaphore = DispatchSemaphore(value: 0)
      state.roomWaiter = (semaphore, limit)
      return semaphore
    }
    semaphore?.wait()
  }

  /// The non-blocking counterpart of ``waitForRoom(below:)`` for tagged
  /// messages, for a backend thread that must not block (ucx://'s progress
  /// thread reads ahead while fewer than `limit` bytes of tagged messages
  /// wait to be received). False when that is so now; else true, and
  /// `wake` runs once, outside the lock, as soon as a receive leaves fewer
  /// than `limit` bytes or the inbox closes. Replaces an earlier `wake`.
  public func waitForTaggedRoom(below limit: Int, then wake: @escaping @Sendable () -> Void) -> Bool {
    state.withLock { state in
      guard state.taggedBytes >= limit, !state.closed else { return false }
      state.taggedRoomWaiter = (limit, wake)
      return true
    }
  }

  /// Whether a reader may deliver more now without waiting in
  /// ``waitForRoom(below:)`` (fewer than `limit` bytes and, unless a
  /// receive waits, fewer than ``readAheadMessages`` messages queued).
  public func hasRoom(below limit: Int) -> Bool {
    state.withLock { !$0.isFull(below: limit) }
  }

  /// How many delivered messages wait to be received while no receive
  /// waits (0 while one does).
  public var unclaimedBacklog: Int {
    state.withLock { $0.receiveWaits ? 0 : $0.queuedMessages }
  }

  /// Runs `hook` (outside the lock) whenever a receive starts waiting,
  /// for a backend whose reader may be parked (SHM-THREAD-4).
  public func whenReceiveWaits(_ hook: @escaping @Sendable () -> Void) {
    receiveWaitsHook.withLock { $0 = ReceiveWaitsHook(run: hook) }
  }

  /// The hook in a struct: a bare closure in a `Mutex` is stored at the
  /// generic abstraction, and every `withLock { $0 }` re-wrapped it in two
  /// reabstraction thunks written back through the `inout`, so each wait
  /// made the next call of the hook one thunk pair deeper (300,000 tiny
  /// batches: chains past 127 frames, 2 % of the samples).
  private struct ReceiveWaitsHook: Sendable {
    let run: @Sendable () -> Void
  }

  /// True once ``close(error:)`` was called.
  public var isClosed: Bool { state.withLock { $0.closed } }

  /// True while delivered messages wait to be received, or the backend's
  /// reader waits for room: closing now would drop data the peer sent.
  public var holdsUnreceivedMessages: Bool {
    state.withLock { state in
      !state.frames.isEmpty || !state.unexpected.isEmpty || state.roomWaiter != nil
    }
  }

  /// Ends the inbox: pending and later receives get nil (`error == nil`,
  /// the peer closed in order) or `error`. Messages already queued are
  /// still received first after an orderly close.
  public func close(error: DissociatedIPCError? = nil) {
    typealias Waiters = ([CheckedContinuation<ArrowBytes?, any Error>], [CheckedContinuation<TaggedMessage?, any Error>],
                         (@Sendable () -> Void)?)
    let waiters = state.withLock { state -> Waiters in
      guard !state.closed else { return ([], [], nil) }
      state.closed = true
      state.roomWaiter?.semaphore.signal()
      state.roomWaiter = nil
      state.error = error
      if error != nil {
        state.frames.removeAll()
        state.unexpected.removeAll()
        state.taggedBytes = 0
      }
      defer {
        state.frameWaiters.removeAll()
        state.posted.removeAll()
        state.taggedRoomWaiter = nil
      }
      return (state.frameWaiters.map(\.continuation), state.posted.map(\.continuation), state.taggedRoomWaiter?.wake)
    }
    for waiter in waiters.0 { resume(waiter, error) }
    for waiter in waiters.1 { resume(waiter, error) }
    waiters.2?()
  }

  private func resume<T>(_ continuation: CheckedContinuation<T?, any Error>, _ error: DissociatedIPCError?) {
    if let error { continuation.resume(throwing: error) } else { continuation.resume(returning: nil) }
  }

  // MARK: Receiving (connection side)

  /// The next framed message; nil after an orderly close.
  public func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? {
    try await receive { (state: inout State) in state.takeFrame() } register: { state, id, continuation in
      state.frameWaiters.append(FrameWaiter(id: id, continuation: continuation))
    } cancel: { state, id in
      state.frameWaiters.firstIndex { $0.id == id }.map { state.frameWaiters.remove(at: $0).continuation }
    }
  }

  /// The next tagged message matching `tag` under `mask`; nil after an
  /// orderly close.
  public func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    var wake: (@Sendable () -> Void)?
    defer { wake?() }  // outside the lock
    return try await receive { (state: inout State) in state.takeTagged(matching: tag, mask: mask, wake: &wake) } register: {
      state, id, continuation in
      state.posted.append(PostedReceive(id: id, tag: tag, mask: mask, continuation: continuation))
    } cancel: { state, id in
      state.posted.firstIndex { $0.id == id }.map { state.posted.remove(at: $0).continuation }
    }
  }

  /// ``receiveFrame()`` without waiting.
  public func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> {
    try ReadyReceive(state.withLock { $0.takeFrame() })
  }

  /// ``receiveTagged(matching:mask:)`` without waiting.
  public func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    var wake: (@Sendable () -> Void)?
    defer { wake?() }  // outside the lock
    return try ReadyReceive(state.withLock { $0.takeTagged(matching: tag, mask: mask, wake: &wake) })
  }

  /// Takes a message at once when `take` finds one (no suspension, no
  /// allocation); otherwise registers a waiter and suspends until a
  /// delivery, a close or cancellation (`.cancelled`).
  @inline(__always)
  private func receive<T: Sendable>(
    _ take: (inout State) -> Result<T?, DissociatedIPCError>?,
    register: (inout State, UInt64, CheckedContinuation<T?, any Error>) -> Void,
    cancel: @escaping @Sendable (inout State, UInt64) -> CheckedContinuation<T?, any Error>?
  ) async throws(DissociatedIPCError) -> T? {
    if let ready = state.withLock({ take(&$0) }) { return try ready.get() }
    return try await wait { state, id, continuation in
      if let ready = take(&state) { return ready }
      register(&state, id, continuation)
      // A reader parked on the message cap goes on: what this receive
      // waits for is behind the queued messages.
      state.releaseReaderIfRoom()?.signal()
      return nil
    } cancel: { state, id in cancel(&state, id) }
  }

  /// Runs `attempt` under the lock: it returns a result at once or registers
  /// the continuation; cancellation removes it again and throws `.cancelled`.
  private func wait<T: Sendable>(
    _ attempt: (inout State, UInt64, CheckedContinuation<T?, any Error>) -> Result<T?, DissociatedIPCError>?,
    cancel: @escaping @Sendable (inout State, UInt64) -> CheckedContinuation<T?, any Error>?
  ) async throws(DissociatedIPCError) -> T? {
    let id = state.withLock { state in
      state.nextID += 1
      return state.nextID
    }
    do {
      return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T?, any Error>) in
          let immediate = state.withLock { state in attempt(&state, id, continuation) }
          switch immediate {
          case .success(let value)?: continuation.resume(returning: value)
          case .failure(let error)?: continuation.resume(throwing: error)
          case nil:
            receiveWaitsHook.withLock { $0 }?.run()
            if Task.isCancelled, let removed = state.withLock({ cancel(&$0, id) }) {
              removed.resume(throwing: DissociatedIPCError(.cancelled, "receive cancelled"))
            }
          }
        }
      } onCancel: {
        state.withLock { cancel(&$0, id) }?.resume(throwing: DissociatedIPCError(.cancelled, "receive cancelled"))
      }
    } catch let error as DissociatedIPCError {
      throw error
    } catch {
      throw DissociatedIPCError(.transportFailure, "\(error)")
    }
  }
}

extension ReadyReceive {
  /// What a take under the inbox's lock found: a message, the end (nil),
  /// the close's error (thrown), or nothing yet (nil itself).
  init(_ taken: Result<Message?, DissociatedIPCError>?) throws(DissociatedIPCError) {
    switch taken {
    case nil: self = .wouldWait
    case .success(let message?)?: self = .message(message)
    case .success(nil)?: self = .ended
    case .failure(let error)?: throw error
    }
  }
}

/// A connection whose receives are served by a ``MessageInbox`` that its
/// backend's reader fills: the receive requirements of
/// ``TransportConnection``, written once.
public protocol InboxReceiving: TransportConnection {
  /// Where the backend delivers received messages.
  var inbox: MessageInbox { get }
}

extension InboxReceiving {
  /// The inbox's next frame.
  public func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? {
    try await inbox.receiveFrame()
  }

  /// The inbox's next matching tagged message (matched in software).
  public func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    try await inbox.receiveTagged(matching: tag, mask: mask)
  }

  /// The inbox's next frame, if already queued.
  public func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> {
    try inbox.readyFrame()
  }

  /// The inbox's next matching tagged message, if already queued.
  public func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    try inbox.readyTagged(matching: tag, mask: mask)
  }
}
