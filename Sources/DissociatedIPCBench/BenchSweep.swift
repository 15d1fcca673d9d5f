import Foundation

extension TransportBench {
  /// The bulk group (bulk, copy and their baselines) at each body size of
  /// `sizes`, one ``run(progress:)`` per size: `bulkBytes` per size, but
  /// at least 16 and at most 4,096 batches of it.
  public func sweep(sizes: [Int], progress: (String) -> Void = { _ in }) async throws -> BenchSweep {
    var results: [Int: [String: [BenchMeasurement]]] = [:]
    for size in sizes {
      var bench = self
      bench.batchBytes = size
      bench.bulkBytes = min(max(bulkBytes, 16 * size), 4096 * size)
      bench.caseGroups = ["bulk"]
      results[size] = try await bench.run { progress("\(Units.bytes(Double(size))) bodies: \($0)") }.measurements
    }
    return BenchSweep(sizes: sizes, measurements: results)
  }
}

/// The bulk group's throughput at several body sizes.
public struct BenchSweep: Sendable {
  /// The body sizes, in the order run.
  public var sizes: [Int]
  /// Each size's measurements, by case name.
  public var measurements: [Int: [String: [BenchMeasurement]]]

  /// The cases measured at every size (transports first, then baselines).
  var cases: [String] {
    let keys = sizes.map { Set(measurements[$0, default: [:]].keys) }
    let common = keys.dropFirst().reduce(keys.first ?? []) { $0.intersection($1) }
    return BenchResults.ordered(common, where: BenchResults.isThroughputCase)
  }

  /// The median throughput of `name` at `size`, in GB/s.
  func median(_ name: String, _ size: Int) -> Double {
    BenchResults.median(measurements[size]?[name]?.map { $0.bytesPerSecond / 1e9 } ?? [])
  }

  /// A Markdown table: one row per case, one column per size (medians, GB/s).
  public var markdown: String {
    var text = "| case | " + sizes.map { Units.bytes(Double($0)) }.joined(separator: " | ") + " |\n"
    text += "|---|" + String(repeating: "---|", count: sizes.count) + "\n"
    for name in cases {
      text += "| \(BenchResults.cell(name)) | " + sizes.map { String(format: "%.2f", median(name, $0)) }.joined(separator: " | ") + " |\n"
    }
    return text
  }

  /// A line chart (SVG) of each case's median throughput against the body
  /// size, both logarithmic (memcpy runs an order of magnitude above the
  /// transports), transports in colour, baselines in grey, each with its
  /// own dashes.
  public var chart: String {
    let names = cases
    let (left, top, width, height) = (60.0, 30.0, 560.0, 300.0)
    let values = names.flatMap { name in sizes.map { median(name, $0) } }.filter { $0.isFinite && $0 > 0 }
    let low = (values.min() ?? 0.1).log10Floor
    let high = max((values.max() ?? 1).log10Ceiling, low + 1)
    let x = { (index: Int) in left + (self.sizes.count > 1 ? width * Double(index) / Double(self.sizes.count - 1) : width / 2) }
    let y = { (value: Double) in top + height - height * (Foundation.log10(max(value, 1e-9)) - low) / (high - low) }
    let palette = ["#3b78c2", "#d9534f", "#5cb85c", "#f0ad4e", "#8e44ad", "#17a2b8", "#795548", "#e83e8c"]
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(left + width + 230))" height="\(Int(top + height + 50))" \
      font-family="sans-serif" font-size="12">
      <text x="4" y="16" font-weight="bold">Throughput (GB/s, median, logarithmic) by body size</text>
      <line x1="\(Int(left))" y1="\(Int(top + height))" x2="\(Int(left + width))" y2="\(Int(top + height))" stroke="black"/>
      <line x1="\(Int(left))" y1="\(Int(top))" x2="\(Int(left))" y2="\(Int(top + height))" stroke="black"/>

      """
    for exponent in Int(low) ... Int(high) {
      let value = Foundation.pow(10, Double(exponent))
      svg += String(format: "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%@</text>\n", Int(left - 6), y(value) + 4,
                    exponent < 0 ? String(format: "%.*f", -exponent, value) : String(format: "%.0f", value))
      svg += String(format: "<line x1=\"%d\" x2=\"%d\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#dddddd\"/>\n", Int(left), Int(left + width), y(value), y(value))
    }
    for (index, size) in sizes.enumerated() {
      svg += String(format: "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%@</text>\n", x(index), Int(top + height + 18),
                    Units.bytes(Double(size)))
    }
    let dashes = ["5,4", "2,3", "9,3,2,3", "1,2"]
    var (colour, dash) = (0, 0)
    for (row, name) in names.enumerated() {
      let baseline = BenchResults.isBaseline(name)
      let stroke = baseline ? "#888888" : palette[colour % palette.count]
      let pattern = baseline ? " stroke-dasharray=\"\(dashes[dash % dashes.count])\"" : ""
      if baseline { dash += 1 } else { colour += 1 }
      let points = sizes.indices.map { String(format: "%.1f,%.1f", x($0), y(median(name, sizes[$0]))) }.joined(separator: " ")
      svg += "<polyline fill=\"none\" stroke=\"\(stroke)\" stroke-width=\"2\"\(pattern) points=\"\(points)\"/>\n"
      let legendY = Int(top) + row * 18
      svg += "<line x1=\"\(Int(left + width + 20))\" x2=\"\(Int(left + width + 44))\" y1=\"\(legendY)\" y2=\"\(legendY)\" stroke=\"\(stroke)\" stroke-width=\"2\"\(pattern)/>\n"
      svg += "<text x=\"\(Int(left + width + 50))\" y=\"\(legendY + 4)\">\(BenchResults.escaped(name))</text>\n"
    }
    return svg + "</svg>\n"
  }
}

extension Double {
  /// The largest integer power of ten at or below this positive value, as its exponent.
  fileprivate var log10Floor: Double { Foundation.floor(Foundation.log10(self)) }
  /// The smallest integer power of ten at or above this positive value, as its exponent.
  fileprivate var log10Ceiling: Double { Foundation.ceil(Foundation.log10(self)) }
}
