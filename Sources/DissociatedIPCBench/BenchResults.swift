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
  /// median, range and path; `charts` name pictures (a file and what it
  /// shows) to show beside them.
  public func markdown(machine: [String], command: String, charts: [(file: String, caption: String)]) -> String {
    var text = "# Transport benchmark\n\n\(header).\n\n"
    text += machine.map { "- \($0)\n" }.joined()
    text += "\nReproduce: `\(command)`\n\n"
    text += charts.map { "![\($0.caption)](\($0.file))\n\n" }.joined()
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
    barChart(title: "Bulk throughput, GB/s (median; line: the rounds' range)",
             cases: Self.ordered(measurements.keys, where: Self.isThroughputCase)) { $0.bytesPerSecond / 1e9 }
  }

  /// A bar chart (SVG) of the tiny-batch rates, transports beside Flight
  /// and the shared file (batches), and UCX's and libfabric's own tools
  /// (their messages).
  public var tinyChart: String {
    barChart(title: "Tiny batches, thousands per second (median; line: the rounds' range)",
             cases: Self.ordered(measurements.keys) { $0.hasSuffix(" tiny") }) { $0.batchesPerSecond / 1e3 }
  }

  /// A bar chart (SVG) of the 8-byte round trips, transports beside the
  /// raw sockets and the native libraries' own tools.
  public var latencyChart: String {
    barChart(title: "Round trip of 8 bytes, µs (median; line: the rounds' range; shorter is better)",
             cases: Self.ordered(measurements.keys) { $0.hasSuffix(" latency") }) { $0.seconds * 1e6 }
  }

  /// A horizontal bar chart (SVG) titled `title` of `cases`' medians of
  /// `value`, each bar with its rounds' range; transports in blue,
  /// baselines in grey.
  func barChart(title: String, cases names: [String], value: (BenchMeasurement) -> Double) -> String {
    let values = names.map { name in measurements[name, default: []].map(value) }
    let medians = values.map(Self.median)
    let ranges = values.map { ($0.min() ?? 0, $0.max() ?? 0) }
    let scale = max(ranges.map(\.1).filter(\.isFinite).max() ?? 1, 0.001)
    let (labelWidth, barWidth, rowHeight) = (190.0, 520.0, 24.0)
    let height = Double(names.count) * rowHeight + 50
    var svg = """
      <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(labelWidth + barWidth + 90))" height="\(Int(height))" \
      font-family="sans-serif" font-size="12">
      <text x="4" y="16" font-weight="bold">\(Self.escaped(title))</text>

      """
    for (index, name) in names.enumerated() {
      let y = 30 + Double(index) * rowHeight
      let width = barWidth * medians[index] / scale
      let colour = Self.isBaseline(name) ? "#999999" : "#3b78c2"
      svg += "<text x=\"\(Int(labelWidth - 6))\" y=\"\(Int(y + 15))\" text-anchor=\"end\">\(Self.escaped(name))</text>\n"
      svg += "<rect x=\"\(Int(labelWidth))\" y=\"\(Int(y + 3))\" width=\(String(format: "\"%.1f\"", width)) height=\"16\" fill=\"\(colour)\"/>\n"
      let (low, high) = (labelWidth + barWidth * ranges[index].0 / scale, labelWidth + barWidth * ranges[index].1 / scale)
      svg += String(format: "<line x1=\"%.1f\" x2=\"%.1f\" y1=\"%d\" y2=\"%d\" stroke=\"black\"/>\n", low, high, Int(y + 11), Int(y + 11))
      svg += String(format: "<text x=\"%.1f\" y=\"%d\">%@</text>\n", labelWidth + max(width, barWidth * ranges[index].1 / scale) + 6,
                    Int(y + 15), Self.figure(medians[index]))
    }
    return svg + "</svg>\n"
  }

  /// `value` with two significant decimals below 10, none above.
  static func figure(_ value: Double) -> String {
    String(format: value < 10 ? "%.2f" : "%.0f", value)
  }

  /// The cases of `names` that `include` takes, transports first (by
  /// name), then baselines.
  static func ordered(_ names: some Sequence<String>, where include: (String) -> Bool) -> [String] {
    names.filter(include).sorted { (isBaseline($0) ? 1 : 0, $0) < (isBaseline($1) ? 1 : 0, $1) }
  }

  /// Whether `name` is a case of the bulk group measured as throughput.
  static func isThroughputCase(_ name: String) -> Bool {
    name.hasSuffix(" bulk") || name.hasSuffix(" copy") || name.hasSuffix(" untouched") || name.hasSuffix(" get")
      || name.hasPrefix("memcpy")
  }

  /// Whether `name` is a baseline's case, not a transport's.
  static func isBaseline(_ name: String) -> Bool {
    ["memcpy", "iperf3", "ucx_perftest", "fi_pingpong", "flight", "shared file", "socket"].contains { name.hasPrefix($0) }
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
