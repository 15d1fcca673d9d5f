// swift-tools-version: 6.1
//
// swift-dissociated-ipc: Arrow's Dissociated IPC protocol for Swift.
// Module prefix: `ArrowIPC` is the Arrow IPC codec, `DissociatedIPC…` the
// protocol core and its transport backends.

import PackageDescription

/// Settings every target shares: Swift 6 mode and the upcoming features that
/// keep imports and existentials explicit.
let strictSettings: [SwiftSetting] = [
  .swiftLanguageMode(.v6),
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("InternalImportsByDefault"),
  .enableUpcomingFeature("MemberImportVisibility"),
  // Async functions run on their caller's executor unless marked
  // @concurrent: no executor hop per send and receive on the hot path.
  .enableUpcomingFeature("NonisolatedNonsendingByDefault"),
]

/// A dependency on the ucx:// backend target, taken only with the UCX trait.
func ucx(_ target: String) -> Target.Dependency { .target(name: target, condition: .when(traits: ["UCX"])) }

/// A dependency on the fabric:// backend target, taken only with the Fabric trait.
func fabric(_ target: String) -> Target.Dependency { .target(name: target, condition: .when(traits: ["Fabric"])) }

/// A dependency on gRPC and protobuf products, taken only with the Flight trait.
func flight(_ product: String, _ package: String) -> Target.Dependency {
  .product(name: product, package: package, condition: .when(traits: ["Flight"]))
}

let package = Package(
  name: "swift-dissociated-ipc",
  products: [
    .library(name: "ArrowIPC", targets: ["ArrowIPC"]),
    .library(name: "DissociatedIPC", targets: ["DissociatedIPC"]),
    .library(name: "DissociatedIPCBackendKit", targets: ["DissociatedIPCBackendKit"]),
    .library(name: "DissociatedIPCConformance", targets: ["DissociatedIPCConformance"]),
    .library(name: "DissociatedIPCTCP", targets: ["DissociatedIPCTCP"]),
    .library(name: "DissociatedIPCSharedMemory", targets: ["DissociatedIPCSharedMemory"]),
    .library(name: "DissociatedIPCUCX", targets: ["DissociatedIPCUCX"]),
    .library(name: "DissociatedIPCFabric", targets: ["DissociatedIPCFabric"]),
    .library(name: "DissociatedIPCFlight", targets: ["DissociatedIPCFlight"]),
    .library(name: "DissociatedIPCTransports", targets: ["DissociatedIPCTransports"]),
    .library(name: "DissociatedIPCBench", targets: ["DissociatedIPCBench"]),
    .executable(name: "dipc", targets: ["dipc"]),
  ],
  // The native backends are traits, on by default: a build without UCX or
  // libfabric installed leaves them out with
  // `swift build --disable-default-traits` (or `--traits Fabric`, `--traits UCX`
  // for one of them). Code that names a backend's types sits under
  // `#if UCX` / `#if Fabric`.
  traits: [
    .trait(name: "UCX", description: "The ucx:// backend over UCX (libucx-dev)."),
    .trait(name: "Fabric", description: "The fabric:// backend over libfabric (libfabric-dev)."),
    .trait(name: "Flight", description: "Arrow Flight in front of the servers (gRPC, SwiftNIO, swift-protobuf): dipc serve --flight."),
    .default(enabledTraits: ["UCX", "Fabric", "Flight"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
    .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
    .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
    .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
    .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
    .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
  ],
  targets: [
    // The Arrow IPC codec: flatbuffers, messages, stream format, body layout.
    // No I/O beyond mapping a file; no Foundation.
    .target(
      name: "ArrowIPC",
      swiftSettings: strictSettings
    ),
    // The protocol core: wire codecs, state machines, the Transport
    // protocol, the registry, drivers and the in-process transport.
    .target(
      name: "DissociatedIPC",
      dependencies: ["ArrowIPC", .product(name: "Logging", package: "swift-log")],
      swiftSettings: strictSettings
    ),
    // What backends share and a third party's backend needs too: the
    // message inbox with software tag matching, the accept queue,
    // connection slots, dedicated threads, the lazy writer; and the
    // in-process transport built with them (`inproc://`).
    .target(
      name: "DissociatedIPCBackendKit",
      dependencies: ["DissociatedIPC", "ArrowIPC"],
      swiftSettings: strictSettings
    ),
    // The shared conformance suite every backend runs (no XCTest), shipped
    // so third-party backends can prove themselves too.
    .target(
      name: "DissociatedIPCConformance",
      dependencies: ["DissociatedIPC", "ArrowIPC"],
      swiftSettings: strictSettings
    ),
    // tcp:// (Spec/tcp.md): POSIX sockets with a reader and a writer thread
    // per connection.
    .target(
      name: "DissociatedIPCTCP",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC"],
      swiftSettings: strictSettings
    ),
    // shm:// (Spec/shm.md): a Unix SOCK_SEQPACKET control socket, payloads
    // in sealed memfd segments passed with SCM_RIGHTS.
    .target(
      name: "DissociatedIPCSharedMemory",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "CDissociatedIPCSharedMemory"],
      swiftSettings: strictSettings
    ),
    // What shm:// needs from C that Swift cannot import (memfd_create,
    // seal constants, CMSG_* macros).
    .target(name: "CDissociatedIPCSharedMemory"),
    // ucx:// (Spec/ucx.md): UCP active messages for metadata, tagged
    // messages for bodies, one worker and progress thread per connection.
    .target(
      name: "DissociatedIPCUCX",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "CUCX", "CDissociatedIPCEnvironmentDefaults"],
      swiftSettings: strictSettings
    ),
    // The built-in backends' default UCX and libfabric settings, put in the
    // environment by a load-time constructor, before any thread starts
    // (UCX-CONF-2, FABRIC-MEM-1).
    .target(name: "CDissociatedIPCEnvironmentDefaults"),
    // UCX's C API (libucx-dev) and static inline shims for its macros.
    .systemLibrary(name: "CUCX", pkgConfig: "ucx", providers: [.apt(["libucx-dev"])]),
    // fabric:// (Spec/fabric.md): libfabric RDM endpoints, tagged messages
    // and remote reads over whichever provider a location names.
    .target(
      name: "DissociatedIPCFabric",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "CLibfabric", "CDissociatedIPCEnvironmentDefaults"],
      swiftSettings: strictSettings
    ),
    // libfabric's C API (libfabric-dev) and shims for what Swift cannot import.
    .systemLibrary(name: "CLibfabric", pkgConfig: "libfabric", providers: [.apt(["libfabric-dev"])]),
    // Every built-in backend: `TransportRegistry.builtIn`.
    .target(
      name: "DissociatedIPCTransports",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "DissociatedIPCTCP", "DissociatedIPCSharedMemory",
                     ucx("DissociatedIPCUCX"), fabric("DissociatedIPCFabric")],
      swiftSettings: strictSettings
    ),
    // The transport benchmark harness (`dipc bench`): cases, baselines,
    // child servers, the report.
    .target(
      name: "DissociatedIPCBench",
      dependencies: ["ArrowIPC", "DissociatedIPCTransports"],
      swiftSettings: strictSettings
    ),
    // The command-line tool.
    // Arrow Flight in front of a catalog: the service, its server and the
    // code generated from Protos/Flight.proto (scripts/generate-flight.sh).
    // Empty without the Flight trait, so gRPC and SwiftNIO are built only
    // for those who want them.
    .target(
      name: "DissociatedIPCFlight",
      dependencies: [
        "ArrowIPC", "DissociatedIPC",
        flight("GRPCCore", "grpc-swift-2"),
        flight("GRPCNIOTransportHTTP2Posix", "grpc-swift-nio-transport"),
        flight("GRPCProtobuf", "grpc-swift-protobuf"),
        flight("SwiftProtobuf", "swift-protobuf"),
      ],
      swiftSettings: strictSettings
    ),
    .executableTarget(
      name: "dipc",
      dependencies: [
        "ArrowIPC",
        "DissociatedIPCBench",
        .target(name: "DissociatedIPCFlight", condition: .when(traits: ["Flight"])),
        "DissociatedIPCTransports",
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
      ],
      swiftSettings: strictSettings
    ),
    // `swift package arrow-corpus`: writes the pyarrow interop corpus.
    .plugin(
      name: "ArrowCorpusPlugin",
      capability: .command(
        intent: .custom(verb: "arrow-corpus", description: "Write the pyarrow Arrow IPC test corpus"),
        permissions: [.writeToPackageDirectory(reason: "The corpus is written under .build/ by default")]
      )
    ),
    // `swift package benchmark-transports`: runs `dipc bench` and writes
    // the transport report (Benchmarks/Reports/latest).
    .plugin(
      name: "TransportBenchPlugin",
      capability: .command(
        intent: .custom(verb: "benchmark-transports", description: "Compare every transport with its baselines and write the report"),
        permissions: [.writeToPackageDirectory(reason: "The report is written to Benchmarks/Reports/latest (or .build/ with --quick)")]
      )
    ),
    // The fuzz targets: entry points over everything a peer or a file
    // controls, driven by libFuzzer (scripts/fuzz.sh) and replayed by FuzzTests.
    .target(
      name: "FuzzTargets",
      dependencies: ["ArrowIPC", "DissociatedIPC", "DissociatedIPCTCP", "DissociatedIPCSharedMemory", "DissociatedIPCFabric"],
      path: "Fuzz/FuzzTargets",
      swiftSettings: strictSettings
    ),
    // Helpers the test targets share: running child processes, reading /proc, test streams.
    .target(
      name: "TestSupport",
      dependencies: ["ArrowIPC", "DissociatedIPC"],
      path: "Tests/TestSupport",
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "FlightTests",
      dependencies: [
        "ArrowIPC", "DissociatedIPC", "DissociatedIPCTransports", "TestSupport",
        .target(name: "DissociatedIPCFlight", condition: .when(traits: ["Flight"])),
        flight("GRPCCore", "grpc-swift-2"),
      ],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "ArrowIPCTests",
      dependencies: ["ArrowIPC", "TestSupport", "FuzzTargets"],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "DissociatedIPCTests",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "DissociatedIPCConformance"],
      swiftSettings: strictSettings
    ),
    // A backend written outside the core, as a user would: proves the
    // "add your own backend" promise end to end.
    .testTarget(
      name: "TCPTests",
      dependencies: ["DissociatedIPCTCP", "DissociatedIPC", "ArrowIPC", "DissociatedIPCConformance", "TestSupport"],
      swiftSettings: strictSettings
    ),
    // The conformance suite and the backend's own tests over shm://.
    .testTarget(
      name: "SharedMemoryTests",
      dependencies: ["DissociatedIPCSharedMemory", "DissociatedIPC", "ArrowIPC", "DissociatedIPCConformance", "TestSupport"],
      swiftSettings: strictSettings
    ),
    // The conformance suite over ucx:// (UCX_TLS=tcp and tcp,sm,self).
    .testTarget(
      name: "UCXTests",
      dependencies: [ucx("DissociatedIPCUCX"), "DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "DissociatedIPCConformance", "TestSupport"],
      swiftSettings: strictSettings
    ),
    // fabric:// over the libfabric providers present (tcp;ofi_rxm, shm).
    .testTarget(
      name: "FabricTests",
      dependencies: [fabric("DissociatedIPCFabric"), "DissociatedIPC", "DissociatedIPCConformance", "TestSupport"],
      swiftSettings: strictSettings
    ),
    // dipc serve and dipc fetch as separate processes, checked by pyarrow.
    .testTarget(
      name: "EndToEndTests",
      dependencies: ["dipc", "TestSupport", "DissociatedIPC", "DissociatedIPCTransports", "ArrowIPC",
                     .product(name: "Logging", package: "swift-log")],
      swiftSettings: strictSettings
    ),
    // Every fuzz target on its seeds, on random inputs, and on every input
    // that once crashed it (Fuzz/Regressions).
    .testTarget(
      name: "FuzzTests",
      dependencies: ["FuzzTargets", "TestSupport"],
      swiftSettings: strictSettings
    ),
    // The bench harness as a library (dipc bench's figures end to end are
    // in EndToEndTests).
    .testTarget(
      name: "BenchHarnessTests",
      dependencies: ["DissociatedIPCBench", "DissociatedIPCTransports", "ArrowIPC"],
      swiftSettings: strictSettings
    ),
    .testTarget(
      name: "ToyBackendTests",
      dependencies: ["DissociatedIPC", "DissociatedIPCBackendKit", "ArrowIPC", "DissociatedIPCConformance"],
      swiftSettings: strictSettings
    ),
  ]
)

// The libFuzzer driver exists only in fuzzing builds (scripts/fuzz.sh sets
// DIPC_FUZZ=1): libFuzzer supplies its `main`, which a plain build lacks.
if Context.environment["DIPC_FUZZ"] == "1" {
  package.targets.append(.executableTarget(
    name: "dipc-fuzz",
    dependencies: ["FuzzTargets"],
    path: "Fuzz/Driver",
    swiftSettings: strictSettings
  ))
}
