#if Fabric
import ArrowIPC
import DissociatedIPC
import DissociatedIPCConformance
@testable import DissociatedIPCFabric
import Foundation
import Synchronization
import TestSupport
import Testing

/// fabric:// under bad input and faults (issue: typed errors, no hang,
/// nothing leaked): unknown providers, unreachable servers, garbage
/// handshakes, forged descriptors, peers that vanish mid-read. What many
/// connections leave behind is counted in a server process (the
/// fabric:// rows of "Connection churn").
@Suite("fabric:// faults")
struct FabricFaultTests {
  static let providers = FabricConformanceTests.providers

  typealias Pair = ConnectedPair

  /// A connected client and server over `provider`, with their listener.
  static func pair(_ provider: String, config: FabricTransport.Config = .defaults) async throws -> Pair {
    let transport = FabricTransport(config: config)
    let listener = try await transport.listen(at: FabricConformanceTests.address(provider))
    async let accepted = listener.accept()
    let client = try await transport.connect(to: listener.address.location(wantData: 0))
    let server = try #require(try await accepted)
    return Pair(listener: listener, client: client, server: server)
  }

  /// `count` pseudo-random bytes that `seed` fixes.
  static func payload(count: Int, seed: UInt64) -> ArrowBytes {
    var generator = SplitMix64(seed: seed)
    let storage = AlignedStorage(capacity: count, zeroed: false)
    let words = storage.mutableBytes.bindMemory(to: UInt64.self)
    for index in words.indices { words[index] = generator.next() }
    for index in words.count * 8 ..< count { storage.mutableBytes[index] = UInt8(truncatingIfNeeded: generator.next()) }
    return storage.freeze(count: count)
  }

  static func code(of body: () async throws -> Void) async -> DissociatedIPCError.Code? {
    do {
      try await body()
      return nil
    } catch {
      return (error as? DissociatedIPCError)?.code
    }
  }

  @Test("an unknown or malformed provider is invalidLocation, naming the providers present")
  func unknownProvider() async throws {
    let transport = FabricTransport()
    for provider in ["nosuchprovider", "tcp/../x", String(repeating: "a", count: 65)] {
      let address = TransportAddress(scheme: "fabric", host: "127.0.0.1", port: 0, parameters: [.init("provider", provider)])
      let listened = await Self.code { _ = try await transport.listen(at: address) }
      #expect(listened == .invalidLocation, "\(provider)")
      let connected = await Self.code { _ = try await transport.connect(to: address.location(wantData: 0)) }
      #expect(connected == .invalidLocation, "\(provider)")
    }
    do {
      _ = try await transport.connect(to: Location(parsing: "fabric://127.0.0.1:9?provider=nosuch&want_data=0"))
    } catch {
      #expect(error.detail.contains("tcp;ofi_rxm"), "\(error)")
    }
    let wildcard = await Self.code { _ = try await transport.listen(at: TransportAddress(parsing: "fabric://0.0.0.0:0")) }
    #expect(wildcard == .invalidLocation)
  }

  @Test("a server that is not there is connectionRefused, promptly", arguments: providers)
  func unreachable(provider: String) async throws {
    let transport = FabricTransport(config: .init(connectTimeout: .seconds(20)))
    let listener = try await transport.listen(at: FabricConformanceTests.address(provider))
    let address = listener.address
    await listener.close()
    let started = ContinuousClock.now
    let refused = await Self.code { _ = try await transport.connect(to: address.location(wantData: 0)) }
    #expect(refused == .connectionRefused)
    // Well before the connect timeout: the provider or the name check says so.
    #expect(ContinuousClock.now - started < .seconds(15))
  }

  @Test("garbage sent to a listener is dropped and counted; the listener serves on", arguments: providers)
  func garbageHello(provider: String) async throws {
    let transport = FabricTransport()
    let listener = try #require(try await transport.listen(at: FabricConformanceTests.address(provider)) as? FabricListener)
    // A raw endpoint sends what no client would: short, lying and too
    // long handshakes (off the concurrency pool: it polls).
    let address = listener.address
    try await offPool {
      let settings = try FabricSettings(config: .defaults, address: address)
      let raw = try settings.endpoint(bindingTo: settings.clientSource(toward: "127.0.0.1", port: address.port ?? 0))
      defer { raw.close() }
      let server = try settings.listenerAddress(host: "127.0.0.1", port: address.port ?? 0, in: raw).address
      var lying = FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: 16, name: [1, 2, 3]))
      lying[16] = 0xFF  // a name length past the message
      let garbage: [[UInt8]] = [[], [0x44], lying, FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: 0, name: [9]))]
      for (index, bytes) in garbage.enumerated() {
        try Self.send(ArrowBytes(copying: bytes), on: raw, to: server, tag: FabricWire.helloTag, token: UInt(index + 1))
      }
      // Longer than a hello may be: truncated, and over tcp;ofi_rxm the
      // sender's own connection breaks; the listener is not disturbed.
      try Self.send(ArrowBytes(copying: [UInt8](repeating: 0xAB, count: 600)), on: raw, to: server, tag: FabricWire.helloTag, token: 99)
    }
    #expect(await eventually { listener.rejectedHellos.withLock { $0 } >= 4 })
    // A real client is served as before.
    let client = try await transport.connect(to: listener.address.location(wantData: 0))
    let accepted = try #require(try await listener.accept())
    try await accepted.sendFrame([ArrowBytes(copying: [7])])
    #expect(try await client.receiveFrame()?.array == [7])
    await client.close()
    await accepted.close()
    await listener.close()
  }

  /// Posts a send and progresses until it completed (at most 10 s).
  static func send(_ payload: ArrowBytes, on endpoint: FabricEndpoint, to peer: UInt64, tag: UInt64, token: UInt) throws {
    let deadline = ContinuousClock.now + .seconds(10)
    var completions: [FabricCompletion] = []
    var posted = false
    while !posted {
      let attempt = Result { () throws(FabricFailure) in
        try endpoint.sendTagged(payload.unsafeBaseAddress, count: payload.count, to: peer, tag: tag, token: token)
      }
      switch attempt {
      case .success: posted = true
      case .failure(let failure):
        guard failure.isAgain, ContinuousClock.now < deadline else { throw failure }
        _ = try endpoint.completions.poll(into: &completions)
      }
    }
    while ContinuousClock.now < deadline, !completions.contains(where: { $0.token == token }) {
      _ = try endpoint.completions.poll(into: &completions)
    }
    withExtendedLifetime(payload) {}
  }

  /// A pair over `provider` whose server exposed `count` bytes, announced
  /// to the client by a message after it (DIPC-RM-1).
  static func exposed(count: Int, over provider: String) async throws
    -> (Pair, ArrowBytes, ExposedRegion, any RemoteMemory, any RemoteMemory) {
    let pair = try await Self.pair(provider)
    let serverMemory = try #require(pair.server.remoteMemory)
    let clientMemory = try #require(pair.client.remoteMemory)
    let bytes = Self.payload(count: count, seed: UInt64(count))
    let region = try await serverMemory.expose(bytes)
    try await pair.server.sendTagged(1, [])
    _ = try await pair.client.receiveTagged(matching: 1, mask: .max)
    return (pair, bytes, region, serverMemory, clientMemory)
  }

  @Test("forged descriptors are malformedDescriptor without a read; the connection serves on", arguments: providers)
  func forgedDescriptors(provider: String) async throws {
    let (pair, bytes, region, serverMemory, clientMemory) = try await Self.exposed(count: 1 << 16, over: provider)
    let real = try #require(region.ranges.first)
    let forged = [
      RemoteRange(address: real.address ^ 1 << 48, length: 1),  // another region id
      RemoteRange(address: real.address + real.length, length: 1),  // past the end
      RemoteRange(address: real.address + 1, length: .max),  // a length that overflows
      RemoteRange(address: 0, length: 8),  // region 0: never issued
      RemoteRange(address: .max, length: 1),
    ]
    for range in forged {
      let outcome = await Self.code { _ = try await clientMemory.fetch([range]) }
      #expect(outcome == .malformedDescriptor, "\(range)")
    }
    #expect(try await clientMemory.fetch(region.ranges) == bytes)
    await serverMemory.release(region.id)
    await pair.close()
  }

  /// What a forging server announces: a region whose key or extent is
  /// not the one it registered.
  struct Forgery: Sendable, CustomTestStringConvertible {
    var name: String
    /// Added to the registered key.
    var keyOffset: UInt64
    /// The length announced for a registered region of 4 KiB.
    var announcedLength: UInt64
    var testDescription: String { name }
  }

  static let forgeries = [
    Forgery(name: "another key", keyOffset: 1, announcedLength: 4096),
    Forgery(name: "past the registered bytes", keyOffset: 0, announcedLength: 1 << 20),
  ]

  /// A forging server on a thread of its own, started at once: from the
  /// concurrency pool, which a busy test run holds for seconds, it once
  /// started after the client's connect had timed out.
  final class ForgingServer: Sendable {
    private let stopped = Mutex(false)
    private let outcome = Mutex<Result<Void, any Error>?>(nil)

    init(_ endpoint: FabricEndpoint, forgery: Forgery) {
      Thread.detachNewThread { [self] in
        let result = Result { try FabricFaultTests.forge(on: endpoint, forgery: forgery) { self.stopped.withLock { $0 } } }
        outcome.withLock { $0 = result }
      }
    }

    /// Stops the server and waits for it (at most 30 s); its failure, if any.
    func finish() async throws {
      stopped.withLock { $0 = true }
      guard await eventually(within: 30, { outcome.withLock { $0 != nil } }) else { throw ForgeryFailure("the forging server did not stop") }
      try outcome.withLock { $0 }?.get()
    }
  }

  struct ForgeryFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
  }

  /// A server that is not one, on a raw endpoint: welcomes one client,
  /// registers 4 KiB, announces it as `forgery` says, then sends tagged
  /// message 7, and progresses (tcp;ofi_rxm answers reads only then)
  /// until `stopped` says so.
  static func forge(on endpoint: FabricEndpoint, forgery: Forgery, stopped: () -> Bool) throws {
    let deadline = ContinuousClock.now + .seconds(30)
    var completions: [FabricCompletion] = []
    let hello = AlignedStorage(capacity: FabricWire.handshakeMessageSize, zeroed: false)
    try endpoint.receiveTagged(hello.mutableBytes.baseAddress, count: FabricWire.handshakeMessageSize, from: nil,
                               tag: FabricWire.helloTag, ignore: 0, token: 1)
    var helloLength: Int?
    while helloLength == nil, ContinuousClock.now < deadline {
      completions.removeAll()
      if try endpoint.completions.poll(into: &completions) == 0 { usleep(200) }
      helloLength = completions.first { $0.token == 1 }?.length
    }
    guard let helloLength else { throw ForgeryFailure("no hello within 30 s") }
    let handshake = try FabricWire.decodeHandshake(UnsafeRawBufferPointer(start: hello.mutableBytes.baseAddress, count: helloLength))
    let client = try endpoint.addresses.insert(handshake.name)
    let welcome = FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: 16, name: try endpoint.name()))
    try send(ArrowBytes(copying: welcome), on: endpoint, to: client, tag: FabricWire.welcomeTag, token: 2)

    let registered = payload(count: 4096, seed: 4)
    guard let registeredBase = registered.unsafeBaseAddress else { throw ForgeryFailure("no bytes to register") }
    let region = try FabricMemoryRegion(domain: endpoint.domain, base: registeredBase, count: 4096, key: 5)
    var announcement = [UInt8](repeating: 0, count: FabricWire.headerSize + 16)
    let base = UInt64(UInt(bitPattern: registeredBase))
    announcement.withUnsafeMutableBytes { bytes in
      FabricWire.write(FabricWire.Header(kind: .region, credits: 0, sequence: 0, tag: 1, length: forgery.announcedLength), into: bytes.baseAddress!)
      bytes.storeBytes(of: (region.key &+ forgery.keyOffset).littleEndian, toByteOffset: FabricWire.headerSize, as: UInt64.self)
      bytes.storeBytes(of: base.littleEndian, toByteOffset: FabricWire.headerSize + 8, as: UInt64.self)
    }
    var message = [UInt8](repeating: 0, count: FabricWire.headerSize)
    message.withUnsafeMutableBytes { bytes in
      FabricWire.write(FabricWire.Header(kind: .tagged, credits: 0, sequence: 1, tag: 7, length: 0), into: bytes.baseAddress!)
    }
    try send(ArrowBytes(copying: announcement), on: endpoint, to: client, tag: FabricWire.controlTag, token: 3)
    try send(ArrowBytes(copying: message), on: endpoint, to: client, tag: FabricWire.controlTag, token: 4)
    while !stopped(), ContinuousClock.now < deadline {
      completions.removeAll()
      if try endpoint.completions.poll(into: &completions) == 0 { usleep(200) }
    }
    withExtendedLifetime((registered, region)) {}
  }

  // Over tcp;ofi_rxm only: shm reads by cross-memory attach and checks no
  // key (FABRIC-RM-4), and its target-side copies would touch the forged
  // addresses inside this test process.
  @Test("a hostile server's forged key or extent: the read is malformedDescriptor, promptly, and nothing hangs",
        arguments: forgeries)
  func forgedRegion(forgery: Forgery) async throws {
    let settings = try FabricSettings(config: .defaults, address: FabricConformanceTests.address("tcp"))
    let (endpoint, port) = try FabricListener.bind(settings: settings, host: "127.0.0.1", port: 0)
    let server = ForgingServer(endpoint, forgery: forgery)
    let transport = FabricTransport(config: .init(closeTimeout: .seconds(2), peerTimeout: .seconds(20)))
    let location = TransportAddress(scheme: "fabric", host: "127.0.0.1", port: port, parameters: [.init("provider", "tcp")])
    let client = try await transport.connect(to: location.location(wantData: 0))
    _ = try await client.receiveTagged(matching: 7, mask: .max)
    let memory = try #require(client.remoteMemory)
    let started = ContinuousClock.now
    let outcome = await Self.code {
      _ = try await memory.fetch([RemoteRange(address: FabricWire.descriptorAddress(region: 1, offset: 0), length: forgery.announcedLength)])
    }
    #expect(outcome == .malformedDescriptor)
    // Within the peer timeout: the provider's error said so, not silence.
    #expect(ContinuousClock.now - started < .seconds(15))
    try await server.finish()
    await client.close()
  }

  @Test("a server that vanishes while a client reads its memory: the fetch ends, typed, and nothing hangs", arguments: providers)
  func vanishMidRead(provider: String) async throws {
    let (pair, _, region, _, clientMemory) = try await Self.exposed(count: 64 << 20, over: provider)
    async let fetched = Self.code { for _ in 0 ..< 8 { _ = try await clientMemory.fetch(region.ranges) } }
    try await Task.sleep(for: .milliseconds(5))
    pair.server.abort()
    let code = await fetched
    #expect(code == nil || code == .connectionClosed || code == .malformedDescriptor, "\(String(describing: code))")
    let afterwards = await Self.code { _ = try await pair.client.receiveFrame() }
    #expect(afterwards == .connectionClosed)
    await pair.close()
  }
}
#endif  // Fabric
