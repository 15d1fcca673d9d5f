@testable import ArrowIPC

/// Bytes from a hex string (whitespace ignored).
func hexBytes(_ text: String) -> [UInt8] {
  let digits = Array(text.filter { !$0.isWhitespace })
  return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0 ..< $0 + 2]), radix: 16)! }
}

/// An Arrow IPC stream written by pyarrow 26.0.1: schema `a: int32`, one
/// batch `[1, null, 3]`, end-of-stream marker.
let pyarrowInt32Stream = hexBytes("""
  ffffffff780000001000000000000a000c000600050008000a000000000104000c000000080008000000040008000000040000000100000014000000100014000800060007000c00000010001000000000000102100000001c0000000400000000000000010000006100000008000c0008000700080000000000000120000000ffffffff8800000014000000000000000c0016000600050008000c000c0000000003040018000000180000000000000000000a0018000c00040008000a0000003c00000010000000030000000000000000000000020000000000000000000000010000000000000008000000000000000c00000000000000000000000100000003000000000000000100000000000000050000000000000001000000000000000300000000000000ffffffff00000000
  """)

/// A schema with one field of every type this library models, nested
/// types with their children, dictionary encoding and metadata.
let everyTypeSchema: Schema = {
  let item = Field("item", .int(bitWidth: 32, signed: true))
  var fields: [Field] = [
    Field("null", .null),
    Field("bool", .bool, nullable: false),
    Field("decimal", .decimal(precision: 38, scale: 4, bitWidth: 128)),
    Field("decimal256", .decimal(precision: 76, scale: 2, bitWidth: 256)),
    Field("date32", .date(.day)),
    Field("date64", .date(.millisecond)),
    Field("time32", .time(.second, bitWidth: 32)),
    Field("time64", .time(.nanosecond, bitWidth: 64)),
    Field("ts", .timestamp(.microsecond, timezone: nil)),
    Field("ts_tz", .timestamp(.nanosecond, timezone: "+07:00")),
    Field("interval", .interval(.monthDayNano)),
    Field("duration", .duration(.second)),
    Field("binary", .binary), Field("utf8", .utf8), Field("large_binary", .largeBinary),
    Field("large_utf8", .largeUtf8), Field("binary_view", .binaryView), Field("utf8_view", .utf8View),
    Field("fsb", .fixedSizeBinary(byteWidth: 16)),
    Field("list", .list, children: [item]),
    Field("large_list", .largeList, children: [item]),
    Field("fsl", .fixedSizeList(listSize: 3), children: [item]),
    Field("list_view", .listView, children: [item]),
    Field("large_list_view", .largeListView, children: [item]),
    Field("struct", .struct, children: [item, Field("s", .utf8, metadata: [KeyValue("k", "v")])]),
    Field("map", .map(keysSorted: true), children: [
      Field("entries", .struct, nullable: false, children: [
        Field("key", .utf8, nullable: false), Field("value", .float64),
      ]),
    ]),
    Field("sparse", .union(mode: .sparse, typeIds: [0, 5]), children: [item, Field("f", .float64)]),
    Field("dense", .union(mode: .dense, typeIds: nil), children: [item]),
    Field("ree", .runEndEncoded, children: [Field("run_ends", .int(bitWidth: 32, signed: true), nullable: false), item]),
    Field("dict", .utf8, dictionary: DictionaryEncoding(id: 7, indexBitWidth: 8, indexSigned: true, isOrdered: true)),
  ]
  for bits in [8, 16, 32, 64] {
    fields.append(Field("i\(bits)", .int(bitWidth: bits, signed: true)))
    fields.append(Field("u\(bits)", .int(bitWidth: bits, signed: false)))
  }
  for precision in FloatingPointPrecision.allCases { fields.append(Field("f\(precision)", .floatingPoint(precision))) }
  return Schema(fields: fields, metadata: [KeyValue("origin", "test"), KeyValue("empty", "")],
                features: [.dictionaryReplacement])
}()

extension ArrowType {
  static let float64 = ArrowType.floatingPoint(.double)
}
