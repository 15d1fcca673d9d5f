import ArgumentParser

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
    subcommands: [Serve.self, Fetch.self, Transports.self, Demo.self, Bench.self, Inspect.self]
  )
}
