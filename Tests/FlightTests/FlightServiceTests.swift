#if Flight
import ArrowIPC
import DissociatedIPC
import DissociatedIPCFlight
import DissociatedIPCTransports
import Foundation
import TestSupport
import Testing

/// The Flight front door with pyarrow.flight as the client: listing,
/// FlightInfo (schema, ticket, our locations unchanged), GetSchema, the
/// DoGet fallback, and what an unknown name gets.
@Suite("Flight service", .serialized)
struct FlightServiceTests {
  static let script = ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/flight_check.py").path
  static let checker = ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/arrow_check.py").path

  @Test("pyarrow.flight lists every corpus stream with the file's schema, its ticket and our locations unchanged, then the Flight service itself; DoGet delivers each stream with the source's content")
  func pyarrowListsAndReads() async throws {
    let folder = try InteropCorpus.folder.get()
    let files = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".arrows") }.sorted()
    #expect(files.count > 10)
    var catalog = StreamCatalog()
    for file in files { catalog.add(file, .file(path: folder.appendingPathComponent(file).path)) }
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-flight-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: output, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: output) }
    try await withFlightServers(catalog) { flight, server in
      let uri = "grpc://127.0.0.1:\(flight.port)"
      let listing = try await offPool { try ChildProcess.run(["python3", Self.script, "list", uri, folder.path]) }
      var listed: [String: [String]] = [:]
      for line in listing.split(separator: "\n") {
        let entry = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
        let path = entry?["path"] as? String ?? ""
        #expect(entry?["ticket"] as? String == path)
        listed[path] = entry?["locations"] as? [String]
      }
      #expect(listed.keys.sorted() == files)
      for file in files {
        #expect(listed[file] == [server.location(for: file).description, FlightCatalogService.reuseConnection], "\(file)")
      }
      // Every stream through DoGet, then the content hashes of sources and copies side by side.
      let hashes = try await offPool {
        try ChildProcess.run(["python3", Self.script, "get-all", uri, output.path])
        return try ChildProcess.run(["python3", Self.checker, "hash"] + files.map { folder.appendingPathComponent($0).path }
                                      + files.map { output.appendingPathComponent($0).path })
      }
      let digests = hashes.split(separator: "\n").map { $0.split(separator: " ", maxSplits: 1).first.map(String.init) ?? "" }
      #expect(digests.count == 2 * files.count, "\(hashes)")
      for (index, file) in files.enumerated() where digests.count == 2 * files.count {
        #expect(digests[index] == digests[files.count + index], "\(file): the stream DoGet delivered differs from the file")
      }
    }
  }

  @Test("a location with a query string of its own (fabric://'s provider, a percent-encoded ticket) reaches pyarrow unchanged")
  func locationsRoundTrip() async throws {
    var catalog = StreamCatalog()
    catalog.add("a b&c=d", .messages(try int64Stream(batches: 2, rows: 4)))
    let odd = try Location(parsing: "fabric://127.0.0.1:7000?provider=tcp&want_data=7&ticket=a%20b%26c%3Dd&x=%2F")
    let server = try await FlightServer(service: FlightCatalogService(catalog: catalog) { _ in [odd] })
    defer { server.shutdown() }
    let text = try await offPool {
      try ChildProcess.run(["python3", Self.script, "info", "grpc://127.0.0.1:\(server.port)", "a b&c=d"])
    }
    let locations = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String]
    #expect(locations == [odd.description, FlightCatalogService.reuseConnection])
    server.shutdown()
    await server.run()
  }

  @Test("an unknown name is NOT_FOUND with the name escaped; a path of two elements is NOT_FOUND too")
  func unknownNames() async throws {
    var catalog = StreamCatalog()
    catalog.add("present", .messages(try int64Stream(batches: 2, rows: 4)))
    let server = try await FlightServer(service: FlightCatalogService(catalog: catalog) { _ in [] })
    let uri = "grpc://127.0.0.1:\(server.port)"
    let (missing, twoElements) = try await offPool {
      (try ChildProcess.run(["python3", Self.script, "error", uri, "absent\u{1B}[31m"]),
       try ChildProcess.run(["python3", Self.script, "error", uri, "present", "more"]))
    }
    // pyarrow raises ArrowKeyError for gRPC's NOT_FOUND; the peer's escape byte arrives escaped.
    #expect(missing.hasPrefix("ArrowKeyError: Flight returned not found error"), "\(missing)")
    #expect(missing.contains("no stream has the ticket absent\\u{1B}[31m"), "\(missing)")
    #expect(twoElements.hasPrefix("ArrowKeyError: Flight returned not found error"), "\(twoElements)")
    #expect(twoElements.contains("a path of 2 elements names no stream"), "\(twoElements)")
    server.shutdown()
    await server.run()
  }
}
#endif
