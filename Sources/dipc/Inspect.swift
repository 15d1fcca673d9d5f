internal import ArgumentParser
internal import ArrowIPC

/// `dipc inspect FILE`: prints the schema and a line per message.
struct Inspect: ParsableCommand {
  static let configuration = CommandConfiguration(
    abstract: "Print the schema and messages of an Arrow IPC stream file.",
    discussion: "The file is memory-mapped and validated: framing, metadata and every batch's body layout."
  )

  @Argument(help: "An Arrow IPC stream file (.arrows).")
  var file: String

  func run() throws {
    var reader = try ArrowStreamReader(try ArrowBytes(mappingFileAt: file))
    print("schema: \(reader.schema.fields.count) fields")
    for field in reader.schema.fields {
      print("  \(field.name): \(field.type)\(field.nullable ? "" : " not null")"
        + (field.dictionary.map { " dictionary(id \($0.id))" } ?? ""))
    }
    var batches = 0
    var rows = 0
    var bytes = 0
    while let item = try reader.next() {
      switch item {
      case .dictionary(let dictionary):
        print("dictionary \(dictionary.id)\(dictionary.isDelta ? " delta" : ""): "
          + "\(dictionary.values.rowCount) values, \(dictionary.values.body.count) body bytes")
      case .recordBatch(let batch):
        batches += 1
        rows += batch.rowCount
        bytes += batch.body.count
      }
    }
    print("\(batches) record batches, \(rows) rows, \(bytes) body bytes")
  }
}
