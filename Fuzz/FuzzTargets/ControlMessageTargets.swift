internal import DissociatedIPC
internal import DissociatedIPCSharedMemory
internal import DissociatedIPCTCP

/// The `shm-control` and `tcp-control` targets: the backends' parsers of
/// what arrives on their sockets.
enum ControlMessageTargets {
  /// Each operation's payload is one received shm:// control message
  /// (SOCK_SEQPACKET keeps boundaries); a batch's entries are parsed as
  /// the reader parses them, and every range found must lie inside it.
  static func shm(_ input: [UInt8]) {
    var operations = OperationReader(input)
    var entries: [Range<Int>] = []
    var checksum = 0
    while let (_, payload) = operations.next() {
      payload.withUnsafeBytes { bytes in
        guard let message = try? SharedMemoryWire.parse(bytes) else { return }
        switch message {
        case .inline(_, _, let offset, let length):
          check(offset >= 0 && length >= 0 && offset <= bytes.count - length, "inline payload outside the message")
        case .frameAndTagged(_, let frameOffset, let frameLength, let payloadLength):
          check(frameOffset >= 0 && frameLength >= 0 && payloadLength >= 0
                  && frameOffset + frameLength + payloadLength <= bytes.count, "kind 11 parts outside the message")
        case .spaceReturned(let count):
          for index in 0 ..< count { checksum &+= Int(truncatingIfNeeded: SharedMemoryWire.returnedAddress(bytes, index)) }
        case .batch:
          guard (try? SharedMemoryWire.batchEntries(bytes, into: &entries)) != nil else { return }
          for entry in entries {
            check(entry.lowerBound >= 0 && entry.upperBound <= bytes.count, "batch entry outside the batch")
            checksum &+= (try? SharedMemoryWire.parse(UnsafeRawBufferPointer(rebasing: bytes[entry]))) == nil ? 1 : 2
          }
        default: checksum &+= 1
        }
      }
    }
    blackHole(checksum)
  }

  static var shmSeeds: [[UInt8]] {
    func message(_ kind: UInt8, tag: UInt64 = 0, words: [UInt64] = [], bytes: [UInt8] = []) -> [UInt8] {
      [kind, 0, 0, 0, 0, 0, 0, 0] + littleEndianBytes(tag) + words.flatMap(littleEndianBytes) + bytes
    }
    let frame = message(1, bytes: [1, 2, 3])
    let tagged = message(2, tag: 0x8000_0001_0000_0000, bytes: [9, 9])
    var batch = message(10)
    for entry in [frame, tagged, message(6, words: [0x0001_0000_0000_0040])] {
      batch += littleEndianBytes(UInt64(entry.count)) + entry + [UInt8](repeating: 0, count: (8 - entry.count % 8) % 8)
    }
    return [OperationReader.encode([
      (0, SharedMemoryWire.hello), (0, frame), (0, tagged), (0, batch),
      (0, message(3, words: [0x0001_0000_0000_0040, 64])), (0, message(4, tag: 5, words: [0x0002_0000_0000_0000, 8])),
      (0, message(5, words: [1, 8 << 20])), (0, message(7, words: [1])), (0, message(9, words: [3, 1 << 20])),
      (0, message(11, tag: 0x8000_0002_0000_0000, words: [3], bytes: [1, 2, 3, 4, 5])),
    ])]
  }

  /// The input is a tcp:// byte stream: a hello, then messages (header,
  /// payload) as far as the bytes go.
  static func tcp(_ input: [UInt8]) {
    input.withUnsafeBytes { bytes in
      guard bytes.count >= TCPWire.helloLength,
            (try? TCPWire.checkHello(UnsafeRawBufferPointer(rebasing: bytes[0 ..< TCPWire.helloLength]))) != nil
      else { return }
      var position = TCPWire.helloLength
      while bytes.count - position >= TCPWire.headerLength, let base = bytes.baseAddress {
        guard let header = try? TCPWire.readHeader(base + position, maxLength: 1 << 20) else { return }
        check(header.length >= 0 && header.length <= 1 << 20, "header length \(header.length) past the limit")
        position += TCPWire.headerLength
        guard header.length <= bytes.count - position else { return }
        position += header.length
      }
    }
  }

  static var tcpSeeds: [[UInt8]] {
    func header(_ kind: UInt8, tag: UInt64, length: Int) -> [UInt8] {
      [kind, 0, 0, 0, 0, 0, 0, 0] + littleEndianBytes(tag) + littleEndianBytes(UInt64(length))
    }
    return [TCPWire.hello + header(2, tag: 0x8000_0DEA_DBA0_BAB0, length: 3) + [1, 2, 3] + header(1, tag: 0, length: 5)
      + [1, 0, 0, 0, 0] + header(2, tag: 7, length: 0)]
  }
}
