package import DissociatedIPC

/// The byte-stream framing of `tcp://` (Spec/tcp.md, TCP-FRAME-*).
///
/// ```
/// hello (once per direction, first):  "DIPCTCP\0" | version u32 LE | flags u32 LE       (16 bytes)
/// message:  kind u8 | 7 bytes zero | tag u64 LE | length u64 LE | payload (length bytes)
///           kind 1 = framed (tag 0), kind 2 = tagged
/// ```
package enum TCPWire {
  static let magic: [UInt8] = Array("DIPCTCP".utf8) + [0]
  static let version: UInt32 = 1
  package static let helloLength = 16
  package static let headerLength = 24

  package enum Kind: UInt8 {
    case frame = 1
    case tagged = 2
  }

  package static var hello: [UInt8] {
    var bytes = magic
    bytes.appendLittleEndian(version)
    bytes.appendLittleEndian(UInt32(0))
    return bytes
  }

  /// Checks the peer's hello (TCP-HELLO-2).
  package static func checkHello(_ bytes: UnsafeRawBufferPointer) throws(DissociatedIPCError) {
    guard bytes.count == helloLength, Array(bytes.prefix(8)) == magic else {
      throw DissociatedIPCError(.transportFailure, "the peer is not a tcp:// Dissociated IPC endpoint (bad hello)")
    }
    let peerVersion = bytes.loadUnaligned(fromByteOffset: 8, as: UInt32.self).littleEndian
    guard peerVersion == version else {
      throw DissociatedIPCError(.transportFailure, "the peer speaks tcp:// framing version \(peerVersion), this side \(version)")
    }
  }

  /// Writes a message header into `buffer` (24 bytes).
  static func writeHeader(_ kind: Kind, tag: UInt64, length: Int, into buffer: UnsafeMutableRawPointer) {
    buffer.storeBytes(of: UInt64(kind.rawValue).littleEndian, as: UInt64.self)
    buffer.storeBytes(of: tag.littleEndian, toByteOffset: 8, as: UInt64.self)
    buffer.storeBytes(of: UInt64(length).littleEndian, toByteOffset: 16, as: UInt64.self)
  }

  /// A parsed header.
  package struct Header {
    package var kind: Kind
    package var tag: UInt64
    package var length: Int
  }

  /// Parses a header (TCP-FRAME-2, TCP-FRAME-3).
  package static func readHeader(_ bytes: UnsafeRawPointer, maxLength: Int) throws(DissociatedIPCError) -> Header {
    let first = UInt64(littleEndian: bytes.loadUnaligned(as: UInt64.self))
    guard first & ~0xFF == 0, let kind = Kind(rawValue: UInt8(first)) else {
      throw DissociatedIPCError(.transportFailure, "tcp:// message header with kind/reserved bytes \(first)")
    }
    let tag = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
    let length = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 16, as: UInt64.self))
    guard length <= UInt64(maxLength) else {
      throw DissociatedIPCError(.limitExceeded, "tcp:// message of \(length) bytes exceeds the limit of \(maxLength)")
    }
    guard kind == .tagged || tag == 0 else {
      throw DissociatedIPCError(.transportFailure, "tcp:// framed message with a tag")
    }
    return Header(kind: kind, tag: tag, length: Int(length))
  }
}

extension Array where Element == UInt8 {
  mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
    Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
  }
}
