import ArgumentParser

/// The `dipc` command-line tool.
@main
struct DIPC: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "dipc",
    abstract: "Move Apache Arrow data with the Dissociated IPC protocol.",
    discussion: """
      Run `dipc demo` for an end-to-end check with no arguments, or
      `dipc inspect FILE` to see what an Arrow IPC stream file holds.
      """,
    subcommands: [Demo.self, Inspect.self]
  )
}
