import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// What a process holds at one moment, from /proc: the leak census that
/// backend tests take before and after their work (open descriptors,
/// memory mappings, shared-memory mappings, threads, memory) and compare.
/// What a backend holds that /proc cannot see (UCX registrations, shared
/// segments against their budget) a `dipc serve` process tells in its
/// stats (`Processes.Server.stats()`).
public struct ResourceCensus: Sendable, Equatable {
  /// Open file descriptors.
  public var descriptors: Int
  /// Lines of /proc/self/maps.
  public var mappings: Int
  /// Mappings of shared memory: memfd segments and /dev/shm files.
  public var sharedMappings: Int
  /// Threads (tasks in /proc/self/task).
  public var threads: Int
  /// Resident memory (VmRSS), in bytes.
  public var residentBytes: Int
  /// Address space (VmSize), in bytes: what was allocated, touched or not.
  public var virtualBytes: Int

  /// The census of process `pid` (this process when nil) now.
  public static func take(of pid: Int32? = nil) -> ResourceCensus {
    let folder = pid.map { "/proc/\($0)" } ?? "/proc/self"
    let status = readProcFile(folder + "/status")
    func kilobytes(_ key: String) -> Int {
      guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(key + ":") }) else { return 0 }
      let fields = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
      return (fields.count > 1 ? Int(fields[1]) ?? 0 : 0) * 1024
    }
    let entries = { (path: String) in (try? FileManager.default.contentsOfDirectory(atPath: path).count) ?? 0 }
    let maps = readProcFile(folder + "/maps").split(separator: "\n")
    return ResourceCensus(
      descriptors: entries(folder + "/fd"),
      mappings: maps.count,
      sharedMappings: maps.count { $0.contains(" /memfd:") || $0.contains(" /dev/shm/") },
      threads: entries(folder + "/task"),
      residentBytes: kilobytes("VmRSS"),
      virtualBytes: kilobytes("VmSize"))
  }

  /// Names of this process's threads (`/proc/self/task/*/comm`).
  public static func threadNames() -> [String] {
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.map { readProcFile("/proc/self/task/\($0)/comm").trimmingCharacters(in: .newlines) }
  }
}

/// Waits until `condition` holds, checking every 10 ms; false after
/// `seconds` (generous: tests run in parallel on two cores).
public func eventually(within seconds: Int = 30, _ condition: () throws -> Bool) async rethrows -> Bool {
  let deadline = ContinuousClock.now + .seconds(seconds)
  while try !condition() {
    guard ContinuousClock.now < deadline else { return false }
    try? await Task.sleep(for: .milliseconds(10))
  }
  return true
}

/// The bytes queued in the kernel for the TCP connection from local port
/// `local` to remote port `remote` on 127.0.0.1 (/proc/net/tcp): sent and
/// not yet acknowledged, and received and not yet read; nil when there
/// is no such connection.
public func tcpQueues(local: UInt16, remote: UInt16) -> (send: Int, receive: Int)? {
  func hexPort(_ port: UInt16) -> String {
    let hex = String(port, radix: 16, uppercase: true)
    return ":" + String(repeating: "0", count: 4 - hex.count) + hex
  }
  for line in readProcFile("/proc/net/tcp").split(separator: "\n").dropFirst() {
    let fields = line.split(separator: " ")
    guard fields.count > 4, fields[1].hasSuffix(hexPort(local)), fields[2].hasSuffix(hexPort(remote)) else { continue }
    let queues = fields[4].split(separator: ":")
    guard queues.count == 2, let send = Int(queues[0], radix: 16), let receive = Int(queues[1], radix: 16) else { return nil }
    return (send, receive)
  }
  return nil
}

/// A raw TCP socket connected to 127.0.0.1:`port`, closed when freed: a
/// peer that speaks whatever bytes a test gives it.
public final class RawTCPPeer {
  /// The socket's descriptor.
  public let descriptor: Int32

  /// Connects; nil when nothing accepts.
  public init?(port: UInt16) {
    descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = port.bigEndian
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard connected == 0 else {
      close(descriptor)
      return nil
    }
  }

  deinit { close(descriptor) }

  /// This end's port.
  public var localPort: UInt16 {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(descriptor, $0, &length) }
    }
    return UInt16(bigEndian: address.sin_port)
  }

  /// Sends every byte of `bytes`; false when the connection broke.
  @discardableResult
  public func send(_ bytes: [UInt8]) -> Bool {
    var sent = 0
    while sent < bytes.count {
      let count = bytes.withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
      if count < 0, errno == EINTR { continue }
      guard count > 0 else { return false }
      sent += count
    }
    return true
  }

  /// Whether the peer closes or resets the connection within `seconds`,
  /// reading and dropping whatever it sends before.
  public func closedByPeer(within seconds: Int) -> Bool {
    var timeout = timeval(tv_sec: seconds, tv_usec: 0)
    setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var buffer = [UInt8](repeating: 0, count: 4096)
    while true {
      let received = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
      if received == 0 { return true }
      if received < 0 { return errno == ECONNRESET }
    }
  }
}

extension RawTCPPeer {
  /// The tcp:// hello of this version (TCP-HELLO-1).
  public static let hello: [UInt8] = Array("DIPCTCP".utf8) + [0, 1, 0, 0, 0, 0, 0, 0, 0]

  /// A tcp:// tagged-message header (TCP-FRAME-2) announcing `length` bytes.
  public static func taggedHeader(tag: UInt64, length: Int) -> [UInt8] {
    var header: [UInt8] = [2, 0, 0, 0, 0, 0, 0, 0]
    withUnsafeBytes(of: tag.littleEndian) { header += $0 }
    withUnsafeBytes(of: UInt64(length).littleEndian) { header += $0 }
    return header
  }

  /// A tcp:// client that says hello, asks for `ticket` with `wantData`
  /// and then reads nothing; nil when nothing accepts.
  public static func requesting(port: UInt16, wantData: UInt64, ticket: String) -> RawTCPPeer? {
    guard let peer = RawTCPPeer(port: port),
          peer.send(hello + taggedHeader(tag: wantData, length: ticket.utf8.count) + Array(ticket.utf8))
    else { return nil }
    return peer
  }
}
