public import ArrowIPC
internal import Synchronization

/// What a client receives, in stream order.
public enum ReceivedItem: Sendable {
  /// The schema (always first).
  case schema(Schema)
  /// Dictionary values.
  case dictionary(DictionaryBatch)
  /// A record batch.
  case recordBatch(RecordBatch)
}

/// Fetches streams from Dissociated IPC servers.
///
/// ```swift
/// let client = DissociatedClient(registry: registry)
/// for try await item in client.stream(from: location) {
///   if case .recordBatch(let batch) = item { … }     // in stream order
/// }
/// ```
/// Bodies sent as descriptors are fetched through the transport's remote
/// memory; a mapped body is returned to the server (free_data) when the
/// last ``ArrowBytes`` referring to it is released, a copied one at once.
public struct DissociatedClient: Sendable {
  /// Client settings.
  public struct Config: Sendable {
    /// Reorder window and limits per stream.
    public var stream: ClientStreamConfig
    /// Fail with `.timedOut` when nothing arrives for this long (nil: wait
    /// for ever).
    public var idleTimeout: Duration?
    /// Most bytes of the server's memory a stream's mapped bodies may hold
    /// at once; a body that would go beyond is copied and returned at once
    /// (DIPC-FREE-5), so a consumer that keeps every batch never holds the
    /// server back (DIPC-BP-1).
    public var maxMappedBytes: Int
    /// Most type-1 bodies a stream fetches at once: while the next item
    /// waits for its body's fetch, descriptors already received start
    /// theirs (DIPC-CLIENT-4).
    public var maxFetchesInFlight: Int
    /// Most bytes those fetches take at once (a single fetch may take more).
    public var maxFetchBytesInFlight: Int
    /// Default limits, a 30 s idle timeout, 128 MiB mapped (half the
    /// server's default bound on outstanding bytes), 4 fetches and 16 MiB
    /// in flight.
    public static let defaults = Config(stream: .defaults, idleTimeout: .seconds(30))

    /// Creates settings.
    public init(stream: ClientStreamConfig, idleTimeout: Duration?, maxMappedBytes: Int = 128 << 20,
                maxFetchesInFlight: Int = 4, maxFetchBytesInFlight: Int = 16 << 20) {
      self.stream = stream
      self.idleTimeout = idleTimeout
      self.maxMappedBytes = maxMappedBytes
      self.maxFetchesInFlight = max(1, maxFetchesInFlight)
      self.maxFetchBytesInFlight = maxFetchBytesInFlight
    }
  }

  /// The backends, by scheme.
  public let registry: TransportRegistry
  /// The settings.
  public let config: Config

  /// A client using `registry`.
  public init(registry: TransportRegistry, config: Config = .defaults) {
    self.registry = registry
    self.config = config
  }

  /// The stream at `location`. The ticket is `ticket`, or else the
  /// location's `ticket` (UTF-8) or `ticket64` (base64) parameter. With a
  /// `dataLocation`, bodies come from that (data) server and metadata from
  /// `location` (the two-server topology, DIPC-TOPO-2).
  public func stream(from location: Location, ticket: [UInt8]? = nil, dataLocation: Location? = nil) -> ReceivedStream {
    ReceivedStream(client: self, location: location, ticket: ticket, dataLocation: dataLocation)
  }
}

/// The items of one stream, in order; iterate once.
public struct ReceivedStream: AsyncSequence, Sendable {
  /// Items in stream order.
  public typealias Element = ReceivedItem
  let client: DissociatedClient
  let location: Location
  let ticket: [UInt8]?
  let dataLocation: Location?

  /// Starts the stream on the first `next()`.
  public func makeAsyncIterator() -> Iterator {
    Iterator(stream: self)
  }

  /// Pulls items; connects on first use.
  public struct Iterator: AsyncIteratorProtocol {
    let stream: ReceivedStream
    var session: ClientSession?

    /// The next item, nil at the end.
    public mutating func next() async throws(DissociatedIPCError) -> ReceivedItem? {
      if session == nil { session = try await ClientSession.start(stream) }
      return try await session!.next()
    }

    /// The transports' path reports (``TransportConnection/pathDescription``)
    /// of the stream's connections, the metadata one first; empty before
    /// the first ``next()`` connected.
    public var paths: [String] { session?.paths ?? [] }

    /// Ends the stream and waits until its connections are closed. Before
    /// the stream's end the rest is abandoned. After it, the wait lasts
    /// until every record batch and dictionary the stream handed out that
    /// still maps the server's memory was released (so call it once they
    /// are dropped) and the transport's goodbye was exchanged: a process
    /// that exits right after its last batch calls this, or its server
    /// only notices the silence after its peer timeout (DIPC-FREE-6).
    public mutating func close() async {
      guard let session else { return }
      self.session = nil
      await session.close()
    }
  }

  /// Receives the whole stream and writes it as an Arrow IPC stream to
  /// `sink`; returns the number of record batches.
  public func write<Sink: IPCByteSink>(to writer: inout IPCStreamWriter<Sink>) async throws(DissociatedIPCError) -> Int {
    func arrow(_ write: () throws(ArrowIPCError) -> Void) throws(DissociatedIPCError) {
      do throws(ArrowIPCError) { try write() } catch { throw DissociatedIPCError(error) }
    }
    var batches = 0
    var iterator = makeAsyncIterator()
    while let item = try await iterator.next() {
      switch item {
      case .schema(let schema): try arrow { () throws(ArrowIPCError) in try writer.write(Message(header: .schema(schema))) }
      case .dictionary(let dictionary):
        try arrow { () throws(ArrowIPCError) in try writer.write(dictionary.values.message, body: dictionary.values.body) }
      case .recordBatch(let batch):
        try arrow { () throws(ArrowIPCError) in try writer.write(batch.message, body: batch.body) }
        batches += 1
      }
    }
    try arrow { () throws(ArrowIPCError) in try writer.finish() }
    await iterator.close()
    return batches
  }
}

extension ReceivedStream {
  /// Lets `for try await` over a ``ReceivedStream`` throw typed errors.
  public typealias Failure = DissociatedIPCError
}

/// One stream's connections and state machine. The consumer drives the
/// state machine and reads the flow it needs next (``ClientStreamStateMachine/need``):
/// a flow that runs ahead waits in the transport, whose flow control holds
/// it back (DIPC-CLIENT-3). A watchdog turns silence longer than the idle
/// timeout into `.timedOut`.
final class ClientSession: Sendable {
  private let metadata: any TransportConnection
  private let data: any TransportConnection

  /// The connections' path reports, the metadata one first.
  var paths: [String] { metadata === data ? [metadata.pathDescription] : [metadata.pathDescription, data.pathDescription] }
  private let config: DissociatedClient.Config
  private let canMap: Bool
  private let machine: Mutex<ClientStreamStateMachine>
  private let returns: FreeDataReturns
  /// Messages received so far; the watchdog compares it between ticks
  /// (a counter, so the hot path reads no clock).
  private let progress = Atomic<UInt64>(0)
  private let timedOut = Atomic<Bool>(false)
  private let watchdog = Mutex<Task<Void, Never>?>(nil)
  /// Type-1 bodies being fetched, by sequence number (DIPC-CLIENT-4).
  private let fetches = Mutex(FetchesInFlight())

  /// A fetch that runs while the stream reads on.
  private struct Fetch {
    let descriptor: BodyDescriptor
    let task: Task<Result<ArrowBytes, DissociatedIPCError>, Never>
  }

  private struct FetchesInFlight {
    var bySequence: [UInt32: Fetch] = [:]
    var bytes = 0
  }

  private init(metadata: any TransportConnection, data: any TransportConnection, canMap: Bool,
               config: DissociatedClient.Config) {
    self.metadata = metadata
    self.data = data
    self.canMap = canMap
    self.config = config
    machine = Mutex(ClientStreamStateMachine(config: config.stream))
    returns = FreeDataReturns(connection: data)
  }

  static func start(_ stream: ReceivedStream) async throws(DissociatedIPCError) -> ClientSession {
    let registry = stream.client.registry
    let ticket: [UInt8]
    if let given = stream.ticket { ticket = given } else { ticket = try ticketParameter(stream.location) }
    let transport = try registry.transport(forScheme: stream.location.scheme)
    let metadata = try await transport.connect(to: stream.location)
    var data = metadata
    var canMap = transport.capabilities.fetchesByMapping
    do throws(DissociatedIPCError) {
      try await metadata.sendTagged(stream.location.wantData, [ArrowBytes(copying: ticket)])
      if let dataLocation = stream.dataLocation {
        let dataTransport = try registry.transport(forScheme: dataLocation.scheme)
        canMap = dataTransport.capabilities.fetchesByMapping
        data = try await dataTransport.connect(to: dataLocation)
        try await data.sendTagged(dataLocation.wantData, [ArrowBytes(copying: ticket)])
      }
    } catch {
      abortBoth(metadata, data)
      throw error
    }
    let session = ClientSession(metadata: metadata, data: data, canMap: canMap, config: stream.client.config)
    session.startWatchdog()
    return session
  }

  private static func ticketParameter(_ location: Location) throws(DissociatedIPCError) -> [UInt8] {
    for pair in location.otherParameters {
      if pair.name == "ticket" { return Array(pair.value.utf8) }
      if pair.name == "ticket64", let bytes = Base64.decode(pair.value) { return bytes }
    }
    throw DissociatedIPCError(.invalidLocation, "\(location): no ticket given and no ticket parameter")
  }

  /// Closes the connections when nothing arrives for the idle timeout
  /// (checked every quarter of it, so silence is noticed after 1 to 1.25
  /// timeouts); the pending receive then ends and ``next()`` reports
  /// `.timedOut`.
  private func startWatchdog() {
    guard let timeout = config.idleTimeout else { return }
    // Weak: an abandoned session must be able to go away (its deinit
    // closes the connections and cancels this task).
    let task = Task { [weak self] in
      var seen: UInt64 = 0
      var quietTicks = 0
      while !Task.isCancelled {
        try? await Task.sleep(for: timeout / 4)
        guard let self, !Task.isCancelled else { return }
        let now = progress.load(ordering: .relaxed)
        quietTicks = now == seen ? quietTicks + 1 : 0
        seen = now
        if quietTicks >= 4 {
          timedOut.store(true, ordering: .relaxed)
          Self.abortBoth(metadata, data)
          return
        }
      }
    }
    watchdog.withLock { $0 = task }
  }

  /// What ``next()`` does next: deliver an item, end, or read a flow.
  private enum Step {
    case deliver(ReceivedItem)
    case read(ClientStreamStateMachine.Need)
  }

  /// The item the state machine can deliver now, else the flow it needs
  /// (`.nothing`: the stream is complete).
  private static func step(_ machine: inout ClientStreamStateMachine) throws(DissociatedIPCError) -> Step {
    if let item = try machine.nextItem() { return .deliver(item.received) }
    return .read(machine.need)
  }

  /// The next item, reading the flow the state machine needs. Each event
  /// and the step after it take the lock once.
  @inline(__always)
  func next() async throws(DissociatedIPCError) -> ReceivedItem? {
    do throws(DissociatedIPCError) {
      var step = try machine.withLock { (machine) throws(DissociatedIPCError) in try Self.step(&machine) }
      while true {
        switch step {
        case .deliver(let item):
          return item
        case .read(.nothing):
          await finishStream()
          return nil
        case .read(.metadata):
          let frame: ArrowBytes?
          do throws(DissociatedIPCError) {
            frame = try await metadata.readyFrame().orWaiting { () async throws(DissociatedIPCError) in try await metadata.receiveFrame() }
          } catch {
            throw receiveFailed(error)
          }
          guard let frame = try received(frame) else { return try closed() }
          step = try machine.withLock { (machine) throws(DissociatedIPCError) in
            try machine.metadataReceived(frame)
            return try Self.step(&machine)
          }
        case .read(.body):
          // Every tagged message on the data connection is a body; the state
          // machine places it by sequence (DIPC-CLIENT-2).
          let tagged: TaggedMessage?
          do throws(DissociatedIPCError) {
            tagged = try await data.readyTagged(matching: 0, mask: 0).orWaiting { () async throws(DissociatedIPCError) in
              try await data.receiveTagged(matching: 0, mask: 0)
            }
          } catch {
            throw receiveFailed(error)
          }
          guard let message = try received(tagged) else { return try closed() }
          step = try bodyReceived(message)
        case .read(.fetch(let sequence)):
          // Bodies already here start their fetches before this one is
          // awaited, so reads overlap (DIPC-CLIENT-4).
          try readAhead()
          try await finishFetch(sequence)
          step = try machine.withLock { (machine) throws(DissociatedIPCError) in try Self.step(&machine) }
        }
      }
    } catch {
      let reported = await serverReportedError(instead: error)
      abort()
      throw reported
    }
  }

  /// The server's own account of a failure, when it sent one: a server
  /// whose source failed sends an error frame and takes back what it
  /// exposed, so a body fetched meanwhile fails on our side first
  /// (`malformedDescriptor`, a closed connection) while the frame that
  /// says why is on its way. Frames are read for at most 250 ms; `error`
  /// stands when none says more (DIPC-ERR-4).
  private func serverReportedError(instead error: DissociatedIPCError) async -> DissociatedIPCError {
    guard error.code != .peerError, error.code != .timedOut else { return error }
    let metadata = metadata
    let errorFrame = try? await withTimeout(.milliseconds(250)) { () async throws(DissociatedIPCError) -> ArrowBytes? in
      for _ in 0 ..< 64 {
        guard let frame = try await metadata.receiveFrame() else { return nil }
        if !frame.isEmpty, frame[0] == MetadataFrame.errorType { return frame }
      }
      return nil
    }
    guard let errorFrame = errorFrame ?? nil else { return error }
    do throws(DissociatedIPCError) {
      try machine.withLock { (machine) throws(DissociatedIPCError) in try machine.metadataReceived(errorFrame) }
    } catch let reported {
      return reported
    }
    return error
  }

  /// Records progress after a receive; nil (the flow ended) is reported
  /// as a timeout when the watchdog closed it.
  private func received<T>(_ value: T?) throws(DissociatedIPCError) -> T? {
    if value == nil { try checkTimeout() }
    progress.add(1, ordering: .relaxed)
    return value
  }

  /// Maps a failed receive: the watchdog's close is a timeout, a broken
  /// connection a truncated stream.
  private func receiveFailed(_ error: DissociatedIPCError) -> DissociatedIPCError {
    if let timeout { return timeout }
    return error.code == .connectionClosed
      ? DissociatedIPCError(.streamTruncated, "the connection broke mid-stream: \(error.detail)") : error
  }

  /// The stream's error once the watchdog closed it for silence.
  private var timeout: DissociatedIPCError? {
    guard timedOut.load(ordering: .relaxed) else { return nil }
    return DissociatedIPCError(.timedOut, "nothing arrived for \(config.idleTimeout.map { "\($0)" } ?? "")")
  }

  private func checkTimeout() throws(DissociatedIPCError) {
    if let timeout { throw timeout }
  }

  /// The flow the stream waits for has ended.
  private func closed() throws(DissociatedIPCError) -> ReceivedItem? {
    try machine.withLock { (machine) throws(DissociatedIPCError) in try machine.peerClosed() }
    return nil
  }

  /// Places a tagged message (a body) in the state machine, starting its
  /// fetch when it is a descriptor; the step after it.
  private func bodyReceived(_ message: TaggedMessage) throws(DissociatedIPCError) -> Step {
    let (descriptor, step) = try machine.withLock { (machine) throws(DissociatedIPCError) in
      let descriptor = try machine.bodyReceived(tag: message.tag, payload: message.payload)
      return (descriptor, try Self.step(&machine))
    }
    if let descriptor { try startFetch(descriptor, sequence: Tag(rawValue: message.tag).sequence) }
    return step
  }

  /// Takes the bodies already received on the data connection, without
  /// waiting, while fewer than `maxFetchesInFlight` fetches and
  /// `maxFetchBytesInFlight` bytes are in flight.
  private func readAhead() throws(DissociatedIPCError) {
    while fetches.withLock({ $0.bySequence.count < config.maxFetchesInFlight && $0.bytes < config.maxFetchBytesInFlight }) {
      guard case .message(let message) = try data.readyTagged(matching: 0, mask: 0) else { return }
      progress.add(1, ordering: .relaxed)
      _ = try bodyReceived(message)
    }
  }

  /// Starts fetching the type-1 body `sequence`.
  private func startFetch(_ descriptor: BodyDescriptor, sequence: UInt32) throws(DissociatedIPCError) {
    guard let remoteMemory = data.remoteMemory else {
      throw DissociatedIPCError(.unsupportedOperation, "a descriptor body arrived on a transport without remote memory")
    }
    let ranges = descriptor.ranges
    let task = Task { () async -> Result<ArrowBytes, DissociatedIPCError> in
      do throws(DissociatedIPCError) { return .success(try await remoteMemory.fetch(ranges)) } catch { return .failure(error) }
    }
    fetches.withLock { fetches in
      fetches.bySequence[sequence] = Fetch(descriptor: descriptor, task: task)
      fetches.bytes += Int(clamping: descriptor.totalSize)
    }
  }

  /// Waits for the fetch of body `sequence` and gives its bytes to the
  /// state machine. A mapping is returned to the server when its last view
  /// is released; a copy right away (DIPC-FREE-1), and so is a mapping
  /// copied because the stream's mapped bodies would exceed
  /// `maxMappedBytes` (DIPC-FREE-5).
  private func finishFetch(_ sequence: UInt32) async throws(DissociatedIPCError) {
    guard let fetch = fetches.withLock({ $0.bySequence[sequence] }) else {
      throw DissociatedIPCError(.unexpectedMessage, "body \(sequence) is not being fetched")
    }
    let result = await fetch.task.value
    fetches.withLock { fetches in
      fetches.bySequence[sequence] = nil
      fetches.bytes -= Int(clamping: fetch.descriptor.totalSize)
    }
    let fetched = try result.get()
    let addresses = fetch.descriptor.ranges.map(\.address)
    if canMap, returns.hold(fetched.count, limit: config.maxMappedBytes) {
      let owner = ReturnOnRelease(bytes: fetched, addresses: addresses, returns: returns)
      let view = fetched.isEmpty ? fetched : ArrowBytes(unsafeBase: fetched.unsafeBaseAddress!, count: fetched.count, owner: owner)
      _ = try machine.withLock { (machine) throws(DissociatedIPCError) in
        try machine.bodyFetched(sequence: sequence, bytes: view, release: true)
      }
    } else {
      // A mapping over the limit is copied before its addresses go back.
      let owned = canMap ? fetched.copied() : fetched
      let now = try machine.withLock { (machine) throws(DissociatedIPCError) in
        try machine.bodyFetched(sequence: sequence, bytes: owned, release: false)
      }
      returns.send(now)
    }
  }

  /// The stream is complete: close the metadata flow now, the data flow
  /// once every mapped body was returned.
  private func finishStream() async {
    watchdog.withLock { $0?.cancel() }
    if metadata !== data { await metadata.close() }
    returns.closeWhenIdle()
  }

  /// Closes the connections: after the stream's end once every mapped
  /// body came back (``FreeDataReturns``), before it at once.
  func close() async {
    if machine.withLock({ $0.isComplete }) {
      await finishStream()
      await returns.closed()
    } else {
      watchdog.withLock { $0?.cancel() }
      await Self.closeBoth(metadata, data)
    }
  }

  /// The stream failed: its connections end now, without waiting for a
  /// peer that may be gone or silent (a goodbye it never answers would
  /// hold the caller for the transport's close timeout).
  private func abort() {
    watchdog.withLock { $0?.cancel() }
    Self.abortBoth(metadata, data)
  }

  /// Aborts the metadata connection and, when it is another one, the data
  /// connection.
  private static func abortBoth(_ metadata: any TransportConnection, _ data: any TransportConnection) {
    metadata.abort()
    if data !== metadata { data.abort() }
  }

  /// Closes the metadata connection and, when it is another one, the data
  /// connection.
  private static func closeBoth(_ metadata: any TransportConnection, _ data: any TransportConnection) async {
    await metadata.close()
    if data !== metadata { await data.close() }
  }

  /// A stream abandoned before its end (the iterator dropped) closes its
  /// connections, so neither side keeps waiting. A complete stream leaves
  /// the data connection to ``FreeDataReturns``, which closes it once every
  /// mapped body came back.
  deinit {
    watchdog.withLock { $0?.cancel() }
    guard !machine.withLock({ $0.isComplete }) else { return }
    Task { [metadata, data] in await Self.closeBoth(metadata, data) }
  }
}

extension ClientItem {
  var received: ReceivedItem {
    switch self {
    case .schema(let schema): .schema(schema)
    case .dictionary(let dictionary, _): .dictionary(dictionary)
    case .recordBatch(let batch, _): .recordBatch(batch)
    }
  }
}

/// Returns addresses to the server with free_data, coalescing what
/// accumulates while a send is in flight, and closes the data connection
/// when the stream is complete and nothing is held any more.
final class FreeDataReturns: Sendable {
  private struct State {
    var pending: [UInt64] = []
    var sending = false
    var held = 0
    var heldBytes = HeldBytes()
    var closeWhenIdle = false
    var closed = false
    /// The connection's close completed.
    var closeCompleted = false
    var closeWaiters: [CheckedContinuation<Void, Never>] = []
  }

  private let connection: any TransportConnection
  private let state = Mutex(State())

  init(connection: any TransportConnection) { self.connection = connection }

  /// Counts a mapped body of `bytes` as held by the user, unless that
  /// takes the mapped bytes held beyond `limit` (one body alone always
  /// fits); false then, and nothing is counted.
  func hold(_ bytes: Int, limit: Int) -> Bool {
    state.withLock { state in
      guard state.heldBytes.hold(bytes, limit: limit) else { return false }
      state.held += 1
      return true
    }
  }

  /// The user released a mapped body of `bytes`.
  func released(_ addresses: [UInt64], bytes: Int) {
    state.withLock { state in
      state.held -= 1
      state.heldBytes.release(bytes)
    }
    send(addresses)
  }

  /// Queues `addresses` for free_data.
  func send(_ addresses: [UInt64]) {
    let start = state.withLock { state -> Bool in
      state.pending += addresses
      guard !state.sending, !state.closed, !state.pending.isEmpty || state.closeWhenIdle else { return false }
      state.sending = true
      return true
    }
    if start { Task { await flush() } }
  }

  /// Close once everything held was returned.
  func closeWhenIdle() {
    state.withLock { $0.closeWhenIdle = true }
    send([])
  }

  /// Returns once the connection was closed: the stream ended and every
  /// mapped body came back.
  func closed() async {
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = state.withLock { state -> Bool in
        if state.closeCompleted { return true }
        state.closeWaiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }

  private func flush() async {
    while true {
      enum Step { case send([UInt64]), close, stop }
      let step: Step = state.withLock { state in
        if !state.pending.isEmpty {
          defer { state.pending = [] }
          return .send(state.pending)
        }
        if state.closeWhenIdle, state.held == 0, !state.closed {
          state.closed = true
          return .close
        }
        state.sending = false
        return .stop
      }
      switch step {
      case .send(let addresses): try? await connection.sendTagged(ControlTag.freeData, [ArrowBytes(copying: FreeDataPayload.encode(addresses))])
      case .close:
        await connection.close()
        let waiters = state.withLock { state in
          state.sending = false
          state.closeCompleted = true
          defer { state.closeWaiters = [] }
          return state.closeWaiters
        }
        for waiter in waiters { waiter.resume() }
        return
      case .stop: return
      }
    }
  }
}

/// Owns a mapped body; when the last view goes away, its addresses go back
/// to the server.
final class ReturnOnRelease: ArrowBytesOwner {
  let bytes: ArrowBytes
  let addresses: [UInt64]
  let returns: FreeDataReturns

  init(bytes: ArrowBytes, addresses: [UInt64], returns: FreeDataReturns) {
    self.bytes = bytes
    self.addresses = addresses
    self.returns = returns
  }

  deinit { returns.released(addresses, bytes: bytes.count) }
}
