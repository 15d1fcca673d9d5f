// swift-tools-version: 6.1
//
// Benchmarks for swift-dissociated-ipc, kept in a nested package so library
// users never build the benchmark harness. Run from this folder:
//   swift package --allow-writing-to-package-directory benchmark
// (README "Benchmarks" has the filters and formats.)

import PackageDescription

let package = Package(
  name: "swift-dissociated-ipc-benchmarks",
  platforms: [.macOS(.v15)],
  dependencies: [
    // `name:` pins the identity: a plain path would take the clone folder's name.
    .package(name: "swift-dissociated-ipc", path: "../"),
    // Only MallocInterposer: the default traits add RuntimeInterposer, whose
    // package is not available here; with no traits, malloc counts read 0.
    .package(url: "https://github.com/ordo-one/benchmark", exact: "1.38.1", traits: ["MallocInterposer"]),
  ],
  targets: [
    // Run lengths and the allocation thresholds both benchmark targets use.
    .target(
      name: "BenchmarkSupport",
      dependencies: [.product(name: "Benchmark", package: "benchmark")],
      path: "Benchmarks/BenchmarkSupport",
      swiftSettings: [.swiftLanguageMode(.v6)]
    ),
    .executableTarget(
      name: "ArrowIPCBenchmarks",
      dependencies: [
        "BenchmarkSupport",
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "ArrowIPC", package: "swift-dissociated-ipc"),
      ],
      path: "Benchmarks/ArrowIPCBenchmarks",
      swiftSettings: [.swiftLanguageMode(.v6)],
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ),
    .executableTarget(
      name: "ProtocolBenchmarks",
      dependencies: [
        "BenchmarkSupport",
        .product(name: "Benchmark", package: "benchmark"),
        .product(name: "ArrowIPC", package: "swift-dissociated-ipc"),
        .product(name: "DissociatedIPC", package: "swift-dissociated-ipc"),
        .product(name: "DissociatedIPCBackendKit", package: "swift-dissociated-ipc"),
      ],
      path: "Benchmarks/ProtocolBenchmarks",
      swiftSettings: [.swiftLanguageMode(.v6)],
      plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    ),
  ]
)
