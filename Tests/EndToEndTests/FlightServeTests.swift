#if Flight
import Foundation
import TestSupport
import Testing

/// `dipc serve --flight`: the Flight service beside the dissociated
/// listener, as users start it, with pyarrow.flight as the client.
@Suite("dipc serve --flight")
struct FlightServeTests {
  @Test("pyarrow.flight finds a served file with dipc serve's own location first, and its DoGet delivers the file's content")
  func pyarrowFindsAndReads() async throws {
    let folder = try InteropCorpus.folder.get()
    let file = folder.appendingPathComponent("dictionary_delta.arrows").path
    let server = try Processes.Server(files: [file], listen: "tcp://127.0.0.1", options: ["--flight", "0"])
    defer { server.stop() }
    let flight = try #require(server.locations["flight"]?["combined"])
    #expect(flight.hasPrefix("grpc+tcp://127.0.0.1:"), "\(flight)")
    let uri = flight.replacingOccurrences(of: "grpc+tcp://", with: "grpc://")
    let script = ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/flight_check.py").path
    let received = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-flight-\(UUID().uuidString).arrows").path
    defer { try? FileManager.default.removeItem(atPath: received) }
    // arrow_check.py equal exits 1, and ChildProcess.run throws, when the contents differ.
    let info = try await offPool {
      let info = try ChildProcess.run(["python3", script, "info", uri, "dictionary_delta.arrows"])
      try ChildProcess.run(["python3", script, "get", uri, "dictionary_delta.arrows", received])
      let checker = ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/arrow_check.py").path
      try ChildProcess.run(["python3", checker, "equal", file, received])
      return info
    }
    let locations = try JSONSerialization.jsonObject(with: Data(info.utf8)) as? [String]
    #expect(locations == [server.locations["dictionary_delta.arrows"]?["combined"] ?? "?", "arrow-flight-reuse-connection://?"])
    #expect(server.stop())
  }

  @Test("dipc fetch grpc://… finds the stream through Flight, reads it over the server's shm:// location and writes the file's content; an unknown name fails with the service's answer")
  func dipcFetchDiscovers() async throws {
    let folder = try InteropCorpus.folder.get()
    let file = folder.appendingPathComponent("compressed_none.arrows").path
    let server = try Processes.Server(files: [file], listen: "shm://", options: ["--flight", "0"])
    defer { server.stop() }
    let flight = try #require(server.locations["flight"]?["combined"]).replacingOccurrences(of: "grpc+tcp://", with: "grpc://")
    let received = FileManager.default.temporaryDirectory.appendingPathComponent("dipc-flight-\(UUID().uuidString).arrows").path
    defer { try? FileManager.default.removeItem(atPath: received) }
    let (printed, missing) = try await offPool {
      // Standard error onto standard output.
      let launcher = ["sh", "-c", "exec \"$@\" 2>&1", "sh"]
      let printed = try Processes.run(try Processes.dipc, ["fetch", flight, "--ticket", "compressed_none.arrows", "--out", received],
                                      launcher: launcher)
      try ChildProcess.run(["python3", ChildProcess.repositoryRoot.appendingPathComponent("Tests/Interop/arrow_check.py").path,
                            "equal", file, received])
      // Without the launcher: a failure's message is the program's standard error.
      let missing = Result { try Processes.run(try Processes.dipc, ["fetch", flight, "--ticket", "absent", "--out", "/dev/null"]) }
      return (printed, missing)
    }
    let summary = try #require(printed.split(separator: "\n").last { $0.hasPrefix("dipc fetch: ") }, "\(printed)")
    let location = try #require(server.locations["compressed_none.arrows"]?["combined"])
    #expect(summary.contains("; path: \(location) (shm"), "\(summary)")
    // The first location served: nothing was passed over.
    #expect(!summary.contains("passed over"), "\(summary)")
    #expect { try missing.get() } throws: { "\($0)".contains("no stream has the ticket absent") }
    #expect(server.stop())
  }
}
#endif
