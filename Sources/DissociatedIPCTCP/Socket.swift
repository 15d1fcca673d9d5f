// Every raw socket and thread call of the tcp:// backend lives in this file
// (the C edge); above it, errors are DissociatedIPCError.

#if canImport(Glibc)
internal import Glibc
#endif
internal import DissociatedIPC

/// A socket file descriptor with the calls the backend needs.
struct Socket: Sendable {
  let descriptor: Int32

  /// A `DissociatedIPCError` for the current `errno`.
  static func error(_ what: String, _ code: Int32 = errno) -> DissociatedIPCError {
    let text = String(cString: strerror(code))
    switch code {
    case ECONNREFUSED, ENOENT, EHOSTUNREACH, ENETUNREACH:
      return DissociatedIPCError(.connectionRefused, "\(what): \(text)")
    case ECONNRESET, EPIPE, ENOTCONN, ESHUTDOWN, EBADF:
      return DissociatedIPCError(.connectionClosed, "\(what): \(text)")
    default:
      return DissociatedIPCError(.transportFailure, "\(what): \(text) (errno \(code))")
    }
  }

  /// The addresses `host:port` resolves to, IPv4 and IPv6.
  static func resolve(host: String, port: UInt16, passive: Bool) throws(DissociatedIPCError) -> [(family: Int32, address: [UInt8])] {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = passive ? AI_PASSIVE | AI_NUMERICSERV : AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let status = getaddrinfo(host.isEmpty ? nil : host, String(port), &hints, &list)
    guard status == 0, let list else {
      throw DissociatedIPCError(.connectionRefused, "cannot resolve '\(host)': \(String(cString: gai_strerror(status)))")
    }
    defer { freeaddrinfo(list) }
    var result: [(Int32, [UInt8])] = []
    var entry: UnsafeMutablePointer<addrinfo>? = list
    while let current = entry {
      let info = current.pointee
      result.append((info.ai_family, Array(UnsafeRawBufferPointer(start: info.ai_addr, count: Int(info.ai_addrlen)))))
      entry = info.ai_next
    }
    return result
  }

  /// A listening socket bound to `host:port` (0: any free port).
  static func listen(host: String, port: UInt16) throws(DissociatedIPCError) -> (Socket, port: UInt16) {
    let socket = try firstSocket(host: host, port: port, passive: true,
                                 none: DissociatedIPCError(.transportFailure, "no address to bind for '\(host)'")) { descriptor, address in
      var one: Int32 = 1
      setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
      let bound = bind(descriptor, address.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
      return bound == 0 && Glibc.listen(descriptor, 512) == 0 ? nil : "bind \(host):\(port)"
    }
    return (socket, socket.localPort())
  }

  /// Connects to `host:port`, trying every resolved address.
  static func connect(host: String, port: UInt16) throws(DissociatedIPCError) -> Socket {
    try firstSocket(host: host, port: port, passive: false,
                    none: DissociatedIPCError(.connectionRefused, "no address for '\(host)'")) { descriptor, address in
      let connected = Glibc.connect(descriptor, address.baseAddress!.assumingMemoryBound(to: sockaddr.self), socklen_t(address.count))
      return connected == 0 ? nil : "connect to \(host):\(port)"
    }
  }

  /// Opens a socket for each address `host:port` resolves to and runs
  /// `setUp` (bind and listen, or connect) on it; returns the first that
  /// succeeds. `setUp` returns nil on success, or the failed step's name
  /// (errno is read right after it). Throws the last failure, or `none`.
  private static func firstSocket(
    host: String, port: UInt16, passive: Bool, none: DissociatedIPCError,
    _ setUp: (Int32, UnsafeRawBufferPointer) -> String?
  ) throws(DissociatedIPCError) -> Socket {
    var lastError = none
    for (family, address) in try resolve(host: host, port: port, passive: passive) {
      let descriptor = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
      guard descriptor >= 0 else {
        lastError = error("socket")
        continue
      }
      guard let failedStep = address.withUnsafeBytes({ setUp(descriptor, $0) }) else {
        return Socket(descriptor: descriptor)
      }
      lastError = error(failedStep)
      Glibc.close(descriptor)
    }
    throw lastError
  }

  /// The port the socket is bound to.
  func localPort() -> UInt16 {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    _ = withUnsafeMutablePointer(to: &storage) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    return withUnsafeBytes(of: storage) { raw in
      // sin_port and sin6_port sit at the same offset, in network byte order.
      UInt16(bigEndian: raw.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
    }
  }

  /// The next accepted connection; nil once the listener was shut down.
  func accept() throws(DissociatedIPCError) -> Socket? {
    while true {
      let accepted = Glibc.accept(descriptor, nil, nil)
      if accepted >= 0 {
        _ = fcntl(accepted, F_SETFD, FD_CLOEXEC)
        return Socket(descriptor: accepted)
      }
      switch errno {
      case EINTR, ECONNABORTED: continue
      case EINVAL, EBADF: return nil  // shut down
      default: throw Socket.error("accept")
      }
    }
  }

  /// Disables Nagle (TCP-SOCK-1) and sets the buffer sizes, when given.
  func configure(bufferSize: Int?) {
    var one: Int32 = 1
    setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    if var size = bufferSize.map(Int32.init) {
      setsockopt(descriptor, SOL_SOCKET, SO_SNDBUF, &size, socklen_t(MemoryLayout<Int32>.size))
      setsockopt(descriptor, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
    }
  }

  /// Reads up to `count` bytes; 0 at end of stream.
  func read(into buffer: UnsafeMutableRawPointer, count: Int) throws(DissociatedIPCError) -> Int {
    while true {
      let received = recv(descriptor, buffer, count, 0)
      if received >= 0 { return received }
      if errno == EINTR { continue }
      throw Socket.error("recv")
    }
  }

  /// Reads exactly `count` bytes; false if the stream ended first.
  func readFully(into buffer: UnsafeMutableRawPointer, count: Int) throws(DissociatedIPCError) -> Bool {
    var done = 0
    while done < count {
      let received = recv(descriptor, buffer + done, count - done, Int32(MSG_WAITALL))
      if received > 0 {
        done += received
      } else if received == 0 {
        return false
      } else if errno != EINTR {
        throw Socket.error("recv")
      }
    }
    return true
  }

  /// Writes every byte of `pieces` with scatter-gather writes (TCP-SOCK-2).
  func write(_ pieces: [UnsafeRawBufferPointer]) throws(DissociatedIPCError) {
    var vectors = Self.vectors(pieces.filter { $0.count > 0 })
    var first = 0
    while first < vectors.count {
      let batch = min(vectors.count - first, 1024)  // Linux's UIO_MAXIOV
      guard let written = try send(&vectors, from: first, count: batch, flags: 0) else { continue }
      // Skip what was written, possibly part of a vector.
      var remaining = written
      while remaining > 0, first < vectors.count {
        if remaining >= vectors[first].iov_len {
          remaining -= vectors[first].iov_len
          first += 1
        } else {
          vectors[first].iov_base += remaining
          vectors[first].iov_len -= remaining
          remaining = 0
        }
      }
    }
  }

  /// Writes what the socket takes now of `pieces` without blocking
  /// (MSG_DONTWAIT); returns the bytes written, 0 when it would block.
  func writeAvailable(_ pieces: [UnsafeRawBufferPointer]) throws(DissociatedIPCError) -> Int {
    var vectors = Self.vectors(Array(pieces.prefix(1024)))
    while true {
      if let written = try send(&vectors, from: 0, count: vectors.count, flags: Int32(MSG_DONTWAIT)) { return written }
    }
  }

  private static func vectors(_ pieces: [UnsafeRawBufferPointer]) -> [iovec] {
    pieces.map { iovec(iov_base: UnsafeMutableRawPointer(mutating: $0.baseAddress), iov_len: $0.count) }
  }

  /// One sendmsg of `count` vectors from `first`: the bytes written, 0 when
  /// a non-blocking send would block, nil when interrupted (try again).
  /// sendmsg rather than writev: MSG_NOSIGNAL turns a closed peer into
  /// EPIPE instead of a process-killing SIGPIPE.
  private func send(_ vectors: inout [iovec], from first: Int, count: Int, flags: Int32) throws(DissociatedIPCError) -> Int? {
    let written = vectors.withUnsafeMutableBufferPointer { vectors -> Int in
      var message = msghdr()
      message.msg_iov = vectors.baseAddress! + first
      message.msg_iovlen = count
      return sendmsg(descriptor, &message, Int32(MSG_NOSIGNAL) | flags)
    }
    if written >= 0 { return written }
    if errno == EINTR { return nil }
    if flags & Int32(MSG_DONTWAIT) != 0, errno == EAGAIN || errno == EWOULDBLOCK { return 0 }
    throw Socket.error("sendmsg")
  }

  /// Stops reading and/or writing; wakes a thread blocked in accept or recv.
  func shutdown(reading: Bool, writing: Bool) {
    let how = reading && writing ? Int32(SHUT_RDWR) : reading ? Int32(SHUT_RD) : Int32(SHUT_WR)
    _ = Glibc.shutdown(descriptor, how)
  }

  /// Makes the final `close()` reset the connection (SO_LINGER 0): the
  /// peer gets RST at once and unsent bytes are dropped (TCP-CLOSE-3).
  func resetOnClose() {
    var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
  }

  /// Closes the descriptor.
  func close() { _ = Glibc.close(descriptor) }
}
