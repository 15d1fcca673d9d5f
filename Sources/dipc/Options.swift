public import ArgumentParser
import Foundation
public import Logging
import DissociatedIPCBench
import DissociatedIPCTransports

/// Options every networked command shares.
struct CommonOptions: ParsableArguments {
  @Option(help: "Log level: trace, debug, info, notice, warning, error or critical.")
  var logLevel: Logger.Level = .warning

  /// A logger writing to standard error at the chosen level.
  func makeLogger(_ label: String) -> Logger {
    var logger = Logger(label: label, factory: { StreamLogHandler.standardError(label: $0) })
    logger.logLevel = logLevel
    return logger
  }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}

extension BenchDeployment: ExpressibleByArgument {}

extension BenchConsumer: ExpressibleByArgument {}

#if UCX
extension UCXTransport.DescriptorBodies: ExpressibleByArgument {}

extension UCXTransport.ProgressMode: ExpressibleByArgument {}
#endif

#if Fabric
extension FabricTransport.ProgressMode: ExpressibleByArgument {}
#endif

#if UCX
extension TransportRegistry {
  /// The built-in backends, with ucx:// servers sending large bodies as
  /// descriptors as `ucxDescriptors` says (UCX-RM-8; `.always` forces
  /// type 1 whatever the lanes) and ucx:// taking `ucxOptions` (UCX
  /// settings without the `UCX_` prefix, UCX-CONF-1) and progressing as
  /// `ucxProgress` says (UCX-THREAD-3).
  static func builtIn(ucxDescriptors: UCXTransport.DescriptorBodies, ucxOptions: [String: String] = [:],
                      ucxProgress: UCXTransport.ProgressMode = .blocking) -> TransportRegistry {
    var registry = TransportRegistry.builtIn
    registry.register(UCXTransport(config: .init(options: ucxOptions, progressMode: ucxProgress, descriptorBodies: ucxDescriptors)))
    return registry
  }
}
#endif

/// The host and port of `authority` (`HOST:PORT`, `[IPv6]:PORT`): a
/// non-empty host and a port of 0 to 65,535; nil otherwise.
func hostAndPort(_ authority: Substring) -> (host: String, port: Int)? {
  guard let colon = authority.lastIndex(of: ":"), let port = Int(authority[authority.index(after: colon)...]),
        (0 ... 65_535).contains(port) else { return nil }
  let host = authority[..<colon].trimmingCharacters(in: CharacterSet(charactersIn: "[]"))
  return host.isEmpty ? nil : (host, port)
}
