import ArrowIPC
import DissociatedIPC
@testable import DissociatedIPCSharedMemory
import Foundation
import Synchronization
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// What shm:// promises beyond the conformance suite (Spec/shm.md).
@Suite("shm:// backend", .serialized)
struct SharedMemoryTests {
  // MARK: Addressing (SHM-ADDR-*)

  @Test("shm:///path parses and prints back; listening at shm:// picks a fresh socket path")
  func addressing() async throws {
    let location = try Location(parsing: "shm:///tmp/dipc-x.sock?want_data=1")
    #expect(location.host.isEmpty && location.port == nil && location.path == "/tmp/dipc-x.sock")
    #expect(try TransportAddress(parsing: "shm:///tmp/dipc-x.sock").description == "shm:///tmp/dipc-x.sock")

    let listener = try await SharedMemoryTransport().listen(at: TransportAddress(scheme: "shm"))
    let path = listener.address.path
    let directory = ProcessInfo.processInfo.environment["XDG_RUNTIME_DIR"].flatMap { $0.isEmpty ? nil : $0 } ?? "/tmp"
    #expect(path.hasPrefix("\(directory)/dipc-\(getpid())-") && path.hasSuffix(".sock"))
    #expect(try TransportAddress(parsing: listener.address.description) == listener.address)
    await listener.close()
    await #expect(throws: DissociatedIPCError.self) {
      _ = try await SharedMemoryTransport().listen(at: TransportAddress(scheme: "shm", host: "localhost"))
    }
  }

  @Test("the socket file has mode 0600 (or the configured mode) and is removed when the listener closes")
  func socketFile() async throws {
    for mode: UInt32 in [0o600, 0o660] {
      let transport = SharedMemoryTransport(config: config { $0.socketMode = mode })
      let listener = try await transport.listen(at: TransportAddress(scheme: "shm"))
      let path = listener.address.path
      var info = stat()
      #expect(lstat(path, &info) == 0)
      #expect(info.st_mode & S_IFMT == S_IFSOCK)
      #expect(UInt32(info.st_mode & 0o777) == mode)
      await listener.close()
      #expect(lstat(path, &info) != 0 && errno == ENOENT, "the socket file outlived its listener")
    }
  }

  @Test("a stale socket file is replaced; a live listener or a non-socket file at the path is refused")
  func staleSocket() async throws {
    let path = "/tmp/dipc-stale-\(getpid()).sock"
    defer { unlink(path) }
    // A socket file nobody listens on: what a killed server leaves.
    let stale = socket(AF_UNIX, Int32(SOCK_SEQPACKET.rawValue), 0)
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8)) }
    let bound = withUnsafePointer(to: &address) {
      $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(stale, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
    }
    #expect(bound == 0)
    close(stale)

    let transport = SharedMemoryTransport()
    let listener = try await transport.listen(at: TransportAddress(scheme: "shm", path: path))
    let connection = try await transport.connect(to: Location(scheme: "shm", path: path, wantData: 0))
    await connection.close()
    await #expect { _ = try await transport.listen(at: TransportAddress(scheme: "shm", path: path)) } throws: {
      ($0 as? DissociatedIPCError)?.code == .transportFailure
    }
    await listener.close()

    #expect(FileManager.default.createFile(atPath: path, contents: Data("keep me".utf8)))
    await #expect { _ = try await transport.listen(at: TransportAddress(scheme: "shm", path: path)) } throws: {
      ($0 as? DissociatedIPCError)?.code == .transportFailure
    }
    #expect(FileManager.default.contents(atPath: path) == Data("keep me".utf8), "a regular file was replaced")
  }

  @Test("connect completes at once while the listener has room, and waits off the pool while its backlog is full")
  func connectWhenBacklogFull() async throws {
    let path = "/tmp/dipc-backlog-\(getpid()).sock"
    defer { unlink(path) }
    // A bare listener that accepts nothing, its backlog shrunk to one
    // pending connection.
    guard let (listening, _) = try UnixSocket.listen(path: path, mode: 0o600) else { throw DissociatedIPCError(.transportFailure, "bind") }
    defer { listening.close() }
    #expect(Glibc.listen(listening.descriptor, 0) == 0)
    let first = try #require(try UnixSocket.connectNow(path: path), "a listener with room refused an immediate connect")
    defer { first.close() }
    let over = try UnixSocket.connectNow(path: path)
    over?.close()
    #expect(over == nil, "a full backlog did not make the immediate connect give up")

    let connected = Atomic<Bool>(false)
    let connecting = Task {
      let connection = try await SharedMemoryTransport().connect(to: Location(scheme: "shm", path: path, wantData: 0))
      connected.store(true, ordering: .releasing)
      await connection.close()
    }
    try await Task.sleep(for: .milliseconds(200))
    let connectedEarly = connected.load(ordering: .acquiring)
    #expect(!connectedEarly, "connect returned while the backlog was full")
    // Accepting the pending connection makes room: the waiting connect goes on.
    let accepted = try #require(try listening.accept())
    defer { accepted.close() }
    try await connecting.value
    let connectedLater = connected.load(ordering: .acquiring)
    #expect(connectedLater)
    if let second = try listening.accept() { second.close() }
  }

  // MARK: Remote memory (SHM-RM-*)

  @Test("descriptors outside what the peer exposed are malformedDescriptor, never a read out of bounds")
  func descriptorValidation() async throws {
    try await Pair.with { pair in
    let client = try #require(pair.client.remoteMemory)
    let region = try await #require(pair.server.remoteMemory).expose(payload(4096, seed: 7))
    let valid = try #require(region.ranges.first)
    #expect(try await client.fetch(region.ranges) == payload(4096, seed: 7))
    let segment = valid.address >> 48
    let offset = valid.address & (1 << 48 - 1)
    let lying: [(String, RemoteRange)] = [
      ("unknown segment", RemoteRange(address: 99 << 48 | offset, length: 16)),
      ("segment 0", RemoteRange(address: offset, length: 16)),
      ("offset past the segment", RemoteRange(address: segment << 48 | (1 << 47), length: 16)),
      ("length past the segment", RemoteRange(address: valid.address, length: 1 << 40)),
      ("length that overflows", RemoteRange(address: valid.address, length: .max)),
      ("past the exposed bytes", RemoteRange(address: valid.address, length: 4097)),
      ("inside a block, not at its start", RemoteRange(address: valid.address + 64, length: 64)),
      ("misaligned", RemoteRange(address: valid.address + 1, length: 8)),
      ("before any block", RemoteRange(address: segment << 48, length: 8)),
    ]
    for (what, range) in lying {
      await #expect(Comment(rawValue: what)) { _ = try await client.fetch([range]) } throws: {
        ($0 as? DissociatedIPCError)?.code == .malformedDescriptor
      }
    }
    }
  }

  @Test("a fetched view stays readable after both ends closed; its mapping goes with the last view")
  func viewOutlivesConnection() async throws {
    let name = "dipc-shm-view-\(getpid())"
    let pair = try await Pair.open(SharedMemoryTransport(config: config { $0.segmentName = name }))
    var (view, message): (ArrowBytes?, TaggedMessage?) = try await afterwards(pair.close) {
      let region = try await #require(pair.server.remoteMemory).expose(payload(1 << 20, seed: 3))
      let view = try await #require(pair.client.remoteMemory).fetch(region.ranges)
      try await pair.server.sendTagged(1, [payload(100_000, seed: 4)])
      return (view, try await pair.client.receiveTagged(matching: 1, mask: .max))
    }
    #expect(view == payload(1 << 20, seed: 3))
    #expect(message?.payload == payload(100_000, seed: 4))
    // The client's mappings of the server's segment (the server's own went
    // with its connection).
    #expect(Holdings.now(segmentName: name, socketPath: "").mappings == 1)
    view = nil
    message = nil
    #expect(Holdings.now(segmentName: name, socketPath: "").mappings == 0)
  }

  // MARK: Faults (SHM-FAULT-*)

  @Test("malformed control messages close the connection with a typed error", arguments: [
    ("no hello", [RawPeer.message(kind: 1, bytes: [1, 2, 3])], DissociatedIPCError.Code.transportFailure),
    ("unknown kind", [RawPeer.hello, RawPeer.message(kind: 99)], .transportFailure),
    ("reserved bytes", [RawPeer.hello, [1, 0, 0, 7] + [UInt8](repeating: 0, count: 12)], .transportFailure),
    ("a tag on a frame", [RawPeer.hello, RawPeer.message(kind: 1, tag: 5)], .transportFailure),
    ("short header", [RawPeer.hello, [1, 0, 0]], .transportFailure),
    ("payload in an unknown segment", [RawPeer.hello, RawPeer.message(kind: 4, tag: 1, words: [7 << 48 | 64, 100])], .malformedDescriptor),
    ("bad length", [RawPeer.hello, RawPeer.message(kind: 3, words: [1 << 48])], .transportFailure),
    ("segment without a descriptor", [RawPeer.hello, RawPeer.message(kind: 5, words: [1, 4096])], .transportFailure),
    ("buffer (arena) without a descriptor", [RawPeer.hello, RawPeer.message(kind: 9, words: [1, 4096])], .transportFailure),
    ("buffer (arena) of size 0", [RawPeer.hello, RawPeer.message(kind: 9, words: [1, 0])], .transportFailure),
    ("space returned that was never given", [RawPeer.hello, RawPeer.message(kind: 6, words: [1 << 48 | 64])], .unknownFreeAddress),
    ("a second hello", [RawPeer.hello, RawPeer.hello], .transportFailure),
    ("retiring an unknown segment", [RawPeer.hello, RawPeer.message(kind: 7, words: [3])], .malformedDescriptor),
    ("an empty batch", [RawPeer.hello, RawPeer.message(kind: 10)], .transportFailure),
    ("a hello inside a batch", [RawPeer.hello, RawPeer.batch([RawPeer.hello])], .transportFailure),
    ("a batch inside a batch", [RawPeer.hello, RawPeer.batch([RawPeer.batch([RawPeer.message(kind: 1)])])], .transportFailure),
    ("a segment inside a batch", [RawPeer.hello, RawPeer.batch([RawPeer.message(kind: 5, words: [1, 4096])])], .transportFailure),
    ("a batch entry longer than the batch", [RawPeer.hello, RawPeer.message(kind: 10, words: [4096]) + RawPeer.message(kind: 1)], .transportFailure),
    ("a malformed message inside a batch", [RawPeer.hello, RawPeer.batch([RawPeer.message(kind: 2, tag: 1), RawPeer.message(kind: 1, tag: 5)])], .transportFailure),
    ("an unknown segment inside a batch", [RawPeer.hello, RawPeer.batch([RawPeer.message(kind: 4, tag: 1, words: [7 << 48 | 64, 100])])], .malformedDescriptor),
    ("a frame and tagged message whose frame is longer than it", [RawPeer.hello, RawPeer.message(kind: 11, tag: 1, words: [9], bytes: [1, 2, 3])], .transportFailure),
    ("a frame and tagged message without its frame length", [RawPeer.hello, RawPeer.message(kind: 11, tag: 1, bytes: [1, 2, 3])], .transportFailure),
  ])
  func malformed(_ what: String, _ messages: [[UInt8]], _ code: DissociatedIPCError.Code) async throws {
    try await RawPeer.withListener { listener, peer in
      for message in messages { peer.send(message) }
      let connection = try #require(try await listener.accept())
      await #expect(Comment(rawValue: what)) { _ = try await connection.receiveFrame() } throws: {
        ($0 as? DissociatedIPCError)?.code == code
      }
      await connection.close()
    }
  }

  @Test("the messages of a batch (kind 10) arrive in order, as if sent one by one; kind 11 as a frame and a tagged message")
  func batchFromRawPeer() async throws {
    try await RawPeer.withListener { listener, peer in
      peer.send(RawPeer.hello)
      peer.send(RawPeer.batch([
        RawPeer.message(kind: 1, bytes: [1, 2, 3]),
        RawPeer.message(kind: 2, tag: 9, bytes: Array(repeating: 7, count: 13)),
        RawPeer.message(kind: 1, bytes: []),
        RawPeer.message(kind: 11, tag: 4, words: [2], bytes: [5, 6, 8, 9, 10]),
      ]))
      // Kind 11 alone too, with an empty frame and an empty payload.
      peer.send(RawPeer.message(kind: 11, tag: 5, words: [0]))
      let connection = try #require(try await listener.accept())
      #expect(try await connection.receiveFrame() == ArrowBytes(copying: [1, 2, 3]))
      #expect(try await connection.receiveFrame() == ArrowBytes())
      #expect(try await connection.receiveFrame() == ArrowBytes(copying: [5, 6]))
      #expect(try await connection.receiveFrame() == ArrowBytes())
      let tagged = try await connection.receiveTagged(matching: 9, mask: .max)
      #expect(tagged?.payload == ArrowBytes(copying: Array(repeating: 7, count: 13)))
      let pairBody = try await connection.receiveTagged(matching: 0, mask: 0)
      #expect(pairBody == TaggedMessage(tag: 4, payload: ArrowBytes(copying: [8, 9, 10])))
      let emptyBody = try await connection.receiveTagged(matching: 0, mask: 0)
      #expect(emptyBody == TaggedMessage(tag: 5, payload: ArrowBytes()))
      await connection.close()
    }
  }

  @Test("a frame sent with its tagged message arrives as the two would, inline (kind 11) or not", arguments: [
    (3, 40), (0, 0), (200, 20_000), (30_000, 10),
  ])
  func frameThenTagged(frameLength: Int, payloadLength: Int) async throws {
    try await Pair.with { pair in
      for round in 0 ..< 3 {
        let frame = [payload(frameLength, seed: UInt8(round)), payload(round, seed: 3)]
        try await pair.server.sendFrame(frame, thenTagged: UInt64(round + 7), [payload(payloadLength, seed: 9)])
      }
      for round in 0 ..< 3 {
        let frame = try await pair.client.receiveFrame()
        var expected = Array(payload(frameLength, seed: UInt8(round)).withUnsafeBytes { Array($0) })
        expected += payload(round, seed: 3).withUnsafeBytes { Array($0) }
        #expect(frame == ArrowBytes(copying: expected))
        let tagged = try await pair.client.receiveTagged(matching: UInt64(round + 7), mask: .max)
        #expect(tagged?.payload == payload(payloadLength, seed: 9))
      }
    }
  }

  @Test("many small messages sent at once arrive intact and in order (batched by the writer)")
  func manySmallMessages() async throws {
    try await Pair.with { pair in
      let count = 5_000
      let sender = Task {
        for index in 0 ..< count {
          try await pair.server.sendTagged(UInt64(index % 3), [payload(index % 200, seed: UInt8(truncatingIfNeeded: index))])
          if index % 2 == 0 { try await pair.server.sendFrame([payload(index % 50 + 1, seed: 1)]) }
        }
      }
      for index in 0 ..< count {
        let message = try await pair.client.receiveTagged(matching: 0, mask: 0)
        #expect(message?.tag == UInt64(index % 3))
        #expect(message?.payload == payload(index % 200, seed: UInt8(truncatingIfNeeded: index)))
        if index % 2 == 0 { #expect(try await pair.client.receiveFrame() == payload(index % 50 + 1, seed: 1)) }
      }
      try await sender.value
    }
  }

  @Test("messages queued into batch packets keep their order and bytes when packets fill: sizes up to a whole packet, frames with bodies, one too large for any batch")
  func batchPacketsFillAndSpill() async throws {
    let maxInline = 64 << 10
    try await Pair.with(SharedMemoryTransport(config: config { $0.inlineLimit = maxInline })) { pair in
      // A batch packet has 64 KiB for entries; a tagged entry takes 24
      // bytes besides its payload. So 65,512 bytes fill an empty packet
      // exactly, 65,536 fit in none (sent alone), and the others leave a
      // packet's last bytes unused or start the next one.
      let sizes = [1, 7, 8, 4_000, 20_000, 30_000, 65_512, maxInline, 0, 3]
      let rounds = 40
      func seed(_ round: Int, _ index: Int) -> UInt8 { UInt8(truncatingIfNeeded: round * 16 + index) }
      let sender = Task {
        for round in 0 ..< rounds {
          for (index, size) in sizes.enumerated() {
            let body = [payload(size, seed: seed(round, index))]
            if index % 3 == 0 {
              try await pair.server.sendFrame([payload(5, seed: seed(round, index))], thenTagged: UInt64(index), body)
            } else {
              try await pair.server.sendTagged(UInt64(index), body)
            }
          }
        }
      }
      for round in 0 ..< rounds {
        for (index, size) in sizes.enumerated() {
          if index % 3 == 0 { #expect(try await pair.client.receiveFrame() == payload(5, seed: seed(round, index))) }
          let message = try await pair.client.receiveTagged(matching: 0, mask: 0)
          #expect(message?.tag == UInt64(index))
          #expect(message?.payload == payload(size, seed: seed(round, index)), "round \(round), size \(size)")
        }
      }
      try await sender.value
    }
  }

  @Test("a receiving task that falls behind receives on its own task; a receive waiting for a later tag is served meanwhile (SHM-THREAD-4)")
  func tasksReceiveWhenBehind() async throws {
    // Whether a task receives depends on scheduling (the reader hands over
    // only while the task is behind): a loaded machine may keep the task
    // ahead for a whole run, so up to three runs, each checked in full.
    var receivedOnTasks = 0
    for _ in 0 ..< 3 where receivedOnTasks == 0 {
      try await Pair.with { pair in
        let count = 6_000
        func body(_ index: Int) -> ArrowBytes { payload(16, seed: UInt8(truncatingIfNeeded: index)) }
        let connection = try #require(pair.client as? SharedMemoryConnection)
        let sender = Task {
          for index in 0 ..< count { try await pair.server.sendTagged(1, [body(index)]) }
          try await pair.server.sendTagged(2, [payload(3, seed: 9)])
        }
        // The reader runs ahead to the inbox's message cap, then hands
        // receiving over once the task drains below half of it.
        try await Task.sleep(for: .milliseconds(100))
        for index in 0 ..< count / 2 {
          #expect(try await pair.client.receiveTagged(matching: 1, mask: .max)?.payload == body(index), "message \(index)")
        }
        async let later = pair.client.receiveTagged(matching: 2, mask: .max)
        for index in count / 2 ..< count {
          #expect(try await pair.client.receiveTagged(matching: 1, mask: .max)?.payload == body(index), "message \(index)")
        }
        #expect(try await later?.payload == payload(3, seed: 9))
        try await sender.value
        receivedOnTasks = connection.controlMessagesReceivedOnTasks
      }
    }
    #expect(receivedOnTasks > 0)
  }

  @Test("a send that finds the peer gone does not discard what the peer sent before (SHM-CLOSE-2)")
  func sendAfterPeerClosedKeepsReceived() async throws {
    let listener = try await SharedMemoryTransport().listen(at: TransportAddress(scheme: "shm"))
    try await afterwards(listener.close) {
      let peer = try RawPeer(path: listener.address.path)
      peer.send(RawPeer.hello)
      peer.send(RawPeer.message(kind: 1, bytes: [4, 5, 6]))
      // The peer stops reading: our sends fail with EPIPE while its end of
      // the stream has not come yet.
      _ = shutdown(peer.descriptor, Int32(SHUT_RD))
      let connection = try #require(try await listener.accept())
      var failed = false
      for _ in 0 ..< 1_000 where !failed {
        do { try await connection.sendTagged(1, [payload(8, seed: 3)]) } catch { failed = true }
        try await Task.sleep(for: .milliseconds(1))
      }
      #expect(failed, "sending to a peer that stopped reading never failed")
      #expect(try await connection.receiveFrame() == ArrowBytes(copying: [4, 5, 6]))
      peer.close()
      #expect(try await connection.receiveFrame() == nil)
      await connection.close()
    }
  }

  @Test("a peer announcing segment after segment is cut off at maxPeerSegments or maxPeerMappedBytes; its mappings go (SHM-MEM-6)",
        arguments: [(16, 1 << 30, 4096), (1024, 3 << 20, 1 << 20)])
  func segmentFlood(maxSegments: Int, maxBytes: Int, segmentSize: Int) async throws {
    let transport = SharedMemoryTransport(config: config {
      $0.maxPeerSegments = maxSegments
      $0.maxPeerMappedBytes = maxBytes
    })
    let (segment, base) = try createSegment(size: segmentSize, name: "dipc-flood")
    defer {
      munmap(base, segmentSize)
      close(segment)
    }
    func floodMappings() -> Int { readProcFile("/proc/self/maps").split(separator: "\n").count { $0.contains("/memfd:dipc-flood") } }
    try await RawPeer.withListener(transport) { listener, peer in
      peer.send(RawPeer.hello)
      // 64 announcements, each of the same memfd (the kernel passes a new descriptor each time).
      for id in 1 ... 64 { peer.send(RawPeer.message(kind: 5, words: [UInt64(id), UInt64(segmentSize)]), passing: segment) }
      let connection = try #require(try await listener.accept())
      await #expect { _ = try await connection.receiveFrame() } throws: {
        ($0 as? DissociatedIPCError)?.code == .limitExceeded
      }
      #expect(floodMappings() <= 1 + min(maxSegments, maxBytes / segmentSize), "mapped past the bound")
      await connection.close()
    }
    // What the flood mapped is gone: only the test's own mapping is left.
    #expect(await eventually { floodMappings() == 1 }, "\(floodMappings()) mappings of the segment")
  }

  @Test("listening on a fresh path removes socket files that dead servers left, and nothing else (SHM-ADDR-8)")
  func staleSocketFiles() async throws {
    let directory = socketDirectory()
    // No process has a pid above pid_max (2^22 at most).
    let stale = "\(directory)/dipc-4194400-stale\(getpid()).sock"
    let live = "\(directory)/dipc-\(getpid())-live.sock"
    let notSocket = "\(directory)/dipc-4194401-file\(getpid()).sock"
    defer { for path in [stale, live, notSocket] { unlink(path) } }
    for path in [stale, live] {
      let (socket, _) = try #require(try UnixSocket.listen(path: path, mode: 0o600))
      socket.close()  // the file stays, as after a SIGKILL
    }
    #expect(FileManager.default.createFile(atPath: notSocket, contents: Data()))
    let listener = try await SharedMemoryTransport().listen(at: TransportAddress(scheme: "shm"))
    #expect(!FileManager.default.fileExists(atPath: stale), "the dead server's socket file is still there")
    #expect(FileManager.default.fileExists(atPath: live), "a live process's socket file was removed")
    #expect(FileManager.default.fileExists(atPath: notSocket), "a file that is not a socket was removed")
    await listener.close()
  }

  @Test("a passed descriptor that is not a sealed memfd is refused before it is mapped")
  func unsealedSegment() async throws {
    try await RawPeer.withListener { listener, peer in
      // A plain file could be truncated under the mapping (SIGBUS).
      let path = "/tmp/dipc-unsealed-\(getpid())"
      let file = open(path, O_RDWR | O_CREAT | O_TRUNC, 0o600)
      unlink(path)
      defer { close(file) }
      #expect(ftruncate(file, 4096) == 0)
      peer.send(RawPeer.hello)
      peer.send(RawPeer.message(kind: 5, words: [1, 4096]), passing: file)
      let connection = try #require(try await listener.accept())
      await #expect { _ = try await connection.receiveFrame() } throws: {
        ($0 as? DissociatedIPCError)?.code == .malformedDescriptor
      }
      await connection.close()
    }
  }

  // MARK: Backpressure (SHM-RING-2)

  @Test("a sender waits while the receiver holds the whole shared budget, and continues when it lets go")
  func heldMessagesStopTheSender() async throws {
    let transport = SharedMemoryTransport(config: config {
      $0.segmentSize = 1 << 20
      $0.maxSharedBytes = 2 << 20
    })
    try await Pair.with(transport) { pair in
    var held: [TaggedMessage] = []
    // Six 256 KiB messages fill two 1 MiB segments (three each, with their
    // block headers).
    for index in 0 ..< 6 {
      try await pair.server.sendTagged(UInt64(index), [payload(256 << 10, seed: UInt8(index))])
      held.append(try #require(try await pair.client.receiveTagged(matching: UInt64(index), mask: .max)))
    }
    let sent = Atomic<Bool>(false)
    let sender = Task {
      try await pair.server.sendTagged(7, [payload(256 << 10, seed: 7)])
      sent.store(true, ordering: .relaxed)
    }
    try await Task.sleep(for: .milliseconds(200))
    let sentEarly = sent.load(ordering: .relaxed)
    #expect(!sentEarly, "the sender did not wait for space")
    held.removeAll()
    try await sender.value
    #expect(try await pair.client.receiveTagged(matching: 7, mask: .max)?.payload == payload(256 << 10, seed: 7))
    }
  }

  /// A transport whose first segment is 1 MiB, within `budget` shared
  /// bytes, its segments named `name` (so a test counts only its own).
  private func megabyteSegments(budget: Int, name: String) -> SharedMemoryTransport {
    SharedMemoryTransport(config: config {
      $0.segmentSize = 1 << 20
      $0.maxSharedBytes = budget
      $0.segmentName = name
    })
  }

  @Test("a slow receiver bounds the sender's shared memory; every message arrives intact")
  func slowReceiver() async throws {
    let name = "dipc-shm-slow-\(getpid())"
    let transport = megabyteSegments(budget: 2 << 20, name: name)
    try await Pair.with(transport) { pair in
      let count = 200
      let sender = Task {
        for index in 0 ..< count {
          try await pair.server.sendTagged(UInt64(index), [payload(100_000 + index, seed: UInt8(truncatingIfNeeded: index))])
        }
      }
      var peakMappings = 0
      for index in 0 ..< count {
        let message = try #require(try await pair.client.receiveTagged(matching: 0, mask: 0))
        #expect(message.tag == UInt64(index))
        #expect(message.payload == payload(100_000 + index, seed: UInt8(truncatingIfNeeded: index)))
        peakMappings = max(peakMappings, Holdings.now(segmentName: name, socketPath: "").mappings)
        if index % 10 == 0 { try await Task.sleep(for: .milliseconds(2)) }
      }
      try await sender.value
      // Two segments at most, each mapped by the sender and by the receiver.
      #expect(peakMappings <= 4, "\(peakMappings) segment mappings for a 2 MiB budget")
    }
  }

  @Test("a receiver holding many messages costs few segments: added segments double the total")
  func segmentsGrowGeometrically() async throws {
    let name = "dipc-shm-grow-\(getpid())"
    let transport = megabyteSegments(budget: 64 << 20, name: name)
    try await Pair.with(transport) { pair in
      var held: [TaggedMessage] = []
      // 12 MiB held in 256 KiB messages: segments of 1, 1, 2, 4 and 8 MiB
      // (fixed 1 MiB segments would take 13).
      for index in 0 ..< 48 {
        try await pair.server.sendTagged(UInt64(index), [payload(256 << 10, seed: UInt8(index))])
        held.append(try #require(try await pair.client.receiveTagged(matching: UInt64(index), mask: .max)))
      }
      let mappings = Holdings.now(segmentName: name, socketPath: "").mappings
      // Each segment is mapped by the sender and by the receiver.
      #expect(mappings == 2 * 5, "\(mappings) mappings for 12 MiB held")
      #expect(held.last?.payload == payload(256 << 10, seed: 47))
    }
  }

  @Test("a peer that closes with our messages unread ends the stream in order: everything it sent arrives, then nil")
  func closeWithUnreadMessagesIsAnOrderlyEnd() async throws {
    // A 1 KiB read-ahead: the server's reader stops after the client's
    // first message, so its second stays unread in the socket, and closing
    // makes the client's next recvmsg fail with ECONNRESET (SHM-CLOSE-3).
    try await Pair.with(SharedMemoryTransport(config: config { $0.readAheadBytes = 1 << 10 })) { pair in
      for index in 0 ..< 2 { try await pair.client.sendTagged(UInt64(index), [payload(2 << 10, seed: UInt8(index))]) }
      for index in 0 ..< 16 { try await pair.server.sendFrame([payload(1_000, seed: UInt8(index))]) }
      try await Task.sleep(for: .milliseconds(50))
      await pair.server.close()
      try await Task.sleep(for: .milliseconds(50))
      for index in 0 ..< 16 {
        #expect(try await pair.client.receiveFrame() == payload(1_000, seed: UInt8(index)))
      }
      #expect(try await pair.client.receiveFrame() == nil)
    }
  }

  @Test("a sender waiting for space fails with connectionClosed when the connection closes")
  func closeWakesWaitingSender() async throws {
    try await Pair.with(SharedMemoryTransport(config: config {
      $0.segmentSize = 1 << 20
      $0.maxSharedBytes = 1 << 20
    })) { pair in
      try await pair.server.sendTagged(1, [payload(900_000, seed: 1)])
      let held = try await pair.client.receiveTagged(matching: 1, mask: .max)
      let sender = Task { try await pair.server.sendTagged(2, [payload(900_000, seed: 2)]) }
      try await Task.sleep(for: .milliseconds(50))
      await pair.server.close()
      await #expect { try await sender.value } throws: { ($0 as? DissociatedIPCError)?.code == .connectionClosed }
      withExtendedLifetime(held) {}
    }
  }

  /// Keeps every batch of a stream (`bodyRows` int64 rows per batch, over
  /// a server whose bounds are small), then checks that all arrived
  /// intact, and lets them go (the server finishes a stream once its
  /// client returned everything).
  private static func keepEverything(batches: Int, bodyRows: Int, serverConfig: DissociatedServer.Config,
                                     transport: SharedMemoryTransport.Config,
                                     client clientConfig: DissociatedClient.Config) async throws {
    var registry = TransportRegistry()
    registry.register(SharedMemoryTransport(config: transport))
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try int64Stream(batches: batches, rows: bodyRows)))
    let server = try await DissociatedServer(listeningAt: "shm://", catalog: catalog, registry: registry, config: serverConfig)
    let running = Task { await server.run() }
    try await afterwards({
      await server.shutdown()
      await running.value
    }) {
      var kept: [RecordBatch] = []
      let client = DissociatedClient(registry: registry, config: clientConfig)
      for try await case .recordBatch(let batch) in client.stream(from: server.location(for: "s")) { kept.append(batch) }
      #expect(kept.count == batches)
      for (index, batch) in kept.enumerated() {
        let values = try batch.column(0).values(as: Int64.self)
        #expect(values.first == Int64(index * bodyRows) && values.last == Int64((index + 1) * bodyRows - 1))
      }
    }
  }

  @Test("a consumer that keeps every batch gets them all: mapped bodies past maxMappedBytes are copied and returned (DIPC-FREE-5)")
  func keptDescriptorBodies() async throws {
    var server = DissociatedServer.Config.defaults
    server.stream = ServerStreamConfig(rendezvousThreshold: 1 << 10, maxOutstandingBytes: 1 << 20)
    // 24 bodies of 256 KiB (6 MiB) against 1 MiB outstanding: without the
    // copies the server waits for free_data that never comes.
    try await Self.keepEverything(
      batches: 24, bodyRows: 32 << 10, serverConfig: server, transport: .defaults,
      client: DissociatedClient.Config(stream: .defaults, idleTimeout: .seconds(5), maxMappedBytes: 512 << 10))
  }

  @Test("a consumer that keeps every batch gets them all: payloads past maxHeldPayloadBytes are copied and returned (SHM-RING-7)")
  func keptInlineBodies() async throws {
    var server = DissociatedServer.Config.defaults
    server.stream.rendezvousThreshold = .max  // every body inline, in the server's segments
    // 200 bodies of 32 KiB (6.25 MiB) against 4 MiB of segments (1, 1
    // and 2 MiB), at most 1 MiB of them held: the kept payloads pin the
    // first segment and the start of the second; the third cycles.
    let transport = config {
      $0.segmentSize = 1 << 20
      $0.maxSharedBytes = 4 << 20
      $0.maxHeldPayloadBytes = 1 << 20
    }
    try await Self.keepEverything(
      batches: 200, bodyRows: 4 << 10, serverConfig: server, transport: transport,
      client: DissociatedClient.Config(stream: .defaults, idleTimeout: .seconds(5)))
  }

  // MARK: Leaks (SHM-MEM-3, SHM-THREAD-2)

  @Test("no descriptor, mapping or socket outlives served, abandoned and failed streams")
  func noLeaks() async throws {
    let name = "dipc-shm-leak-\(getpid())"
    var registry = TransportRegistry()
    registry.register(SharedMemoryTransport(config: config { $0.segmentName = name }))
    var messages: [OutgoingMessage] = []
    for batch in 0 ..< 40 {
      var builder = RecordBatchBuilder()
      // 1 KiB to 640 KiB bodies: inline, in-segment and exposed (type 1).
      builder.append("v", (0 ..< 128 * (1 + batch * 4 % 80)).map { Int64(batch + $0) as Int64? })
      if batch == 0 { messages.append(try OutgoingMessage(Message(header: .schema(builder.schema)))) }
      let (message, body) = builder.finish()
      messages.append(try OutgoingMessage(message, body: body))
    }
    var catalog = StreamCatalog()
    catalog.add("s", .messages(messages))
    let server = try await DissociatedServer(listeningAt: "shm://", catalog: catalog, registry: registry)
    let path = server.listener.address.path
    let running = Task { await server.run() }
    let baseline = Holdings.now(segmentName: name, socketPath: path)
    #expect(baseline.serverSockets == 1, "the counter sees the listener")

    let client = DissociatedClient(registry: registry)
    var batches: [RecordBatch] = []
    for try await case .recordBatch(let batch) in client.stream(from: server.location(for: "s")) { batches.append(batch) }
    #expect(batches.count == 40)
    #expect(Holdings.now(segmentName: name, socketPath: path).mappings > 0, "the stream never used a segment")
    batches.removeAll()
    do {
      var abandoned = client.stream(from: server.location(for: "s")).makeAsyncIterator()
      for _ in 0 ..< 10 { _ = try await abandoned.next() }
    }
    var missing = server.location(for: "nope")
    missing.otherParameters = [.init("ticket", "nope")]
    await #expect(throws: DissociatedIPCError.self) { for try await _ in client.stream(from: missing) {} }

    var now = try await Holdings.settled(to: baseline, segmentName: name, socketPath: path, server: server)
    #expect(now == baseline, "after the streams: \(now); before: \(baseline)")
    await server.shutdown()
    await running.value
    // Each connection's threads close its socket as they exit, just after.
    let none = Holdings(mappings: 0, segmentDescriptors: 0, serverSockets: 0)
    now = Holdings.now(segmentName: name, socketPath: path)
    for _ in 0 ..< 250 where now != none {
      try await Task.sleep(for: .milliseconds(20))
      now = Holdings.now(segmentName: name, socketPath: path)
    }
    #expect(now == none)
  }
}
