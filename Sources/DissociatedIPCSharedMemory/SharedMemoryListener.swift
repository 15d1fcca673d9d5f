internal import DissociatedIPC
internal import DissociatedIPCBackendKit
internal import Synchronization

/// A listening Unix socket with an acceptor thread. Closing it removes
/// its socket file (SHM-ADDR-4).
final class SharedMemoryListener: TransportListener {
  let address: TransportAddress
  var remoteHandle: [UInt8]? { nil }
  private let socket: UnixSocket
  private let path: String
  private let inode: UInt64
  private let accepted = AcceptQueue<SharedMemoryConnection>()
  /// Connections now held, against ``SharedMemoryTransport/Config/maxConnections``.
  let slots: ConnectionSlots
  /// The acceptor thread closed the descriptor (it may be reused since).
  private let socketClosed = Mutex(false)
  /// The shared-memory budget its connections send from (SHM-RING-8).
  private let sharedBudget: SharedMemoryBudget

  /// Connections, this side's shared segments against their budget, and
  /// the peers' segments mapped in this process (SHM-MEM-6).
  var heldResources: String? {
    let mapped = MappingBudget.process.usage
    return "\(slots.inUse) connections, \(mebibytes(sharedBudget.usedBytes)) of \(mebibytes(sharedBudget.maxBytes)) MiB of shared segments, \(mapped.segments) peer segments (\(mebibytes(mapped.bytes)) MiB) mapped"
  }

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
    slots = ConnectionSlots(limit: config.maxConnections)
    sharedBudget = config.sharedBudget
    do throws(DissociatedIPCError) {
      try startDedicatedThread(named: "shm-accept") { [self, socket, slots] in
        while let descriptor = try? socket.accept() {
          // Past the limit: closed at once, before anything starts (DIPC-LIM-7).
          guard let slot = slots.take() else {
            descriptor.close()
            continue
          }
          // A connection that fails to start closes its descriptor itself.
          guard let connection = try? SharedMemoryConnection(socket: descriptor, config: config, path: path, slot: slot)
          else { continue }
          if !accepted.offer(connection) { connection.abort() }
        }
        socketClosed.withLock { closed in
          closed = true
          socket.close()
        }
      }
    } catch {
      removeFile(path)
      socket.close()
      throw error
    }
  }

  func accept() async throws(DissociatedIPCError) -> (any TransportConnection)? {
    try await accepted.next()
  }

  func close() async {
    let pending = accepted.close()
    // Remove the file only if it is still ours (not a successor's).
    if fileInode(path) == inode { removeFile(path) }
    socketClosed.withLock { closed in
      // Wakes the acceptor thread (accept fails with EINVAL), which closes the socket.
      if !closed { socket.shutdown(reading: true, writing: true) }
    }
    for connection in pending { connection.abort() }
  }
}
