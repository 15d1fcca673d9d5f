internal import DissociatedIPC
internal import Synchronization

/// A listening socket with an acceptor thread.
final class TCPListener: TransportListener {
  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let socket: Socket
  private let accepted = AcceptQueue<TCPConnection>()
  /// The acceptor thread closed the descriptor (it may be reused since).
  private let socketClosed = Mutex(false)

  init(socket: Socket, address: TransportAddress, config: TCPTransport.Config) {
    self.socket = socket
    self.address = address
    startDedicatedThread(named: "tcp-accept") { [self, socket] in
      while let descriptor = try? socket.accept() {
        let connection = TCPConnection(socket: descriptor, config: config, peer: "accepted on \(address)")
        if !accepted.offer(connection) { connection.abort() }
      }
      socketClosed.withLock { closed in
        closed = true
        socket.close()
      }
    }
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    await accepted.next()
  }

  func close() async {
    let pending = accepted.close()
    // Wakes the acceptor thread (accept fails with EINVAL), which closes the socket.
    socketClosed.withLock { closed in
      if !closed { socket.shutdown(reading: true, writing: true) }
    }
    for connection in pending { connection.abort() }
  }
}
