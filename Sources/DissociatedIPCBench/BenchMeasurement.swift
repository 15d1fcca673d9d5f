import Foundation

/// One timed transfer: a case of one round.
public struct BenchMeasurement: Sendable {
  /// The case's time: from the connect to the last batch, or the
  /// baseline's own figure (one round trip for round-trip cases).
  public var seconds: Double
  /// Body bytes moved.
  public var bytes: Int
  /// Record batches (or messages) moved.
  public var batches: Int
  /// The part of `seconds` before the stream's first message (the
  /// schema) arrived: connecting and asking for the stream; 0 where the
  /// case has no such phase.
  public var setupSeconds = 0.0
  /// Bytes over the data phase, setup excluded (as ucx_perftest and
  /// iperf3 count theirs): every bandwidth, ours and the baselines',
  /// compares on this one footing.
  public var bytesPerSecond: Double { Double(bytes) / (seconds - setupSeconds) }
  /// Seconds and bytes after the first tenth of the batches arrived:
  /// ucx_perftest measures after a warm-up of a tenth of its iterations
  /// (`min(-w, ⌈n/10⌉)`, unmeasured, on the same endpoints), so ratios
  /// to it compare ``steadyBytesPerSecond``; nil where the case has no
  /// such phase (its whole data phase is then steady).
  public var steady: (seconds: Double, bytes: Int)?
  /// Bytes over the time after the warm-up tenth (see ``steady``).
  public var steadyBytesPerSecond: Double { steady.map { Double($0.bytes) / $0.seconds } ?? bytesPerSecond }
  /// Batches over the whole time, setup included (as the Flight baseline
  /// counts its DoGet).
  public var batchesPerSecond: Double { Double(batches) / seconds }

  /// The path the stream's connections took (their transports' path
  /// reports); nil for baselines and round trips.
  public var path: String?

  /// A measurement of `seconds` moving `bytes` in `batches`.
  public init(seconds: Double, bytes: Int, batches: Int, setupSeconds: Double = 0,
              steady: (seconds: Double, bytes: Int)? = nil, path: String? = nil) {
    self.seconds = seconds
    self.bytes = bytes
    self.batches = batches
    self.setupSeconds = setupSeconds
    self.steady = steady
    self.path = path
  }
}
