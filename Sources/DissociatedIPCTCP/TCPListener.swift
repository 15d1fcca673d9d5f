internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// A listening socket with an acceptor thread.
final class TCPListener: TransportListener {
  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let socket: Socket
  private let accepted = AcceptQueue<TCPConnection>()
  /// The acceptor thread closed the descriptor (it may be reused since).
  private let socketClosed = Mutex(false)

  /// Connections now held, against ``TCPTransport/Config/maxConnections``.
  let slots: ConnectionSlots

  /// How many connections it holds.
  var heldResources: String? { "\(slots.inUse) connections" }

  init(socket: Socket, address: TransportAddress, config: TCPTransport.Config) throws(DissociatedIPCError) {
    self.socket = socket
    self.address = address
    slots = ConnectionSlots(limit: config.maxConnections)
    try startDedicatedThread(named: "tcp-accept") { [self, socket, slots] in
      while let descriptor = try? socket.accept() {
        // Past the limit, or without a thread for it: closed at once (DIPC-LIM-7).
        guard let slot = slots.take() else {
          descriptor.close()
          continue
        }
        // A connection that fails to start closes its descriptor as it is freed.
        guard let connection = try? TCPConnection(socket: descriptor, config: config, peer: "accepted on \(address)",
                                                  slot: slot)
        else { continue }
        if !accepted.offer(connection) { connection.abort() }
      }
      socketClosed.withLock { closed in
        closed = true
        socket.close()
      }
    }
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await accepted.next()
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
