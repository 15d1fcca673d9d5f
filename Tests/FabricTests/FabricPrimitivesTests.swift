#if Fabric
import Foundation
import Testing
@testable import DissociatedIPCFabric

/// The raw libfabric layer over each provider the backend uses, before
/// any protocol: two endpoints in this process find each other, exchange
/// tagged messages (the client's name first, as the backend bootstraps),
/// and one reads the other's registered memory.
@Suite("libfabric primitives")
struct FabricPrimitivesTests {
  /// A server endpoint bound where `provider` binds, and a client one,
  /// with the completions each has produced and no one has taken yet.
  final class Pair {
    let server: FabricEndpoint
    let client: FabricEndpoint
    private var serverCompletions: [FabricCompletion] = []
    private var clientCompletions: [FabricCompletion] = []

    init(provider: String) throws {
      let serverInfo = provider == "shm"
        ? try FabricInfo(provider: provider, node: "dipc-test-\(getpid())-\(UInt32.random(in: 0 ... .max))", service: nil, source: true)
        : try FabricInfo(provider: provider, node: "127.0.0.1", service: "0", source: true)
      server = try Self.endpoint(serverInfo)
      client = try Self.endpoint(try FabricInfo(provider: provider, node: nil, service: nil, source: false))
    }

    static func endpoint(_ info: FabricInfo) throws -> FabricEndpoint {
      let domain = try FabricDomain(info: info)
      return try FabricEndpoint(domain: domain, addresses: try FabricAddressVector(domain: domain),
                                completions: try FabricCompletionQueue(domain: domain))
    }

    /// Reads both completion queues: manual-progress providers move data
    /// only while both sides are driven.
    private func progress() {
      do {
        _ = try server.completions.poll(into: &serverCompletions)
        _ = try client.completions.poll(into: &clientCompletions)
      } catch {
        Issue.record("a completion queue failed: \(error)")
      }
    }

    /// The completion of `token` on `endpoint`, once it arrived (at most 10 s).
    func complete(_ token: UInt, on endpoint: FabricEndpoint) -> FabricCompletion? {
      let deadline = ContinuousClock.now + .seconds(10)
      while ContinuousClock.now < deadline {
        progress()
        if endpoint === server, let index = serverCompletions.firstIndex(where: { $0.token == token }) {
          return serverCompletions.remove(at: index)
        }
        if endpoint === client, let index = clientCompletions.firstIndex(where: { $0.token == token }) {
          return clientCompletions.remove(at: index)
        }
      }
      return nil
    }

    /// Posts an operation, retrying for at most 10 s while the provider
    /// says "not now" (`-FI_EAGAIN`, as while it connects), with progress.
    func post(_ operation: () throws -> Void) throws {
      let deadline = ContinuousClock.now + .seconds(10)
      while true {
        do {
          return try operation()
        } catch let failure as FabricFailure where failure.isAgain && ContinuousClock.now < deadline {
          progress()
        }
      }
    }

    /// Sends `bytes` and waits for the send's completion (the buffer must
    /// live until then).
    func send(_ bytes: [UInt8], from endpoint: FabricEndpoint, to peer: UInt64, tag: UInt64, token: UInt) throws {
      try bytes.withUnsafeBytes { buffer in
        try post { try endpoint.sendTagged(buffer.baseAddress, count: buffer.count, to: peer, tag: tag, token: token) }
        let sent = complete(token, on: endpoint)
        #expect(sent != nil && sent?.failure == nil, "send \(token): \(String(describing: sent))")
      }
    }
  }

  static let providers = ["tcp;ofi_rxm", "shm"]

  @Test("the client's name, then a reply, cross as tagged messages; a masked receive matches its tag", arguments: providers)
  func taggedRoundTrip(provider: String) throws {
    let pair = try Pair(provider: provider)
    let serverAddress = try pair.client.addresses.insert(try pair.server.name())
    var received = [UInt8](repeating: 0, count: 4096)
    try received.withUnsafeMutableBytes { buffer in
      // Any tag whose low 32 bits are 7.
      try pair.server.receiveTagged(buffer.baseAddress, count: buffer.count, from: nil, tag: 7, ignore: 0xFFFF_FFFF_0000_0000, token: 1)
      let name = try pair.client.name()
      try pair.send(name, from: pair.client, to: serverAddress, tag: 0x1234_0000_0000_0007, token: 2)
      let arrival = try #require(pair.complete(1, on: pair.server))
      #expect(arrival.failure == nil)
      #expect(arrival.tag == 0x1234_0000_0000_0007)
      #expect(Array(buffer.prefix(arrival.length)) == name)
      // The server learns the client from its name and answers.
      let clientAddress = try pair.server.addresses.insert(Array(buffer.prefix(arrival.length)))
      var reply = [UInt8](repeating: 0, count: 64)
      try reply.withUnsafeMutableBytes { replyBuffer in
        try pair.client.receiveTagged(replyBuffer.baseAddress, count: replyBuffer.count, from: serverAddress, tag: 9, ignore: 0, token: 3)
        try pair.send(Array("hello".utf8), from: pair.server, to: clientAddress, tag: 9, token: 4)
        let answer = try #require(pair.complete(3, on: pair.client))
        #expect(answer.failure == nil)
        #expect(Array(replyBuffer.prefix(answer.length)) == Array("hello".utf8))
      }
    }
  }

  @Test("a registered region is read remotely with its key, by virtual address or offset as the provider says", arguments: providers)
  func remoteRead(provider: String) throws {
    let pair = try Pair(provider: provider)
    let serverAddress = try pair.client.addresses.insert(try pair.server.name())
    let region = UnsafeMutableRawBufferPointer.allocate(byteCount: 1 << 20, alignment: 4096)
    defer { region.deallocate() }
    for index in 0 ..< region.count { region[index] = UInt8(truncatingIfNeeded: index &* 31) }
    let memory = try FabricMemoryRegion(domain: pair.server.domain, base: region.baseAddress!, count: region.count, key: 0xD1C0)
    #expect(memory.key == 0xD1C0)
    let offset = 4096
    let address = pair.server.domain.info.virtualAddresses ? UInt64(UInt(bitPattern: region.baseAddress! + offset)) : UInt64(offset)
    let target = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 64)
    defer { target.deallocate() }
    try pair.post {
      try pair.client.read(into: target.baseAddress!, count: target.count, from: serverAddress, address: address, key: memory.key, token: 5)
    }
    let done = try #require(pair.complete(5, on: pair.client))
    #expect(done.failure == nil)
    #expect(Array(target) == Array(region[offset ..< offset + target.count]))
    withExtendedLifetime(memory) {}
  }

  @Test("only region names this backend gives, with a numeric PID, are read as an owner's (FABRIC-SHM-1)")
  func regionOwners() {
    #expect(FabricSettings.regionOwner("dipc-4242-3-1257300145:0:17") == 4242)
    #expect(FabricSettings.regionOwner("dipc-4242-3-1257300145") == 4242)
    for name in ["127.0.0.1:40000", "dipc-bench-4242-2x8.arrows", "dipc-shm-1-2-3", "dipc-4242-3", "dipc-42x-3-1:0", "dipc--3-1",
                 "dipc-٤٢-3-1", "other-4242-3-1"] {
      #expect(FabricSettings.regionOwner(name) == nil, "\(name)")
    }
  }

  @Test("an unknown provider and a garbage endpoint name are typed failures, never a crash")
  func badInput() throws {
    #expect(throws: FabricFailure.self) { try FabricInfo(provider: "no-such-provider", node: nil, service: nil, source: false) }
    for provider in Self.providers {
      let pair = try Pair(provider: provider)
      // Garbage of every short length: refused or inserted, never a crash.
      for length in [0, 1, 3, 16] {
        _ = try? pair.client.addresses.insert([UInt8](repeating: 0xEE, count: length))
      }
    }
  }
}
#endif  // Fabric
