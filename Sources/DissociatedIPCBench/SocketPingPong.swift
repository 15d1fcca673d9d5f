import Foundation
import Glibc

/// The round trip of an 8-byte message over a bare kernel socket, with
/// nothing of the framework around it: the floor under tcp:// (TCP on
/// loopback) and shm:// (a Unix socket carries its control messages).
/// The echo side is a thread of this process blocked in `read`, so each
/// round trip pays the kernel's two wake-ups as between processes.
enum SocketPingPong {
  /// The socket measured.
  enum Kind: String {
    /// A TCP connection on 127.0.0.1 with `TCP_NODELAY` on both ends.
    case tcpLoopback = "TCP loopback"
    /// An `AF_UNIX` stream socket pair.
    case unixStream = "Unix socket"
  }

  /// 1,100 ping-pongs of 8 bytes; the median of the last 1,000 round
  /// trips, as the transports' round-trip case takes it.
  static func measure(_ kind: Kind) throws -> BenchMeasurement {
    let (near, far) = try connectedPair(kind)
    return try pingPong(near: near, far: far, label: kind.rawValue)
  }

  /// The ping-pongs of ``measure(_:)`` between two connected sockets, the
  /// echo on `far` in a thread; both are closed when it returns (`far` by
  /// the echo thread, once it sees `near` closed).
  static func pingPong(near: Int32, far: Int32, label: String) throws -> BenchMeasurement {
    let echo = Thread {
      var word: UInt64 = 0
      while exchange(far, &word, send: false), exchange(far, &word, send: true) {}
      close(far)
    }
    echo.start()
    defer { close(near) }
    var times: [Double] = []
    var word: UInt64 = 7
    for index in 0 ..< 1_100 {
      let started = ContinuousClock.now
      guard exchange(near, &word, send: true), exchange(near, &word, send: false) else {
        throw BenchError("\(label) ping-pong: the echo side ended (errno \(errno))")
      }
      if index >= 100 { times.append(Units.seconds(ContinuousClock.now - started)) }
    }
    return BenchMeasurement(seconds: times.sorted()[times.count / 2], bytes: 8, batches: 1)
  }

  /// Sends or receives exactly the 8 bytes of `word` on `socket`; false
  /// when the peer is gone or the call fails.
  private static func exchange(_ socket: Int32, _ word: inout UInt64, send: Bool) -> Bool {
    withUnsafeMutableBytes(of: &word) { bytes in
      var done = 0
      while done < bytes.count {
        let count = send
          ? Glibc.send(socket, bytes.baseAddress! + done, bytes.count - done, Int32(MSG_NOSIGNAL))
          : Glibc.recv(socket, bytes.baseAddress! + done, bytes.count - done, 0)
        if count > 0 {
          done += count
        } else if count < 0, errno == EINTR {
          continue
        } else {
          return false
        }
      }
      return true
    }
  }

  /// Two connected sockets of `kind`.
  static func connectedPair(_ kind: Kind) throws -> (Int32, Int32) {
    switch kind {
    case .unixStream:
      var pair: [Int32] = [-1, -1]
      guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0 else {
        throw BenchError("socketpair failed (errno \(errno))")
      }
      return (pair[0], pair[1])
    case .tcpLoopback:
      let listener = try tcpSocket()
      defer { close(listener) }
      var address = sockaddr_in()
      address.sin_family = sa_family_t(AF_INET)
      address.sin_addr.s_addr = inet_addr("127.0.0.1")
      var length = socklen_t(MemoryLayout<sockaddr_in>.size)
      let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
          bind(listener, socketAddress, length) == 0 && listen(listener, 1) == 0
            && getsockname(listener, socketAddress, &length) == 0
        }
      }
      guard bound else { throw BenchError("cannot listen on 127.0.0.1 (errno \(errno))") }
      let near = try tcpSocket()
      let connected = withUnsafePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(near, $0, length) == 0 }
      }
      let far = accept(listener, nil, nil)
      guard connected, far >= 0 else {
        close(near)
        throw BenchError("cannot connect on 127.0.0.1 (errno \(errno))")
      }
      _ = fcntl(far, F_SETFD, FD_CLOEXEC)
      var on: Int32 = 1
      for socket in [near, far] {
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &on, socklen_t(MemoryLayout<Int32>.size))
      }
      return (near, far)
    }
  }

  private static func tcpSocket() throws -> Int32 {
    let socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard socket >= 0 else { throw BenchError("socket failed (errno \(errno))") }
    return socket
  }
}
