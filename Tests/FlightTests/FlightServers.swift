#if Flight
import DissociatedIPC
import DissociatedIPCFlight
import DissociatedIPCTransports

/// Runs `body` with a tcp:// server of `catalog` and a Flight service in
/// front of it that advertises `before` (locations a client cannot use),
/// then the server's own location; stops both afterwards.
func withFlightServers(_ catalog: StreamCatalog, advertising before: [Location] = [],
                       _ body: (FlightServer, DissociatedServer) async throws -> Void) async throws {
  let server = try await DissociatedServer(listeningAt: "tcp://127.0.0.1", catalog: catalog, registry: .builtIn)
  let serving = Task { await server.run() }
  let flight = try await FlightServer(service: FlightCatalogService(catalog: catalog) { before + [server.location(for: $0)] })
  do {
    try await body(flight, server)
  } catch {
    flight.shutdown()
    await server.shutdown()
    throw error
  }
  flight.shutdown()
  await flight.run()
  await server.shutdown()
  _ = await serving.value
}
#endif
