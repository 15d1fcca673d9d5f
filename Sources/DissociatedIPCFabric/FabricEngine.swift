#if Fabric
internal import ArrowIPC
internal import CLibfabric
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Glibc
internal import Synchronization

/// The thread side of a ``FabricConnection``: it owns the endpoint and
/// every buffer posted to it, and runs rounds of "take commands, post,
/// read completions, check timers, sleep if nothing moved" until the
/// connection ends (FABRIC-THREAD-1). Only its thread touches it.
final class FabricEngine {
  /// An operation posted to the endpoint, found again by its token.
  private enum Operation {
    case controlReceive(slot: Int)
    case sideReceive(slot: Int)
    case welcomeReceive
    case send(OutgoingRecord)
    case pieceReceive(IncomingLarge)
    case read(FetchRecord)

    /// Whether the operation is a read of ours (FABRIC-CLOSE-3).
    var isRead: Bool { if case .read = self { true } else { false } }
  }

  /// Something posted that the provider said "not now" to, kept in order.
  private enum Post {
    case send(UnsafeRawPointer?, Int, tag: UInt64, token: UInt)
    case receive(UnsafeMutableRawPointer?, Int, tag: UInt64, token: UInt)
    case read(UnsafeMutableRawPointer, Int, address: UInt64, key: UInt64, token: UInt)
  }

  /// A message being sent: what must live until its sends complete.
  fileprivate final class OutgoingRecord {
    enum Purpose { case data(Int), goodbye, handshake, side, other }
    let purpose: Purpose
    var keepAlive: [ArrowBytes]
    var remaining: Int
    init(purpose: Purpose, keepAlive: [ArrowBytes], remaining: Int) {
      self.purpose = purpose
      self.keepAlive = keepAlive
      self.remaining = remaining
    }
  }

  /// A control message waiting for a credit.
  private struct OutgoingControl {
    let message: AlignedStorage
    let length: Int
    let pieces: [ArrowBytes]
    let record: OutgoingRecord
  }

  /// A large message whose pieces are arriving.
  private final class IncomingLarge {
    let storage: AlignedStorage
    let total: Int
    let tag: UInt64?
    let lengths: [Int]
    var remaining: Int
    var pieceIndexByToken: [UInt: Int] = [:]
    init(storage: AlignedStorage, total: Int, tag: UInt64?, lengths: [Int]) {
      self.storage = storage
      self.total = total
      self.tag = tag
      self.lengths = lengths
      remaining = lengths.count
    }
    var message: MessageInbox.Delivery {
      let bytes = storage.freeze(count: total)
      return tag.map { .tagged(TaggedMessage(tag: $0, payload: bytes)) } ?? .frame(bytes)
    }
  }

  /// In-order deliveries: a large message holds back those after it.
  private enum PendingDelivery {
    case ready(MessageInbox.Delivery)
    case large(IncomingLarge)
    case end
  }

  /// A fetch whose reads are in flight.
  private final class FetchRecord {
    let storage: AlignedStorage
    let total: Int
    let continuation: CheckedContinuation<Result<ArrowBytes, DissociatedIPCError>, Never>
    var remaining: Int
    var failure: DissociatedIPCError?
    /// The caller has its result: later completions of its reads change nothing.
    var resumed = false
    init(storage: AlignedStorage, total: Int, remaining: Int,
         continuation: CheckedContinuation<Result<ArrowBytes, DissociatedIPCError>, Never>) {
      self.storage = storage
      self.total = total
      self.remaining = remaining
      self.continuation = continuation
    }
  }

  /// A region the server announced (client side).
  private struct AnnouncedRegion {
    let key: UInt64
    let base: UInt64
    let length: UInt64
  }

  /// How far the orderly close has come.
  private enum Closing: Equatable {
    case open
    /// Our goodbye is queued or in flight; reset at the deadline.
    case sendingGoodbye(deadline: UInt64)
    /// Our goodbye went; waiting for the acknowledgement until the deadline.
    case awaitingAcknowledgement(deadline: UInt64)
  }

  /// Where the connection stands.
  private enum Phase {
    /// Client: the hello went (or goes); waiting for the welcome.
    case connecting(deadline: UInt64, ready: (Result<Void, DissociatedIPCError>) -> Void)
    case connected
    case finished
  }

  // MARK: State

  private let connection: FabricConnection
  private let config: FabricTransport.Config
  private var endpoint: FabricEndpoint?
  private let virtualAddresses: Bool
  private var peer: fi_addr_t
  private var phase: Phase
  private var idle: FabricIdleWait

  private var operations: [UInt: Operation] = [:]
  private var nextToken: UInt = 1
  private var retries: [Post] = []

  private let controlBuffers: AlignedStorage
  private let sideBuffers: AlignedStorage
  private static let sideReceives = 8
  private var heldSlots: [Int] = []
  private var throttled = false
  private var expectedSequence: UInt64 = 0
  private var pending: [PendingDelivery] = []
  private var pendingStart = 0
  /// Bytes of received messages in `pending`, delivered or not yet complete.
  private var pendingBytes = 0
  private var creditsToReturn: UInt32 = 0

  private var sendCredits = 0
  private var outgoing: [OutgoingControl] = []
  private var outgoingStart = 0
  private var nextSequence: UInt64 = 0
  private var nextPiece: UInt64 = 0
  private var sidesInFlight = 0
  private static let maxSidesInFlight = 4

  private var lastHeard: UInt64
  private var lastHeartbeat: UInt64 = 0
  private var closing = Closing.open
  private var peerSaidGoodbye = false

  private var exposed: [UInt64: (region: FabricMemoryRegion, bytes: ArrowBytes)] = [:]
  private var exposedBytes = 0
  private var nextRegion: UInt64 = 1
  private var announced: [UInt64: AnnouncedRegion] = [:]
  /// The most regions a server may have announced at once (FABRIC-RM-3).
  static let maxAnnouncedRegions = 65_536

  private var welcomeBuffer: AlignedStorage?
  /// Endpoints of this process this connection talks to, held open until
  /// it finishes (FABRIC-ADDR-6): the listener while connecting, the peer.
  private var heldEndpoints: [FabricEndpoint] = []

  private init(connection: FabricConnection, endpoint: FabricEndpoint, peer: fi_addr_t, phase: Phase) {
    self.connection = connection
    config = connection.settings.config
    self.endpoint = endpoint
    self.peer = peer
    self.phase = phase
    virtualAddresses = endpoint.domain.info.virtualAddresses
    idle = FabricIdleWait(polling: config.progressMode == .polling, maxIdleSleep: config.maxIdleSleep)
    controlBuffers = AlignedStorage(capacity: config.controlReceives * FabricWire.controlMessageSize, zeroed: false)
    sideBuffers = AlignedStorage(capacity: Self.sideReceives * FabricWire.sideMessageSize, zeroed: false)
    lastHeard = monotonicNanoseconds()
  }

  // MARK: Starting

  /// Client: sends the hello to the listener at `listener`, waits for the
  /// welcome, then runs the connection; `ready` hears the outcome of the
  /// handshake once (FABRIC-CONN-1).
  static func runClient(connection: FabricConnection, endpoint: FabricEndpoint, listener: fi_addr_t, listenerName: [UInt8],
                        ready: @escaping (Result<Void, DissociatedIPCError>) -> Void) {
    let deadline = monotonicNanoseconds() &+ nanoseconds(connection.settings.config.connectTimeout)
    let engine = FabricEngine(connection: connection, endpoint: endpoint, peer: listener,
                              phase: .connecting(deadline: deadline, ready: ready))
    engine.holdEndpoint(named: listenerName)
    do throws(DissociatedIPCError) {
      let name = try engine.endpointName()
      let welcome = AlignedStorage(capacity: FabricWire.handshakeMessageSize, zeroed: false)
      engine.welcomeBuffer = welcome
      try engine.submit(.receive(welcome.mutableBytes.baseAddress, welcome.mutableBytes.count, tag: FabricWire.welcomeTag,
                                 token: engine.token(for: .welcomeReceive)))
      try engine.postReceives()
      let hello = FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: UInt32(connection.settings.config.controlReceives), name: name))
      try engine.sendRaw(hello, tag: FabricWire.helloTag, purpose: .handshake)
    } catch {
      engine.finish(failure: error)
      return
    }
    engine.run()
  }

  /// Server: answers the client whose hello named `clientName` from this
  /// connection's own endpoint, then runs the connection.
  static func runServer(connection: FabricConnection, endpoint: FabricEndpoint, clientName: [UInt8], clientReceives: Int) {
    let engine = FabricEngine(connection: connection, endpoint: endpoint, peer: CLIBFABRIC_ADDR_UNSPEC, phase: .connected)
    do throws(DissociatedIPCError) {
      engine.holdEndpoint(named: clientName)
      engine.peer = try engine.insert(clientName)
      engine.sendCredits = clientReceives
      try engine.postReceives()
      let welcome = FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: UInt32(connection.settings.config.controlReceives),
                                                          name: try engine.endpointName()))
      try engine.sendRaw(welcome, tag: FabricWire.welcomeTag, purpose: .handshake)
    } catch {
      engine.finish(failure: error)
      return
    }
    engine.run()
  }

  private func endpointName() throws(DissociatedIPCError) -> [UInt8] {
    guard let endpoint else { throw FabricConnection.closedError }
    do throws(FabricFailure) { return try endpoint.name() } catch { throw Self.failure(error) }
  }

  /// Holds the endpoint of this process named `name` open, if it is one.
  private func holdEndpoint(named name: [UInt8]) {
    if let held = FabricLocalEndpoints.hold(named: name) { heldEndpoints.append(held) }
  }

  private func insert(_ name: [UInt8]) throws(DissociatedIPCError) -> fi_addr_t {
    guard let endpoint else { throw FabricConnection.closedError }
    do throws(FabricFailure) { return try endpoint.addresses.insert(name) } catch {
      throw DissociatedIPCError(.malformedFrame, "fabric:// peer named an endpoint the provider refuses: \(error)")
    }
  }

  static func failure(_ failure: FabricFailure) -> DissociatedIPCError {
    DissociatedIPCError(.transportFailure, "fabric:// \(failure)")
  }

  /// Posts every control and side receive.
  private func postReceives() throws(DissociatedIPCError) {
    for slot in 0 ..< config.controlReceives { try postControlReceive(slot) }
    for slot in 0 ..< Self.sideReceives {
      let buffer = sideBuffers.mutableBytes.baseAddress! + slot * FabricWire.sideMessageSize
      try submit(.receive(buffer, FabricWire.sideMessageSize, tag: FabricWire.sideTag, token: token(for: .sideReceive(slot: slot))))
    }
  }

  private func postControlReceive(_ slot: Int) throws(DissociatedIPCError) {
    let buffer = controlBuffers.mutableBytes.baseAddress! + slot * FabricWire.controlMessageSize
    try submit(.receive(buffer, FabricWire.controlMessageSize, tag: FabricWire.controlTag, token: token(for: .controlReceive(slot: slot))))
  }

  private func token(for operation: Operation) -> UInt {
    let token = nextToken
    nextToken &+= 1
    if nextToken == 0 { nextToken = 1 }
    operations[token] = operation
    return token
  }

  // MARK: Posting

  /// Posts `post` now, or queues it behind earlier ones the provider
  /// refused for now (FABRIC-FLOW-3).
  private func submit(_ post: Post) throws(DissociatedIPCError) {
    if retries.isEmpty, try attempt(post) { return }
    retries.append(post)
  }

  /// Posts; false on `-FI_EAGAIN`.
  private func attempt(_ post: Post) throws(DissociatedIPCError) -> Bool {
    guard let endpoint else { throw FabricConnection.closedError }
    do throws(FabricFailure) {
      switch post {
      case .send(let buffer, let count, let tag, let token):
        try endpoint.sendTagged(buffer, count: count, to: peer, tag: tag, token: token)
      case .receive(let buffer, let count, let tag, let token):
        try endpoint.receiveTagged(buffer, count: count, from: nil, tag: tag, ignore: 0, token: token)
      case .read(let buffer, let count, let address, let key, let token):
        try endpoint.read(into: buffer, count: count, from: peer, address: address, key: key, token: token)
      }
      return true
    } catch {
      if error.isAgain { return false }
      throw Self.failure(error)
    }
  }

  /// Posts queued retries in order while the provider takes them.
  private func retryPosts() throws(DissociatedIPCError) -> Bool {
    var posted = 0
    while posted < retries.count, try attempt(retries[posted]) { posted += 1 }
    retries.removeFirst(posted)
    return posted > 0
  }

  /// Sends `bytes` on `tag` outside the credits (hello, welcome).
  private func sendRaw(_ bytes: [UInt8], tag: UInt64, purpose: OutgoingRecord.Purpose) throws(DissociatedIPCError) {
    let payload = ArrowBytes(copying: bytes)
    let record = OutgoingRecord(purpose: purpose, keepAlive: [payload], remaining: 1)
    try submit(.send(payload.unsafeBaseAddress, payload.count, tag: tag, token: token(for: .send(record))))
  }

  /// Sends a side message (heartbeat, credits, acknowledgement, reset);
  /// its token, or nil when too many are in flight already.
  @discardableResult
  private func sendSide(_ side: FabricWire.Side, ignoringLimit: Bool = false) throws(DissociatedIPCError) -> UInt? {
    guard sidesInFlight < Self.maxSidesInFlight || ignoringLimit, case .connected = phase else { return nil }
    let storage = AlignedStorage(capacity: FabricWire.sideMessageSize, zeroed: false)
    let credits = creditsToReturn
    creditsToReturn = 0
    FabricWire.writeSide(side, credits: credits, into: storage.mutableBytes.baseAddress!)
    let bytes = storage.freeze(count: FabricWire.sideMessageSize)
    sidesInFlight += 1
    let record = OutgoingRecord(purpose: .side, keepAlive: [bytes], remaining: 1)
    let token = token(for: .send(record))
    try submit(.send(bytes.unsafeBaseAddress, bytes.count, tag: FabricWire.sideTag, token: token))
    return token
  }

  // MARK: Running

  private var isFinished: Bool { if case .finished = phase { true } else { false } }

  private func run() {
    while !isFinished {
      do throws(DissociatedIPCError) {
        var moved = try takeCommands()
        moved = try retryPosts() || moved
        moved = try readCompletions() || moved
        moved = try sendQueued() || moved
        try checkTimers()
        if isFinished { break }
        if moved {
          idle.progressed()
        } else {
          sleep()
        }
      } catch {
        // Failures the peer caused by leaving need no reset; others do.
        finish(failure: error, tellPeer: error.code != .connectionClosed)
      }
    }
  }

  /// Sleeps until a command, a completion or the next timer.
  private func sleep() {
    guard let endpoint else { return }
    var limit = nanoseconds(config.heartbeatInterval)
    // While posts wait for the provider, or the connection comes up (the
    // provider's connection setup may need a poll its descriptor does not
    // announce), sleep briefly (FABRIC-THREAD-2).
    if !retries.isEmpty { limit = min(limit, 1_000_000) }
    if case .connecting = phase { limit = min(limit, 10_000_000) }
    idle.idle(queue: endpoint.completions, wake: connection.wake, limit: Int64(clamping: limit)) {
      connection.shared.withLock { state in
        guard state.commands.isEmpty else { return false }
        state.sleeping = true
        return true
      }
    } woke: {
      connection.shared.withLock { $0.sleeping = false }
    }
  }

  // MARK: Commands

  private func takeCommands() throws(DissociatedIPCError) -> Bool {
    let commands = connection.shared.withLock { state -> [FabricConnection.Command] in
      defer { state.commands.removeAll(keepingCapacity: true) }
      return state.commands
    }
    for (index, command) in commands.enumerated() {
      do throws(DissociatedIPCError) {
        switch command {
        case .send(let request): try queue(request)
        case .expose(let bytes, let continuation): continuation.resume(returning: Result { () throws(DissociatedIPCError) in try expose(bytes) })
        case .release(let id): try release(id)
        case .fetch(let ranges, let continuation): startFetch(ranges, continuation)
        case .readAhead: try resumeReading()
        case .close: try beginClose()
        case .reset: finish(failure: DissociatedIPCError(.connectionClosed, "the fabric:// connection was reset here"), tellPeer: true)
        }
      } catch {
        // The rest go back, for finish() to fail them.
        connection.shared.withLock { $0.commands.insert(contentsOf: commands[(index + 1)...], at: 0) }
        throw error
      }
      if isFinished {
        Self.fail(commands[(index + 1)...], with: connection.shared.withLock { $0.sendError } ?? FabricConnection.closedError)
        return true
      }
    }
    return !commands.isEmpty
  }

  /// Resumes the callers waiting in `commands` with `error`.
  private static func fail(_ commands: some Sequence<FabricConnection.Command>, with error: DissociatedIPCError) {
    for command in commands {
      switch command {
      case .expose(_, let continuation): continuation.resume(returning: .failure(error))
      case .fetch(_, let continuation): continuation.resume(returning: .failure(error))
      default: break
      }
    }
  }

  /// Turns a send request into a control message (inline) or an
  /// announcement and its pieces (FABRIC-WIRE-2).
  private func queue(_ request: FabricConnection.SendRequest) throws(DissociatedIPCError) {
    guard closing == .open, !peerSaidGoodbye else {
      connection.sendsCompleted(request.size)
      return
    }
    let record = OutgoingRecord(purpose: .data(request.size), keepAlive: [], remaining: 1)
    if request.size <= FabricWire.inlinePayloadLimit {
      let message = AlignedStorage(capacity: FabricWire.headerSize + request.size, zeroed: false)
      let base = message.mutableBytes.baseAddress!
      FabricWire.write(FabricWire.Header(kind: request.tag == nil ? .frame : .tagged, credits: 0, sequence: 0,
                                         tag: request.tag ?? 0, length: UInt64(request.size)), into: base)
      var offset = FabricWire.headerSize
      for part in request.parts { offset += part.copy(to: base + offset) }
      outgoing.append(OutgoingControl(message: message, length: offset, pieces: [], record: record))
      return
    }
    let pieces = Self.pieces(of: request.parts)
    let length = FabricWire.announcementFixedSize + 8 * pieces.count
    let message = AlignedStorage(capacity: length, zeroed: false)
    let base = message.mutableBytes.baseAddress!
    FabricWire.write(FabricWire.Header(kind: request.tag == nil ? .largeFrame : .largeTagged, credits: 0, sequence: 0,
                                       tag: request.tag ?? 0, length: UInt64(request.size)), into: base)
    base.storeBytes(of: nextPiece.littleEndian, toByteOffset: FabricWire.headerSize, as: UInt64.self)
    base.storeBytes(of: UInt32(pieces.count).littleEndian, toByteOffset: FabricWire.headerSize + 8, as: UInt32.self)
    base.storeBytes(of: UInt32(0), toByteOffset: FabricWire.headerSize + 12, as: UInt32.self)
    for (index, piece) in pieces.enumerated() {
      base.storeBytes(of: UInt64(piece.count).littleEndian, toByteOffset: FabricWire.announcementFixedSize + 8 * index, as: UInt64.self)
    }
    nextPiece &+= UInt64(pieces.count)
    record.remaining += pieces.count
    record.keepAlive = pieces
    outgoing.append(OutgoingControl(message: message, length: length, pieces: pieces, record: record))
  }

  /// A large message's pieces: its parts, with runs of small ones copied
  /// together (at most ``FabricWire/maxPieces``, FABRIC-WIRE-2).
  static func pieces(of parts: [ArrowBytes]) -> [ArrowBytes] {
    let coalesceBelow = 64 << 10
    var pieces: [ArrowBytes] = []
    var run: [ArrowBytes] = []
    func flushRun() {
      guard !run.isEmpty else { return }
      if run.count == 1 { pieces.append(run[0]) } else {
        let total = run.reduce(0) { $0 + $1.count }
        let storage = AlignedStorage(capacity: total, zeroed: false)
        var offset = 0
        for part in run { offset += part.copy(to: storage.mutableBytes.baseAddress! + offset) }
        pieces.append(storage.freeze(count: total))
      }
      run.removeAll()
    }
    for part in parts where !part.isEmpty {
      if part.count < coalesceBelow {
        run.append(part)
      } else {
        flushRun()
        pieces.append(part)
      }
    }
    flushRun()
    if pieces.count > FabricWire.maxPieces {
      let total = pieces.reduce(0) { $0 + $1.count }
      let storage = AlignedStorage(capacity: total, zeroed: false)
      var offset = 0
      for piece in pieces { offset += piece.copy(to: storage.mutableBytes.baseAddress! + offset) }
      return [storage.freeze(count: total)]
    }
    return pieces
  }

  /// Posts queued control messages while there are credits.
  private func sendQueued() throws(DissociatedIPCError) -> Bool {
    guard case .connected = phase else { return false }
    var moved = false
    while outgoingStart < outgoing.count, sendCredits > 0 {
      let control = outgoing[outgoingStart]
      outgoingStart += 1
      sendCredits -= 1
      let base = control.message.mutableBytes.baseAddress!
      // The message must live until its send completes: a provider may
      // read it later (shm beyond its inline size).
      control.record.keepAlive.append(control.message.freeze(count: control.length))
      FabricWire.stamp(base, credits: creditsToReturn, sequence: nextSequence)
      creditsToReturn = 0
      nextSequence &+= 1
      try submit(.send(base, control.length, tag: FabricWire.controlTag, token: token(for: .send(control.record))))
      let first = control.pieces.isEmpty ? 0 : base.load(fromByteOffset: FabricWire.headerSize, as: UInt64.self).littleEndian
      for (index, piece) in control.pieces.enumerated() {
        try submit(.send(piece.unsafeBaseAddress, piece.count, tag: FabricWire.pieceTag(first &+ UInt64(index)),
                         token: token(for: .send(control.record))))
      }
      moved = true
    }
    if outgoingStart == outgoing.count {
      outgoing.removeAll(keepingCapacity: true)
      outgoingStart = 0
    } else if outgoingStart > 64 {
      outgoing.removeFirst(outgoingStart)
      outgoingStart = 0
    }
    // Credits back without a control message to carry them (FABRIC-FLOW-1).
    if creditsToReturn > 0, Int(creditsToReturn) * 4 >= config.controlReceives {
      moved = try sendSide(.credits) != nil || moved
    }
    return moved
  }

  // MARK: Completions

  private func readCompletions() throws(DissociatedIPCError) -> Bool {
    guard let endpoint else { return false }
    var completions: [FabricCompletion] = []
    completions.reserveCapacity(16)
    var moved = false
    while true {
      completions.removeAll(keepingCapacity: true)
      let count: Int
      do throws(FabricFailure) { count = try endpoint.completions.poll(into: &completions) } catch { throw Self.failure(error) }
      guard count > 0 else { break }
      moved = true
      for completion in completions {
        try handle(completion)
        if isFinished { return true }
      }
    }
    if moved { try deliverPending() }
    return moved
  }

  private func handle(_ completion: FabricCompletion) throws(DissociatedIPCError) {
    guard let operation = operations.removeValue(forKey: completion.token) else { return }
    if let failure = completion.failure {
      switch operation {
      case .read(let fetch):
        fetch.failure = DissociatedIPCError(.malformedDescriptor, "fabric:// could not read the server's memory: \(failure)")
        finishRead(fetch)
        // A provider may keep the connection after a failed read (shm)
        // or lose it (tcp): the next operation tells.
        return
      case .send(let record) where record.purpose.isHandshake:
        if case .connecting = phase {
          throw DissociatedIPCError(.connectionRefused, "fabric:// nothing answers at the server's address: \(failure)")
        }
        throw DissociatedIPCError(.connectionClosed, "fabric:// the welcome did not reach the client: \(failure)")
      default:
        throw DissociatedIPCError(.connectionClosed, "fabric:// connection broke: \(failure)")
      }
    }
    switch operation {
    case .controlReceive(let slot):
      lastHeard = monotonicNanoseconds()
      let buffer = UnsafeRawBufferPointer(start: controlBuffers.mutableBytes.baseAddress! + slot * FabricWire.controlMessageSize,
                                          count: min(completion.length, FabricWire.controlMessageSize))
      try receivedControl(buffer)
      // Credits stop while the inbox or the messages behind an incomplete
      // large one hold the read-ahead budget (FABRIC-FLOW-1).
      if throttled || pendingBytes > config.readAheadBytes { heldSlots.append(slot) } else {
        try postControlReceive(slot)
        creditsToReturn += 1
      }
    case .sideReceive(let slot):
      lastHeard = monotonicNanoseconds()
      let buffer = sideBuffers.mutableBytes.baseAddress! + slot * FabricWire.sideMessageSize
      let (side, credits) = try FabricWire.decodeSide(UnsafeRawBufferPointer(start: buffer, count: min(completion.length, FabricWire.sideMessageSize)))
      sendCredits += Int(min(credits, UInt32(config.controlReceives)))
      try submit(.receive(buffer, FabricWire.sideMessageSize, tag: FabricWire.sideTag, token: token(for: .sideReceive(slot: slot))))
      switch side {
      case .heartbeat, .credits: break
      case .goodbyeAcknowledged:
        if closing != .open { finish(failure: nil) }
      case .reset:
        throw DissociatedIPCError(.connectionClosed, "the fabric:// peer reset the connection")
      }
    case .welcomeReceive:
      try receivedWelcome(length: completion.length)
    case .send(let record):
      record.remaining -= 1
      guard record.remaining == 0 else { return }
      switch record.purpose {
      case .data(let size): connection.sendsCompleted(size)
      case .goodbye:
        if peerSaidGoodbye { finish(failure: nil) } else if case .sendingGoodbye(let deadline) = closing {
          closing = .awaitingAcknowledgement(deadline: deadline)
        }
      case .side: sidesInFlight -= 1
      case .handshake, .other: break
      }
    case .pieceReceive(let large):
      lastHeard = monotonicNanoseconds()
      guard let index = large.pieceIndexByToken.removeValue(forKey: completion.token), completion.length == large.lengths[index] else {
        throw FabricWire.violation("a piece of another length than announced")
      }
      large.remaining -= 1
    case .read(let fetch):
      finishRead(fetch)
    }
  }

  private func receivedWelcome(length: Int) throws(DissociatedIPCError) {
    guard case .connecting(_, let ready) = phase, let buffer = welcomeBuffer else { return }
    welcomeBuffer = nil
    let handshake: FabricWire.Handshake
    do throws(DissociatedIPCError) {
      handshake = try FabricWire.decodeHandshake(UnsafeRawBufferPointer(start: buffer.mutableBytes.baseAddress, count: min(length, buffer.mutableBytes.count)))
    } catch {
      throw DissociatedIPCError(.connectionRefused, "fabric:// the server's answer is not a welcome: \(error.detail)")
    }
    guard handshake.refusal == 0 else {
      let reason = handshake.refusal == FabricWire.Refusal.full.rawValue ? "it has its most connections" : "it could not set the connection up"
      throw DissociatedIPCError(.connectionRefused, "fabric:// the server refused the connection: \(reason)")
    }
    holdEndpoint(named: handshake.name)
    peer = try insert(handshake.name)
    sendCredits = Int(min(handshake.controlReceives, 4096))
    lastHeard = monotonicNanoseconds()
    phase = .connected
    ready(.success(()))
  }

  // MARK: Receiving

  private func receivedControl(_ buffer: UnsafeRawBufferPointer) throws(DissociatedIPCError) {
    let (header, control) = try FabricWire.decode(buffer, maxMessageBytes: config.maxMessageBytes)
    guard header.sequence == expectedSequence else {
      throw FabricWire.violation("control message \(header.sequence) where \(expectedSequence) was due")
    }
    expectedSequence &+= 1
    sendCredits += Int(min(header.credits, UInt32(config.controlReceives)))
    guard !peerSaidGoodbye else { throw FabricWire.violation("a message after its goodbye") }
    switch control {
    case .inline(_, _, let count), .large(_, let count, _, _):
      guard count <= config.maxQueuedFrameBytes - pendingBytes else {
        throw DissociatedIPCError(.limitExceeded, "fabric:// peer sent more than \(config.maxQueuedFrameBytes) bytes that wait for an incomplete message")
      }
      pendingBytes += count
    default: break
    }
    switch control {
    case .inline(let tag, let offset, let count):
      let payload = ArrowBytes(copying: UnsafeRawBufferPointer(rebasing: buffer[offset ..< offset + count]))
      pending.append(.ready(tag.map { .tagged(TaggedMessage(tag: $0, payload: payload)) } ?? .frame(payload)))
    case .large(let tag, let total, let firstPiece, let lengths):
      let large = IncomingLarge(storage: AlignedStorage(capacity: total, zeroed: false), total: total, tag: tag, lengths: lengths)
      var offset = 0
      for (index, length) in lengths.enumerated() {
        let token = token(for: .pieceReceive(large))
        large.pieceIndexByToken[token] = index
        try submit(.receive(large.storage.mutableBytes.baseAddress! + offset, length, tag: FabricWire.pieceTag(firstPiece &+ UInt64(index)),
                            token: token))
        offset += length
      }
      pending.append(.large(large))
    case .region(let id, let key, let base, let length):
      guard !connection.isServer else { throw FabricWire.violation("a region to a server") }
      guard announced.count < Self.maxAnnouncedRegions || announced[id] != nil else {
        throw DissociatedIPCError(.limitExceeded, "fabric:// server announced more than \(Self.maxAnnouncedRegions) regions at once")
      }
      announced[id] = AnnouncedRegion(key: key, base: base, length: length)
    case .withdraw(let id):
      announced[id] = nil
    case .goodbye:
      peerSaidGoodbye = true
      pending.append(.end)
      connection.shared.withLock { $0.sendError = $0.sendError ?? FabricConnection.closedError }
    }
  }

  /// Hands the messages at the front that are complete to the inbox, in
  /// order; throttles reading while the inbox is over the read-ahead
  /// budget (FABRIC-FLOW-1).
  private func deliverPending() throws(DissociatedIPCError) {
    var ready: [MessageInbox.Delivery] = []
    var ended = false
    while pendingStart < pending.count {
      switch pending[pendingStart] {
      case .ready(let delivery):
        ready.append(delivery)
        pendingBytes -= delivery.count
      case .large(let large):
        guard large.remaining == 0 else { break }
        ready.append(large.message)
        pendingBytes -= large.total
      case .end: ended = true
      }
      if case .large(let large) = pending[pendingStart], large.remaining > 0 { break }
      pendingStart += 1
      if ended { break }
    }
    if pendingStart == pending.count {
      pending.removeAll(keepingCapacity: true)
      pendingStart = 0
    } else if pendingStart > 256 {
      pending.removeFirst(pendingStart)
      pendingStart = 0
    }
    if !ready.isEmpty, !connection.inbox.deliver(ready) {
      throw DissociatedIPCError(.limitExceeded, "fabric:// more than \(config.maxQueuedFrameBytes) bytes of messages wait unread")
    }
    if ended {
      connection.inbox.close()
      finishAfterGoodbye(acknowledgement: try sendSide(.goodbyeAcknowledged, ignoringLimit: true))
      return
    }
    if !throttled {
      let connection = connection
      throttled = connection.inbox.waitForTaggedRoom(below: config.readAheadBytes) { connection.post(.readAhead) }
    }
    if !throttled, !heldSlots.isEmpty, pendingBytes <= config.readAheadBytes { try resumeReading() }
  }

  /// Reposts the receives held back while the inbox was full.
  private func resumeReading() throws(DissociatedIPCError) {
    throttled = false
    for slot in heldSlots {
      try postControlReceive(slot)
      creditsToReturn += 1
    }
    heldSlots.removeAll()
  }

  // MARK: Remote memory

  private func expose(_ bytes: ArrowBytes) throws(DissociatedIPCError) -> ExposedRegion {
    guard let endpoint, closing == .open else { throw FabricConnection.closedError }
    let id = try freeRegionID()
    guard let base = bytes.unsafeBaseAddress, bytes.count > 0 else { return ExposedRegion(id: id, ranges: []) }
    let region: FabricMemoryRegion
    do throws(FabricFailure) {
      region = try FabricMemoryRegion(domain: endpoint.domain, base: base, count: bytes.count, key: id)
    } catch {
      throw Self.failure(error)
    }
    exposed[id] = (region, bytes)
    exposedBytes += bytes.count
    connection.shared.withLock {
      $0.exposedRegions = exposed.count
      $0.exposedBytes = exposedBytes
    }
    let address = UInt64(UInt(bitPattern: base))
    let message = AlignedStorage(capacity: FabricWire.headerSize + 16, zeroed: false)
    defer { nextRegion = id == FabricWire.maxRegionID ? 1 : id + 1 }
    let pointer = message.mutableBytes.baseAddress!
    FabricWire.write(FabricWire.Header(kind: .region, credits: 0, sequence: 0, tag: id, length: UInt64(bytes.count)), into: pointer)
    pointer.storeBytes(of: region.key.littleEndian, toByteOffset: FabricWire.headerSize, as: UInt64.self)
    pointer.storeBytes(of: address.littleEndian, toByteOffset: FabricWire.headerSize + 8, as: UInt64.self)
    outgoing.append(OutgoingControl(message: message, length: FabricWire.headerSize + 16, pieces: [],
                                    record: OutgoingRecord(purpose: .other, keepAlive: [], remaining: 1)))
    return ExposedRegion(id: id, ranges: [RemoteRange(address: FabricWire.descriptorAddress(region: id, offset: 0), length: UInt64(bytes.count))])
  }

  /// The next region id not exposed now (FABRIC-RM-1).
  private func freeRegionID() throws(DissociatedIPCError) -> UInt64 {
    guard exposed.count < Int(FabricWire.maxRegionID) else {
      throw DissociatedIPCError(.limitExceeded, "fabric:// connection has \(FabricWire.maxRegionID) regions exposed")
    }
    var id = nextRegion
    while exposed[id] != nil { id = id == FabricWire.maxRegionID ? 1 : id + 1 }
    return id
  }

  private func release(_ id: UInt64) throws(DissociatedIPCError) {
    guard let entry = exposed.removeValue(forKey: id) else { return }
    exposedBytes -= entry.bytes.count
    connection.shared.withLock {
      $0.exposedRegions = exposed.count
      $0.exposedBytes = exposedBytes
    }
    guard closing == .open, !peerSaidGoodbye else { return }
    let message = AlignedStorage(capacity: FabricWire.headerSize, zeroed: false)
    FabricWire.write(FabricWire.Header(kind: .withdraw, credits: 0, sequence: 0, tag: id, length: 0), into: message.mutableBytes.baseAddress!)
    outgoing.append(OutgoingControl(message: message, length: FabricWire.headerSize, pieces: [],
                                    record: OutgoingRecord(purpose: .other, keepAlive: [], remaining: 1)))
  }

  /// Reads `ranges`, each inside a region the server announced
  /// (FABRIC-RM-2): virtual addresses or offsets, as the provider says.
  private func startFetch(_ ranges: [RemoteRange], _ continuation: CheckedContinuation<Result<ArrowBytes, DissociatedIPCError>, Never>) {
    var reads: [(address: UInt64, key: UInt64, offset: Int, count: Int)] = []
    var total = 0
    for range in ranges {
      let (id, offset) = FabricWire.region(of: range.address)
      guard let region = announced[id], offset <= region.length, range.length <= region.length - offset else {
        return continuation.resume(returning: .failure(DissociatedIPCError(
          .malformedDescriptor, "fabric:// descriptor names \(range.length) bytes at \(range.address), outside every region the server announced")))
      }
      guard range.length <= UInt64(config.maxMessageBytes - total) else {
        return continuation.resume(returning: .failure(DissociatedIPCError(.limitExceeded, "fabric:// descriptor of more than \(config.maxMessageBytes) bytes")))
      }
      var done: UInt64 = 0
      while done < range.length {
        let count = min(range.length - done, UInt64(Self.readChunk))
        let start = offset + done
        reads.append((virtualAddresses ? region.base + start : start, region.key, total + Int(done), Int(count)))
        done += count
      }
      total += Int(range.length)
    }
    let storage = AlignedStorage(capacity: total, zeroed: false)
    let fetch = FetchRecord(storage: storage, total: total, remaining: reads.count, continuation: continuation)
    guard !reads.isEmpty else { return finishRead(fetch, counting: false) }
    do throws(DissociatedIPCError) {
      for read in reads {
        try submit(.read(storage.mutableBytes.baseAddress! + read.offset, read.count, address: read.address, key: read.key,
                         token: token(for: .read(fetch))))
      }
    } catch {
      fetch.failure = error
      fetch.remaining = 0
      finishRead(fetch, counting: false)
    }
  }

  /// The longest single read (providers split further as they need).
  static let readChunk = 64 << 20

  private func finishRead(_ fetch: FetchRecord, counting: Bool = true) {
    if counting { fetch.remaining -= 1 }
    guard fetch.remaining <= 0, !fetch.resumed else { return }
    fetch.resumed = true
    if let failure = fetch.failure {
      fetch.continuation.resume(returning: .failure(failure))
    } else {
      fetch.continuation.resume(returning: .success(fetch.storage.freeze(count: fetch.total)))
    }
  }

  // MARK: Timers and closing

  private func checkTimers() throws(DissociatedIPCError) {
    let now = monotonicNanoseconds()
    switch phase {
    case .connecting(let deadline, _):
      if now >= deadline {
        throw DissociatedIPCError(.connectionRefused, "fabric:// no answer from the server within \(config.connectTimeout)")
      }
    case .connected:
      if now &- lastHeard > nanoseconds(config.peerTimeout) {
        throw DissociatedIPCError(.connectionClosed, "fabric:// the peer was silent for \(config.peerTimeout): it is gone")
      }
      if now &- lastHeartbeat >= nanoseconds(config.heartbeatInterval), try sendSide(.heartbeat) != nil {
        lastHeartbeat = now
      }
      switch closing {
      case .open: break
      case .sendingGoodbye(let deadline):
        // The peer took no more messages (no credits) in time: drop it.
        if now >= deadline {
          finish(failure: DissociatedIPCError(.connectionClosed, "fabric:// the peer took nothing for \(config.closeTimeout) while closing"), tellPeer: true)
        }
      case .awaitingAcknowledgement(let deadline):
        if now >= deadline { finish(failure: nil) }
      }
    case .finished: break
    }
  }

  private func beginClose() throws(DissociatedIPCError) {
    guard closing == .open else { return }
    guard case .connected = phase, !peerSaidGoodbye else { return finish(failure: nil) }
    closing = .sendingGoodbye(deadline: monotonicNanoseconds() &+ nanoseconds(config.closeTimeout))
    let message = AlignedStorage(capacity: FabricWire.headerSize, zeroed: false)
    FabricWire.write(FabricWire.Header(kind: .goodbye, credits: 0, sequence: 0, tag: 0, length: 0), into: message.mutableBytes.baseAddress!)
    outgoing.append(OutgoingControl(message: message, length: FabricWire.headerSize, pieces: [],
                                    record: OutgoingRecord(purpose: .goodbye, keepAlive: [], remaining: 1)))
  }

  /// The peer said goodbye and was acknowledged: once our acknowledgement
  /// left, nothing more can travel.
  private func finishAfterGoodbye(acknowledgement: UInt?) {
    if let acknowledgement { progressBriefly(until: acknowledgement) }
    finish(failure: nil)
  }

  /// Progresses for at most 100 ms, until the operation `token` completed
  /// (a last side message leaving on a manual-progress provider). Other
  /// completions are dropped: the connection is ending.
  private func progressBriefly(until token: UInt) {
    guard let endpoint else { return }
    let deadline = monotonicNanoseconds() &+ 100_000_000
    var completions: [FabricCompletion] = []
    while monotonicNanoseconds() < deadline {
      if !retries.isEmpty { _ = try? retryPosts() }
      completions.removeAll(keepingCapacity: true)
      guard (try? endpoint.completions.poll(into: &completions)) != nil else { return }
      if completions.contains(where: { $0.token == token }) { return }
    }
  }

  /// Progresses until no read of ours is in flight, for at most the close
  /// timeout (5 s at most); whether none is. The reads' completions finish
  /// their fetches; others are dropped: the connection is ending.
  private func awaitReads(on endpoint: FabricEndpoint) -> Bool {
    let deadline = monotonicNanoseconds() &+ min(nanoseconds(config.closeTimeout), 5_000_000_000)
    var completions: [FabricCompletion] = []
    while operations.values.contains(where: \.isRead) {
      guard monotonicNanoseconds() < deadline else { return false }
      completions.removeAll(keepingCapacity: true)
      guard let count = try? endpoint.completions.poll(into: &completions) else { return false }
      if count == 0 { usleep(100) }
      for completion in completions {
        guard case .read(let fetch)? = operations.removeValue(forKey: completion.token) else { continue }
        if let failure = completion.failure {
          fetch.failure = fetch.failure ?? DissociatedIPCError(.connectionClosed, "fabric:// the connection closed during a read: \(failure)")
        }
        finishRead(fetch)
      }
    }
    return true
  }

  /// Ends the connection: with `tellPeer` (a failure seen here, the peer
  /// alive) a reset goes to the peer first (FABRIC-CLOSE-2); the endpoint closes (cancelling what is posted),
  /// waiting callers resume, the inbox ends in order or with `failure`.
  private func finish(failure: DissociatedIPCError?, tellPeer: Bool = false) {
    guard !isFinished else { return }
    if failure != nil, tellPeer, case .connected = phase, !peerSaidGoodbye, let reset = try? sendSide(.reset, ignoringLimit: true) {
      progressBriefly(until: reset)
    }
    let previous = phase
    phase = .finished
    // Closed before any buffer posted to it can be freed, once no read
    // is in flight (FABRIC-CLOSE-3); then the endpoints of this
    // process it talked to may close.
    if let endpoint {
      if awaitReads(on: endpoint) {
        endpoint.close()
      } else {
        FabricAbandonedEndpoints.keep(endpoint, with: [Array(operations.values), controlBuffers, sideBuffers, welcomeBuffer as Any])
      }
    }
    endpoint = nil
    for held in heldEndpoints { held.release() }
    heldEndpoints.removeAll()
    var fetches: [ObjectIdentifier: FetchRecord] = [:]
    for case .read(let fetch) in operations.values { fetches[ObjectIdentifier(fetch)] = fetch }
    operations.removeAll()
    retries.removeAll()
    exposed.removeAll()
    let error = failure ?? FabricConnection.closedError
    for fetch in fetches.values {
      fetch.failure = fetch.failure ?? error
      fetch.remaining = 0
      finishRead(fetch, counting: false)
    }
    let (waiters, senders, commands) = connection.shared.withLock { state in
      state.finished = true
      state.sendError = state.sendError ?? error
      state.exposedRegions = 0
      state.exposedBytes = 0
      defer {
        state.closeWaiters.removeAll()
        state.blockedSenders.removeAll()
        state.commands.removeAll()
      }
      return (state.closeWaiters, state.blockedSenders, state.commands)
    }
    Self.fail(commands, with: error)
    connection.inbox.close(error: failure)
    for sender in senders { sender.resume() }
    for waiter in waiters { waiter.resume() }
    if case .connecting(_, let ready) = previous { ready(.failure(failure ?? FabricConnection.closedError)) }
  }
}

extension MessageInbox.Delivery {
  /// The payload's bytes.
  var count: Int {
    switch self {
    case .frame(let bytes): bytes.count
    case .tagged(let message): message.payload.count
    }
  }
}

extension FabricEngine.OutgoingRecord.Purpose {
  var isHandshake: Bool { if case .handshake = self { true } else { false } }
}

/// `duration` in nanoseconds (negative durations count as zero).
func nanoseconds(_ duration: Duration) -> UInt64 {
  let (seconds, attoseconds) = duration.components
  guard seconds >= 0 else { return 0 }
  return UInt64(seconds) &* 1_000_000_000 &+ UInt64(attoseconds / 1_000_000_000)
}
#endif  // Fabric
