// Every raw system call of the shm:// backend lives in this file (the C
// edge); above it, errors are DissociatedIPCError. What Swift cannot import
// (memfd_create, the seal constants, the CMSG_* macros) comes from the
// CDissociatedIPCSharedMemory shim.

#if canImport(Glibc)
internal import Glibc
#endif
internal import ArrowIPC
internal import CDissociatedIPCSharedMemory
internal import DissociatedIPC

/// A `DissociatedIPCError` for the current `errno`.
func systemError(_ what: String, _ code: Int32 = errno) -> DissociatedIPCError {
  let text = String(cString: strerror(code))
  switch code {
  case ECONNREFUSED, ENOENT:
    return DissociatedIPCError(.connectionRefused, "\(what): \(text)")
  case ECONNRESET, EPIPE, ENOTCONN, ESHUTDOWN, EBADF:
    return DissociatedIPCError(.connectionClosed, "\(what): \(text)")
  default:
    return DissociatedIPCError(.transportFailure, "\(what): \(text) (errno \(code))")
  }
}

/// A Unix-domain socket of type SOCK_SEQPACKET: connected, reliable, in
/// order, and the kernel keeps message boundaries (SHM-CTRL-1).
struct UnixSocket: Sendable {
  let descriptor: Int32

  /// The most descriptors one received message may carry before the
  /// connection treats it as malformed; the control buffer holds this many,
  /// so the kernel never installs more.
  static let maxReceivedDescriptors: Int32 = 4

  /// `path` as a socket address; paths longer than `sun_path` are refused.
  private static func address(_ path: String) throws(DissociatedIPCError) -> sockaddr_un {
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    guard !bytes.isEmpty, bytes.count < MemoryLayout.size(ofValue: address.sun_path), !bytes.contains(0) else {
      throw DissociatedIPCError(.invalidLocation, "'\(path)' is not a usable socket path (1 to 107 bytes, no NUL)")
    }
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
    return address
  }

  private static func open() throws(DissociatedIPCError) -> UnixSocket {
    let descriptor = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard descriptor >= 0 else { throw systemError("socket(AF_UNIX, SOCK_SEQPACKET)") }
    return UnixSocket(descriptor: descriptor)
  }

  /// Runs `call` with `address` as a `sockaddr` pointer and its length.
  private static func withSockaddr<R>(_ address: sockaddr_un, _ call: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
    withUnsafePointer(to: address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { call($0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
  }

  /// Binds `path`, sets its mode, then listens (so nobody can connect
  /// before the mode is set). Returns the socket and its file's inode, or
  /// nil when something is at `path` already (EADDRINUSE) so the caller can
  /// look for a stale file.
  static func listen(path: String, mode: UInt32) throws(DissociatedIPCError) -> (UnixSocket, inode: UInt64)? {
    let address = try address(path)
    let socket = try open()
    guard withSockaddr(address, { bind(socket.descriptor, $0, $1) }) == 0 else {
      let code = errno
      socket.close()
      if code == EADDRINUSE { return nil }
      throw systemError("bind \(path)", code)
    }
    guard chmod(path, mode_t(mode)) == 0, Glibc.listen(socket.descriptor, 512) == 0 else {
      let error = systemError("chmod and listen \(path)")
      socket.close()
      unlink(path)
      throw error
    }
    return (socket, fileInode(path) ?? 0)
  }

  /// Connects to the socket at `path` (blocks only while the listener's
  /// backlog is full).
  static func connect(path: String) throws(DissociatedIPCError) -> UnixSocket {
    guard let socket = try connect(path: path, wait: true) else { preconditionFailure("a waiting connect returns a socket or throws") }
    return socket
  }

  /// Connects without blocking: nil when the listener's backlog is full
  /// (connect would wait; ``connect(path:)`` waits). The socket returned
  /// blocks, as every other one does.
  static func connectNow(path: String) throws(DissociatedIPCError) -> UnixSocket? {
    try connect(path: path, wait: false)
  }

  /// Connects, waiting for room in the listener's backlog or, without
  /// `wait`, returning nil where it would have to.
  private static func connect(path: String, wait: Bool) throws(DissociatedIPCError) -> UnixSocket? {
    let address = try address(path)
    let socket = try open()
    let flags = fcntl(socket.descriptor, F_GETFL)
    if !wait { _ = fcntl(socket.descriptor, F_SETFL, flags | O_NONBLOCK) }
    while withSockaddr(address, { Glibc.connect(socket.descriptor, $0, $1) }) != 0 {
      if errno == EINTR { continue }
      let error = !wait && errno == EAGAIN ? nil : systemError("connect to \(path)")
      socket.close()
      if let error { throw error }
      return nil
    }
    if !wait { _ = fcntl(socket.descriptor, F_SETFL, flags) }
    return socket
  }

  /// Whether something accepts connections on the socket file at `path`:
  /// false when connecting is refused (a stale file). Never blocks.
  static func isListening(path: String) throws(DissociatedIPCError) -> Bool {
    let address = try address(path)
    let descriptor = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
    guard descriptor >= 0 else { throw systemError("socket(AF_UNIX, SOCK_SEQPACKET)") }
    defer { closeDescriptor(descriptor) }
    // EAGAIN: a listener whose backlog is full, still a listener.
    return withSockaddr(address, { Glibc.connect(descriptor, $0, $1) }) == 0 || errno == EAGAIN
  }

  /// The next accepted connection; nil once the listener was shut down.
  func accept() throws(DissociatedIPCError) -> UnixSocket? {
    while true {
      let accepted = Glibc.accept(descriptor, nil, nil)
      if accepted >= 0 {
        _ = fcntl(accepted, F_SETFD, FD_CLOEXEC)
        return UnixSocket(descriptor: accepted)
      }
      switch errno {
      case EINTR, ECONNABORTED: continue
      case EINVAL, EBADF: return nil  // shut down
      default: throw systemError("accept")
      }
    }
  }

  /// The peer's process id (SO_PEERCRED), for the path description.
  func peerProcess() -> Int32? {
    // struct ucred { pid_t pid; uid_t uid; gid_t gid; } (not imported).
    var credentials: (Int32, UInt32, UInt32) = (0, 0, 0)
    var length = socklen_t(MemoryLayout.size(ofValue: credentials))
    return getsockopt(descriptor, SOL_SOCKET, SO_PEERCRED, &credentials, &length) == 0 ? credentials.0 : nil
  }

  /// Sends one message: `header`, then `parts` and `trailingParts`
  /// gathered (no copy), with `passing` attached as SCM_RIGHTS when it is
  /// not -1. Without `wait` the call never blocks and returns false where
  /// it would have.
  func send(header: UnsafeRawBufferPointer, parts: [ArrowBytes], _ trailingParts: [ArrowBytes] = [],
            passing descriptorToPass: Int32, wait: Bool) throws(DissociatedIPCError) -> Bool {
    let pieces = 1 + parts.count + trailingParts.count
    let sent = withUnsafeTemporaryAllocation(of: iovec.self, capacity: pieces) { vectors -> Int in
      vectors[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count)
      var index = 1
      for part in parts { vectors[index] = part.ioVector; index += 1 }
      for part in trailingParts { vectors[index] = part.ioVector; index += 1 }
      let controlSize = descriptorToPass >= 0 ? dipc_cmsg_space_fds(1) : 0
      return withUnsafeTemporaryAllocation(byteCount: max(controlSize, 1), alignment: 8) { control -> Int in
        var message = msghdr()
        message.msg_iov = vectors.baseAddress
        message.msg_iovlen = pieces
        if descriptorToPass >= 0 {
          message.msg_control = control.baseAddress
          message.msg_controllen = controlSize
          dipc_cmsg_put_fd(&message, descriptorToPass)
        }
        // MSG_NOSIGNAL: a closed peer is EPIPE, never a process-killing SIGPIPE.
        let flags = Int32(MSG_NOSIGNAL) | (wait ? 0 : Int32(MSG_DONTWAIT))
        while true {
          let sent = withExtendedLifetime((parts, trailingParts)) { sendmsg(descriptor, &message, flags) }
          if sent >= 0 || errno != EINTR { return sent }
        }
      }
    }
    if sent >= 0 { return true }
    if !wait, errno == EAGAIN || errno == EWOULDBLOCK { return false }
    throw systemError("sendmsg")
  }

  /// A received message: its length, whether it was cut short, and the
  /// descriptors it carried (the receiver owns and must close them).
  struct Received {
    var length: Int
    var truncated: Bool
    var descriptors: [Int32]
  }

  /// What ``receive(into:wait:)`` found.
  enum Receipt {
    case message(Received)
    /// The peer closed.
    case closed
    /// Nothing was waiting (only without `wait`).
    case wouldBlock
  }

  /// Receives one message into `buffer`, waiting for one when `wait`.
  func receive(into buffer: UnsafeMutableRawBufferPointer, wait: Bool = true) throws(DissociatedIPCError) -> Receipt {
    let controlSize = dipc_cmsg_space_fds(Self.maxReceivedDescriptors)
    let flags = Int32(MSG_CMSG_CLOEXEC) | (wait ? 0 : Int32(MSG_DONTWAIT))
    return try withUnsafeTemporaryAllocation(byteCount: controlSize, alignment: 8) { (control) throws(DissociatedIPCError) -> Receipt in
      var vector = iovec(iov_base: buffer.baseAddress, iov_len: buffer.count)
      var message = msghdr()
      message.msg_control = control.baseAddress
      message.msg_controllen = controlSize
      let received = withUnsafeMutablePointer(to: &vector) { vector -> Int in
        message.msg_iov = vector
        message.msg_iovlen = 1
        var resetSeen = false
        while true {
          // MSG_CMSG_CLOEXEC: received segments never leak into child processes.
          let received = recvmsg(descriptor, &message, flags)
          if received >= 0 { return received }
          // ECONNRESET: the peer closed while messages we sent it were
          // unread. The error is reported once, ahead of the messages the
          // peer sent before closing; read on for them, then the end
          // (SHM-CLOSE-3).
          if errno == ECONNRESET, !resetSeen {
            resetSeen = true
            continue
          }
          if errno != EINTR { return received }
        }
      }
      if received < 0, !wait, errno == EAGAIN || errno == EWOULDBLOCK { return .wouldBlock }
      guard received >= 0 else { throw systemError("recvmsg") }
      // Most messages carry no descriptor: allocate an array only for those that do.
      var descriptors: [Int32] = []
      if message.msg_controllen > 0 {
        descriptors = [Int32](repeating: -1, count: Int(Self.maxReceivedDescriptors))
        let count = dipc_cmsg_take_fds(&message, &descriptors, Self.maxReceivedDescriptors)
        descriptors.removeLast(descriptors.count - Int(count))
      }
      if received == 0, descriptors.isEmpty { return .closed }  // SEQPACKET: 0 bytes is the peer's close
      let truncated = message.msg_flags & Int32(MSG_TRUNC) != 0 || message.msg_flags & Int32(MSG_CTRUNC) != 0
      return .message(Received(length: received, truncated: truncated, descriptors: descriptors))
    }
  }

  /// Stops reading and/or writing; wakes a thread blocked in accept,
  /// recvmsg or sendmsg. On a Unix socket the peer's matching direction
  /// ends too (its sends fail with EPIPE, its receives see the close).
  func shutdown(reading: Bool, writing: Bool) {
    let how = reading && writing ? Int32(SHUT_RDWR) : reading ? Int32(SHUT_RD) : Int32(SHUT_WR)
    _ = Glibc.shutdown(descriptor, how)
  }

  /// Closes the descriptor.
  func close() { closeDescriptor(descriptor) }
}

/// The value of the environment variable `name`, if set.
func environmentValue(_ name: String) -> String? { getenv(name).map { String(cString: $0) } }

/// Closes a descriptor.
func closeDescriptor(_ descriptor: Int32) { _ = Glibc.close(descriptor) }

// MARK: Socket files

/// The inode of the file at `path`, if there is one.
func fileInode(_ path: String) -> UInt64? {
  var info = stat()
  return lstat(path, &info) == 0 ? UInt64(info.st_ino) : nil
}

/// Whether the file at `path` is a socket (a stale one may be removed).
func isSocketFile(_ path: String) -> Bool {
  var info = stat()
  return lstat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFSOCK
}

/// Removes the file at `path`.
func removeFile(_ path: String) { _ = unlink(path) }

/// Where fresh socket paths go: `$XDG_RUNTIME_DIR`, else `/tmp`.
func socketDirectory() -> String {
  environmentValue("XDG_RUNTIME_DIR").flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
}

/// A fresh socket path: ``socketDirectory()``, then
/// `dipc-<pid>-<random>.sock` (SHM-ADDR-2).
func freshSocketPath() -> String {
  "\(socketDirectory())/dipc-\(getpid())-\(String(UInt64.random(in: 0 ... .max), radix: 36)).sock"
}

/// Removes the socket files of fresh paths (`dipc-<pid>-<random>.sock`)
/// in `directory` whose process is gone and that this user owns: a server
/// killed before it could remove its file left them (SHM-ADDR-8). A file
/// whose pid runs (or was reused) stays, as does anything not a socket.
func removeStaleSocketFiles(in directory: String) {
  for name in directoryEntryNames(directory) ?? [] {
    let parts = name.split(separator: "-")
    guard parts.count == 3, parts[0] == "dipc", name.hasSuffix(".sock"), let pid = Int32(parts[1]), pid > 0,
          kill(pid, 0) != 0, errno == ESRCH
    else { continue }
    let path = directory + "/" + name
    var info = stat()
    guard lstat(path, &info) == 0, info.st_mode & S_IFMT == S_IFSOCK, info.st_uid == getuid(),
          (try? UnixSocket.isListening(path: path)) == false
    else { continue }
    removeFile(path)
  }
}

// MARK: Memory segments

/// The system page size.
let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

/// Allocates and maps `count` bytes of a writable shared mapping at once
/// (`MADV_POPULATE_WRITE`, Linux 5.14); on older kernels nothing happens
/// and the pages fault in as they are written.
func populatePages(_ start: UnsafeMutableRawPointer, count: Int) {
  _ = madvise(start, count, MADV_POPULATE_WRITE)
}

/// A new sealed memfd of `size` bytes mapped read-write (SHM-MEM-1): the
/// descriptor (to pass to the peer) and the mapping.
func createSegment(size: Int, name: String) throws(DissociatedIPCError) -> (descriptor: Int32, base: UnsafeMutableRawPointer) {
  let descriptor = dipc_memfd_create(name)
  guard descriptor >= 0 else { throw systemError("memfd_create") }
  guard ftruncate(descriptor, off_t(size)) == 0, dipc_memfd_seal(descriptor) == 0 else {
    let error = systemError("sizing and sealing a \(size)-byte segment")
    closeDescriptor(descriptor)
    throw error
  }
  let base = mmap(nil, size, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0)
  guard let base, base != MAP_FAILED else {
    let error = systemError("mmap of a \(size)-byte segment")
    closeDescriptor(descriptor)
    throw error
  }
  return (descriptor, base)
}

/// Maps a segment a peer passed, read-only, after checking it is a sealed
/// file of exactly `size` bytes that can never shrink (SHM-MEM-2): a peer
/// must not be able to make us fault by truncating it. Closes `descriptor`
/// in every case.
func mapPeerSegment(_ descriptor: Int32, size: Int) throws(DissociatedIPCError) -> UnsafeRawPointer {
  defer { closeDescriptor(descriptor) }
  var info = stat()
  guard fstat(descriptor, &info) == 0, info.st_mode & S_IFMT == S_IFREG, Int(info.st_size) == size, size > 0 else {
    throw DissociatedIPCError(.malformedDescriptor, "a passed segment is not a regular file of the announced \(size) bytes")
  }
  guard dipc_memfd_cannot_shrink(descriptor) == 1 else {
    throw DissociatedIPCError(.malformedDescriptor, "a passed segment is not sealed against shrinking")
  }
  let base = mmap(nil, size, PROT_READ, MAP_SHARED, descriptor, 0)
  guard let base, base != MAP_FAILED else { throw systemError("mmap of a peer's \(size)-byte segment") }
  return UnsafeRawPointer(base)
}

/// Unmaps a segment.
func unmapSegment(_ base: UnsafeRawPointer, size: Int) { _ = munmap(UnsafeMutableRawPointer(mutating: base), size) }

extension ArrowBytes {
  /// These bytes as an I/O vector (valid while they are alive).
  fileprivate var ioVector: iovec {
    iovec(iov_base: UnsafeMutableRawPointer(mutating: unsafeBaseAddress), iov_len: count)
  }
}
