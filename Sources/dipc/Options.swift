public import ArgumentParser
import Foundation
public import Logging
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

/// Where a server of `scheme` listens on this machine with every default
/// (a free port on 127.0.0.1 for the socket-addressed tcp:// and ucx://, a
/// fresh socket or name otherwise).
func localListenURI(_ scheme: String) -> String {
  ["tcp", "ucx", "fabric"].contains(scheme) ? "\(scheme)://127.0.0.1" : "\(scheme)://"
}

/// Formats `bytes` with a binary unit.
func formatBytes(_ bytes: Double) -> String {
  let units = ["B", "KiB", "MiB", "GiB", "TiB"]
  var value = bytes
  var unit = 0
  while value >= 1024, unit < units.count - 1 {
    value /= 1024
    unit += 1
  }
  return unit == 0 ? "\(Int(value)) B" : String(format: "%.1f %@", value, units[unit])
}

/// Seconds in `duration`.
func seconds(_ duration: Duration) -> Double {
  Double(duration.components.seconds) + Double(duration.components.attoseconds) / 1e18
}
