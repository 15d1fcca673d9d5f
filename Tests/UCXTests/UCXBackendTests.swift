#if UCX
import ArrowIPC
import DissociatedIPC
import DissociatedIPCBackendKit
import DissociatedIPCConformance
@testable import DissociatedIPCUCX
import Foundation
import Synchronization
import TestSupport
import Testing

/// ucx:// behaviour beyond the shared suite: the path it reports, idle
/// progress threads, prompt refusal, broken peers, polling mode, and the
/// wire mapping seen by a reference-style client.
@Suite("ucx:// backend", .serialized, .exitsWithoutUCXDestructors)
struct UCXBackendTests {
  static let tcp = UCXConformanceTests.transport("tcp")
  static let sharedMemory = UCXConformanceTests.transport("tcp,sm,self")

  struct Pair {
    let listener: any TransportListener
    let client: UCXConnection
    let server: UCXConnection

    func close() async {
      await client.close()
      await server.close()
      await listener.close()
    }
  }

  /// A listener and a connected pair; the client's location carries
  /// `remoteHandle(listener's handle)` (none by default).
  static func pair(_ transport: UCXTransport, remoteHandle: ([UInt8]?) -> [UInt8]? = { _ in nil }) async throws -> Pair {
    let listener = try await transport.listen(at: TransportAddress(scheme: "ucx", host: "127.0.0.1", port: 0))
    let client = try await transport.connect(to: Location(scheme: "ucx", host: "127.0.0.1", port: listener.address.port, wantData: 0,
                                                          remoteHandle: remoteHandle(listener.remoteHandle)))
    let server = try #require(try await listener.accept())
    return Pair(listener: listener, client: try #require(client as? UCXConnection), server: try #require(server as? UCXConnection))
  }

  /// UCX-VER-1: the package may be built against Debian's UCX or the
  /// wheel's; a binary that loads another library than its headers
  /// describe (a missing rpath) would misread UCX's structures.
  @Test("the UCX library loaded is the version of the headers the package was built with")
  func libraryVersion() {
    let (loaded, headers) = (UCXLibrary.version, UCXLibrary.headerVersion)
    print("ucx:// runs UCX \(UCXTransport.libraryVersion), built against \(headers.major).\(headers.minor)")
    #expect(loaded.major == headers.major && loaded.minor == headers.minor)
    #expect(UCXTransport.libraryDestructorsMayAbort == (loaded.major == 1 && loaded.minor < 22))
  }

  /// UCX-PATH-1: the description names the transports UCX really chose:
  /// tcp/lo over `UCX_TLS=tcp`, shared-memory lanes over `tcp,sm,self`
  /// (UCX-LANE-1).
  @Test("pathDescription names the UCX transports in use")
  func pathDescription() async throws {
    for (transport, expected) in [(Self.tcp, ["tcp/lo"]), (Self.sharedMemory, ["tcp/lo", "posix", "sysv", "cma"])] {
      let pair = try await Self.pair(transport)
      try await pair.client.sendTagged(1, [ArrowBytes(copying: [UInt8](repeating: 7, count: 1 << 20))])
      _ = try await pair.server.receiveTagged(matching: 1, mask: .max)
      let path = pair.client.pathDescription
      print("ucx:// path with TLS=\(transport.config.options["TLS"]!): client \(path); server \(pair.server.pathDescription)")
      #expect(expected.contains { path.contains($0) }, "\(path)")
      await pair.close()
    }
  }

  /// UCX-THREAD-2: an idle connection's progress thread sleeps.
  @Test("an idle connection's progress threads use no CPU")
  func idleThreadsSleep() async throws {
    let pair = try await Self.pair(Self.tcp)
    try await pair.client.sendFrame([ArrowBytes(copying: [1, 2, 3])])
    _ = try await pair.server.receiveFrame()
    let threads = [pair.client.progressThreadID, pair.server.progressThreadID]
    let before = threads.map(Self.cpuTicks)
    try await Task.sleep(for: .seconds(1))
    let used = zip(threads.map(Self.cpuTicks), before).map { $0 - $1 }
    // Clock ticks are 10 ms: a spinning thread would use about 100.
    #expect(used.allSatisfy { $0 <= 5 }, "progress threads used \(used) ticks in 1 s idle")
    await pair.close()
  }

  static func cpuTicks(_ thread: Int32) -> Int {
    guard let stat = try? String(contentsOfFile: "/proc/self/task/\(thread)/stat", encoding: .utf8),
          let end = stat.lastIndex(of: ")") else { return 0 }
    let fields = stat[stat.index(after: end)...].split(separator: " ")
    // After the command: state is field 3; utime and stime are 14 and 15.
    return (Int(fields[11]) ?? 0) + (Int(fields[12]) ?? 0)
  }

  /// UCX-CONN-2: nothing listens → `.connectionRefused`, promptly.
  @Test("connecting where nothing listens is refused promptly, not after a timeout")
  func refusedPromptly() async throws {
    let listener = try await Self.tcp.listen(at: TransportAddress(scheme: "ucx", host: "127.0.0.1", port: 0))
    let port = listener.address.port
    await listener.close()
    let config = Self.tcp.config
    let start = ContinuousClock.now
    do {
      _ = try await Self.tcp.connect(to: Location(scheme: "ucx", host: "127.0.0.1", port: port, wantData: 0))
      Issue.record("connected where nothing listens")
    } catch {
      #expect(error.code == .connectionRefused)
    }
    // 0.01–0.06 s on an idle machine; seconds under a parallel build.
    #expect(ContinuousClock.now - start < config.connectTimeout)
  }

  /// UCX-CLOSE-2: a peer that drops without the goodbye breaks the
  /// connection: pending and later receives throw `.connectionClosed`.
  @Test("a peer that vanishes without a goodbye gives connectionClosed", arguments: ["tcp", "tcp,sm,self"])
  func vanishingPeer(transports: String) async throws {
    let pair = try await Self.pair(UCXConformanceTests.transport(transports))
    let pending = Task { try await pair.client.receiveTagged(matching: 0, mask: 0) }
    try await Task.sleep(for: .milliseconds(50))
    pair.server.reset()
    do {
      _ = try await pending.value
      Issue.record("a receive ended without error after the peer vanished")
    } catch {
      #expect((error as? DissociatedIPCError)?.code == .connectionClosed, "\(error)")
    }
    await #expect(throws: DissociatedIPCError.self) { _ = try await pair.client.receiveFrame() }
    await pair.close()
  }

  /// UCX-RECV-2: the progress thread takes tagged messages before anyone
  /// receives them, but only up to `readAheadBytes`; past it rendezvous
  /// messages stay with UCX and hold their sender's sends back, until
  /// receives drain the inbox and wake the thread.
  @Test("tagged messages are read ahead up to the budget; past it the sender waits until receives drain them")
  func readAheadBudget() async throws {
    let size = 1 << 20
    for (budget, unreceived) in [(64 << 20, 0 ..< 1), (2 << 20, 5 * size ..< 9 * size)] {
      let transport = UCXTransport(config: .init(options: ["TLS": "tcp", "NET_DEVICES": "lo"], readAheadBytes: budget))
      let pair = try await Self.pair(transport)
      for index in 0 ..< 8 { try await pair.server.sendTagged(UInt64(index), [Payload.bytes(count: size, seed: UInt64(index))]) }
      // Sends complete once the receiver took the messages.
      _ = await UCXRemoteMemoryTests.settles(within: .seconds(1)) { pair.server.inFlightBytes == 0 }
      #expect(unreceived.contains(pair.server.inFlightBytes),
              "budget \(budget): \(pair.server.inFlightBytes) bytes of sends incomplete, expected \(unreceived)")
      for index in 0 ..< 8 {
        let message = try await pair.client.receiveTagged(matching: UInt64(index), mask: .max)
        #expect(message?.payload == Payload.bytes(count: size, seed: UInt64(index)), "budget \(budget): message \(index)")
      }
      #expect(await UCXRemoteMemoryTests.settles { pair.server.inFlightBytes == 0 }, "budget \(budget): sends still incomplete")
      await pair.close()
    }
  }

  /// UCX-THREAD-3: polling progress passes the stream cases too. One
  /// after another, so that few threads spin at once on a small machine.
  @Test("polling progress threads")
  func polling() async throws {
    let transport = UCXTransport(config: .init(options: ["TLS": "tcp,sm,self", "NET_DEVICES": "lo"], progressMode: .polling))
    for name in ConformanceCaseName.allCases { try await name.run(transport) }
  }

  /// UCX-WIRE-1…3, checked the way the Arrow reference client reads a
  /// stream: want_data as a tagged message carrying the ticket, metadata as
  /// active messages with id 0 and no header, bodies as tagged messages
  /// received by probing (sequence, mask 0x00000000FFFFFFFF).
  @Test("a server restarts on its port while the connections it served linger in TIME-WAIT (UCX-CONF-2)")
  func restartOnSamePort() async throws {
    var catalog = StreamCatalog()
    catalog.add("t", .messages(try int64Stream(batches: 3, rows: 16)))
    var registry = TransportRegistry()
    registry.register(Self.tcp)
    var port: UInt16 = 0
    for round in 0 ..< 2 {
      let server = try await DissociatedServer(listeningAt: "ucx://127.0.0.1:\(port)", catalog: catalog, registry: registry)
      let running = Task { await server.run() }
      port = try #require(server.listener.address.port)
      #expect(try await recordBatchCount(from: server.location(for: "t"), registry: registry) == 3, "round \(round)")
      await server.shutdown()
      await running.value
    }
  }

  @Test("a listener on, and a client of, a loopback address keep UCX's lanes on lo: nothing of this process listens elsewhere (UCX-ADDR-3)")
  func loopbackOnly() async throws {
    #expect(Runtime.loopbackOptions(["TLS": "tcp"], host: "127.0.0.1")["NET_DEVICES"] == (getenv("UCX_NET_DEVICES") == nil ? "lo" : nil))
    #expect(Runtime.loopbackOptions(["TLS": "tcp", "NET_DEVICES": "eth0"], host: "127.0.0.1")["NET_DEVICES"] == "eth0")
    #expect(Runtime.loopbackOptions(["TLS": "tcp"], host: "192.0.2.7")["NET_DEVICES"] == nil)
    // No devices named: the backend chooses, and must choose lo.
    var catalog = StreamCatalog()
    catalog.add("t", .messages(try int64Stream(batches: 3, rows: 16)))
    var registry = TransportRegistry()
    registry.register(UCXTransport(config: .init(options: ["TLS": "tcp"])))
    let server = try await DissociatedServer(listeningAt: "ucx://127.0.0.1:0", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    #expect(try await recordBatchCount(from: server.location(for: "t"), registry: registry) == 3)
    let wide = Self.listeningAddresses().filter { !$0.hasPrefix("0100007F:") && !$0.hasPrefix("00000000000000000000000001000000:") }
    #expect(wide.isEmpty, "listening beyond loopback: \(wide)")
    await server.shutdown()
    await running.value
  }

  /// The local addresses (hex, as /proc/net/tcp{,6} write them) of this
  /// process's listening TCP sockets.
  static func listeningAddresses() -> [String] {
    var byInode: [String: String] = [:]
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
      let text = (try? String(contentsOfFile: table, encoding: .utf8)) ?? ""
      for line in text.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ")
        guard fields.count > 9, fields[3] == "0A" else { continue }  // 0A: LISTEN
        byInode[String(fields[9])] = String(fields[1])
      }
    }
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.compactMap { descriptor in
      guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(descriptor)"),
            target.hasPrefix("socket:[") else { return nil }
      return byInode[String(target.dropFirst(8).dropLast())]
    }
  }

  @Test("a reference-style raw UCX client (error-handling mode NONE, as the reference's) reads a stream from DissociatedServer",
        arguments: ["combined", "split"])
  func referenceStyleClient(topology: String) async throws {
    var catalog = StreamCatalog()
    var builder = RecordBatchBuilder()
    builder.append("id", [1, 2, nil, 4] as [Int64?])
    let (batch, body) = builder.finish()
    catalog.add("t", .messages([try OutgoingMessage(Message(header: .schema(builder.schema))),
                                try OutgoingMessage(batch, body: body)]))
    var registry = TransportRegistry()
    registry.register(Self.tcp)
    let server = try await DissociatedServer(listeningAt: "ucx://127.0.0.1:0", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    defer { running.cancel() }
    let port = server.listener.address.port!

    // Each raw connection runs on a thread of its own, as UCX wants; the
    // split topology's two run at once, as the reference client's do.
    func fetch(_ wantData: UInt64, frames: Bool, body: Bool) -> Task<RawStream, any Error> {
      Task {
        try await onDedicatedThread(named: "raw-client") {
          Result { try RawReferenceClient.fetch(port: port, wantData: wantData, ticket: "t", frames: frames, body: body) }
        }.get()
      }
    }
    let stream: RawStream
    if topology == "split" {
      let metadata = fetch(ControlTag.metadata, frames: true, body: false)
      let data = fetch(ControlTag.data, frames: false, body: true)
      let (framed, bodies) = (try await metadata.value, try await data.value)
      stream = RawStream(frames: framed.frames, bodyTag: bodies.bodyTag, body: bodies.body)
    } else {
      stream = try await fetch(ControlTag.combined, frames: true, body: true).value
    }
    #expect(stream.frames.count == 3, "schema, batch, end of stream")
    #expect(stream.frames.first?.first == 1 && stream.frames.first?[1 ..< 5] == [0, 0, 0, 0], "schema frame, sequence 0")
    #expect(stream.frames.last == [0, 2, 0, 0, 0], "end of stream after 2 messages")
    #expect(stream.bodyTag == 1, "body tag: sequence 1, type 0")
    #expect(stream.body == body.array)
    await server.shutdown()
  }
}

extension UCXBackendTests {
  @Test("a client of a server that never acknowledges its goodbye (Arrow's reference server) closes at once after the stream, not after the close timeout (UCX-CLOSE-7)")
  func serverWithoutAcknowledgements() async throws {
    var builder = RecordBatchBuilder()
    builder.append("id", [1, 2] as [Int64?])
    let schema = try OutgoingMessage(Message(header: .schema(builder.schema))).metadata
    let port = Mutex<UInt16?>(nil)
    let served = Task {
      try await offPool { try RawReferenceServer.serveOneStream(schema: schema, lifetime: .seconds(60)) { bound in port.withLock { $0 = bound } } }
    }
    #expect(await eventually(within: 30) { port.withLock { $0 } != nil })
    let bound = try #require(port.withLock { $0 })
    var registry = TransportRegistry()
    registry.register(Self.tcp)
    let location = try Location(parsing: "ucx://127.0.0.1:\(bound)?want_data=\(ControlTag.combined)&ticket=t")
    var stream = DissociatedClient(registry: registry).stream(from: location).makeAsyncIterator()
    var items = 0
    while try await stream.next() != nil { items += 1 }
    #expect(items == 1, "the schema, then the end")
    let closing = ContinuousClock.now
    await stream.close()
    // The close timeout is 30 s; an answer that never comes costs a moment.
    #expect(ContinuousClock.now - closing < .seconds(10), "close took \(ContinuousClock.now - closing)")
    // The server saw the client go, as the reference server waits to.
    #expect(try await served.value, "the raw server never saw the client disconnect")
  }
}

/// Arrow's reference server's steps (ucx_server.cc, as Spec/ucx.md
/// describes them) for one stream, on this package's UCX handles: accept
/// a connection, take the want_data message, send the frames (AM id 0),
/// then wait for the client to disconnect, answering no goodbye.
enum RawReferenceServer {
  struct Failed: Error { let what: String }

  /// Serves `schema` then the end of stream to the first client; calls
  /// `bound` with the listening port. True once the client disconnected,
  /// false if it still had not after `lifetime`.
  static func serveOneStream(schema: ArrowBytes, lifetime: Duration, bound: (UInt16) -> Void) throws -> Bool {
    let context = try UCXContext(options: ["TLS": "tcp", "NET_DEVICES": "lo"])
    let worker = try UCXWorker(context: context)
    var request: UCXConnectionRequest?
    let listener = try UCXListenerHandle(worker: worker, address: try SocketAddress.resolve(host: "127.0.0.1", port: 0)) { request = $0 }
    bound(listener.port)
    let deadline = monotonicMilliseconds() + lifetime.milliseconds
    func progress(until done: () -> Bool) throws {
      while !done() {
        guard monotonicMilliseconds() < deadline else { throw Failed(what: "timed out") }
        if !worker.progress() { usleep(100) }
      }
    }
    try progress { request != nil }
    var disconnected = false
    let endpoint = try UCXEndpoint(worker: worker, accepting: request!) { _ in disconnected = true }
    var probed: ProbedMessage?
    try progress {
      probed = worker.probe(tag: 0, mask: 0)
      return probed != nil
    }
    let scratch = UnsafeMutableRawPointer.allocate(byteCount: max(probed!.length, 1), alignment: 8)
    defer { scratch.deallocate() }
    var received = false
    worker.receive(probed!, into: scratch, count: probed!.length) { _ in received = true }
    try progress { received }
    var sent = 0
    endpoint.sendActiveMessage(id: 0, [ArrowBytes(copying: [1, 0, 0, 0, 0]), schema]) { _ in sent += 1 }
    endpoint.sendActiveMessage(id: 0, [ArrowBytes(copying: [0, 1, 0, 0, 0])]) { _ in sent += 1 }
    try progress { sent == 2 }
    // The reference server keeps its endpoint until the client goes.
    do { try progress { disconnected } } catch { return false }
    endpoint.close()
    return true
  }
}

/// A few conformance cases by name (a parameter list that prints well).
enum ConformanceCaseName: String, CaseIterable, Sendable, CustomTestStringConvertible {
  case fullStream, maskMatching, orderlyClose
  var testDescription: String { rawValue }

  func run(_ transport: UCXTransport) async throws {
    let testCase: ConformanceCase = switch self {
    case .fullStream: .fullStream
    case .maskMatching: .maskMatching
    case .orderlyClose: .orderlyClose
    }
    try await testCase.run(using: ConformanceHarness(
      transport: transport, listenAddress: TransportAddress(scheme: "ucx", host: "127.0.0.1", port: 0)))
  }
}

struct RawStream: Sendable {
  var frames: [[UInt8]] = []
  var bodyTag: UInt64 = 0
  var body: [UInt8] = []
}

/// The Arrow reference client's steps (cudf-flight-client.cc), written
/// against this package's UCX handles: connect, send want_data + ticket as
/// a tagged message, collect AM id 0 frames until the end of stream, probe
/// for the body with mask 0x00000000FFFFFFFF, close.
enum RawReferenceClient {
  struct Failed: Error { let what: String }

  /// One connection's part of a stream: its frames until the end of
  /// stream when `frames`, its one body when `body`. The endpoint leaves
  /// the error-handling mode unset (NONE), as the reference client does.
  static func fetch(port: UInt16, wantData: UInt64, ticket: String, frames: Bool = true, body: Bool = true) throws -> RawStream {
    let context = try UCXContext(options: ["TLS": "tcp", "NET_DEVICES": "lo"])
    let worker = try UCXWorker(context: context)
    var stream = RawStream()
    try worker.setActiveMessageHandler(id: 0) { data in
      guard case .inline(let bytes) = data else { return }
      stream.frames.append(Array(bytes))
    }
    let endpoint = try UCXEndpoint(worker: worker, connectingTo: try SocketAddress.resolve(host: "127.0.0.1", port: port),
                                   peerErrorHandling: false) { _ in }
    var sent = false
    endpoint.sendTagged(wantData, [ArrowBytes(copying: Array(ticket.utf8))]) { sent = $0 == nil }
    let deadline = monotonicMilliseconds() + 10_000
    func progress(until done: () -> Bool) throws {
      while !done() {
        guard monotonicMilliseconds() < deadline else { throw Failed(what: "timed out") }
        worker.progress()
      }
    }
    try progress { sent }
    if frames { try progress { stream.frames.last.map { $0.first == 0 } ?? false } }
    guard body else {
      close(endpoint, worker)
      return stream
    }
    var probed: ProbedMessage?
    try progress {
      probed = worker.probe(tag: 1, mask: 0x0000_0000_FFFF_FFFF)
      return probed != nil
    }
    let message = probed!
    let buffer = UnsafeMutableRawPointer.allocate(byteCount: max(message.length, 1), alignment: 64)
    defer { buffer.deallocate() }
    var received = false
    worker.receive(message, into: buffer, count: message.length) { received = $0 == nil }
    try progress { received }
    stream.bodyTag = message.senderTag
    stream.body = Array(UnsafeRawBufferPointer(start: buffer, count: message.length))
    close(endpoint, worker)
    return stream
  }

  /// Closes `endpoint` and lets the disconnect's events drain before the
  /// worker goes.
  private static func close(_ endpoint: UCXEndpoint, _ worker: UCXWorker) {
    endpoint.close()
    let drain = monotonicMilliseconds() + 50
    while monotonicMilliseconds() < drain { worker.progress() }
  }
}
#endif  // UCX
