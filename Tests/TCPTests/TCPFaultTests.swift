import ArrowIPC
import DissociatedIPC
import DissociatedIPCTCP
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Bad peers and abrupt endings over real sockets: each gets a typed error
/// on the side that should see it, the server keeps serving, nothing leaks.
@Suite("tcp:// faults", .serialized)
struct TCPFaultTests {
  static func registry() -> TransportRegistry {
    var registry = TransportRegistry()
    registry.register(TCPTransport(config: .init(maxMessageSize: 1 << 20, readAheadBytes: 4 << 20,
                                                  writeQueueBytes: 1 << 20, socketBufferSize: nil)))
    return registry
  }

  /// Runs a server over tcp://127.0.0.1 for `body`.
  static func withServer(_ body: (DissociatedServer) async throws -> Void) async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 200, rows: 8192)))
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: registry())
    let running = Task { await server.run() }
    try await body(server)
    await server.shutdown()
    await running.value
  }

  /// A client that fetches the whole stream and checks its length.
  static func fetchAll(_ server: DissociatedServer) async throws {
    #expect(try await recordBatchCount(from: server.location(for: "s"), registry: registry()) == 200)
  }

  /// A raw socket to `port` that writes `bytes`, then waits for the server
  /// to close it (read returns 0 or fails) within 5 s.
  static func rawPeer(port: UInt16, sending bytes: [UInt8]) throws -> Bool {
    guard let peer = RawTCPPeer(port: port) else { return false }
    peer.send(bytes)
    return peer.closedByPeer(within: 5)
  }

  @Test("a peer that sends garbage is disconnected; the server keeps serving")
  func garbage() async throws {
    try await Self.withServer { server in
      let port = server.listener.address.port!
      #expect(try Self.rawPeer(port: port, sending: Array("GET / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)))
      #expect(try Self.rawPeer(port: port, sending: RawTCPPeer.hello + [9] + [UInt8](repeating: 0, count: 23)))
      try await Self.fetchAll(server)
    }
  }

  @Test("a header announcing a huge message is refused before anything is allocated")
  func hugeLength() async throws {
    try await Self.withServer { server in
      let header = RawTCPPeer.taggedHeader(tag: 0x8000_0DEA_DBA0_BAB0, length: 1 << 62)
      #expect(try Self.rawPeer(port: server.listener.address.port!, sending: RawTCPPeer.hello + header))
      try await Self.fetchAll(server)
    }
  }

  @Test("a client that disconnects mid-stream: the server ends that stream and keeps serving")
  func clientDisconnects() async throws {
    try await Self.withServer { server in
      do {
        var iterator = DissociatedClient(registry: Self.registry()).stream(from: server.location(for: "s")).makeAsyncIterator()
        for _ in 0 ..< 5 { _ = try await iterator.next() }
      }  // the iterator is dropped here: its connection closes
      for _ in 0 ..< 250 where server.streamCounts.active > 0 { try await Task.sleep(for: .milliseconds(20)) }
      // The abandoned stream's server was blocked on a full window; the
      // client's reset must end it at once (TCP-CLOSE-3).
      #expect(server.streamCounts.active == 0, "a stream is still active 5 s after its client left")
      #expect(server.streamCounts.active == 0)
      #expect(server.streamCounts.failed == 1)
      try await Self.fetchAll(server)
    }
  }

  @Test("a server that vanishes mid-stream is a typed error on the client")
  func serverVanishes() async throws {
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: 400, rows: 8192)))
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1:0", catalog: catalog, registry: Self.registry())
    let running = Task { await server.run() }
    var iterator = DissociatedClient(registry: Self.registry()).stream(from: server.location(for: "s")).makeAsyncIterator()
    for _ in 0 ..< 3 { _ = try await iterator.next() }
    await server.shutdown(graceful: false)
    await #expect { while try await iterator.next() != nil {} } throws: {
      ($0 as? DissociatedIPCError)?.code == .streamTruncated
    }
    await running.value
  }

  /// Descriptors of this process that are TCP sockets on `port` (either
  /// end), found through /proc/net/tcp{,6}; other tests' sockets running in
  /// parallel do not count.
  static func socketsOnPort(_ port: UInt16) -> Int {
    let hex = String(port, radix: 16, uppercase: true)
    let hexPort = ":" + String(repeating: "0", count: 4 - hex.count) + hex
    var inodes: Set<String> = []
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
      for line in readProcFile(table).split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 9, fields[1].hasSuffix(hexPort) || fields[2].hasSuffix(hexPort) else { continue }
        inodes.insert(String(fields[9]))
      }
    }
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.count { descriptor in
      guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)") else { return false }
      return target.hasPrefix("socket:[") && inodes.contains(String(target.dropFirst(8).dropLast()))
    }
  }

  @Test("no descriptor leaks after served, failed and abandoned streams")
  func noLeaks() async throws {
    var port: UInt16 = 0
    try await Self.withServer { server in
      port = server.listener.address.port!
      try await Self.fetchAll(server)
      _ = try Self.rawPeer(port: port, sending: Array("not a dipc peer!".utf8))
      do {
        var iterator = DissociatedClient(registry: Self.registry()).stream(from: server.location(for: "s")).makeAsyncIterator()
        _ = try await iterator.next()
        withExtendedLifetime(iterator) {
          #expect(Self.socketsOnPort(port) >= 1, "the counter sees at least the listener")
        }
      }
      var missing = server.location(for: "nope")
      missing.otherParameters = [.init("ticket", "nope")]
      await #expect(throws: DissociatedIPCError.self) {
        for try await _ in DissociatedClient(registry: Self.registry()).stream(from: missing) {}
      }
      for _ in 0 ..< 250 where server.streamCounts.active > 0 { try await Task.sleep(for: .milliseconds(20)) }
      // The abandoned stream's server was blocked on a full window; the
      // client's reset must end it at once (TCP-CLOSE-3).
      #expect(server.streamCounts.active == 0, "a stream is still active 5 s after its client left")
    }
    // Connection threads release their descriptors as they finish.
    for _ in 0 ..< 100 where Self.socketsOnPort(port) > 0 { try await Task.sleep(for: .milliseconds(20)) }
    #expect(Self.socketsOnPort(port) == 0, "sockets of the server's port still open: \(Self.socketsOnPort(port))")
  }
}
