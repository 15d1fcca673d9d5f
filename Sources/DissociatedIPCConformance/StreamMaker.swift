internal import ArrowIPC
internal import DissociatedIPC

/// Builds the streams the conformance cases serve: a schema with a
/// dictionary-encoded column, its dictionary, an empty batch, small batches
/// and optionally one large batch (above the default rendezvous threshold).
enum StreamMaker {
  static func messages(batches: Int, largeRows: Int) throws(ConformanceFailure) -> [OutgoingMessage] {
    do throws(ArrowIPCError) {
      let dictionaryField = Field("color", .utf8, dictionary: DictionaryEncoding(id: 1, indexBitWidth: 8))
      var dictionary = RecordBatchBuilder()
      dictionary.append("color", strings: ["red", "green", "blue"])
      let (dictionaryMessage, dictionaryBody) = dictionary.finish()
      guard case .recordBatch(let dictionaryData) = dictionaryMessage.header else { preconditionFailure() }

      func batch(rows: Int, offset: Int) -> (Message, ArrowBytes) {
        var builder = RecordBatchBuilder()
        builder.append("id", (0 ..< rows).map { $0 % 5 == 4 ? nil : Int64(offset + $0) })
        builder.append("name", strings: (0 ..< rows).map { $0 % 7 == 6 ? nil : "n\(offset + $0)" })
        builder.append("color", (0 ..< rows).map { Int8($0 % 3) as Int8? })
        return builder.finish()
      }
      var schema = RecordBatchBuilder()
      schema.append("id", [Int64?]())
      schema.append("name", strings: [])
      schema.append("color", [Int8?]())
      var fields = schema.schema.fields
      fields[2] = dictionaryField
      var result = [
        try OutgoingMessage(Message(header: .schema(Schema(fields: fields)))),
        try OutgoingMessage(Message(header: .dictionaryBatch(DictionaryBatchHeader(id: 1, data: dictionaryData, isDelta: false)),
                                    bodyLength: dictionaryMessage.bodyLength), body: dictionaryBody),
      ]
      let sizes = (0 ..< batches).map { $0 == 0 ? 0 : 3 + $0 } + (largeRows > 0 ? [largeRows] : [])
      var offset = 0
      for rows in sizes {
        let (message, body) = batch(rows: rows, offset: offset)
        result.append(try OutgoingMessage(message, body: body))
        offset += rows
      }
      return result
    } catch {
      throw ConformanceFailure(.fullStream, "building test data failed: \(error)")
    }
  }
}
