import Foundation

/// What a bench run measured, and its report as text, Markdown and a chart.
public struct BenchResults: Sendable {
  /// One figure of the report.
  public struct Line: Sendable, Equatable {
    /// What is measured ("tcp:// bulk").
    public var figure: String
    /// Its median, with its unit.
    public var value: String
    /// Its ratios to the baselines, or what it counts.
    public var comparison: String
  }

  /// Every case's measurements, one per round, by case name.
  public var measurements: [String: [BenchMeasurement]]
  /// What ran: rounds, sizes, where the servers ran, what the client read.
  public var header: String
  /// The figures, transports first, then the baselines.
  public var lines: [Line]

  /// The header, then one padded line per figure.
  public var report: String {
    lines.reduce(header + "\n") { text, line in
      text + line.figure.padding(toLength: 22, withPad: " ", startingAt: 0)
        + line.value.padding(toLength: 34, withPad: " ", startingAt: 0) + line.comparison + "\n"
    }
  }

  /// The report in Markdown: what ran and where (`machine`, one item per
  /// line), the command that reproduces it, the figures, and every case's
  /// median, range and path; `chart` names a picture to show beside them.
  public func markdown(machine: [String], command: String, chart: String?) -> String {
    var text = "# Transport benchmark\n\n\(header).\n\n"
    text += machine.map { "- \($0)\n" }.joined()
    text += "\nReproduce: `\(command)`\n\n"
    if let chart { text += "![Bulk throughput](\(chart))\n\n" }
    text += "| figure | median | compared with |\n|---|---|---|\n"
    text += lines.map { "| \(Self.cell($0.figure)) | \(Self.cell($0.value)) | \(Self.cell($0.comparison)) |\n" }.joined()
    text += "\n## Every case\n\n| case | rounds | median | min–max | path |\n|---|---|---|---|---|\n"
    for name in measurements.keys.sorted() {
      let runs = measurements[name, default: []]
      let (median, low, high, unit) = Self.spread(runs, of: name)
      let path = Set(runs.compactMap(\.path)).sorted().joined(separator: "; ")
      text += "| \(Self.cell(name)) | \(runs.count) | \(median) \(unit) | \(low)–\(high) | \(Self.cell(path)) |\n"
    }
    return text
  }

  /// A horizontal bar chart (SVG) of the bulk-group cases' median
  /// throughput, each bar with its rounds' range: transports and their
  /// baselines on one scale.
  public var throughputChart: String {
    let names = Self.throughputCases(measurements.keys)
    let medians = names.map { name in Self.median(measurements[name, default: []].map(\.bytesPerSecond)) / 1e9 }
    let ranges = names.map { name in
      let rates = measurements[name, default: []].map { $0.bytesPerSecond / 1e9 }
      return (rates.min() ?? 0, rates.max() ?? 0)
    }
    let scale = max(ranges.map(\.1).max() ?? 1, 0.001)
    let (labelWidth, barWidth, rowHeight) = (190.0, 520.0, 24.0)
    let height = Double(names.count) * rowHeight + 50
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(labelWidth + barWidth + 90))" height="\(Int(height))" \
      font-family="sans-serif" font-size="12">
      <text x="4" y="16" font-weight="bold">Bulk throughput, GB/s (median; line: the rounds' range)</text>

      """
    for (index, name) in names.enumerated() {
      let y = 30 + Double(index) * rowHeight
      let width = barWidth * medians[index] / scale
      let colour = Self.isBaseline(name) ? "#999999" : "#3b78c2"
      svg += "<text x=\"\(Int(labelWidth - 6))\" y=\"\(Int(y + 15))\" text-anchor=\"end\">\(Self.escaped(name))</text>\n"
      svg += "<rect x=\"\(Int(labelWidth))\" y=\"\(Int(y + 3))\" width=\(String(format: "\"%.1f\"", width)) height=\"16\" fill=\"\(colour)\"/>\n"
      let (low, high) = (labelWidth + barWidth * ranges[index].0 / scale, labelWidth + barWidth * ranges[index].1 / scale)
      svg += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", low, high, Int(y + 11), Int(y + 11))
      svg += String(format: "<text x=\"%.1f\" y=\"%d\">%.2f</text>\n", labelWidth + max(width, barWidth * ranges[index].1 / scale) + 6,
                    Int(y + 15), medians[index])
    }
    return svg + "</svg>\n"
  }

  /// The cases of `names` measured as throughput, transports first (by
  /// name), then baselines.
  static func throughputCases(_ names: some Sequence<String>) -> [String] {
    names.filter(isThroughputCase).sorted { (isBaseline($0) ? 1 : 0, $0) < (isBaseline($1) ? 1 : 0, $1) }
  }

  /// Whether `name` is a case of the bulk group measured as throughput.
  static func isThroughputCase(_ name: String) -> Bool {
    name.hasSuffix(" bulk") || name.hasSuffix(" copy") || name.hasSuffix(" untouched") || name.hasSuffix(" get")
      || name.hasPrefix("memcpy")
  }

  /// Whether `name` is a baseline's case, not a transport's.
  static func isBaseline(_ name: String) -> Bool {
    ["memcpy", "iperf3", "ucx_perftest", "fi_pingpong", "flight"].contains { name.hasPrefix($0) }
  }

  /// The median, minimum and maximum of `runs` of the case `name` in the
  /// unit of its group: round trips in µs, tiny batches per second,
  /// else GB/s.
  static func spread(_ runs: [BenchMeasurement], of name: String) -> (String, String, String, String) {
    let (values, unit, format): ([Double], String, String) =
      name.hasSuffix(" latency") ? (runs.map { $0.seconds * 1e6 }, "µs", "%.1f")
      : name.hasSuffix(" tiny") ? (runs.map { $0.batchesPerSecond / 1e3 }, "k batches/s", "%.0f")
      : (runs.map { $0.bytesPerSecond / 1e9 }, "GB/s", "%.2f")
    let text = { (value: Double) in String(format: format, value) }
    return (text(median(values)), text(values.min() ?? .nan), text(values.max() ?? .nan), unit)
  }

  /// The median of `values` (the upper one of an even count).
  static func median(_ values: [Double]) -> Double {
    let sorted = values.sorted()
    return sorted.isEmpty ? .nan : sorted[sorted.count / 2]
  }

  /// `text` fit for a Markdown table cell.
  static func cell(_ text: String) -> String { text.replacingOccurrences(of: "|", with: "\\|") }

  /// `text` fit for SVG text.
  static func escaped(_ text: String) -> String {
    text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
  }
}
