import ArgumentParser
import DissociatedIPCTransports
import Foundation

/// The `dipc` command-line tool.
@main
struct DIPC: AsyncParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dipc",
    abstract: "Move Apache Arrow data with the Dissociated IPC protocol.",
    discussion: """
      Serve Arrow IPC stream files and fetch them by location URI over any
      registered transport (see `dipc transports`):

        dipc serve data.arrows --listen tcp://127.0.0.1:7000
        dipc fetch 'tcp://127.0.0.1:7000?want_data=…&ticket=data.arrows' --out copy.arrows

      `dipc demo` runs a server and a client end to end with no arguments.
      """,
    subcommands: [Serve.self, Fetch.self, Transports.self, Demo.self, Bench.self, Inspect.self, Echo.self]
  )

  /// Runs the command as ArgumentParser would, closes every ucx://
  /// connection, and leaves; without running library destructors where
  /// UCX's can abort (1.13's did in about one `dipc fetch` exit in a
  /// hundred, UCX-LIM-6).
  static func main() async {
    var code: Int32 = 0
    do {
      var command = try parseAsRoot()
      if var asyncCommand = command as? any AsyncParsableCommand {
        try await asyncCommand.run()
      } else {
        try command.run()
      }
    } catch {
      let exitCode = exitCode(for: error)
      let message = fullMessage(for: error)
      if !message.isEmpty {
        if exitCode == .success {
          print(message)
        } else {
          FileHandle.standardError.write(Data((message + "\n").utf8))
        }
      }
      code = exitCode.rawValue
    }
    #if UCX
    UCXTransport.closeAllConnections()
    if UCXTransport.libraryDestructorsMayAbort {
      fflush(nil)
      _exit(code)
    }
    #endif
    Foundation.exit(code)
  }
}
