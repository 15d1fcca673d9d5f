#if Flight
import ArrowIPC
public import DissociatedIPC
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2Posix
import GRPCProtobuf

/// Reads a stream found through Arrow Flight: asks the service for the
/// stream's FlightInfo, then reads it from the first of its locations that
/// this process has a transport for and that answers, and with plain
/// DoGet from the service when none does (FLIGHT-CLIENT-1).
public struct FlightFetcher: Sendable {
  /// How a stream is named to the service.
  public enum Name: Sendable {
    /// A path of one element (what `dipc serve` and pyarrow users give).
    case path(String)
    /// A command: opaque bytes (what the reference's client sends).
    case command([UInt8])
  }

  /// The transports tried for dissociated locations.
  public var registry: TransportRegistry
  /// The settings of the dissociated client.
  public var clientConfig: DissociatedClient.Config
  /// The largest Flight message accepted (a FlightInfo, or one DoGet
  /// batch): 1 GiB (FLIGHT-LIM-2).
  public var maxMessageBytes = 1 << 30

  /// A fetcher trying `registry`'s transports.
  public init(registry: TransportRegistry, clientConfig: DissociatedClient.Config = .defaults) {
    self.registry = registry
    self.clientConfig = clientConfig
  }

  /// Reads the stream `name` names on the Flight service at `host:port`,
  /// calling `consume` with each item in stream order (the schema first),
  /// and returns which path ran and why the others did not.
  ///
  /// - Throws: `RPCError` from the service (NOT_FOUND for an unknown
  ///   name), a `DissociatedIPCError` from the stream once it started,
  ///   `.invalidArrow` for Flight data that is not a valid Arrow stream.
  public func fetch(host: String, port: Int, name: Name,
                    consume: @escaping @Sendable (ReceivedItem) async throws -> Void) async throws -> FlightFetchReport {
    let target: any ResolvableTarget = host.contains(":") ? .ipv6(address: host, port: port) : .ipv4(address: host, port: port)
    let transport = try HTTP2ClientTransport.Posix(target: target, transportSecurity: .plaintext)
    let (registry, clientConfig, maxMessageBytes) = (registry, clientConfig, maxMessageBytes)
    return try await withGRPCClient(transport: transport) { grpc in
      let service = Arrow_Flight_Protocol_FlightService.Client(wrapping: grpc)
      var options = CallOptions.defaults
      options.maxResponseMessageBytes = maxMessageBytes
      options.maxRequestMessageBytes = maxMessageBytes  // grpc-swift's client decodes responses within this one too
      // A service that accepts the connection and never answers fails in time too.
      var infoOptions = options
      infoOptions.timeout = clientConfig.idleTimeout
      let info = try await service.getFlightInfo(FlightNaming.descriptor(for: name), options: infoOptions)
      guard let endpoint = info.endpoint.first else {
        throw DissociatedIPCError(.invalidLocation, "the FlightInfo has no endpoint")
      }
      var report = FlightFetchReport()
      // The locations this process could read, in order; the others are passed over here.
      var usable: [Location] = []
      for uri in endpoint.location.map(\.uri) {
        let printable = FlightNaming.printable(String(uri.prefix(512)))
        // The Flight service's own location is DoGet's, the last resort.
        guard !FlightFetchReport.isFlightService(uri) else { continue }
        guard let location = try? Location(parsing: uri) else {
          report.passed.append((printable, "not a Dissociated IPC location"))
          continue
        }
        guard (try? registry.transport(forScheme: location.scheme)) != nil else {
          report.passed.append((printable, "no transport for \(location.scheme):// here"))
          continue
        }
        usable.append(location)
      }
      for (metadata, data) in FlightFetchReport.streams(usable) {
        var iterator = DissociatedClient(registry: registry, config: clientConfig)
          .stream(from: metadata, ticket: [UInt8](endpoint.ticket.ticket), dataLocation: data).makeAsyncIterator()
        let shown = data.map { "\(metadata) + \($0)" } ?? metadata.description
        let first: ReceivedItem?
        do {
          first = try await iterator.next()
        } catch {
          // Nothing was handed out yet: the next location may serve it.
          await iterator.close()
          report.passed.append((shown, FlightNaming.printable(String(describing: error))))
          continue
        }
        report.path = .dissociated(location: shown, transport: iterator.paths)
        do {
          if let first { try await consume(first) }
          while let item = try await iterator.next() { try await consume(item) }
        } catch {
          await iterator.close()
          throw error
        }
        await iterator.close()
        return report
      }
      report.path = .flightDoGet
      try await service.doGet(endpoint.ticket, options: options) { response in
        var decoder = FlightDataDecoder()
        for try await data in response.messages {
          if let item = try decoder.decode(data) { try await consume(item) }
        }
        try decoder.finish()
      }
      return report
    }
  }
}

/// How a ``FlightFetcher`` read a stream.
public struct FlightFetchReport: Sendable, CustomStringConvertible {
  /// The path that ran.
  public enum Path: Sendable, Equatable {
    /// A Dissociated IPC location, and its transport's path report.
    case dissociated(location: String, transport: [String])
    /// Flight DoGet from the service asked.
    case flightDoGet
  }

  /// The path that ran.
  public var path = Path.flightDoGet
  /// The locations passed over, in order, each with the reason (escaped).
  public var passed: [(location: String, reason: String)] = []

  /// "LOCATION (transport path)" or "Flight DoGet", then "; passed over:
  /// LOCATION (reason), …".
  public var description: String {
    let taken = switch path {
    case .dissociated(let location, let transport): "\(location) (\(transport.joined(separator: "; ")))"
    case .flightDoGet: "Flight DoGet"
    }
    let skipped = passed.map { "\($0.location) (\($0.reason))" }
    return taken + (skipped.isEmpty ? "" : "; passed over: " + skipped.joined(separator: ", "))
  }

  /// The streams `locations` offer, in order: a location alone, or two
  /// neighbours that name one listener with different `want_data` read as
  /// one stream, the first for the metadata and the second for the bodies
  /// (the reference server's endpoints, FLIGHT-CLIENT-2).
  static func streams(_ locations: [Location]) -> [(metadata: Location, data: Location?)] {
    var streams: [(metadata: Location, data: Location?)] = []
    var index = locations.startIndex
    while index < locations.endIndex {
      let location = locations[index]
      let next = locations.index(after: index)
      if next < locations.endIndex, case let partner = locations[next], partner.scheme == location.scheme,
         partner.host == location.host, partner.port == location.port, partner.path == location.path,
         partner.wantData != location.wantData {
        streams.append((location, partner))
        index = locations.index(after: next)
      } else {
        streams.append((location, nil))
        index = next
      }
    }
    return streams
  }

  /// Whether `uri` names a Flight service: `grpc`, `grpc+tcp`, `grpc+tls`
  /// or Flight's "this service" (`arrow-flight-reuse-connection`).
  static func isFlightService(_ uri: String) -> Bool {
    ["grpc:", "grpc+tcp:", "grpc+tls:", "grpc+unix:", "arrow-flight-reuse-connection:"].contains { uri.lowercased().hasPrefix($0) }
  }
}

/// Turns DoGet's FlightData into stream items, checking each message as
/// an Arrow stream's (FLIGHT-DATA-2): whatever the peer sends is hostile.
struct FlightDataDecoder {
  private var validator = ArrowStreamValidator()
  let limits: ArrowIPCLimits

  init(limits: ArrowIPCLimits = .defaults) { self.limits = limits }

  /// The item `data` carries; nil for a message with no header (app
  /// metadata only).
  mutating func decode(_ data: Arrow_Flight_Protocol_FlightData) throws(DissociatedIPCError) -> ReceivedItem? {
    guard !data.dataHeader.isEmpty else { return nil }
    do throws(ArrowIPCError) {
      let message = try Message.decode(ArrowBytes(copying: data.dataHeader), limits: limits)
      guard message.bodyLength == Int64(data.dataBody.count) else {
        throw ArrowIPCError(.layoutMismatch, "a FlightData body of \(data.dataBody.count) bytes for a message of bodyLength \(message.bodyLength)")
      }
      let body = ArrowBytes(copying: data.dataBody)
      guard let item = try validator.accept(message, body: body) else {
        guard let schema = validator.schema else { throw ArrowIPCError(.invalidStream, "no schema") }
        return .schema(schema)
      }
      switch item {
      case .dictionary(let dictionary): return .dictionary(dictionary)
      case .recordBatch(let batch): return .recordBatch(batch)
      }
    } catch {
      throw DissociatedIPCError(error)
    }
  }

  /// Checks that the stream had its schema.
  func finish() throws(DissociatedIPCError) {
    guard validator.schema != nil else {
      throw DissociatedIPCError(ArrowIPCError(.invalidStream, "the Flight stream ended before its schema"))
    }
  }
}
#endif
