import ArgumentParser
import DissociatedIPCTransports
import Foundation

/// `dipc transports`: the registered schemes and what they can do.
struct Transports: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "List the registered transports and their capabilities."
  )

  func run() {
    let registry = TransportRegistry.builtIn
    print("scheme    remote memory  bodies fetched by")
    for scheme in registry.schemes {
      guard let transport = try? registry.transport(forScheme: scheme) else { continue }
      let capabilities = transport.capabilities
      let remote = capabilities.remoteMemory ? "yes" : "no"
      let fetch = capabilities.remoteMemory ? (capabilities.fetchesByMapping ? "mapping (zero copy)" : "copy") : "inline only"
      print(scheme.padding(toLength: 10, withPad: " ", startingAt: 0) + remote.padding(toLength: 15, withPad: " ", startingAt: 0) + fetch)
    }
    #if UCX
    print("\nucx:// runs UCX \(UCXTransport.libraryVersion)")
    #endif
    #if Fabric
    let providers = FabricTransport.availableProviders
    print("\nfabric:// providers here (choose with ?provider=NAME): " + (providers.isEmpty ? "none" : providers.joined(separator: ", ")))
    #endif
  }
}
