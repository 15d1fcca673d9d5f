internal import DissociatedIPC
internal import Synchronization

/// A listening socket with an acceptor thread.
final class TCPListener: TransportListener {
  private struct State {
    var ready: [TCPConnection] = []
    var waiter: CheckedContinuation<TCPConnection?, Never>?
    var closed = false
    /// The acceptor thread closed the descriptor (it may be reused since).
    var socketClosed = false
  }

  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let socket: Socket
  private let state = Mutex(State())

  init(socket: Socket, address: TransportAddress, config: TCPTransport.Config) {
    self.socket = socket
    self.address = address
    startThread { [self, socket] in
      while let accepted = try? socket.accept() {
        let connection = TCPConnection(socket: accepted, config: config, peer: "accepted on \(address)")
        let (waiter, refused) = self.state.withLock { state -> (CheckedContinuation<TCPConnection?, Never>?, Bool) in
          if state.closed { return (nil, true) }
          if let waiter = state.waiter {
            state.waiter = nil
            return (waiter, false)
          }
          state.ready.append(connection)
          return (nil, false)
        }
        if refused { connection.abort() }
        waiter?.resume(returning: connection)
      }
      self.state.withLock { state in
        state.socketClosed = true
        socket.close()
      }
    }
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    await withCheckedContinuation { (continuation: CheckedContinuation<TCPConnection?, Never>) in
      let immediate: TCPConnection?? = state.withLock { state in
        if !state.ready.isEmpty { return .some(state.ready.removeFirst()) }
        if state.closed { return .some(nil) }
        state.waiter = continuation
        return nil
      }
      if let immediate { continuation.resume(returning: immediate) }
    }
  }

  func close() async {
    let (waiter, pending) = state.withLock { state in
      guard !state.closed else { return (CheckedContinuation<TCPConnection?, Never>?.none, [TCPConnection]()) }
      state.closed = true
      defer {
        state.waiter = nil
        state.ready = []
      }
      return (state.waiter, state.ready)
    }
    // Wakes the acceptor thread (accept fails with EINVAL), which closes the socket.
    state.withLock { state in
      if !state.socketClosed { socket.shutdown(reading: true, writing: true) }
    }
    waiter?.resume(returning: nil)
    for connection in pending { connection.abort() }
  }
}
