internal import ArrowIPC
internal import Dispatch
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// Receiving: the reader thread, receives on tasks while it is parked
/// (SHM-THREAD-4), and what each control message does (SHM-FAULT-1).
extension SharedMemoryConnection {
  /// The reader thread: the peer's hello, then control messages until the
  /// peer closes (orderly) or breaks the protocol (SHM-FAULT-2). While the
  /// receiving task is behind, it hands receiving to that task and parks
  /// (SHM-THREAD-4).
  func readLoop() {
    do throws(DissociatedIPCError) {
      while waitWhileTasksReceive() {
        guard case .message(let received) = try socket.receive(into: receiving.buffer) else { break }
        try handle(received)
        inbox.waitForRoom(below: config.readAheadBytes)
        if inbox.isClosed { break }  // closed locally: nobody will receive more
        handOffIfBehind()
      }
      peerClosed()
    } catch {
      fail(error)
    }
    state.withLock { $0.readerDone = true }
    threadExited()
  }

  /// The reader hands receiving to the tasks once this many messages wait
  /// to be received after a delivery, and no receive waits (SHM-THREAD-4).
  static let handOffBacklog = 64

  /// Parks the reader when the receiving task is behind. Checked again
  /// after parking: a receive that started waiting meanwhile needs the
  /// reader, and its wake-up (``wakeParkedReader()``) may have come before
  /// the park.
  private func handOffIfBehind() {
    guard inbox.unclaimedBacklog >= Self.handOffBacklog else { return }
    state.withLock { $0.readerParked = true }
    guard inbox.unclaimedBacklog < Self.handOffBacklog else { return }
    state.withLock { state in if !state.taskReceiving { state.readerParked = false } }
  }

  /// A receive started waiting: the reader receives again, unless a task
  /// receives now (it hands receiving back itself when it finds nothing).
  func wakeParkedReader() {
    let wake = state.withLock { state -> Bool in
      guard state.readerParked else { return false }
      guard !state.taskReceiving else {
        state.readerWanted = true
        return false
      }
      state.readerParked = false
      return true
    }
    if wake { readerWake.signal() }
  }

  /// How long a parked reader waits before it takes receiving back, so
  /// that control messages and the peer's close are seen while no task
  /// receives (SHM-THREAD-4).
  static let parkTimeout = DispatchTimeInterval.milliseconds(5)

  /// Waits while the reader is parked and a task may receive; false once
  /// the inbox is closed.
  private func waitWhileTasksReceive() -> Bool {
    while state.withLock({ $0.readerParked }) {
      if inbox.isClosed { return false }
      _ = readerWake.wait(timeout: .now() + Self.parkTimeout)
      // Take receiving back unless a task receives right now (it hands it
      // back itself, with a signal, when it is done and a receive waits or
      // it found nothing).
      state.withLock { state in if !state.taskReceiving { state.readerParked = false } }
    }
    return !inbox.isClosed
  }

  /// Receives one control message on the calling task, without waiting,
  /// when the reader handed receiving to the tasks and the inbox has room
  /// (SHM-THREAD-4). True when something was received; false when the
  /// socket is not the task's to read or nothing was there. The reader
  /// thread receives again, woken, when nothing was there, when a receive
  /// waits, or when nothing that arrived waits for this task.
  private func receiveOnTask() -> Bool {
    // A quick look first: while the reader receives (the usual case when
    // the task keeps up) this costs one uncontended lock, not the inbox's.
    guard state.withLock({ $0.readerParked && !$0.taskReceiving }), inbox.hasRoom(below: config.readAheadBytes) else {
      return false
    }
    let claimed = state.withLock { state -> Bool in
      guard state.readerParked, !state.taskReceiving, !state.descriptorClosed, state.failure == nil else { return false }
      state.taskReceiving = true
      return true
    }
    guard claimed else { return false }
    var received = false
    do throws(DissociatedIPCError) {
      switch try socket.receive(into: receiving.buffer, wait: false) {
      case .message(let message):
        try handle(message)
        received = true
      case .closed:
        peerClosed()
      case .wouldBlock:
        break
      }
    } catch {
      fail(error)
    }
    let unclaimed = received ? inbox.unclaimedBacklog : 0
    let wake = state.withLock { state -> Bool in
      state.taskReceiving = false
      if received { state.receivedOnTasks += 1 }
      let wake = unclaimed == 0 || state.readerWanted
      if wake {
        state.readerParked = false
        state.readerWanted = false
      }
      closeDescriptorIfIdle(&state)
      return wake
    }
    if wake { readerWake.signal() }
    return received
  }

  /// How many control messages tasks received themselves (SHM-THREAD-4).
  var controlMessagesReceivedOnTasks: Int { state.withLock { $0.receivedOnTasks } }

  /// `take` again after each control message received on this task,
  /// while it finds nothing and the task may receive (SHM-THREAD-4).
  @inline(__always)
  private func takeReceiving<T>(
    _ take: () throws(DissociatedIPCError) -> ReadyReceive<T>
  ) throws(DissociatedIPCError) -> ReadyReceive<T> {
    while true {
      let ready = try take()
      guard case .wouldWait = ready, receiveOnTask() else { return ready }
    }
  }

  /// The inbox's next frame, if queued or receivable now on this task.
  func readyFrame() throws(DissociatedIPCError) -> ReadyReceive<ArrowBytes> {
    try takeReceiving { () throws(DissociatedIPCError) in try inbox.readyFrame() }
  }

  /// The inbox's next matching tagged message, if queued or receivable
  /// now on this task.
  func readyTagged(matching tag: UInt64, mask: UInt64) throws(DissociatedIPCError) -> ReadyReceive<TaggedMessage> {
    try takeReceiving { () throws(DissociatedIPCError) in try inbox.readyTagged(matching: tag, mask: mask) }
  }

  /// The next frame: as ``readyFrame()``, else waiting in the inbox for
  /// the reader thread.
  func receiveFrame() async throws(DissociatedIPCError) -> ArrowBytes? {
    try await readyFrame().orWaiting { () async throws(DissociatedIPCError) in try await inbox.receiveFrame() }
  }

  /// The next matching tagged message: as ``readyTagged(matching:mask:)``,
  /// else waiting in the inbox for the reader thread.
  func receiveTagged(matching tag: UInt64, mask: UInt64) async throws(DissociatedIPCError) -> TaggedMessage? {
    try await readyTagged(matching: tag, mask: mask).orWaiting { () async throws(DissociatedIPCError) in
      try await inbox.receiveTagged(matching: tag, mask: mask)
    }
  }

  /// Chunks for received payloads, shared by every connection (warm,
  /// already-faulted memory).
  static let receivePool = BufferPool(maxPooledBytes: 16 << 20, minimumSize: SlabAllocator.chunkSize)

  /// Acts on one control message received into the receive context's
  /// buffer; what it received goes to the inbox in one delivery.
  private func handle(_ received: UnixSocket.Received) throws(DissociatedIPCError) {
    let context = receiving
    let buffer = UnsafeRawBufferPointer(context.buffer)
    var descriptors = received.descriptors
    defer { for descriptor in descriptors { closeDescriptor(descriptor) } }
    defer {
      if !context.deliveries.isEmpty { inbox.deliver(context.deliveries) }
      context.deliveries.removeAll(keepingCapacity: true)
    }
    guard !received.truncated else {
      throw DissociatedIPCError(.transportFailure, "a shm:// control message longer than \(buffer.count) bytes or with too many descriptors")
    }
    let bytes = UnsafeRawBufferPointer(rebasing: buffer[..<received.length])
    let message = try SharedMemoryWire.parse(bytes)
    guard context.greeted == (message != .hello) else {
      throw DissociatedIPCError(.transportFailure, context.greeted ? "a second shm:// hello" : "the peer is not a shm:// Dissociated IPC endpoint (no hello)")
    }
    if message == .hello {
      context.greeted = true
      return
    }
    if case .segmentAdded = message {} else if !descriptors.isEmpty {
      throw DissociatedIPCError(.transportFailure, "a shm:// control message of kind \(bytes[0]) carried a descriptor")
    }
    guard message == .batch else { return try dispatch(message, bytes, descriptors: &descriptors, slab: &context.slab, into: &context.deliveries) }
    // A batch (SHM-CTRL-6): each entry is handled as if it came alone.
    var none: [Int32] = []
    try SharedMemoryWire.batchEntries(bytes, into: &context.batchEntries)
    for entry in context.batchEntries {
      let inner = UnsafeRawBufferPointer(rebasing: bytes[entry])
      try dispatch(try SharedMemoryWire.parse(inner), inner, descriptors: &none, slab: &context.slab, into: &context.deliveries)
    }
  }

  /// Acts on one parsed message (`bytes` are its bytes); a received
  /// payload is appended to `deliveries`.
  private func dispatch(_ message: SharedMemoryWire.Message, _ bytes: UnsafeRawBufferPointer, descriptors: inout [Int32],
                        slab: inout SlabAllocator, into deliveries: inout [MessageInbox.Delivery]) throws(DissociatedIPCError) {
    switch message {
    case .hello, .batch:
      break  // handled by the caller
    case .inline(let kind, let tag, let offset, let length):
      let payload = slab.copy(bytes.baseAddress! + offset, count: length)
      deliveries.append(kind == .frame ? .frame(payload) : .tagged(TaggedMessage(tag: tag, payload: payload)))
    case .frameAndTagged(let tag, let offset, let frameLength, let payloadLength):
      deliveries.append(.frame(slab.copy(bytes.baseAddress! + offset, count: frameLength)))
      let payload = slab.copy(bytes.baseAddress! + offset + frameLength, count: payloadLength)
      deliveries.append(.tagged(TaggedMessage(tag: tag, payload: payload)))
    case .inSegment(let kind, let tag, let address, let length):
      let (id, offset) = SharedMemoryWire.split(address)
      guard let segment = state.withLock({ $0.peerSegments[id] }), segment.contains(offset: offset, length: length) else {
        throw DissociatedIPCError(.malformedDescriptor, "a payload at segment \(id) offset \(offset) length \(length) lies outside every mapped segment")
      }
      guard kind == .taggedInSegment else {
        // A frame is copied out and its space returned at once: the inbox
        // keeps received frames referenced until it compacts its queue, so
        // a view would pin ring space the application released (SHM-RING-5).
        let frame = slab.copy(segment.base + offset, count: length)
        returnSpace(address)
        return deliveries.append(.frame(frame))
      }
      guard holdPayload(length) else {
        // Held payloads already pin as much of the peer's memory as they
        // may: this one is copied and its space returned (SHM-RING-7).
        let copy = segment.view(offset: offset, length: length, owner: segment).copied()
        returnSpace(address)
        return deliveries.append(.tagged(TaggedMessage(tag: tag, payload: copy)))
      }
      let lease = PayloadLease(segment: segment, address: address, length: length, connection: self)
      deliveries.append(.tagged(TaggedMessage(tag: tag, payload: segment.view(offset: offset, length: length, owner: lease))))
    case .segmentAdded(let id, let size, let arena):
      guard descriptors.count == 1 else {
        throw DissociatedIPCError(.transportFailure, "a segment announced with \(descriptors.count) descriptors, not 1")
      }
      let descriptor = descriptors.removeFirst()
      do throws(DissociatedIPCError) {
        try peerMappings.reserve(size)
      } catch {
        closeDescriptor(descriptor)
        throw error
      }
      let base: UnsafeRawPointer
      do throws(DissociatedIPCError) {
        base = try mapPeerSegment(descriptor, size: size)
      } catch {
        peerMappings.release(size)
        throw error
      }
      let segment = MappedSegment(id: id, base: base, size: size, isArena: arena, budget: peerMappings)
      let added = state.withLock { state -> Bool in
        guard state.peerSegments[id] == nil else { return false }
        state.peerSegments[id] = segment
        return true
      }
      guard added else { throw DissociatedIPCError(.malformedDescriptor, "segment \(id) announced twice") }
    case .spaceReturned(let count):
      let addresses = (0 ..< count).lazy.map { SharedMemoryWire.returnedAddress(bytes, $0) }
      guard freeSpace(addresses, kind: .payload) else {
        throw DissociatedIPCError(.unknownFreeAddress, "the peer returned space it was not given")
      }
    case .segmentRetired(let id):
      guard state.withLock({ $0.peerSegments.removeValue(forKey: id) }) != nil else {
        throw DissociatedIPCError(.malformedDescriptor, "retired segment \(id) was never announced")
      }
    }
  }
}

/// What receiving one control message uses, reused from message to
/// message: the receive buffer, whether the peer said hello, the slab for
/// small payloads, and scratch lists. Unchecked `Sendable`: only whoever
/// receives touches it — the reader thread, or the one task that claimed
/// the socket (`taskReceiving`) while the reader is parked (SHM-THREAD-4);
/// the hand-overs go through the connection's lock.
final class ReceiveContext: @unchecked Sendable {
  let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: SharedMemoryWire.maxMessageLength, alignment: 64)
  var greeted = false
  // Small received payloads are carved out of pooled 64 KiB chunks (one
  // allocation per chunk, not per message).
  var slab = SlabAllocator(pool: SharedMemoryConnection.receivePool)
  /// What one control message received, for the inbox.
  var deliveries: [MessageInbox.Delivery] = []
  /// A batch's entries.
  var batchEntries: [Range<Int>] = []

  deinit { buffer.deallocate() }
}
