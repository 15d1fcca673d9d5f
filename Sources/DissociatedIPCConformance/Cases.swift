internal import ArrowIPC
public import DissociatedIPC

/// A listener, a client connection and the server's end of it: where a
/// conformance case, or a backend's own test, starts.
public struct ConnectedPair: Sendable {
  public let listener: any TransportListener
  public let client: any TransportConnection
  public let server: any TransportConnection

  /// The three, as a test connected them.
  public init(listener: any TransportListener, client: any TransportConnection, server: any TransportConnection) {
    self.listener = listener
    self.client = client
    self.server = server
  }

  /// Closes the client, then the server's end, then the listener.
  public func close() async {
    await client.close()
    await server.close()
    await listener.close()
  }
}

/// The procedures behind ``ConformanceCase``.
enum Cases {
  // MARK: Connections

  typealias Pair = ConnectedPair

  static func pair(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) -> Pair {
    let listener = try await check.step("listen") { () async throws(DissociatedIPCError) in
      try await harness.transport.listen(at: harness.listenAddress)
    }
    let client = try await connect(harness, check, listener.address, remoteHandle: listener.remoteHandle)
    guard let server = try await check.step("accept", { () async throws(DissociatedIPCError) in try await listener.accept() }) else {
      throw check.fail("accept returned nil on an open listener")
    }
    return Pair(listener: listener, client: client, server: server)
  }

  /// Connects to `address`, with the listener's `remoteHandle` when it
  /// publishes one (the backend reads the server's memory through it).
  static func connect(_ harness: ConformanceHarness, _ check: Checker, _ address: TransportAddress,
                      remoteHandle: [UInt8]? = nil) async throws(ConformanceFailure) -> any TransportConnection {
    try await check.step("connect to \(address)") { () async throws(DissociatedIPCError) in
      try await harness.transport.connect(to: address.location(wantData: 0, remoteHandle: remoteHandle))
    }
  }

  /// Echoes every framed and tagged message on `connection` until it closes.
  static func echo(_ connection: any TransportConnection) async {
    await withDiscardingTaskGroup { group in
      group.addTask {
        while let frame = try? await connection.receiveFrame() { try? await connection.sendFrame([frame]) }
      }
      group.addTask {
        while let message = try? await connection.receiveTagged(matching: 0, mask: 0) {
          try? await connection.sendTagged(message.tag, [message.payload])
        }
      }
    }
  }

  static func sizes(_ harness: ConformanceHarness) -> [Int] {
    [0, 1, 7, 8, 4096, 65_537, 1 << 20, 16 << 20, harness.largestMessage].filter { $0 <= harness.largestMessage }
  }

  static func refusedConnection(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let listener = try await check.step("listen") { () async throws(DissociatedIPCError) in
      try await harness.transport.listen(at: harness.listenAddress)
    }
    let address = listener.address
    await listener.close()
    try await check.expectError(.connectionRefused, "connect to a closed listener") { () async throws(DissociatedIPCError) in
      _ = try await harness.transport.connect(to: address.location(wantData: 0))
    } as Void
  }

  static func roundTrip(_ harness: ConformanceHarness, _ check: Checker, tagged: Bool) async throws(ConformanceFailure) {
    let pair = try await pair(harness, check)
    let echo = Task { await Self.echo(pair.server) }
    defer { echo.cancel() }
    for (index, size) in sizes(harness).enumerated() {
      let payload = Payload.make(count: size, seed: UInt64(index + 1))
      // A split payload checks that parts are gathered in order.
      let parts = size > 1 ? [try! payload.slice(offset: 0, count: size / 3), try! payload.slice(offset: size / 3, count: size - size / 3)] : [payload]
      let tag: UInt64 = 0xA500_0000_0000_0000 | 0x00AB_CD00_0000_0000 | UInt64(index)
      let received: ArrowBytes?
      if tagged {
        try await check.step("send \(size) tagged bytes") { () async throws(DissociatedIPCError) in try await pair.client.sendTagged(tag, parts) }
        let message = try await check.step("receive \(size) tagged bytes") { () async throws(DissociatedIPCError) in
          try await pair.client.receiveTagged(matching: tag, mask: .max)
        }
        try check.expect(message?.tag == tag, "tag \(tag) came back as \(String(describing: message?.tag))")
        received = message?.payload
      } else {
        try await check.step("send a \(size)-byte frame") { () async throws(DissociatedIPCError) in try await pair.client.sendFrame(parts) }
        received = try await check.step("receive a \(size)-byte frame") { () async throws(DissociatedIPCError) in
          try await pair.client.receiveFrame()
        }
      }
      try check.expect(received == payload, "\(size) bytes came back as \(String(describing: received))")
    }
    await pair.close()
  }

  // MARK: Matching

  static func maskMatching(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let pair = try await pair(harness, check)
    let tags: [UInt64] = [0x0000_0001_0000_0005, 0x0100_0000_0000_0005, 0x0000_0000_0000_0007, 0xFF00_0000_0000_0007]
    for (index, tag) in tags.enumerated() {
      try await check.step("send") { () async throws(DissociatedIPCError) in
        try await pair.server.sendTagged(tag, [Payload.make(count: 8 + index, seed: tag)])
      }
    }
    // (tag, mask) → the tag expected, in this order.
    let plan: [(UInt64, UInt64, UInt64)] = [
      (7, 0xFFFF_FFFF, tags[2]),                           // first low-32 match in arrival order
      (0x0100_0000_0000_0005, .max, tags[1]),              // exact match skips an earlier partial match
      (5, 0xFFFF_FFFF, tags[0]),
      (0xAA00_0000_0000_0000, 0, tags[3]),                 // mask 0 matches anything
    ]
    for (tag, mask, expected) in plan {
      let message = try await check.step("receive (\(tag), \(mask))") { () async throws(DissociatedIPCError) in
        try await pair.client.receiveTagged(matching: tag, mask: mask)
      }
      try check.expect(message?.tag == expected, "(\(tag), mask \(mask)) received \(String(describing: message?.tag)), expected \(expected)")
      try check.expect(message?.payload == Payload.make(count: 8 + tags.firstIndex(of: expected)!, seed: expected), "payload of \(expected)")
    }

    // Receives posted before the messages arrive are served in posting order.
    let first = Task { try await pair.client.receiveTagged(matching: 0x33, mask: 0xFF) }
    try? await Task.sleep(for: .milliseconds(50))
    let second = Task { try await pair.client.receiveTagged(matching: 0x33, mask: 0xFF) }
    try? await Task.sleep(for: .milliseconds(50))
    for value in [UInt64(0x1133), 0x2233] {
      try await check.step("send") { () async throws(DissociatedIPCError) in
        try await pair.server.sendTagged(value, [ArrowBytes(copying: [UInt8(value >> 8)])])
      }
    }
    let firstTag = try? await first.value?.tag
    let secondTag = try? await second.value?.tag
    try check.expect(firstTag == 0x1133 && secondTag == 0x2233,
                     "posted receives got \(String(describing: firstTag)), \(String(describing: secondTag)); expected posting order")
    await pair.close()
  }

  static func outOfOrderBodies(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let pair = try await pair(harness, check)
    let count: UInt32 = 10
    for sequence in (0 ..< count).reversed() {
      let tag = Tag(sequence: sequence, bodyType: sequence % 2 == 0 ? .inline : .descriptor).rawValue
      try await check.step("send body \(sequence)") { () async throws(DissociatedIPCError) in
        try await pair.server.sendTagged(tag, [Payload.make(count: 100 + Int(sequence), seed: UInt64(sequence))])
      }
    }
    for sequence in 0 ..< count {
      let message = try await check.step("receive body \(sequence)") { () async throws(DissociatedIPCError) in
        try await pair.client.receiveTagged(matching: UInt64(sequence), mask: Tag.sequenceMask)
      }
      try check.expect(message.map { Tag(rawValue: $0.tag).sequence } == sequence, "body \(sequence) matched \(String(describing: message?.tag))")
      try check.expect(message?.payload == Payload.make(count: 100 + Int(sequence), seed: UInt64(sequence)), "body \(sequence) payload")
    }
    await pair.close()
  }

  static func concurrentConnections(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let listener = try await check.step("listen") { () async throws(DissociatedIPCError) in
      try await harness.transport.listen(at: harness.listenAddress)
    }
    let acceptor = Task {
      await withDiscardingTaskGroup { group in
        while let connection = try? await listener.accept() { group.addTask { await echo(connection) } }
      }
    }
    let failures = await withTaskGroup(of: String?.self) { group in
      for client in 0 ..< 16 {
        group.addTask {
          do throws(ConformanceFailure) {
            let connection = try await connect(harness, check, listener.address)
            defer { Task { await connection.close() } }
            for round in 0 ..< 10 {
              let payload = Payload.make(count: 1000 + round, seed: UInt64(client << 8 | round))
              let tag = UInt64(client << 8 | round)
              try await check.step("exchange") { () async throws(DissociatedIPCError) in
                try await connection.sendFrame([payload])
                try await connection.sendTagged(tag, [payload])
              }
              let frame = try await check.step("frame") { () async throws(DissociatedIPCError) in try await connection.receiveFrame() }
              let message = try await check.step("tagged") { () async throws(DissociatedIPCError) in
                try await connection.receiveTagged(matching: tag, mask: .max)
              }
              try check.expect(frame == payload && message?.payload == payload, "client \(client) round \(round) mixed up")
            }
            return nil
          } catch {
            return error.message
          }
        }
      }
      return await group.reduce(into: [String]()) { if let failure = $1 { $0.append(failure) } }
    }
    await listener.close()
    acceptor.cancel()
    try check.expect(failures.isEmpty, "\(failures.count) of 16 connections failed: \(failures.first ?? "")")
  }

  // MARK: Closing

  static func orderlyClose(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let pair = try await pair(harness, check)
    try await check.step("send before close") { () async throws(DissociatedIPCError) in
      for index in 0 ..< 3 { try await pair.server.sendFrame([Payload.make(count: 64, seed: UInt64(index))]) }
      for index in 0 ..< 2 { try await pair.server.sendTagged(UInt64(index), [Payload.make(count: 32, seed: UInt64(index))]) }
    }
    await pair.server.close()
    await pair.server.close()  // idempotent
    for index in 0 ..< 3 {
      let frame = try await check.step("frame \(index) after close") { () async throws(DissociatedIPCError) in try await pair.client.receiveFrame() }
      try check.expect(frame == Payload.make(count: 64, seed: UInt64(index)), "frame \(index) sent before close was lost")
    }
    let end = try await check.step("receive at end") { () async throws(DissociatedIPCError) in try await pair.client.receiveFrame() }
    try check.expect(end == nil, "a frame after the peer's close")
    for index in 0 ..< 2 {
      let message = try await check.step("tagged \(index) after close") { () async throws(DissociatedIPCError) in
        try await pair.client.receiveTagged(matching: UInt64(index), mask: .max)
      }
      try check.expect(message?.payload == Payload.make(count: 32, seed: UInt64(index)), "tagged \(index) sent before close was lost")
    }
    let tagEnd = try await check.step("tagged at end") { () async throws(DissociatedIPCError) in
      try await pair.client.receiveTagged(matching: 0, mask: 0)
    }
    try check.expect(tagEnd == nil, "a tagged message after the peer's close")

    // A receive pending on a connection that is closed locally wakes up.
    let other = try await self.pair(harness, check)
    let pending = Task { () -> Bool in
      do { return try await other.client.receiveFrame() == nil } catch { return (error as? DissociatedIPCError)?.code == .connectionClosed }
    }
    try? await Task.sleep(for: .milliseconds(20))
    await other.client.close()
    try check.expect(await pending.value, "a pending receive did not end with nil or connectionClosed after close")
    try await check.expectError(.connectionClosed, "send after close") { () async throws(DissociatedIPCError) in
      try await other.client.sendFrame([ArrowBytes(copying: [1])])
    } as Void
    await other.close()
    await pair.close()
  }

  static func vanishingPeer(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let messages = try StreamMaker.messages(batches: 1, largeRows: 0)
    var catalog = StreamCatalog()
    catalog.add("hang", .producer({
      AsyncThrowingStream { continuation in
        for message in messages { continuation.yield(message) }
        // …and then nothing more, for ever: the server is about to vanish.
      }
    }))
    let server = try await check.step("start server") { () async throws(DissociatedIPCError) in
      try await DissociatedServer(listeningAt: harness.listenAddress.description, catalog: catalog, registry: harness.registry)
    }
    let running = Task { await server.run() }
    defer { running.cancel() }
    var stream = DissociatedClient(registry: harness.registry).stream(from: server.location(for: "hang")).makeAsyncIterator()
    for _ in 0 ..< messages.count {
      _ = try await check.step("receive before the server vanishes") { () async throws(DissociatedIPCError) in try await stream.next() }
    }
    await server.shutdown(graceful: false)
    try await check.expectError(.streamTruncated, "the stream after the server vanished") { () async throws(DissociatedIPCError) in
      _ = try await stream.next()
    } as Void
  }

  // MARK: Remote memory and streams

  static func remoteMemory(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let pair = try await pair(harness, check)
    defer { Task { await pair.close() } }
    guard harness.transport.capabilities.remoteMemory else {
      try check.expect(pair.server.remoteMemory == nil, "remote memory offered but not declared in capabilities")
      return
    }
    guard let serverMemory = pair.server.remoteMemory, let clientMemory = pair.client.remoteMemory else {
      throw check.fail("capabilities declare remote memory, but a connection has none")
    }
    for size in [1, 4096, 1 << 20] {
      let bytes = Payload.make(count: size, seed: UInt64(size))
      let region = try await check.step("expose") { () async throws(DissociatedIPCError) in try await serverMemory.expose(bytes) }
      try await Self.passMessage(pair, check, tag: UInt64(size))
      let fetched = try await check.step("fetch") { () async throws(DissociatedIPCError) in try await clientMemory.fetch(region.ranges) }
      try check.expect(fetched == bytes, "fetched \(fetched.count) bytes differ from the \(size) exposed")
      let last = region.ranges[region.ranges.count - 1]
      try await check.expectError(.malformedDescriptor, "a range past the exposed bytes") { () async throws(DissociatedIPCError) in
        _ = try await clientMemory.fetch([RemoteRange(address: last.address, length: last.length + 1)])
      } as Void
      await serverMemory.release(region.id)
      try await Self.passMessage(pair, check, tag: UInt64(size) | 1 << 32)
      try await check.expectError(.malformedDescriptor, "a released region") { () async throws(DissociatedIPCError) in
        _ = try await clientMemory.fetch(region.ranges)
      } as Void
    }
  }

  /// Sends a tagged message from the server and receives it at the
  /// client: what the protocol does between exposing a region and the
  /// client's fetch (the descriptor), and after a release (RemoteMemory's
  /// ordering contract).
  static func passMessage(_ pair: Pair, _ check: Checker, tag: UInt64) async throws(ConformanceFailure) {
    try await check.step("send a message after exposing or releasing") { () async throws(DissociatedIPCError) in
      try await pair.server.sendTagged(tag, [])
    }
    let message = try await check.step("receive it") { () async throws(DissociatedIPCError) in
      try await pair.client.receiveTagged(matching: tag, mask: .max)
    }
    try check.expect(message?.tag == tag, "the message after exposing or releasing did not arrive")
  }

  static func fullStream(_ harness: ConformanceHarness, _ check: Checker, twoConnections: Bool) async throws(ConformanceFailure) {
    let messages = try StreamMaker.messages(batches: 4, largeRows: 40_000)
    var catalog = StreamCatalog()
    catalog.add("full", .messages(messages))
    let server = try await check.step("start server") { () async throws(DissociatedIPCError) in
      try await DissociatedServer(listeningAt: harness.listenAddress.description, catalog: catalog, registry: harness.registry)
    }
    let running = Task { await server.run() }
    defer { running.cancel() }
    let client = DissociatedClient(registry: harness.registry)
    let stream = twoConnections
      ? client.stream(from: server.location(for: "full", role: .metadata), dataLocation: server.location(for: "full", role: .data))
      : client.stream(from: server.location(for: "full"))
    var received: [(Message, ArrowBytes)] = []
    var iterator = stream.makeAsyncIterator()
    do throws(DissociatedIPCError) {
      while let item = try await iterator.next() {
        switch item {
        case .schema(let schema): received.append((Message(header: .schema(schema)), ArrowBytes()))
        case .dictionary(let dictionary): received.append((dictionary.values.message, dictionary.values.body))
        case .recordBatch(let batch): received.append((batch.message, batch.body))
        }
      }
    } catch {
      throw check.fail("the stream failed after \(received.count) messages: \(error)")
    }
    try check.expect(received.count == messages.count, "received \(received.count) messages of \(messages.count)")
    for (index, (message, body)) in received.enumerated() {
      guard let source = try? Message.decode(messages[index].metadata) else { throw check.fail("source message \(index) does not decode") }
      try check.expect(message.header == source.header && message.bodyLength == source.bodyLength, "message \(index) metadata differs")
      try check.expect(body == messages[index].body, "message \(index) body differs (\(body.count) vs \(messages[index].body.count) bytes)")
    }
    // Closing once every body is released ends the connections in order:
    // the server lets go of them without waiting for silence (DIPC-FREE-6).
    received.removeAll()
    await iterator.close()
    while server.stats.connections > 0 { try? await Task.sleep(for: .milliseconds(5)) }
    await server.shutdown()
  }

  static func unknownTicket(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    var catalog = StreamCatalog()
    catalog.add("known", .messages(try StreamMaker.messages(batches: 1, largeRows: 0)))
    let server = try await check.step("start server") { () async throws(DissociatedIPCError) in
      try await DissociatedServer(listeningAt: harness.listenAddress.description, catalog: catalog, registry: harness.registry)
    }
    let running = Task { await server.run() }
    defer { running.cancel() }
    let client = DissociatedClient(registry: harness.registry)
    try await check.expectError(.peerError, "fetching an unknown ticket") { () async throws(DissociatedIPCError) in
      do throws(DissociatedIPCError) {
        for try await _ in client.stream(from: server.location(for: "unknown")) {}
      } catch {
        // The server names the reason in its error frame (DIPC-ERR-3).
        if !error.detail.contains("unknownTicket") { throw DissociatedIPCError(.unexpectedMessage, "\(error)") }
        throw error
      }
    } as Void
    var count = 0
    do throws(DissociatedIPCError) {
      for try await _ in client.stream(from: server.location(for: "known")) { count += 1 }
    } catch {
      throw check.fail("the server stopped serving after an unknown ticket: \(error)")
    }
    try check.expect(count == 3, "the known stream delivered \(count) items, expected 3")
    await server.shutdown()
  }

  static func foreignFreeData(_ harness: ConformanceHarness, _ check: Checker) async throws(ConformanceFailure) {
    let messages = try StreamMaker.messages(batches: 40, largeRows: 0)
    var catalog = StreamCatalog()
    catalog.add("known", .messages(messages))
    // A slow producer keeps the stream open while the free_data arrives.
    catalog.add("slow", .producer({
      AsyncThrowingStream { continuation in
        let task = Task {
          for message in messages {
            continuation.yield(message)
            try? await Task.sleep(for: .milliseconds(10))
          }
          continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
      }
    }))
    let server = try await check.step("start server") { () async throws(DissociatedIPCError) in
      try await DissociatedServer(listeningAt: harness.listenAddress.description, catalog: catalog, registry: harness.registry)
    }
    let running = Task { await server.run() }
    defer { running.cancel() }
    let location = server.location(for: "slow")
    let connection = try await check.step("connect") { () async throws(DissociatedIPCError) in
      try await harness.transport.connect(to: location)
    }
    try await check.step("want_data") { () async throws(DissociatedIPCError) in
      try await connection.sendTagged(location.wantData, [ArrowBytes(copying: Array("slow".utf8))])
    }
    var refused = false
    var freeDataSent = false
    while !refused {
      let frame = try await check.step("receive metadata") { () async throws(DissociatedIPCError) in try await connection.receiveFrame() }
      guard let frame else { break }
      if !freeDataSent {
        // After the first frame, so the server has the stream: a transport
        // may deliver tagged messages out of order, and a free_data that
        // overtook want_data would not be this stream's.
        try await check.step("free_data of an address never handed out") { () async throws(DissociatedIPCError) in
          try await connection.sendTagged(ControlTag.freeData, [ArrowBytes(copying: FreeDataPayload.encode([0xDEAD_BEEF]))])
        }
        freeDataSent = true
      }
      let decoded = try await check.step("decode frame") { () throws(DissociatedIPCError) in try MetadataFrame.decode(frame) }
      guard case .error(let code, _) = decoded else { continue }
      try check.expect(code == .unknownFreeAddress, "the server's error frame says \(code), expected unknownFreeAddress")
      refused = true
    }
    await connection.close()
    try check.expect(refused, "the stream ended without the server refusing the foreign free_data")
    var count = 0
    do throws(DissociatedIPCError) {
      for try await _ in DissociatedClient(registry: harness.registry).stream(from: server.location(for: "known")) { count += 1 }
    } catch {
      throw check.fail("the server stopped serving after a foreign free_data: \(error)")
    }
    try check.expect(count == messages.count, "the known stream delivered \(count) items, expected \(messages.count)")
    await server.shutdown()
  }
}
