/// How a tagged body message carries its body (the most significant byte of
/// the tag).
public struct BodyType: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  /// The type's code.
  public var rawValue: UInt8
  /// Creates a body type from its code; unknown codes are kept so they can
  /// be reported.
  public init(rawValue: UInt8) { self.rawValue = rawValue }

  /// Type 0: the raw IPC body bytes (DIPC-BODY-2).
  public static let inline = BodyType(rawValue: 0)
  /// Type 1: a descriptor of ranges in shared or remote memory (DIPC-BODY-3).
  public static let descriptor = BodyType(rawValue: 1)

  /// Whether this library knows the type.
  public var isKnown: Bool { rawValue <= 1 }

  /// `inline`, `descriptor` or `type N`.
  public var description: String {
    switch rawValue {
    case 0: "inline"
    case 1: "descriptor"
    default: "type \(rawValue)"
    }
  }
}

/// The 64-bit tag of a body message (DIPC-TAG-1).
///
/// ```
///  63        56 55                      32 31                        0
/// +------------+--------------------------+---------------------------+
/// | body type  |   reserved, must be 0    |   metadata sequence number |
/// +------------+--------------------------+---------------------------+
/// ```
/// On the wire the tag is 8 little-endian bytes: sequence in bytes 0–3,
/// body type in byte 7.
public struct Tag: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
  /// The tag as an integer.
  public let rawValue: UInt64

  /// The bits that hold the sequence number; also the mask a client matches
  /// bodies with (DIPC-TAG-3).
  public static let sequenceMask: UInt64 = 0x0000_0000_FFFF_FFFF
  /// The bits that must be zero (DIPC-TAG-2).
  public static let reservedMask: UInt64 = 0x00FF_FFFF_0000_0000
  /// The position of the body type (DIPC-TAG-1: bit 56, per the official
  /// page's text; see the Spec for the page's own inconsistency).
  public static let bodyTypeShift: UInt64 = 56

  /// A tag without checking the reserved bits; used for initiation and
  /// free_data tags, which the server chooses freely.
  public init(rawValue: UInt64) { self.rawValue = rawValue }

  /// The tag of the body of metadata message `sequence`.
  public init(sequence: UInt32, bodyType: BodyType) {
    rawValue = UInt64(bodyType.rawValue) << Self.bodyTypeShift | UInt64(sequence)
  }

  /// A received body tag, checked.
  ///
  /// - Throws: ``DissociatedIPCError/Code/reservedTagBits`` when bits 32–55
  ///   are not zero.
  public init(validatingBodyTag rawValue: UInt64) throws(DissociatedIPCError) {
    guard rawValue & Self.reservedMask == 0 else {
      throw DissociatedIPCError(.reservedTagBits, "body tag \(Tag(rawValue: rawValue)) has reserved bits set")
    }
    self.rawValue = rawValue
  }

  /// The sequence number (bits 0–31).
  public var sequence: UInt32 { UInt32(truncatingIfNeeded: rawValue) }
  /// The body type (bits 56–63).
  public var bodyType: BodyType { BodyType(rawValue: UInt8(truncatingIfNeeded: rawValue >> Self.bodyTypeShift)) }

  /// The tag in hexadecimal.
  public var description: String {
    let hex = String(rawValue, radix: 16)
    return "0x" + String(repeating: "0", count: 16 - hex.count) + hex
  }
}
