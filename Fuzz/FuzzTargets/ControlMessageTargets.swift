internal import DissociatedIPC
internal import DissociatedIPCFabric
internal import DissociatedIPCSharedMemory
internal import DissociatedIPCTCP

/// The `shm-control`, `tcp-control` and `fabric-control` targets: the
/// backends' parsers of what arrives on their sockets and endpoints.
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

  /// Each operation's payload is one received fabric:// message: operation
  /// 0 a control message, 1 a side message, 2 a hello or welcome. What
  /// decodes must lie inside what arrived and within the limits.
  static func fabric(_ input: [UInt8]) {
    var operations = OperationReader(input)
    var checksum = 0
    let limit = 1 << 20
    while let (operation, payload) = operations.next() {
      payload.withUnsafeBytes { bytes in
        switch operation % 3 {
        case 0:
          guard let (header, control) = try? FabricWire.decode(bytes, maxMessageBytes: limit) else { return }
          checksum &+= Int(truncatingIfNeeded: header.sequence)
          switch control {
          case .inline(_, let offset, let count):
            check(offset >= 0 && count >= 0 && offset <= bytes.count - count, "inline payload outside the message")
          case .large(_, let total, _, let lengths):
            check(total <= limit && lengths.allSatisfy { $0 > 0 } && lengths.reduce(0, +) == total
                    && lengths.count <= FabricWire.maxPieces, "pieces that do not add up")
          case .region(let id, _, let base, let length):
            check(length > 0 && base <= UInt64.max - length, "a region past the address space")
            checksum &+= Int(truncatingIfNeeded: FabricWire.region(of: FabricWire.descriptorAddress(region: id & FabricWire.maxRegionID, offset: base & (1 << 48 - 1))).offset)
          case .withdraw, .goodbye: checksum &+= 1
          }
        case 1:
          if let (_, credits) = try? FabricWire.decodeSide(bytes) { checksum &+= Int(credits) }
        default:
          guard let handshake = try? FabricWire.decodeHandshake(bytes) else { return }
          check(handshake.name.count <= FabricWire.maxNameLength, "a name past its bound")
          check(handshake.refusal != 0 || (handshake.controlReceives >= 1 && !handshake.name.isEmpty), "a welcome without credits or name")
        }
      }
    }
    blackHole(checksum)
  }

  static var fabricSeeds: [[UInt8]] {
    func control(_ kind: UInt8, sequence: UInt64 = 0, tag: UInt64 = 0, length: UInt64 = 0, words: [UInt64] = [], bytes: [UInt8] = []) -> [UInt8] {
      [kind, 0, 0, 0, 1, 0, 0, 0] + littleEndianBytes(sequence) + littleEndianBytes(tag) + littleEndianBytes(length)
        + words.flatMap(littleEndianBytes) + bytes
    }
    let announcement = control(4, sequence: 3, tag: 9, length: 96 << 10, words: [7, 2, 64 << 10, 32 << 10])
    return [OperationReader.encode([
      (0, Array(control(1).prefix(20))), (0, control(1, length: 3, bytes: [1, 2, 3])),
      (0, control(2, sequence: 1, tag: 0x8000_0001_0000_0000, length: 2, bytes: [9, 9])), (0, announcement),
      (0, control(5, tag: 1, length: 4096, words: [1, 0x7F00_0000_1000])), (0, control(6, tag: 1)), (0, control(7)),
      (1, [1, 0, 0, 0, 16, 0, 0, 0] + [UInt8](repeating: 0, count: 8)),
      (2, FabricWire.encode(FabricWire.Handshake(refusal: 0, controlReceives: 16, name: Array("fi_ns://127.0.0.1:4242".utf8)))),
      (2, FabricWire.encode(FabricWire.Handshake(refusal: 1, controlReceives: 0, name: []))),
    ])]
  }
}
