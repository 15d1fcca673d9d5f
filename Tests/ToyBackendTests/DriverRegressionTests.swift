// Regression tests for driver behaviour the toy backend exposed: a
// cancelled server must not end streams early, a cancelled run() stops
// listening, and an abandoned client stream releases its connection.

import ArrowIPC
import DissociatedIPC
import Synchronization
import Testing

/// A toy transport that remembers (weakly) the client connections it made.
final class TrackingToyTransport: DissociatedTransport {
  final class Weak: @unchecked Sendable { weak var connection: (any TransportConnection)? }
  let toy = ToyTransport()
  let made = Mutex<[Weak]>([])
  var scheme: String { toy.scheme }
  var capabilities: TransportCapabilities { toy.capabilities }

  func listen(at address: TransportAddress) async throws(DissociatedIPCError) -> any TransportListener {
    try await toy.listen(at: address)
  }

  func connect(to location: Location) async throws(DissociatedIPCError) -> any TransportConnection {
    let connection = try await toy.connect(to: location)
    let weak = Weak()
    weak.connection = connection
    made.withLock { $0.append(weak) }
    return connection
  }

  var alive: Int { made.withLock { $0.count { $0.connection != nil } } }
}

/// A producer that yields `messages` one every 20 ms.
func slowProducer(_ messages: [OutgoingMessage]) -> StreamSource {
  .producer({
    AsyncThrowingStream { continuation in
      let task = Task {
        for message in messages {
          try? await Task.sleep(for: .milliseconds(20))
          continuation.yield(message)
        }
        continuation.finish()
      }
      continuation.onTermination = { _ in task.cancel() }
    }
  })
}

@Suite struct DriverIssueTests {
  /// Cancelling `DissociatedServer.run()` mid-stream: the producer's
  /// AsyncThrowingStream returns nil when its task is cancelled, and
  /// ServerSession.run takes that for the source's end, so it sends
  /// end_of_stream and the client accepts a short stream as complete.
  @Test("a cancelled server fails its streams instead of ending them early")
  func cancelledServerMustNotEndStreamsEarly() async throws {
    let messages = try ToyStream(batches: 20, rows: 3).messages()
    var catalog = StreamCatalog()
    catalog.add("slow", slowProducer(messages))
    var registry = TransportRegistry()
    registry.register(ToyTransport())
    let server = try await DissociatedServer(listeningAt: "toy://", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    let canceller = Task {
      try await Task.sleep(for: .milliseconds(150))
      running.cancel()
    }
    var items = 0
    var failed = false
    do throws(DissociatedIPCError) {
      for try await _ in DissociatedClient(registry: registry).stream(from: server.location(for: "slow")) { items += 1 }
    } catch {
      failed = true
    }
    _ = await canceller.result
    #expect(failed || items == messages.count, "the stream ended normally after \(items) of \(messages.count) items")
    await server.shutdown()
  }

  /// After `run()` was cancelled its listener stays bound: clients connect
  /// and wait for the idle timeout instead of being refused.
  @Test("a cancelled run() closes its listener")
  func cancelledRunStopsListening() async throws {
    var registry = TransportRegistry()
    registry.register(ToyTransport())
    var catalog = StreamCatalog()
    catalog.add("s", .messages(try ToyStream().messages()))
    let server = try await DissociatedServer(listeningAt: "toy://", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    running.cancel()
    await running.value
    var config = DissociatedClient.Config.defaults
    config.idleTimeout = .seconds(1)
    var caught: DissociatedIPCError?
    do throws(DissociatedIPCError) {
      for try await _ in DissociatedClient(registry: registry, config: config).stream(from: server.location(for: "s")) {}
    } catch {
      caught = error
    }
    #expect(caught?.code == .connectionRefused)
    await server.shutdown()
  }

  /// A consumer that stops iterating early: ClientSession has no deinit,
  /// its readers block in the full event queue for ever, so the connection
  /// is neither closed nor freed (with a flow-controlled backend the server
  /// would stay blocked too).
  @Test("abandoning a ReceivedStream releases its connection")
  func abandonedStreamReleasesItsConnection() async throws {
    let transport = TrackingToyTransport()
    var registry = TransportRegistry()
    registry.register(transport)
    var catalog = StreamCatalog()
    catalog.add("big", .messages(try ToyStream(batches: 100, rows: 3).messages()))  // > readAhead events
    let server = try await DissociatedServer(listeningAt: "toy://", catalog: catalog, registry: registry)
    let running = Task { await server.run() }
    do {
      var iterator = DissociatedClient(registry: registry).stream(from: server.location(for: "big")).makeAsyncIterator()
      _ = try await iterator.next()
      _ = try await iterator.next()
    }
    for _ in 0 ..< 100 where transport.alive > 0 { try await Task.sleep(for: .milliseconds(20)) }
    #expect(transport.alive == 0, "the abandoned stream's connection is still alive after 2 s")
    await server.shutdown()
    await running.value
  }
}
