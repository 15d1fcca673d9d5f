public import ArrowIPC

/// One untagged message of the metadata stream (DIPC-META-*).
///
/// ```
/// byte 0     type: 1 = IPC message, 0 = end of stream, 0xE0 = error (extension)
/// bytes 1-4  sequence number, UInt32 little-endian
/// bytes 5-   the Message flatbuffer (type 1) | nothing (type 0) |
///            UTF-8 text (type 0xE0, sequence = error code)
/// ```
public enum MetadataFrame: Hashable, Sendable {
  /// An Arrow IPC `Message` flatbuffer with its sequence number.
  case message(sequence: UInt32, flatbuffer: ArrowBytes)
  /// End of stream; `sequence` is the number of messages sent (mod 2^32).
  case endOfStream(sequence: UInt32)
  /// An error the server reports before closing (DIPC-ERR-2).
  case error(DissociatedIPCError.Code, String)

  /// Frame type 1.
  public static let messageType: UInt8 = 1
  /// Frame type 0.
  public static let endOfStreamType: UInt8 = 0
  /// Frame type 0xE0, this project's extension (DIPC-ERR-2).
  public static let errorType: UInt8 = 0xE0
  /// Length of the prefix before the payload.
  public static let prefixLength = 5
  /// The most bytes of an error frame's text kept, escaped (DIPC-LIM-9).
  public static let maxErrorTextShown = 512

  /// The 5-byte prefix. Send it and the payload as two pieces of one framed
  /// message, so the flatbuffer is never copied.
  public var prefix: [UInt8] {
    [UInt8](unsafeUninitializedCapacity: Self.prefixLength) { buffer, count in
      writePrefix(to: UnsafeMutableRawPointer(buffer.baseAddress!))
      count = Self.prefixLength
    }
  }

  /// Writes the 5-byte prefix at `pointer`.
  func writePrefix(to pointer: UnsafeMutableRawPointer) {
    let (type, word): (UInt8, UInt32) = switch self {
    case .message(let sequence, _): (Self.messageType, sequence)
    case .endOfStream(let sequence): (Self.endOfStreamType, sequence)
    case .error(let code, _): (Self.errorType, code.rawValue)
    }
    pointer.storeBytes(of: type, as: UInt8.self)
    pointer.storeBytes(of: word.littleEndian, toByteOffset: 1, as: UInt32.self)
  }

  /// Makes `parts` the prefix and the payload, two parts of one framed
  /// message (the flatbuffer is not copied), the prefix taken from `slab`.
  /// The array's storage is reused when nothing else holds it.
  package func parts(into parts: inout [ArrowBytes], using slab: inout SlabAllocator) {
    parts.removeAll(keepingCapacity: true)
    parts.append(slab.allocate(Self.prefixLength) { writePrefix(to: $0) })
    parts.append(payload)
  }

  /// The bytes after the prefix.
  public var payload: ArrowBytes {
    switch self {
    case .message(_, let flatbuffer): flatbuffer
    case .endOfStream: ArrowBytes()
    case .error(_, let text): ArrowBytes(copying: text.utf8)
    }
  }

  /// The whole frame in one array (a copy; for tests and small frames).
  public var encoded: [UInt8] { prefix + payload.array }

  /// Parses a received frame. The flatbuffer of a message frame is a slice
  /// of `bytes`, read in place at its odd offset (no copy needed: the
  /// decoder loads unaligned).
  ///
  /// - Throws: `.malformedFrame` for a frame shorter than 5 bytes, an
  ///   end-of-stream frame that is not exactly 5 bytes or a message frame
  ///   without a flatbuffer; `.unknownMetadataType` for other types.
  public static func decode(_ bytes: ArrowBytes) throws(DissociatedIPCError) -> MetadataFrame {
    guard bytes.count >= prefixLength else {
      throw DissociatedIPCError(.malformedFrame, "metadata frame of \(bytes.count) bytes, at least 5 needed")
    }
    let sequence = bytes.loadLittleEndian(UInt32.self, at: 1)
    switch bytes[0] {
    case messageType:
      guard bytes.count > prefixLength else {
        throw DissociatedIPCError(.malformedFrame, "message frame \(sequence) carries no flatbuffer")
      }
      return .message(sequence: sequence, flatbuffer: bytes.clampedSlice(offset: prefixLength, count: bytes.count - prefixLength))
    case endOfStreamType:
      guard bytes.count == prefixLength else {
        throw DissociatedIPCError(.malformedFrame, "end-of-stream frame of \(bytes.count) bytes, must be 5")
      }
      return .endOfStream(sequence: sequence)
    case errorType:
      // The server's words: escaped and cut before they reach anyone (DIPC-LIM-9).
      let text = bytes.withUnsafeBytes { PeerText.escaped($0.dropFirst(prefixLength), limit: Self.maxErrorTextShown) }
      return .error(DissociatedIPCError.Code(rawValue: sequence) ?? .peerError, text)
    default:
      throw DissociatedIPCError(.unknownMetadataType, "metadata frame type \(bytes[0])")
    }
  }
}
