import ArrowIPC
import Testing
@testable import DissociatedIPC

/// Golden byte vectors of Spec/dissociated-ipc.md ("Golden vectors").
@Suite("Wire codecs")
struct WireCodecTests {
  static func hex(_ text: String) -> [UInt8] {
    let digits = Array(text.filter { !$0.isWhitespace })
    return stride(from: 0, to: digits.count, by: 2).map { UInt8(String(digits[$0 ..< $0 + 2]), radix: 16)! }
  }

  static func littleEndian(_ value: UInt64) -> [UInt8] { withUnsafeBytes(of: value.littleEndian) { Array($0) } }

  // MARK: Tags (DIPC-TAG-*)

  @Test("tag layout: sequence in bits 0-31, body type in bits 56-63 (golden)")
  func tagLayout() throws {
    let tag = Tag(sequence: 5, bodyType: .descriptor)
    #expect(tag.rawValue == 0x0100_0000_0000_0005)
    #expect(Self.littleEndian(tag.rawValue) == Self.hex("05 00 00 00 00 00 00 01"))
    let rolled = Tag(sequence: .max, bodyType: .inline)
    #expect(Self.littleEndian(rolled.rawValue) == Self.hex("ff ff ff ff 00 00 00 00"))
    #expect(try Tag(validatingBodyTag: 0x0100_0000_FFFF_FFFF).sequence == .max)
    #expect(try Tag(validatingBodyTag: 0x0700_0000_0000_0002).bodyType == BodyType(rawValue: 7))
  }

  @Test("reserved tag bits are refused", arguments: [UInt64(1) << 32, 1 << 40, 1 << 55, 0x00FF_FFFF_0000_0000])
  func reservedBits(bit: UInt64) {
    #expect { try Tag(validatingBodyTag: bit | 3) } throws: { ($0 as? DissociatedIPCError)?.code == .reservedTagBits }
  }

  // MARK: Metadata frames (DIPC-META-*)

  @Test("metadata frame: type, sequence LE, flatbuffer from byte 5 (golden)")
  func metadataFrame() throws {
    let flatbuffer = ArrowBytes(copying: [0x10, 0, 0, 0, 0xAA])
    let frame = MetadataFrame.message(sequence: 0x0102_0304, flatbuffer: flatbuffer)
    #expect(frame.encoded == Self.hex("01 04 03 02 01 10 00 00 00 aa"))
    #expect(try MetadataFrame.decode(ArrowBytes(copying: frame.encoded)) == frame)
  }

  @Test("end of stream is exactly 5 bytes: 00 and the message count (golden)")
  func endOfStream() throws {
    #expect(MetadataFrame.endOfStream(sequence: 3).encoded == Self.hex("00 03 00 00 00"))
    #expect(try MetadataFrame.decode(ArrowBytes(copying: Self.hex("00 03 00 00 00"))) == .endOfStream(sequence: 3))
  }

  @Test("error frame extension: E0, code LE, UTF-8 text (golden)")
  func errorFrame() throws {
    let frame = MetadataFrame.error(.unknownTicket, "no")
    #expect(frame.encoded == Self.hex("e0 1e 00 00 00 6e 6f"))
    #expect(try MetadataFrame.decode(ArrowBytes(copying: frame.encoded)) == frame)
  }

  @Test("malformed metadata frames", arguments: [
    ("empty", "", DissociatedIPCError.Code.malformedFrame),
    ("4 bytes", "01 00 00 00", .malformedFrame),
    ("message without flatbuffer", "01 00 00 00 00", .malformedFrame),
    ("long end of stream", "00 01 00 00 00 00", .malformedFrame),
    ("type 2", "02 00 00 00 00 00", .unknownMetadataType),
    ("type FF", "ff 00 00 00 00", .unknownMetadataType),
  ])
  func malformedFrames(name: String, bytes: String, code: DissociatedIPCError.Code) {
    #expect("\(name)".isEmpty == false)
    #expect { try MetadataFrame.decode(ArrowBytes(copying: Self.hex(bytes))) } throws: {
      ($0 as? DissociatedIPCError)?.code == code
    }
  }

  // MARK: Body descriptors (DIPC-BODY-*)

  @Test("body descriptor: totalSize, count, address/length pairs (golden)")
  func descriptor() throws {
    let descriptor = try BodyDescriptor(ranges: [RemoteRange(address: 0x1000, length: 64), RemoteRange(address: 0x2000, length: 8)])
    #expect(descriptor.totalSize == 72)
    #expect(descriptor.encoded == Self.hex("""
      48 00 00 00 00 00 00 00  02 00 00 00 00 00 00 00
      00 10 00 00 00 00 00 00  40 00 00 00 00 00 00 00
      00 20 00 00 00 00 00 00  08 00 00 00 00 00 00 00
      """))
    #expect(try BodyDescriptor.decode(ArrowBytes(copying: descriptor.encoded), maxRanges: 8) == descriptor)
    #expect(try BodyDescriptor.decode(ArrowBytes(copying: Self.hex("00" * 8 + "00" * 8)), maxRanges: 8).ranges.isEmpty)
  }

  static func descriptorBytes(total: UInt64, count: UInt64, _ pairs: [(UInt64, UInt64)]) -> [UInt8] {
    littleEndian(total) + littleEndian(count) + pairs.flatMap { littleEndian($0.0) + littleEndian($0.1) }
  }

  @Test("descriptors that lie are refused", arguments: [
    ("not 16-byte sized", [UInt8](repeating: 0, count: 24), DissociatedIPCError.Code.malformedDescriptor),
    ("too short", [UInt8](repeating: 0, count: 8), .malformedDescriptor),
    ("count larger than payload", descriptorBytes(total: 8, count: 2, [(0, 8)]), .malformedDescriptor),
    ("count smaller than payload", descriptorBytes(total: 8, count: 0, [(0, 8)]), .malformedDescriptor),
    ("huge count", descriptorBytes(total: 8, count: .max, [(0, 8)]), .malformedDescriptor),
    ("sizes disagree", descriptorBytes(total: 9, count: 1, [(0, 8)]), .malformedDescriptor),
    ("lengths overflow", descriptorBytes(total: 7, count: 2, [(0, .max), (0, 8)]), .malformedDescriptor),
    ("range overflows address space", descriptorBytes(total: 16, count: 1, [(.max - 8, 16)]), .malformedDescriptor),
    ("empty range", descriptorBytes(total: 0, count: 1, [(64, 0)]), .malformedDescriptor),
    ("too many ranges", descriptorBytes(total: 9 * 8, count: 9, Array(repeating: (0, 8), count: 9)), .limitExceeded),
  ])
  func lyingDescriptors(name: String, bytes: [UInt8], code: DissociatedIPCError.Code) {
    #expect { try BodyDescriptor.decode(ArrowBytes(copying: bytes), maxRanges: 8) } throws: {
      ($0 as? DissociatedIPCError)?.code == code
    }
  }

  // MARK: free_data (DIPC-FREE-*)

  @Test("free_data payload: addresses as UInt64 LE (golden)")
  func freeData() throws {
    let bytes = FreeDataPayload.encode([0x1000, 7])
    #expect(bytes == Self.hex("00 10 00 00 00 00 00 00 07 00 00 00 00 00 00 00"))
    #expect(try FreeDataPayload.decode(ArrowBytes(copying: bytes)) == [0x1000, 7])
    for bad in [[UInt8](), [1, 2, 3]] {
      #expect { try FreeDataPayload.decode(ArrowBytes(copying: bad)) } throws: {
        ($0 as? DissociatedIPCError)?.code == .malformedFreeData
      }
    }
  }
}

func * (text: String, count: Int) -> String { String(repeating: text, count: count) }
