#if Flight
import ArrowIPC
import DissociatedIPC
@testable import DissociatedIPCFlight
import DissociatedIPCTransports
import Foundation
import GRPCCore
import TestSupport
import Testing

/// The discovering client: the first location it can use that answers,
/// the next one when one does not, DoGet when none is left, and a typed
/// error for Flight data that is not an Arrow stream.
@Suite("Flight fetcher", .serialized)
struct FlightFetcherTests {
  /// The record batches' row counts and body bytes `name` delivers over
  /// `fetcher` from `flight`, and how it was read.
  static func fetch(_ fetcher: FlightFetcher, _ flight: FlightServer, _ name: FlightFetcher.Name) async throws
    -> (rows: [Int], bodies: [[UInt8]], report: FlightFetchReport) {
    final class Collected: @unchecked Sendable {
      var rows: [Int] = []
      var bodies: [[UInt8]] = []
      var schemas = 0
    }
    let collected = Collected()
    let report = try await fetcher.fetch(host: "127.0.0.1", port: flight.port, name: name) { item in
      switch item {
      case .schema: collected.schemas += 1
      case .dictionary: break
      case .recordBatch(let batch):
        collected.rows.append(batch.rowCount)
        collected.bodies.append(batch.body.array)
      }
    }
    #expect(collected.schemas == 1)
    return (collected.rows, collected.bodies, report)
  }

  static func catalog() throws -> (StreamCatalog, [OutgoingMessage]) {
    let messages = try int64Stream(batches: 5, rows: 1_000)
    var catalog = StreamCatalog()
    catalog.add("numbers", .messages(messages))
    return (catalog, messages)
  }

  @Test("the first location with a transport here is read over it; the Flight service itself is passed over")
  func readsTheDissociatedLocation() async throws {
    let (catalog, messages) = try Self.catalog()
    try await withFlightServers(catalog) { flight, server in
      let (rows, bodies, report) = try await Self.fetch(FlightFetcher(registry: .builtIn), flight, .path("numbers"))
      #expect(rows == [1_000, 1_000, 1_000, 1_000, 1_000])
      #expect(bodies == messages.dropFirst().map(\.body.array))
      guard case .dissociated(let location, let transport) = report.path else {
        Issue.record("read with DoGet: \(report)")
        return
      }
      #expect(location == server.location(for: "numbers").description)
      #expect(transport.first?.hasPrefix("tcp") == true, "\(transport)")
    }
  }

  @Test("a location that does not answer and one of a scheme this process lacks are passed over, with their reasons; the next location serves")
  func fallsBackToTheNextLocation() async throws {
    let (catalog, _) = try Self.catalog()
    // A port nothing listens on: a listener opened and closed at once.
    let closed = try await TCPTransport().listen(at: TransportAddress(parsing: "tcp://127.0.0.1"))
    let deadAddress = closed.address.location(wantData: 1)
    await closed.close()
    let foreign = try Location(parsing: "nosuch://127.0.0.1:9?want_data=1")
    try await withFlightServers(catalog, advertising: [foreign, deadAddress]) { flight, server in
      let (rows, _, report) = try await Self.fetch(FlightFetcher(registry: .builtIn), flight, .command(Array("numbers".utf8)))
      #expect(rows.count == 5)
      guard case .dissociated(let location, _) = report.path else {
        Issue.record("read with DoGet: \(report)")
        return
      }
      #expect(location == server.location(for: "numbers").description)
      #expect(report.passed.map(\.location) == [foreign.description, deadAddress.description], "\(report)")
      #expect(report.passed.first?.reason == "no transport for nosuch:// here", "\(report)")
      #expect(report.passed.dropFirst().first?.reason.contains("connect") == true, "\(report)")
    }
  }

  @Test("an endpoint shaped as the reference server's (one listener's metadata location, then its data location) is read as one stream over both")
  func readsTheReferenceShapedPair() async throws {
    let (catalog, messages) = try Self.catalog()
    let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1", catalog: catalog, registry: .builtIn)
    let serving = Task { await server.run() }
    let flight = try await FlightServer(service: FlightCatalogService(catalog: catalog) { ticket in
      [server.location(for: ticket, role: .metadata), server.location(for: ticket, role: .data)]
    })
    let result: Result<(rows: [Int], bodies: [[UInt8]], report: FlightFetchReport), any Error>
    do {
      result = .success(try await Self.fetch(FlightFetcher(registry: .builtIn), flight, .command(Array("numbers".utf8))))
    } catch {
      result = .failure(error)
    }
    flight.shutdown()
    await flight.run()
    await server.shutdown()
    _ = await serving.value
    let (rows, bodies, report) = try result.get()
    #expect(rows.count == 5 && bodies == messages.dropFirst().map(\.body.array))
    let pair = "\(server.location(for: "numbers", role: .metadata)) + \(server.location(for: "numbers", role: .data))"
    guard case .dissociated(let location, let transport) = report.path else {
      Issue.record("read with DoGet: \(report)")
      return
    }
    #expect(location == pair)
    #expect(transport.count == 2, "\(transport)")
  }

  @Test("with no usable location the stream is read with DoGet, intact")
  func fallsBackToDoGet() async throws {
    let (catalog, messages) = try Self.catalog()
    var onlyTCP = TransportRegistry()
    onlyTCP.register(SharedMemoryTransport())  // a registry without tcp://: the advertised location is unusable
    try await withFlightServers(catalog) { flight, _ in
      let (rows, bodies, report) = try await Self.fetch(FlightFetcher(registry: onlyTCP), flight, .path("numbers"))
      #expect(report.path == .flightDoGet, "\(report)")
      #expect(rows == [1_000, 1_000, 1_000, 1_000, 1_000])
      #expect(bodies == messages.dropFirst().map(\.body.array))
      #expect(report.passed.map(\.reason) == ["no transport for tcp:// here"], "\(report)")
    }
  }

  @Test("an unknown name is the service's NOT_FOUND")
  func unknownName() async throws {
    let (catalog, _) = try Self.catalog()
    try await withFlightServers(catalog) { flight, _ in
      await #expect { try await Self.fetch(FlightFetcher(registry: .builtIn), flight, .path("absent")) } throws: { error in
        (error as? RPCError)?.code == .notFound
      }
    }
  }

  @Test("Flight data that is not an Arrow stream is a typed error: a garbage header, a body of the wrong size, a batch before the schema")
  func malformedFlightData() throws {
    let messages = try int64Stream(batches: 1, rows: 8)
    func data(_ header: [UInt8], _ body: [UInt8]) -> Arrow_Flight_Protocol_FlightData {
      var data = Arrow_Flight_Protocol_FlightData()
      data.dataHeader = Data(header)
      data.dataBody = Data(body)
      return data
    }
    var decoder = FlightDataDecoder()
    #expect(throws: DissociatedIPCError.self) { try decoder.decode(data(Array(repeating: 0xAB, count: 64), [])) }
    decoder = FlightDataDecoder()
    let schema = data(messages[0].metadata.array, [])
    let batch = messages[1]
    #expect(try decoder.decode(schema) != nil)
    #expect { try decoder.decode(data(batch.metadata.array, Array(batch.body.array.dropLast(8)))) } throws: { error in
      (error as? DissociatedIPCError)?.code == .invalidArrow
    }
    decoder = FlightDataDecoder()
    #expect { try decoder.decode(data(batch.metadata.array, batch.body.array)) } throws: { error in
      (error as? DissociatedIPCError)?.code == .invalidArrow
    }
    #expect(throws: DissociatedIPCError.self) { try FlightDataDecoder().finish() }
    // A message with application metadata only is no item.
    var metadataOnly = Arrow_Flight_Protocol_FlightData()
    metadataOnly.appMetadata = Data([1, 2, 3])
    decoder = FlightDataDecoder()
    #expect(try decoder.decode(metadataOnly) == nil)
  }
}
#endif
