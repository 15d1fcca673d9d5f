// Pure wire layouts: built with or without the Fabric trait, so the fuzz
// targets keep their fabric:// parsers in every build.

internal import ArrowIPC
package import DissociatedIPC

/// What travels between two fabric:// endpoints (Spec/fabric.md,
/// FABRIC-WIRE-1…3): the libfabric tags, and the layouts of the control,
/// side and handshake messages. Pure values: the engine posts the bytes,
/// the fuzz target feeds hostile ones here.
package enum FabricWire {
  // MARK: Tags (FABRIC-WIRE-1)

  /// Ordered control messages: frames, tagged messages, announcements of
  /// large ones, regions, goodbye. Each lands in a receive posted ahead
  /// (one credit each, FABRIC-FLOW-1).
  static let controlTag: UInt64 = 0x4449_5043_0000_0001
  /// Side messages: heartbeats, returned credits, goodbye acknowledged,
  /// reset. Outside the credits, so a peer that stops reading still hears
  /// them.
  static let sideTag: UInt64 = 0x4449_5043_0000_0002
  /// A client's hello, to a listener.
  static let helloTag: UInt64 = 0x4449_5043_0000_0003
  /// The answer to a hello: welcome (from the connection's own endpoint)
  /// or refusal (from the listener's).
  static let welcomeTag: UInt64 = 0x4449_5043_0000_0004
  /// The piece of a large message numbered `index` (bit 63 set).
  static func pieceTag(_ index: UInt64) -> UInt64 { 1 << 63 | index & (1 << 63 - 1) }

  // MARK: Sizes

  /// Bytes of a control message's header.
  package static let headerSize = 32
  /// Bytes of every posted control receive: a control message is at most
  /// this long (FABRIC-WIRE-2).
  package static let controlMessageSize = 4 << 10
  /// The largest payload that goes inline, in the control message itself.
  static let inlinePayloadLimit = controlMessageSize - headerSize
  /// Bytes of an announcement before its piece lengths.
  package static let announcementFixedSize = headerSize + 16
  /// The most pieces one large message has (its lengths fill a control message).
  package static let maxPieces = (controlMessageSize - announcementFixedSize) / 8
  /// Bytes of a side message.
  package static let sideMessageSize = 16
  /// The longest endpoint name a hello or welcome carries.
  package static let maxNameLength = 512
  /// Bytes of a hello or welcome receive.
  package static let handshakeMessageSize = 24 + maxNameLength

  // MARK: Control messages

  /// What a control message says (its first byte).
  package enum Kind: UInt8 {
    /// A framed message, inline.
    case frame = 1
    /// A tagged message, inline.
    case tagged = 2
    /// A framed message of `length` bytes, in pieces.
    case largeFrame = 3
    /// A tagged message of `length` bytes, in pieces.
    case largeTagged = 4
    /// A region the client may read: id in `tag`, bytes in `length`, then key and base.
    case region = 5
    /// The region whose id is in `tag` is gone.
    case withdraw = 6
    /// The sender sends nothing more.
    case goodbye = 7
  }

  /// A control message's header: kind, credits returned, sequence number,
  /// a tag or id, a length.
  package struct Header: Equatable {
    package var kind: Kind
    package var credits: UInt32
    package var sequence: UInt64
    package var tag: UInt64
    package var length: UInt64
  }

  /// A decoded control message.
  package enum Control: Equatable {
    /// An inline frame or tagged message (`tag` nil for a frame): the
    /// payload's offset and count in the received bytes.
    case inline(tag: UInt64?, payloadOffset: Int, count: Int)
    /// A large frame or tagged message: its total length and the tags and
    /// lengths of its pieces.
    case large(tag: UInt64?, total: Int, firstPiece: UInt64, pieceLengths: [Int])
    /// A readable region: id, key, base address (as the server sees it), length.
    case region(id: UInt64, key: UInt64, base: UInt64, length: UInt64)
    /// A region withdrawn.
    case withdraw(id: UInt64)
    /// The peer sends nothing more.
    case goodbye
  }

  /// Writes a header into the first ``headerSize`` bytes of `buffer`.
  static func write(_ header: Header, into buffer: UnsafeMutableRawPointer) {
    buffer.storeBytes(of: header.kind.rawValue, as: UInt8.self)
    buffer.storeBytes(of: 0, toByteOffset: 1, as: UInt8.self)
    buffer.storeBytes(of: 0, toByteOffset: 2, as: UInt16.self)
    buffer.storeBytes(of: header.credits.littleEndian, toByteOffset: 4, as: UInt32.self)
    buffer.storeBytes(of: header.sequence.littleEndian, toByteOffset: 8, as: UInt64.self)
    buffer.storeBytes(of: header.tag.littleEndian, toByteOffset: 16, as: UInt64.self)
    buffer.storeBytes(of: header.length.littleEndian, toByteOffset: 24, as: UInt64.self)
  }

  /// Patches the credits and sequence number of a header already written.
  static func stamp(_ buffer: UnsafeMutableRawPointer, credits: UInt32, sequence: UInt64) {
    buffer.storeBytes(of: credits.littleEndian, toByteOffset: 4, as: UInt32.self)
    buffer.storeBytes(of: sequence.littleEndian, toByteOffset: 8, as: UInt64.self)
  }

  /// The 8-byte little-endian integer at `offset`.
  static func load64(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt64 {
    UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))
  }

  /// The 4-byte little-endian integer at `offset`.
  static func load32(_ bytes: UnsafeRawBufferPointer, _ offset: Int) -> UInt32 {
    UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self))
  }

  /// Decodes a received control message, checking every length against
  /// what arrived and `maxMessageBytes` (FABRIC-WIRE-2).
  ///
  /// - Throws: `.malformedFrame` for anything else, `.limitExceeded` for a message over the limit.
  package static func decode(_ bytes: UnsafeRawBufferPointer, maxMessageBytes: Int) throws(DissociatedIPCError)
    -> (Header, Control) {
    guard bytes.count >= headerSize else { throw violation("a control message of \(bytes.count) bytes") }
    guard let kind = Kind(rawValue: bytes[0]) else { throw violation("a control message of unknown kind \(bytes[0])") }
    let header = Header(kind: kind, credits: load32(bytes, 4), sequence: load64(bytes, 8), tag: load64(bytes, 16),
                        length: load64(bytes, 24))
    let rest = bytes.count - headerSize
    switch kind {
    case .frame, .tagged:
      guard header.length == UInt64(rest) else { throw violation("an inline message of \(header.length) bytes in \(rest)") }
      return (header, .inline(tag: kind == .tagged ? header.tag : nil, payloadOffset: headerSize, count: rest))
    case .largeFrame, .largeTagged:
      guard bytes.count >= announcementFixedSize else { throw violation("a short announcement") }
      let firstPiece = load64(bytes, headerSize)
      let count = Int(load32(bytes, headerSize + 8))
      guard count >= 1, count <= maxPieces, bytes.count == announcementFixedSize + 8 * count else {
        throw violation("an announcement of \(count) pieces in \(bytes.count) bytes")
      }
      guard header.length <= UInt64(maxMessageBytes) else {
        throw DissociatedIPCError(.limitExceeded, "fabric:// peer announced a message of \(header.length) bytes (limit \(maxMessageBytes))")
      }
      var lengths: [Int] = []
      lengths.reserveCapacity(count)
      var sum: UInt64 = 0
      for index in 0 ..< count {
        let length = load64(bytes, announcementFixedSize + 8 * index)
        guard length > 0, length <= header.length - sum else { throw violation("piece lengths that do not add up to \(header.length)") }
        sum += length
        lengths.append(Int(length))
      }
      guard sum == header.length else { throw violation("piece lengths that do not add up to \(header.length)") }
      return (header, .large(tag: kind == .largeTagged ? header.tag : nil, total: Int(sum), firstPiece: firstPiece, pieceLengths: lengths))
    case .region:
      guard rest == 16 else { throw violation("a region message of \(bytes.count) bytes") }
      let base = load64(bytes, headerSize + 8)
      guard header.length > 0, base <= UInt64.max - header.length else { throw violation("a region past the address space") }
      return (header, .region(id: header.tag, key: load64(bytes, headerSize), base: base, length: header.length))
    case .withdraw:
      guard rest == 0 else { throw violation("a withdraw message of \(bytes.count) bytes") }
      return (header, .withdraw(id: header.tag))
    case .goodbye:
      guard rest == 0 else { throw violation("a goodbye of \(bytes.count) bytes") }
      return (header, .goodbye)
    }
  }

  static func violation(_ what: String) -> DissociatedIPCError {
    DissociatedIPCError(.malformedFrame, "fabric:// peer sent \(what)")
  }

  // MARK: Side messages

  /// What a side message says.
  package enum Side: UInt8 {
    /// "I am alive" (FABRIC-LIVE-1); also carries credits.
    case heartbeat = 1
    /// Credits returned, nothing else.
    case credits = 2
    /// Your goodbye arrived.
    case goodbyeAcknowledged = 3
    /// I dropped the connection: fail it now.
    case reset = 4
  }

  /// Writes a side message into ``sideMessageSize`` bytes at `buffer`.
  static func writeSide(_ side: Side, credits: UInt32, into buffer: UnsafeMutableRawPointer) {
    buffer.initializeMemory(as: UInt8.self, repeating: 0, count: sideMessageSize)
    buffer.storeBytes(of: side.rawValue, as: UInt8.self)
    buffer.storeBytes(of: credits.littleEndian, toByteOffset: 4, as: UInt32.self)
  }

  /// Decodes a side message.
  package static func decodeSide(_ bytes: UnsafeRawBufferPointer) throws(DissociatedIPCError) -> (Side, UInt32) {
    guard bytes.count == sideMessageSize, let side = Side(rawValue: bytes[0]) else {
      throw violation("a side message of \(bytes.count) bytes")
    }
    return (side, load32(bytes, 4))
  }

  // MARK: Descriptor addresses (FABRIC-RM-1)

  /// The largest region id: ids fit the top 16 bits of a descriptor address.
  package static let maxRegionID: UInt64 = 0xFFFF

  /// A descriptor's range address: the region id in the top 16 bits, the
  /// offset into the region below.
  package static func descriptorAddress(region: UInt64, offset: UInt64) -> UInt64 { region << 48 | offset }

  /// The region id and offset of a descriptor's range address.
  package static func region(of address: UInt64) -> (id: UInt64, offset: UInt64) { (address >> 48, address & (1 << 48 - 1)) }

  // MARK: Handshake (FABRIC-CONN-1)

  /// The first 8 bytes of a hello and a welcome.
  package static let magic: [UInt8] = Array("DIPCFAB1".utf8)

  /// A hello or a welcome: the sender's control receives (its credits to
  /// the other side) and the name of the endpoint to answer; a refusal
  /// carries the reason as its name.
  package struct Handshake: Equatable {
    /// 0 for a hello and a welcome, else why the server refused.
    package var refusal: UInt16
    package var controlReceives: UInt32
    package var name: [UInt8]

    package init(refusal: UInt16, controlReceives: UInt32, name: [UInt8]) {
      self.refusal = refusal
      self.controlReceives = controlReceives
      self.name = name
    }
  }

  /// Why a server refuses a connection.
  enum Refusal: UInt16 {
    /// The listener has ``FabricTransport/Config/maxConnections``.
    case full = 1
    /// The server could not set the connection up (threads, endpoints).
    case exhausted = 2
  }

  /// The bytes of a hello or welcome.
  package static func encode(_ handshake: Handshake) -> [UInt8] {
    var bytes = magic
    bytes += withUnsafeBytes(of: UInt16(1).littleEndian, Array.init)
    bytes += withUnsafeBytes(of: handshake.refusal.littleEndian, Array.init)
    bytes += withUnsafeBytes(of: handshake.controlReceives.littleEndian, Array.init)
    bytes += withUnsafeBytes(of: UInt32(handshake.name.count).littleEndian, Array.init)
    bytes += withUnsafeBytes(of: UInt32(0), Array.init)
    return bytes + handshake.name
  }

  /// Decodes a hello or welcome: magic, version 1, at least one control
  /// receive, a name of 1 to ``maxNameLength`` bytes that fills the rest;
  /// or a refusal (its name may be empty).
  package static func decodeHandshake(_ bytes: UnsafeRawBufferPointer) throws(DissociatedIPCError) -> Handshake {
    guard bytes.count >= 24, bytes.count <= handshakeMessageSize, Array(bytes.prefix(8)) == magic else {
      throw violation("a handshake of \(bytes.count) bytes that does not start with the fabric:// magic")
    }
    let version = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt16.self))
    guard version == 1 else { throw violation("handshake version \(version)") }
    let refusal = UInt16(littleEndian: bytes.loadUnaligned(fromByteOffset: 10, as: UInt16.self))
    let receives = load32(bytes, 12)
    let length = Int(load32(bytes, 16))
    guard length == bytes.count - 24, refusal != 0 || (receives >= 1 && length >= 1) else {
      throw violation("a handshake whose name or credits do not fit")
    }
    return Handshake(refusal: refusal, controlReceives: receives, name: Array(bytes[24...]))
  }
}
