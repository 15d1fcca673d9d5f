#if Fabric
internal import ArrowIPC
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Glibc
internal import Synchronization

/// A fabric:// listener: an endpoint bound where the location says, whose
/// thread receives hellos (FABRIC-CONN-1). For each it starts a connection
/// thread with a new endpoint, which welcomes the client, and queues the
/// connection for ``accept()``; past ``FabricTransport/Config/maxConnections``
/// it refuses from its own endpoint.
final class FabricListener: TransportListener {
  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let accepted = AcceptQueue<FabricConnection>()
  let slots: ConnectionSlots
  private let settings: FabricSettings
  private let wake: FabricWake
  /// Set by ``close()``; the thread ends at its next round.
  private let state = Mutex<(closing: Bool, stopped: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, false, []))
  /// Hellos that were not hellos, since the listener opened.
  let rejectedHellos = Mutex(0)

  /// Connections, and the process's libfabric endpoints, registered
  /// regions and address-vector entries.
  var heldResources: String? {
    "\(slots.inUse) connections; in this process \(FabricCensus.endpoints.load(ordering: .relaxed)) fabric endpoints, "
      + "\(FabricCensus.memoryRegions.load(ordering: .relaxed)) registered regions, "
      + "\(FabricCensus.addressEntries.load(ordering: .relaxed)) address-vector entries"
      + (FabricAbandonedEndpoints.count > 0 ? ", \(FabricAbandonedEndpoints.count) left open after an unanswered read" : "")
  }

  private init(address: TransportAddress, settings: FabricSettings, wake: FabricWake) {
    self.address = address
    self.settings = settings
    self.wake = wake
    slots = ConnectionSlots(limit: settings.config.maxConnections)
  }

  /// The hellos received at once.
  private static let helloReceives = 4
  /// Refusals in flight at most; later refused clients hear nothing and time out.
  private static let maxRefusals = 16
  /// The listener thread's longest sleep: connection requests may need a
  /// poll its descriptor does not announce (FABRIC-THREAD-2).
  private static let longestSleep: Int64 = 50_000_000
  /// Tries at a random port for a named provider asked for port 0.
  private static let portTries = 32

  /// Binds on its own thread, where the endpoint lives.
  static func open(settings: FabricSettings, host: String, port: UInt16,
                   parameters: [Location.KeyValuePair]) async throws(DissociatedIPCError) -> FabricListener {
    let wake = try FabricWake()
    let result: Result<FabricListener, DissociatedIPCError> = await withCheckedContinuation { continuation in
      do throws(DissociatedIPCError) {
        try startDedicatedThread(named: "fabric-listen") {
          let endpoint: FabricEndpoint
          let bound: UInt16
          do throws(DissociatedIPCError) {
            (endpoint, bound) = try bind(settings: settings, host: host, port: port)
          } catch {
            return continuation.resume(returning: .failure(error))
          }
          let address = TransportAddress(scheme: "fabric", host: host, port: bound, parameters: parameters)
          let listener = FabricListener(address: address, settings: settings, wake: wake)
          continuation.resume(returning: .success(listener))
          listener.serve(endpoint: endpoint)
        }
      } catch {
        continuation.resume(returning: .failure(error))
      }
    }
    return try result.get()
  }

  /// The listener's endpoint and its port: the provider's choice for
  /// port 0 over IP; over a named provider (shm) a random free one.
  static func bind(settings: FabricSettings, host: String, port: UInt16) throws(DissociatedIPCError) -> (FabricEndpoint, UInt16) {
    guard settings.namesEndpoints else {
      let endpoint = try settings.endpoint(bindingTo: (host, String(port)))
      let name: [UInt8]
      do throws(FabricFailure) { name = try endpoint.name() } catch { throw FabricEngine.failure(error) }
      // A sockaddr_in or sockaddr_in6: the port follows the family, big-endian.
      guard name.count >= 4 else { throw DissociatedIPCError(.transportFailure, "fabric:// cannot tell the bound port") }
      return (endpoint, UInt16(name[2]) << 8 | UInt16(name[3]))
    }
    _ = FabricSettings.staleRegionsRemoved
    if port != 0 { return (try settings.endpoint(bindingTo: (host, String(port))), port) }
    var lastError = DissociatedIPCError(.resourceExhausted, "fabric:// found no free port")
    for _ in 0 ..< portTries {
      let candidate = UInt16.random(in: 20_000 ... 60_000)
      do throws(DissociatedIPCError) {
        return (try settings.endpoint(bindingTo: (host, String(candidate))), candidate)
      } catch {
        lastError = error
      }
    }
    throw lastError
  }

  // MARK: Serving

  private enum Operation {
    case hello(slot: Int)
    case refusal(address: UInt64, bytes: ArrowBytes)
  }

  /// The listener thread's loop: hellos in, connections started,
  /// refusals out, until ``close()``.
  private func serve(endpoint: FabricEndpoint) {
    let buffers = AlignedStorage(capacity: Self.helloReceives * FabricWire.handshakeMessageSize, zeroed: false)
    var operations: [UInt: Operation] = [:]
    var nextToken: UInt = 1
    var idle = FabricIdleWait(polling: false, maxIdleSleep: settings.config.maxIdleSleep)
    /// Completions read while a post waited, handled by the loop next.
    var backlog: [FabricCompletion] = []
    func post(_ slot: Int) -> Bool {
      let token = nextToken
      nextToken &+= 1
      operations[token] = .hello(slot: slot)
      let buffer = buffers.mutableBytes.baseAddress! + slot * FabricWire.handshakeMessageSize
      // Retried a while: the provider may be busy with connections.
      for _ in 0 ..< 1000 {
        do throws(FabricFailure) {
          try endpoint.receiveTagged(buffer, count: FabricWire.handshakeMessageSize, from: nil, tag: FabricWire.helloTag, ignore: 0, token: token)
          return true
        } catch {
          guard error.isAgain else { return false }
          guard (try? endpoint.completions.poll(into: &backlog)) != nil else { return false }
        }
      }
      return false
    }
    var healthy = (0 ..< Self.helloReceives).allSatisfy(post)
    var completions: [FabricCompletion] = []
    while healthy, !state.withLock({ $0.closing }) {
      completions.removeAll(keepingCapacity: true)
      swap(&completions, &backlog)
      do throws(FabricFailure) { _ = try endpoint.completions.poll(into: &completions) } catch { break }
      let count = completions.count
      for completion in completions {
        switch operations.removeValue(forKey: completion.token) {
        case .hello(let slot):
          if completion.failure == nil {
            let bytes = UnsafeRawBufferPointer(start: buffers.mutableBytes.baseAddress! + slot * FabricWire.handshakeMessageSize,
                                               count: min(completion.length, FabricWire.handshakeMessageSize))
            let hello = try? FabricWire.decodeHandshake(bytes)
            let refusal = accept(hello: hello)
            if refusal == nil, settings.namesEndpoints, let hello {
              forget(hello.name, in: endpoint)
            }
            if let refusal, operations.count < Self.helloReceives + Self.maxRefusals,
               let hello, let address = try? endpoint.addresses.insert(hello.name) {
              let answer = ArrowBytes(copying: FabricWire.encode(FabricWire.Handshake(refusal: refusal.rawValue, controlReceives: 0, name: [])))
              let token = nextToken
              nextToken &+= 1
              do throws(FabricFailure) {
                try endpoint.sendTagged(answer.unsafeBaseAddress, count: answer.count, to: address, tag: FabricWire.welcomeTag, token: token)
                operations[token] = .refusal(address: address, bytes: answer)
              } catch {
                endpoint.addresses.remove(address)
              }
            }
          }
          healthy = post(slot) && healthy
        case .refusal(let address, _):
          endpoint.addresses.remove(address)
        case nil:
          break
        }
      }
      if count > 0 {
        idle.progressed()
      } else {
        idle.idle(queue: endpoint.completions, wake: wake, limit: Self.longestSleep) { !state.withLock { $0.closing } } woke: {}
      }
    }
    // Closed before the buffers posted to it go (FABRIC-RAW-1).
    endpoint.close()
    withExtendedLifetime((buffers, operations)) {}
    // A listener that stopped by itself takes no more connections.
    for connection in accepted.close() { connection.abort() }
    let waiters = state.withLock { state in
      state.stopped = true
      defer { state.waiters.removeAll() }
      return state.waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Unmaps a client that sent a hello (FABRIC-ADDR-7): shm maps the
  /// region of whoever sends to an endpoint and keeps it until that
  /// name's address is removed, so a listener would hold one mapping
  /// (about 21 KiB of memory) per client it ever heard.
  private func forget(_ name: [UInt8], in endpoint: FabricEndpoint) {
    guard FabricSettings.sharedMemoryNameExists(name), let address = try? endpoint.addresses.insert(name) else { return }
    endpoint.addresses.remove(address)
  }

  /// Starts a connection for a valid hello; a refusal to send when the
  /// listener is full or cannot start one; nil for garbage (nil, or a
  /// handshake that is not a hello: dropped).
  private func accept(hello: FabricWire.Handshake?) -> FabricWire.Refusal? {
    guard let hello, hello.refusal == 0 else {
      rejectedHellos.withLock { $0 += 1 }
      return nil
    }
    guard let slot = slots.take() else { return .full }
    let settings = settings
    let accepted = accepted
    let clientReceives = Int(min(hello.controlReceives, 4096))
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "fabric-conn") {
        let connection: FabricConnection
        let endpoint: FabricEndpoint
        do throws(DissociatedIPCError) {
          endpoint = try settings.endpoint(bindingTo: settings.namesEndpoints ? (FabricSettings.uniqueName(), nil) : (self.address.host, "0"))
          connection = try FabricConnection(settings: settings, isServer: true,
                                            path: settings.pathDescription(peer: "a client", remoteReads: endpoint.domain.info.remoteReads,
                                                                           virtual: endpoint.domain.info.virtualAddresses, server: true),
                                            slot: slot)
        } catch {
          return  // the slot goes with the closure; the client times out
        }
        guard accepted.offer(connection) else { return }
        FabricEngine.runServer(connection: connection, endpoint: endpoint, clientName: hello.name, clientReceives: clientReceives)
      }
    } catch {
      return .exhausted
    }
    return nil
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await accepted.next()
  }

  /// Stops the thread (the endpoint closes, the port is free once this
  /// returns); connections nobody took are reset.
  func close() async {
    for connection in accepted.close() { connection.abort() }
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let stopped = state.withLock { state -> Bool in
        state.closing = true
        if !state.stopped { state.waiters.append(continuation) }
        return state.stopped
      }
      wake.signal()
      if stopped { continuation.resume() }
    }
  }
}
#endif  // Fabric
