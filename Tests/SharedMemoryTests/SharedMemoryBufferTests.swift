import ArrowIPC
import DissociatedIPC
import DissociatedIPCSharedMemory
import Foundation
import TestSupport
import Testing

#if canImport(Glibc)
import Glibc
#endif

/// Bodies in a `SharedMemoryBuffer` are described in place (SHM-ARENA-*).
@Suite("shm:// in-place bodies", .serialized)
struct SharedMemoryBufferTests {
  /// The mapping of /proc/self/maps that contains `address`: its range and
  /// the inode of the file mapped.
  /// Reading the file is not atomic: a mapping can be missed while other
  /// threads map and unmap, so a miss is retried.
  static func mapping(containing address: UnsafeRawPointer) -> (range: Range<UInt>, inode: UInt64)? {
    for _ in 0 ..< 20 {
      if let found = mappingOnce(containing: address) { return found }
    }
    return nil
  }

  static func mappingOnce(containing address: UnsafeRawPointer) -> (range: Range<UInt>, inode: UInt64)? {
    let value = UInt(bitPattern: address)
    let maps = readProcFile("/proc/self/maps")
    for line in maps.split(separator: "\n") {
      let fields = line.split(separator: " ", omittingEmptySubsequences: true)
      guard fields.count >= 5 else { continue }
      let bounds = fields[0].split(separator: "-")
      guard bounds.count == 2, let start = UInt(bounds[0], radix: 16), let end = UInt(bounds[1], radix: 16),
            (start ..< end).contains(value) else { continue }
      return (start ..< end, UInt64(fields[4]) ?? 0)
    }
    return nil
  }

  /// `bytes` copied into `buffer` at 64-byte-aligned offsets from `start`;
  /// returns the frozen slices and the next free offset.
  static func place(_ bodies: [ArrowBytes], in buffer: SharedMemoryBuffer) throws -> [ArrowBytes] {
    var offsets: [Int] = []
    var next = 0
    for body in bodies {
      offsets.append(next)
      body.withUnsafeBytes { buffer.mutableBytes.baseAddress!.advanced(by: next).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
      next = (next + body.count + 63) / 64 * 64
    }
    let frozen = buffer.freeze(count: min(next, buffer.capacity))
    return try zip(bodies, offsets).map { try frozen.slice(offset: $1, count: $0.count) }
  }

  @Test("a served stream whose bodies live in a SharedMemoryBuffer arrives byte-identical, read in place, and leaves nothing behind")
  func servedInPlace() async throws {
    let bufferName = "dipc-shm-arena-\(getpid())"
    let ringName = "dipc-shm-arena-ring-\(getpid())"
    var registry = TransportRegistry()
    registry.register(SharedMemoryTransport(config: config { $0.segmentName = ringName }))
    var batches: [(Message, ArrowBytes)] = []
    var schema: Schema?
    for batch in 0 ..< 12 {
      var builder = RecordBatchBuilder()
      // 80 to 168 KiB bodies: over the 64 KiB rendezvous threshold (type 1).
      builder.append("v", (0 ..< 10_000 + 1_000 * batch).map { Int64(batch * 7 + $0) as Int64? })
      schema = builder.schema
      batches.append(builder.finish())
    }
    let total = batches.reduce(0) { $0 + ($1.1.count + 63) / 64 * 64 }
    var buffer: SharedMemoryBuffer? = try SharedMemoryBuffer(capacity: total, name: bufferName)
    var bodies = try Self.place(batches.map(\.1), in: buffer!)
    let own = try #require(Self.mapping(containing: buffer!.mutableBytes.baseAddress!))
    var messages = [try OutgoingMessage(Message(header: .schema(schema!)))]
    for (batch, body) in zip(batches, bodies) { messages.append(try OutgoingMessage(batch.0, body: body)) }
    var catalog = StreamCatalog()
    catalog.add("s", .messages(messages))
    messages.removeAll()
    let path: String
    do {  // the server (and its catalog) ends with this block
    let server = try await DissociatedServer(listeningAt: "shm://", catalog: catalog, registry: registry)
    path = server.listener.address.path
    let running = Task { await server.run() }
    let baseline = Holdings.now(segmentName: bufferName, socketPath: path)
    #expect(baseline.mappings == 1 && baseline.segmentDescriptors == 1, "only the producer's own mapping and descriptor")

    let client = DissociatedClient(registry: registry)
    var received: [RecordBatch] = []
    for try await case .recordBatch(let batch) in client.stream(from: server.location(for: "s")) {
      received.append(batch)
      // Read in place: the body lies in another mapping of the buffer's memfd.
      let address = try #require(batch.body.unsafeBaseAddress)
      let mapped = try #require(Self.mapping(containing: address))
      #expect(mapped.inode == own.inode, "the body is not in a mapping of the buffer")
      #expect(!own.range.contains(UInt(bitPattern: address)), "the client must read its own mapping")
    }
    #expect(received.count == 12)
    for (batch, body) in zip(received, bodies) { #expect(batch.body == body) }
    #expect(Holdings.now(segmentName: ringName, socketPath: "").mappings == 0, "a body was copied through the ring")
    received.removeAll()

    let now = try await Holdings.settled(to: baseline, segmentName: bufferName, socketPath: path, server: server)
    #expect(now == baseline, "after the stream: \(now); before: \(baseline)")
    await server.shutdown()
    await running.value
    }
    catalog = StreamCatalog()
    bodies.removeAll()
    buffer = nil
    _ = (buffer, bodies, catalog)
    // The server's connection threads close their socket as they exit.
    let none = Holdings(mappings: 0, segmentDescriptors: 0, serverSockets: 0)
    var now = Holdings.now(segmentName: bufferName, socketPath: path)
    for _ in 0 ..< 250 where now != none {
      try await Task.sleep(for: .milliseconds(20))
      now = Holdings.now(segmentName: bufferName, socketPath: path)
    }
    #expect(now == none)
  }

  @Test("ranges beyond the buffer are malformedDescriptor; inside it, any offset is a view of the mapping")
  func validation() async throws {
    let name = "dipc-shm-arena-check-\(getpid())"
    try await Pair.with { pair in
      let server = try #require(pair.server.remoteMemory)
      let client = try #require(pair.client.remoteMemory)
      let buffer = try SharedMemoryBuffer(capacity: 10_000, name: name)
      let bytes = try Self.place([payload(10_000, seed: 9)], in: buffer)[0]
      let whole = try await server.expose(bytes)
      let valid = try #require(whole.ranges.first)
      #expect(whole.ranges.count == 1 && valid.length == 10_000)
      #expect(try await client.fetch(whole.ranges) == bytes)
      // An unaligned slice is described in place too.
      let slice = try bytes.slice(offset: 1_001, count: 999)
      let part = try await server.expose(slice)
      #expect(part.ranges.first?.address == valid.address + 1_001)
      let view = try await client.fetch(part.ranges)
      #expect(view == slice)
      let segment = valid.address >> 48
      let lying: [(String, RemoteRange)] = [
        ("length past the buffer", RemoteRange(address: valid.address, length: 10_001)),
        ("ends one past the buffer", RemoteRange(address: valid.address + 9_999, length: 2)),
        ("offset past the buffer", RemoteRange(address: segment << 48 | 10_001, length: 0)),
        ("offset far past the buffer", RemoteRange(address: segment << 48 | (1 << 47), length: 16)),
        ("length that overflows", RemoteRange(address: valid.address + 8, length: .max)),
        ("unknown segment", RemoteRange(address: (segment + 50) << 48, length: 16)),
      ]
      for (what, range) in lying {
        await #expect(Comment(rawValue: what)) { _ = try await client.fetch([range]) } throws: {
          ($0 as? DissociatedIPCError)?.code == .malformedDescriptor
        }
      }
      // The same range exposed again while outstanding (the core refuses
      // one address twice) goes through a second announcement of the
      // buffer under another segment id: another address, still no copy.
      let again = try await server.expose(bytes)
      let alias = try #require(again.ranges.first)
      #expect(alias.address >> 48 != segment && alias.address & (1 << 48 - 1) == valid.address & (1 << 48 - 1))
      #expect(again.id != whole.id)
      let aliased = try await client.fetch(again.ranges)
      #expect(aliased == bytes)
      let own = try #require(Self.mapping(containing: buffer.mutableBytes.baseAddress!))
      let seen = try #require(Self.mapping(containing: aliased.unsafeBaseAddress!))
      #expect(seen.inode == own.inode && seen.range != own.range)
      for region in [whole.id, part.id, again.id] { await server.release(region) }
    }
    #expect(Holdings.now(segmentName: name, socketPath: "").mappings == 0)
  }

  @Test("buffers nothing is exposed from any more are retired beyond the few most recent; the client unmaps them")
  func retirement() async throws {
    let name = "dipc-shm-arena-retire-\(getpid())"
    var buffers: [SharedMemoryBuffer] = []
    try await Pair.with { pair in
      let server = try #require(pair.server.remoteMemory)
      let client = try #require(pair.client.remoteMemory)
      for index in 0 ..< 10 {
        let buffer = try SharedMemoryBuffer(capacity: 8192, name: name)
        buffers.append(buffer)
        let bytes = try Self.place([payload(8192, seed: UInt8(index))], in: buffer)[0]
        let region = try await server.expose(bytes)
        #expect(try await client.fetch(region.ranges) == bytes)
        await server.release(region.id)
      }
      // 10 own mappings; the client keeps at most the 4 idle ones announced.
      var clientMappings = Holdings.now(segmentName: name, socketPath: "").mappings - buffers.count
      for _ in 0 ..< 100 where clientMappings > 4 {
        try await Task.sleep(for: .milliseconds(10))
        clientMappings = Holdings.now(segmentName: name, socketPath: "").mappings - buffers.count
      }
      #expect(clientMappings == 4)

      // A retired buffer exposed again is announced again and readable.
      let bytes = buffers[0].freeze(count: 8192)
      let region = try await server.expose(bytes)
      #expect(try await client.fetch(region.ranges) == bytes)
      await server.release(region.id)
    }
    #expect(Holdings.now(segmentName: name, socketPath: "").mappings == buffers.count)
    buffers.removeAll()
    #expect(Holdings.now(segmentName: name, socketPath: "") == Holdings(mappings: 0, segmentDescriptors: 0, serverSockets: 0))
  }
}
