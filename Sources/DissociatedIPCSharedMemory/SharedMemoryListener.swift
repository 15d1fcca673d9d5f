internal import DissociatedIPC
internal import Synchronization

/// A listening Unix socket with an acceptor thread. Closing it removes
/// its socket file (SHM-ADDR-4).
final class SharedMemoryListener: TransportListener {
  private struct State {
    var ready: [SharedMemoryConnection] = []
    var waiter: CheckedContinuation<SharedMemoryConnection?, Never>?
    var closed = false
    /// The acceptor thread closed the descriptor (it may be reused since).
    var socketClosed = false
  }

  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let socket: UnixSocket
  private let path: String
  private let inode: UInt64
  private let state = Mutex(State())

  /// Binds and listens at `path`, replacing a stale socket file.
  init(path: String, config: SharedMemoryTransport.Config) throws(DissociatedIPCError) {
    var bound = try UnixSocket.listen(path: path, mode: config.socketMode)
    if bound == nil {
      // Something is at the path. A socket file nobody accepts on is left
      // over from a dead server: replace it. Anything else is refused.
      guard isSocketFile(path) else {
        throw DissociatedIPCError(.transportFailure, "\(path) exists and is not a socket file")
      }
      guard try !UnixSocket.isListening(path: path) else {
        throw DissociatedIPCError(.transportFailure, "a server is already listening at \(path)")
      }
      removeFile(path)
      bound = try UnixSocket.listen(path: path, mode: config.socketMode)
    }
    guard let (socket, inode) = bound else {
      throw DissociatedIPCError(.transportFailure, "\(path) is in use")
    }
    self.socket = socket
    self.path = path
    self.inode = inode
    address = TransportAddress(scheme: "shm", path: path)
    startThread { [self, socket] in
      while let accepted = try? socket.accept() {
        let connection = SharedMemoryConnection(socket: accepted, config: config, path: path)
        let (waiter, refused) = state.withLock { state -> (CheckedContinuation<SharedMemoryConnection?, Never>?, Bool) in
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
      state.withLock { state in
        state.socketClosed = true
        socket.close()
      }
    }
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    await withCheckedContinuation { (continuation: CheckedContinuation<SharedMemoryConnection?, Never>) in
      let immediate: SharedMemoryConnection?? = state.withLock { state in
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
      guard !state.closed else { return (CheckedContinuation<SharedMemoryConnection?, Never>?.none, [SharedMemoryConnection]()) }
      state.closed = true
      // Remove the file only if it is still ours (not a successor's).
      if fileInode(path) == inode { removeFile(path) }
      // Wakes the acceptor thread (accept fails with EINVAL), which closes the socket.
      if !state.socketClosed { socket.shutdown(reading: true, writing: true) }
      defer {
        state.waiter = nil
        state.ready = []
      }
      return (state.waiter, state.ready)
    }
    waiter?.resume(returning: nil)
    for connection in pending { connection.abort() }
  }
}
