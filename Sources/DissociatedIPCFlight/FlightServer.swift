#if Flight
import GRPCCore
import GRPCNIOTransportHTTP2Posix

/// A Flight service listening for gRPC over HTTP/2 (plaintext) on one
/// address, until shut down.
public final class FlightServer: Sendable {
  /// The host it listens on.
  public let host: String
  /// The port it listens on (the one the system chose for port 0).
  public let port: Int
  private let server: GRPCServer<HTTP2ServerTransport.Posix>
  private let serving: Task<Void, any Error>

  /// Listens on `host:port` (port 0: a free one) and serves `service`.
  /// Only that address: 127.0.0.1 by default, an IPv6 address when the
  /// host has a colon (FLIGHT-ADDR-1).
  ///
  /// - Throws: when the address cannot be bound.
  public init(service: FlightCatalogService, host: String = "127.0.0.1", port: Int = 0) async throws {
    let address: GRPCNIOTransportCore.SocketAddress = host.contains(":") ? .ipv6(host: host, port: port) : .ipv4(host: host, port: port)
    let transport = HTTP2ServerTransport.Posix(address: address, transportSecurity: .plaintext)
    let server = GRPCServer(transport: transport, services: [service])
    self.server = server
    self.serving = Task { try await server.serve() }
    do {
      let bound = try await transport.listeningAddress
      guard let boundPort = bound.ipv4?.port ?? bound.ipv6?.port else {
        throw RPCError(code: .internalError, message: "the server bound no IP address")
      }
      self.host = host
      self.port = boundPort
    } catch {
      server.beginGracefulShutdown()
      _ = await serving.result
      throw error
    }
  }

  /// Where Flight clients reach it: `grpc+tcp://host:port`.
  public var location: String { host.contains(":") ? "grpc+tcp://[\(host)]:\(port)" : "grpc+tcp://\(host):\(port)" }

  /// Returns when the server has stopped (after ``shutdown()``).
  public func run() async {
    _ = await serving.result
  }

  /// Stops accepting calls; calls in progress finish.
  public func shutdown() {
    server.beginGracefulShutdown()
  }
}
#endif
