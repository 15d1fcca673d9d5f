#if Flight
public import ArrowIPC
public import DissociatedIPC
import Foundation
public import GRPCCore

/// Arrow Flight in front of a ``StreamCatalog``: clients list the streams
/// and get their FlightInfo, whose endpoint names the Dissociated IPC
/// locations that serve each stream (fastest first) and, last, this
/// service itself (`arrow-flight-reuse-connection://?`); a client with
/// none of those transports reads the stream with DoGet, as plain Flight
/// data (Spec/flight.md).
///
/// A stream's descriptor is a path of one element, its ticket as text,
/// or a command whose bytes are the ticket (FLIGHT-DESC-1).
public struct FlightCatalogService: Arrow_Flight_Protocol_FlightService.SimpleServiceProtocol {
  /// The streams served.
  public let catalog: StreamCatalog
  /// The Dissociated IPC locations of a ticket's stream, in the order a
  /// client should try them.
  public let locations: @Sendable ([UInt8]) -> [Location]
  /// Flight's name for "the service that gave this FlightInfo", listed
  /// last in every endpoint: where DoGet reads the stream.
  public static let reuseConnection = "arrow-flight-reuse-connection://?"
  /// Limits applied to every served file's messages.
  public let limits: ArrowIPCLimits

  /// A service of `catalog`, advertising `locations(ticket)` and then
  /// itself for each stream.
  public init(catalog: StreamCatalog, limits: ArrowIPCLimits = .defaults,
              locations: @escaping @Sendable ([UInt8]) -> [Location]) {
    self.catalog = catalog
    self.limits = limits
    self.locations = locations
  }

  public func handshake(
    request: RPCAsyncSequence<Arrow_Flight_Protocol_HandshakeRequest, any Error>,
    response: RPCWriter<Arrow_Flight_Protocol_HandshakeResponse>, context: ServerContext
  ) async throws {
    // No authentication: each request is answered with its protocol version and no payload (FLIGHT-RPC-2).
    for try await message in request {
      var answer = Arrow_Flight_Protocol_HandshakeResponse()
      answer.protocolVersion = message.protocolVersion
      try await response.write(answer)
    }
  }

  public func listFlights(
    request: Arrow_Flight_Protocol_Criteria, response: RPCWriter<Arrow_Flight_Protocol_FlightInfo>, context: ServerContext
  ) async throws {
    for ticket in catalog.tickets.sorted(by: { $0.lexicographicallyPrecedes($1) }) {
      try await response.write(try await info(ticket: ticket, descriptor: FlightNaming.descriptor(for: ticket)))
    }
  }

  public func getFlightInfo(
    request: Arrow_Flight_Protocol_FlightDescriptor, context: ServerContext
  ) async throws -> Arrow_Flight_Protocol_FlightInfo {
    try await info(ticket: try ticket(of: request), descriptor: request)
  }

  public func pollFlightInfo(
    request: Arrow_Flight_Protocol_FlightDescriptor, context: ServerContext
  ) async throws -> Arrow_Flight_Protocol_PollInfo {
    var poll = Arrow_Flight_Protocol_PollInfo()
    poll.info = try await info(ticket: try ticket(of: request), descriptor: request)
    return poll  // complete at once: no flight_descriptor to poll again
  }

  public func getSchema(
    request: Arrow_Flight_Protocol_FlightDescriptor, context: ServerContext
  ) async throws -> Arrow_Flight_Protocol_SchemaResult {
    var result = Arrow_Flight_Protocol_SchemaResult()
    result.schema = try await schema(of: try ticket(of: request))
    return result
  }

  public func doGet(
    request: Arrow_Flight_Protocol_Ticket, response: RPCWriter<Arrow_Flight_Protocol_FlightData>, context: ServerContext
  ) async throws {
    let ticket = [UInt8](request.ticket)
    guard let source = catalog[ticket] else { throw FlightNaming.notFound(ticket) }
    var messages = source.openMessages(limits: limits)
    do {
      while let message = try await messages.next() {
        var data = Arrow_Flight_Protocol_FlightData()
        data.dataHeader = FlightNaming.data(message.metadata)
        data.dataBody = FlightNaming.data(message.body)
        try await response.write(data)
      }
    } catch let error as RPCError {
      throw error
    } catch {
      // A file truncated or rewritten under the server, say: the stream
      // ends with a status the client sees (FLIGHT-RPC-4).
      throw RPCError(code: .internalError, message: "the stream failed: \(FlightNaming.printable(String(describing: error)))")
    }
  }

  public func doPut(
    request: RPCAsyncSequence<Arrow_Flight_Protocol_FlightData, any Error>,
    response: RPCWriter<Arrow_Flight_Protocol_PutResult>, context: ServerContext
  ) async throws {
    throw RPCError(code: .unimplemented, message: "this Flight service only serves streams")
  }

  public func doExchange(
    request: RPCAsyncSequence<Arrow_Flight_Protocol_FlightData, any Error>,
    response: RPCWriter<Arrow_Flight_Protocol_FlightData>, context: ServerContext
  ) async throws {
    throw RPCError(code: .unimplemented, message: "this Flight service only serves streams")
  }

  public func doAction(
    request: Arrow_Flight_Protocol_Action, response: RPCWriter<Arrow_Flight_Protocol_Result>, context: ServerContext
  ) async throws {
    throw RPCError(code: .unimplemented, message: "this Flight service has no actions")
  }

  public func listActions(
    request: Arrow_Flight_Protocol_Empty, response: RPCWriter<Arrow_Flight_Protocol_ActionType>, context: ServerContext
  ) async throws {}

  /// The ticket `descriptor` names, if the catalog has it.
  func ticket(of descriptor: Arrow_Flight_Protocol_FlightDescriptor) throws -> [UInt8] {
    let ticket = try FlightNaming.ticket(of: descriptor)
    guard catalog[ticket] != nil else { throw FlightNaming.notFound(ticket) }
    return ticket
  }

  /// The FlightInfo of `ticket`'s stream, described by `descriptor`: its
  /// schema, and one endpoint with the ticket and every location.
  func info(ticket: [UInt8], descriptor: Arrow_Flight_Protocol_FlightDescriptor) async throws -> Arrow_Flight_Protocol_FlightInfo {
    var info = Arrow_Flight_Protocol_FlightInfo()
    info.schema = try await schema(of: ticket)
    info.flightDescriptor = descriptor
    var endpoint = Arrow_Flight_Protocol_FlightEndpoint()
    endpoint.ticket.ticket = Data(ticket)
    endpoint.location = (locations(ticket).map(\.description) + [Self.reuseConnection]).map { uri in
      var location = Arrow_Flight_Protocol_Location()
      location.uri = uri
      return location
    }
    info.endpoint = [endpoint]
    info.totalRecords = -1  // unknown without reading the whole stream
    info.totalBytes = -1
    info.ordered = true
    return info
  }

  /// The stream's Schema message, encapsulated as Flight carries schemas
  /// (continuation marker, length, flatbuffer, padding).
  func schema(of ticket: [UInt8]) async throws -> Data {
    guard let source = catalog[ticket] else { throw FlightNaming.notFound(ticket) }
    var messages = source.openMessages(limits: limits)
    do {
      guard let first = try await messages.next(), first.kind == .schema else {
        throw RPCError(code: .internalError, message: "the stream does not start with a schema")
      }
      return Data(IPCFraming.encapsulate(metadata: first.metadata.array))
    } catch let error as RPCError {
      throw error
    } catch {
      throw RPCError(code: .internalError, message: "cannot read the stream: \(FlightNaming.printable(String(describing: error)))")
    }
  }
}
#endif
