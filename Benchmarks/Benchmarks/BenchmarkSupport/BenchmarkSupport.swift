// What both benchmark targets share: how long a benchmark runs, and the
// allocation budget CI holds every benchmark to.

public import Benchmark
#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Whether the run only checks allocation counts (`DIPC_BENCHMARK_QUICK=1`,
/// as `scripts/check-allocations.sh` runs it): a few iterations suffice,
/// since counts do not vary like times.
public let allocationCheckOnly = Environment.flag("DIPC_BENCHMARK_QUICK")

/// A configuration measuring `metrics` for at most `seconds` (a fraction of
/// a second when only allocations are checked), holding
/// `mallocCountTotal` to its checked-in threshold (`Thresholds/`) within
/// `allocationSlack` allocations per iteration at the 90th percentile.
public func configuration(
  metrics: [BenchmarkMetric] = [.wallClock, .mallocCountTotal, .throughput], seconds: Int = 2, allocationSlack: Int = 0
) -> Benchmark.Configuration {
  .init(
    metrics: metrics,
    maxDuration: allocationCheckOnly ? .milliseconds(300) : .seconds(seconds),
    maxIterations: allocationCheckOnly ? 200 : 1_000_000,
    thresholds: [.mallocCountTotal: .init(absolute: [.p90: allocationSlack])]
  )
}

enum Environment {
  /// Whether the environment variable `name` is set to `1`.
  static func flag(_ name: String) -> Bool {
    guard let value = getenv(name) else { return false }
    return String(cString: value) == "1"
  }
}
