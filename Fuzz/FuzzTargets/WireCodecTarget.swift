internal import ArrowIPC
internal import DissociatedIPC

/// The `wire-codecs` target: each operation decodes its payload with one
/// codec; what decodes must encode back to what decodes the same.
enum WireCodecTarget {
  static func run(_ input: [UInt8]) {
    var operations = OperationReader(input)
    while let (operation, payload) = operations.next() {
      switch operation % 5 {
      case 0:
        // A metadata frame, re-encoded: the same frame again; an error
        // frame's text arrives escaped and cut (DIPC-LIM-9).
        switch try? MetadataFrame.decode(ArrowBytes(copying: payload)) {
        case .error(_, let text)?:
          check(text.utf8.count <= 4 * MetadataFrame.maxErrorTextShown + 32, "error text of \(text.utf8.count) bytes")
          check(!text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control character in error text")
        case let frame?:
          check((try? MetadataFrame.decode(ArrowBytes(copying: frame.encoded))) == frame, "metadata frame round trip")
        case nil: break
        }
      case 1:
        // A body tag, and a descriptor as a descriptor body carries it.
        let (word, rest) = splitWord(payload)
        blackHole(try? Tag(validatingBodyTag: word))
        if let descriptor = try? BodyDescriptor.decode(ArrowBytes(copying: rest), maxRanges: 4096) {
          check(descriptor.encoded == rest, "descriptor round trip")
        }
      case 2:
        if let addresses = try? FreeDataPayload.decode(ArrowBytes(copying: payload)) {
          check(FreeDataPayload.encode(addresses) == payload, "free_data round trip")
        }
      case 3:
        // A location, printed and parsed again: the same location.
        if let location = try? Location(parsing: String(decoding: payload, as: UTF8.self)) {
          check((try? Location(parsing: location.description)) == location, "location round trip: \(location)")
        }
      default:
        // Peer text as logs show it: bounded, no control characters.
        let text = PeerText.escaped(payload)
        check(text.utf8.count <= 4 * PeerText.defaultLimit + 32, "escaped text of \(text.utf8.count) bytes")
        check(!text.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }, "control character in escaped text")
      }
    }
  }

  static var seeds: [[UInt8]] {
    let descriptor = (try? BodyDescriptor(ranges: [RemoteRange(address: 0x1000, length: 64), RemoteRange(address: 0x9000, length: 8)]))?.encoded ?? []
    return [
      OperationReader.encode([
        (0, MetadataFrame.endOfStream(sequence: 7).encoded),
        (0, MetadataFrame.error(.unknownTicket, "no such ticket").encoded),
        (0, MetadataFrame.message(sequence: 1, flatbuffer: ArrowBytes(copying: [1, 2, 3, 4])).encoded),
      ]),
      OperationReader.encode([(1, littleEndianBytes(Tag(sequence: 3, bodyType: .descriptor).rawValue) + descriptor)]),
      OperationReader.encode([(2, FreeDataPayload.encode([0x1000, 0x9000]))]),
      OperationReader.encode([
        (3, Array("tcp://127.0.0.1:7000?want_data=9223372036854775808&ticket=a%20b".utf8)),
        (3, Array("ucx://[::1]:0?want_data=1&free_data=2&remote_handle=AAAA&ticket64=AQID".utf8)),
        (3, Array("shm:///tmp/dipc.sock?want_data=1".utf8)),
      ]),
      OperationReader.encode([(4, Array("ticket\u{1B}[31m\n\u{7F}é".utf8))]),
    ]
  }
}

/// Traps with `message` when `condition` fails: a broken invariant is a
/// finding (libFuzzer reports the input).
func check(_ condition: Bool, _ message: @autoclosure () -> String) {
  if !condition { fatalError("fuzz invariant: \(message())") }
}
