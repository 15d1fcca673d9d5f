import ArrowIPC
import DissociatedIPC
import DissociatedIPCSharedMemory
import Foundation

import TestSupport

#if canImport(Glibc)
import Glibc
#endif

/// A listener with one connected client and the server's end of it.
struct Pair {
  let listener: any TransportListener
  let client: any TransportConnection
  let server: any TransportConnection

  static func open(_ transport: SharedMemoryTransport = SharedMemoryTransport()) async throws -> Pair {
    let listener = try await transport.listen(at: TransportAddress(scheme: "shm"))
    let client = try await transport.connect(to: Location(scheme: "shm", path: listener.address.path, wantData: 0))
    guard let server = try await listener.accept() else { throw DissociatedIPCError(.connectionClosed, "accept returned nil") }
    return Pair(listener: listener, client: client, server: server)
  }

  /// Runs `body` with a new pair and closes it afterwards, also when
  /// `body` throws (threads of an unclosed connection would keep the test
  /// process alive).
  static func with(_ transport: SharedMemoryTransport = SharedMemoryTransport(),
                   _ body: (Pair) async throws -> Void) async throws {
    let pair = try await open(transport)
    try await afterwards(pair.close) { try await body(pair) }
  }

  func close() async {
    await client.close()
    await server.close()
    await listener.close()
  }
}

/// Runs `body`, then `cleanup`, whether `body` returns or throws.
func afterwards<T>(_ cleanup: () async -> Void, _ body: () async throws -> T) async throws -> T {
  do {
    let result = try await body()
    await cleanup()
    return result
  } catch {
    await cleanup()
    throw error
  }
}

/// Settings with `change` applied to the defaults.
func config(_ change: (inout SharedMemoryTransport.Config) -> Void) -> SharedMemoryTransport.Config {
  var config = SharedMemoryTransport.Config.defaults
  change(&config)
  return config
}

/// `count` bytes that encode `seed` and their position.
func payload(_ count: Int, seed: UInt8) -> ArrowBytes {
  ArrowBytes(copying: (0 ..< count).map { UInt8(truncatingIfNeeded: $0 &* 31) ^ seed })
}

/// What this process holds of one segment name and one socket path.
struct Holdings: Equatable, CustomStringConvertible {
  /// Lines of /proc/self/maps that map a memfd named `name`.
  var mappings: Int
  /// Descriptors of memfds named `name`.
  var segmentDescriptors: Int
  /// Descriptors of Unix sockets bound to `path` (the listener and the
  /// connections it accepted).
  var serverSockets: Int

  static func now(segmentName name: String, socketPath path: String) -> Holdings {
    let maps = readProcFile("/proc/self/maps")
    let mappings = maps.split(separator: "\n").count { $0.hasSuffix("/memfd:\(name) (deleted)") }
    let unix = readProcFile("/proc/net/unix")
    let inodes = Set(unix.split(separator: "\n").dropFirst().compactMap { line -> String? in
      let fields = line.split(separator: " ")
      return fields.count >= 8 && fields[7] == path ? String(fields[6]) : nil
    })
    var segments = 0
    var sockets = 0
    for descriptor in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
      guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)") else { continue }
      if target == "/memfd:\(name) (deleted)" { segments += 1 }
      if target.hasPrefix("socket:["), inodes.contains(String(target.dropFirst(8).dropLast())) { sockets += 1 }
    }
    return Holdings(mappings: mappings, segmentDescriptors: segments, serverSockets: sockets)
  }

  /// What this process holds once `server`'s streams have ended and the
  /// holdings are back to `baseline`, polled every 20 ms for up to 5 s.
  static func settled(to baseline: Holdings, segmentName name: String, socketPath path: String,
                      server: DissociatedServer) async throws -> Holdings {
    var now = Holdings.now(segmentName: name, socketPath: path)
    for _ in 0 ..< 250 where now != baseline || server.streamCounts.active > 0 {
      try await Task.sleep(for: .milliseconds(20))
      now = Holdings.now(segmentName: name, socketPath: path)
    }
    return now
  }

  var description: String { "\(mappings) mappings, \(segmentDescriptors) segment descriptors, \(serverSockets) server sockets" }
}

/// A raw SOCK_SEQPACKET peer that speaks whatever the test writes.
struct RawPeer {
  let descriptor: Int32

  init(path: String) throws {
    descriptor = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    guard connected == 0 else { throw DissociatedIPCError(.connectionRefused, "raw connect failed: \(errno)") }
  }

  /// A control message: kind, tag, then little-endian words or raw bytes.
  static func message(kind: UInt8, tag: UInt64 = 0, words: [UInt64] = [], bytes: [UInt8] = []) -> [UInt8] {
    var message = [kind, 0, 0, 0, 0, 0, 0, 0]
    withUnsafeBytes(of: tag.littleEndian) { message += $0 }
    for word in words { withUnsafeBytes(of: word.littleEndian) { message += $0 } }
    return message + bytes
  }

  static let hello = message(kind: 8, bytes: Array("DIPCSHM".utf8) + [0, 3, 0, 0, 0, 0, 0, 0, 0])

  /// A batch (kind 10) of `messages`: each prefixed by its length, padded
  /// to 8 bytes.
  static func batch(_ messages: [[UInt8]]) -> [UInt8] {
    var bytes = message(kind: 10)
    for entry in messages {
      withUnsafeBytes(of: UInt64(entry.count).littleEndian) { bytes += $0 }
      bytes += entry + [UInt8](repeating: 0, count: (8 - entry.count % 8) % 8)
    }
    return bytes
  }

  /// Sends `bytes` as one message, with `passing` attached (SCM_RIGHTS)
  /// when given. The control message is laid out by hand: a 16-byte
  /// cmsghdr (length, level, type) then the descriptor (Linux, 64-bit).
  func send(_ bytes: [UInt8], passing passed: Int32? = nil) {
    var bytes = bytes
    var control = [UInt8](repeating: 0, count: 24)
    control.withUnsafeMutableBytes { raw in
      raw.storeBytes(of: 20, toByteOffset: 0, as: Int.self)
      raw.storeBytes(of: SOL_SOCKET, toByteOffset: 8, as: Int32.self)
      raw.storeBytes(of: Int32(SCM_RIGHTS), toByteOffset: 12, as: Int32.self)
      raw.storeBytes(of: passed ?? -1, toByteOffset: 16, as: Int32.self)
    }
    bytes.withUnsafeMutableBytes { data in
      control.withUnsafeMutableBytes { controlBytes in
        var vector = iovec(iov_base: data.baseAddress, iov_len: data.count)
        withUnsafeMutablePointer(to: &vector) { vector in
          var header = msghdr()
          header.msg_iov = vector
          header.msg_iovlen = 1
          if passed != nil {
            header.msg_control = controlBytes.baseAddress
            header.msg_controllen = controlBytes.count
          }
          _ = sendmsg(descriptor, &header, Int32(MSG_NOSIGNAL))
        }
      }
    }
  }

  func close() { _ = Glibc.close(descriptor) }

  /// Runs `body` with a shm:// listener and a raw peer connected to it;
  /// closes both afterwards, also when `body` throws.
  static func withListener(_ transport: SharedMemoryTransport = SharedMemoryTransport(),
                           _ body: (any TransportListener, RawPeer) async throws -> Void) async throws {
    let listener = try await transport.listen(at: TransportAddress(scheme: "shm"))
    try await afterwards(listener.close) {
      let peer = try RawPeer(path: listener.address.path)
      defer { peer.close() }
      try await body(listener, peer)
    }
  }
}
