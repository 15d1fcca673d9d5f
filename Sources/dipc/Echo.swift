import ArgumentParser
import DissociatedIPCBench
import DissociatedIPCTransports
import Foundation

/// `dipc echo`: the far end of `dipc bench`'s round trips when its servers
/// run as separate processes. Not listed in `dipc --help`.
struct Echo: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Send back every tagged message each connection receives (dipc bench's round-trip server).",
    discussion: """
      Listens at --listen, prints `echo<TAB>LOCATION` and sends every tagged
      message a connection receives back on that connection with its tag,
      until interrupted.
      """,
    shouldDisplay: false
  )

  @Option(help: "Where to listen, e.g. tcp://127.0.0.1:0.")
  var listen: String

  func run() async throws {
    let address = try TransportAddress(parsing: listen)
    let transport = try TransportRegistry.builtIn.transport(forScheme: address.scheme)
    let listener = try await transport.listen(at: address)
    // Unbuffered: the bench reads the location while this runs.
    FileHandle.standardOutput.write(Data("echo\t\(listener.address.location(wantData: 0))\n".utf8))
    await withTaskGroup(of: Void.self) { group in
      while let connection = try? await listener.accept() {
        group.addTask { try? await TransportBench.echo(on: connection) }
      }
    }
  }
}
