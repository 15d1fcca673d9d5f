#if UCX
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// A UCP listener on a socket address, with its own worker and progress
/// thread. Every connection request is accepted at once on a new
/// connection thread (UCX-CONN-1) and queued for ``accept()``. Its
/// connections expose bodies from one registered pool whose rkey is the
/// listener's remote handle (UCX-RM-1).
final class UCXListener: TransportListener {
  let address: TransportAddress
  /// The registered memory its connections expose from; nil when the
  /// backend exposes none (`exposedMemoryBytes` 0, `descriptorBodies` `.never`).
  let exposedMemory: ExposedMemoryPool?
  /// The pool's regions and rkey (UCX-RM-2).
  var remoteHandle: [UInt8]? { exposedMemory?.remoteHandle }
  private let accepted = AcceptQueue<UCXConnection>()
  /// Connections now held, against ``UCXTransport/Config/maxConnections``.
  let slots: ConnectionSlots

  /// Connections, bodies exposed from the pool, and the process's memory
  /// registrations (UCX-RM-1).
  var heldResources: String? {
    var text = "\(slots.inUse) connections"
    if let exposedMemory {
      text += ", \(exposedMemory.outstandingBlocks) bodies (\(mebibytes(exposedMemory.outstandingBytes)) of \(mebibytes(exposedMemory.registration.length)) MiB) exposed"
    }
    return text + ", \(UCXMemoryRegistration.live) memory registrations"
  }
  /// The listener's worker, to wake its thread; nil once it stopped.
  private let control: Mutex<(closed: Bool, worker: UCXWorker?)>
  /// Whether the listener handle was destroyed, and who waits for it.
  private let release = Mutex<(released: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

  private init(address: TransportAddress, worker: UCXWorker, exposedMemory: ExposedMemoryPool?, maxConnections: Int) {
    self.address = address
    slots = ConnectionSlots(limit: maxConnections)
    self.exposedMemory = exposedMemory
    control = Mutex((false, worker))
  }

  /// Binds on `host:port` (port 0: a free one) on a thread of its own.
  /// The context (created on first use) is made on that thread too.
  static func open(runtime: Runtime, host: String, port: UInt16, config: UCXTransport.Config,
                   scheme: String) async throws(DissociatedIPCError) -> UCXListener {
    let result: Result<UCXListener, DissociatedIPCError> = await withCheckedContinuation { continuation in
      do throws(DissociatedIPCError) {
        try startDedicatedThread(named: "ucx-listener") {
          let served = serve(runtime: runtime, host: host, port: port, config: config, scheme: scheme) {
            continuation.resume(returning: $0)
          }
          // Its listener handle and worker are gone now (the locals of
          // `serve`): the port is free.
          if let served {
            ProgressThreads.ended(ObjectIdentifier(served))
            served.released()
          }
        }
      } catch {
        continuation.resume(returning: .failure(error))
      }
    }
    return try result.get()
  }

  /// The listener thread's work: binds, reports the listener (or the
  /// failure) to `opened`, accepts until closed. Returns the listener,
  /// nil when it never opened.
  private static func serve(runtime: Runtime, host: String, port: UInt16, config: UCXTransport.Config, scheme: String,
                            opened: (Result<UCXListener, DissociatedIPCError>) -> Void) -> UCXListener? {
    let context: UCXContext
    let worker: UCXWorker
    let handle: UCXListenerHandle
    let exposedMemory: ExposedMemoryPool?
    let requests = RequestQueue()
    do throws(DissociatedIPCError) {
      context = try runtime.context(config.options, host: host)
      let socketAddress = try SocketAddress.resolve(host: host, port: port)
      do throws(UCXFailure) {
        worker = try UCXWorker(context: context)
        handle = try UCXListenerHandle(worker: worker, address: socketAddress) { request in
          requests.pending.withLock { $0.append(request) }
        }
        exposedMemory = config.exposesMemory
          ? ExposedMemoryPool(registration: try UCXMemoryRegistration(context: context, length: config.exposedMemoryBytes)) : nil
      } catch {
        throw DissociatedIPCError(.transportFailure, "ucx:// cannot listen on \(host):\(port): \(error)")
      }
    } catch {
      opened(.failure(error))
      return nil
    }
    let listener = UCXListener(address: TransportAddress(scheme: scheme, host: host, port: handle.port), worker: worker,
                               exposedMemory: exposedMemory, maxConnections: config.maxConnections)
    ProgressThreads.started(ObjectIdentifier(listener), close: { [weak listener] in listener?.stop() }, reset: {})
    opened(.success(listener))
    listener.run(context: context, worker: worker, handle: handle, requests: requests, config: config)
    return listener
  }

  /// The listener thread: accepts requests until closed, then rejects
  /// the ones that arrived too late and destroys the listener.
  private func run(context: UCXContext, worker: UCXWorker, handle: UCXListenerHandle,
                   requests: RequestQueue, config: UCXTransport.Config) {
    var served = 0
    while true {
      while worker.progress() {}
      let closed = control.withLock { $0.closed }
      for request in requests.pending.withLock({ pending in defer { pending = [] }; return pending }) {
        if closed {
          handle.reject(request)
          continue
        }
        // Past the limit, or without a thread for it: rejected (DIPC-LIM-7).
        guard let slot = slots.take() else {
          handle.reject(request)
          continue
        }
        served += 1
        do throws(DissociatedIPCError) {
          try UCXConnection.accept(context: context, request: request, peer: "accepted #\(served) on \(address)",
                                   config: config, exposedMemory: exposedMemory, slot: slot) {
            [accepted] connection in
            if !accepted.offer(connection) { connection.abort() }
          }
        } catch {
          handle.reject(request)
        }
      }
      if closed { break }
      worker.sleep(timeoutMilliseconds: -1) { control.withLock { $0.closed } || requests.pending.withLock { !$0.isEmpty } }
    }
    control.withLock { $0.worker = nil }
    withExtendedLifetime(handle) {}
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await accepted.next()
  }

  /// Stops accepting, and returns once the listening socket is closed, so
  /// a new listener may bind its port at once.
  func close() async {
    stop()
    await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
      let done = release.withLock { state in
        if state.released { return true }
        state.waiters.append(continuation)
        return false
      }
      if done { continuation.resume() }
    }
  }

  /// The listener thread destroyed the listener handle: close() returns.
  private func released() {
    let waiters = release.withLock { state in
      state.released = true
      defer { state.waiters = [] }
      return state.waiters
    }
    for waiter in waiters { waiter.resume() }
  }

  /// Stops accepting now (see ``close()``).
  private func stop() {
    let worker = control.withLock { state -> UCXWorker? in
      state.closed = true
      return state.worker
    }
    worker?.signal()
    for connection in accepted.close() { connection.abort() }
  }
}

/// Connection requests the listener's callback received, waiting for its
/// thread's loop.
final class RequestQueue: Sendable {
  let pending = Mutex<[UCXConnectionRequest]>([])
}
#endif  // UCX
