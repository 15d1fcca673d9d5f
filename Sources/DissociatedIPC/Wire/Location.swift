/// Where a stream can be fetched: a Dissociated IPC location URI
/// (DIPC-URI-1 … DIPC-URI-8).
///
/// ```
/// scheme://host[:port][/path]?want_data=N[&free_data=N][&remote_handle=BASE64][&other=…]
/// ucx://10.0.0.5:4040?want_data=18446741887584811696
/// tcp://[::1]:7000?want_data=1&free_data=2
/// shm:///run/dipc/server.sock?want_data=1&free_data=2
/// ```
/// Integers are decimal; `remote_handle` is standard base64, percent-encoded
/// in the URI. Unknown parameters are kept, in order, and ignored.
public struct Location: Hashable, Sendable, CustomStringConvertible {
  /// The scheme, lowercase: it selects the backend.
  public var scheme: String
  /// The host: a name, an IPv4 address or an IPv6 address (without
  /// brackets). Empty for transports addressed by path.
  public var host: String
  /// The port, if any.
  public var port: UInt16?
  /// The path, percent-decoded: empty, or starting with "/".
  public var path: String
  /// The tag of the client's initiating message (required).
  public var wantData: UInt64
  /// The tag of free_data messages, when the server may send descriptors.
  public var freeData: UInt64?
  /// The handle that reaches the server's shared or remote memory.
  public var remoteHandle: [UInt8]?
  /// Other query parameters, decoded, in order.
  public var otherParameters: [KeyValuePair]

  /// A query parameter this library does not interpret.
  public struct KeyValuePair: Hashable, Sendable {
    /// The name.
    public var name: String
    /// The value.
    public var value: String
    /// Creates a pair.
    public init(_ name: String, _ value: String) {
      self.name = name
      self.value = value
    }
  }

  /// Creates a location.
  public init(scheme: String, host: String = "", port: UInt16? = nil, path: String = "",
              wantData: UInt64, freeData: UInt64? = nil, remoteHandle: [UInt8]? = nil,
              otherParameters: [KeyValuePair] = []) {
    self.scheme = scheme.lowercased()
    self.host = host
    self.port = port
    self.path = path
    self.wantData = wantData
    self.freeData = freeData
    self.remoteHandle = remoteHandle
    self.otherParameters = otherParameters
  }

  /// The longest location text, parsed or printed (DIPC-URI-1).
  public static let maxLength = 8192

  /// The bytes RFC 3986 allows in a URI as they are (unreserved, reserved
  /// and `%`); everything else must be percent-encoded.
  static let uriCharacters = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~:/?#[]@!$&'()*+,;=%".utf8)

  /// Parses a location URI.
  ///
  /// - Throws: `.invalidLocation` with the reason, for anything outside the
  ///   grammar in Spec/dissociated-ipc.md.
  public init(parsing text: String) throws(DissociatedIPCError) {
    func fail(_ why: String) -> DissociatedIPCError {
      // The text may come from anyone: escaped and cut (DIPC-LIM-9).
      DissociatedIPCError(.invalidLocation, "'\(PeerText.escaped(text.utf8, limit: 256))': \(why)")
    }
    guard text.utf8.count <= Self.maxLength else { throw fail("longer than \(Self.maxLength) bytes") }
    guard !text.contains("#") else { throw fail("fragments are not allowed") }
    if let stray = text.utf8.first(where: { !Self.uriCharacters.contains($0) }) {
      throw fail("byte \(stray) must be percent-encoded")
    }
    guard let schemeEnd = text.firstRange(of: "://") else { throw fail("no scheme (expected scheme://…)") }
    let scheme = String(text[..<schemeEnd.lowerBound])
    guard let first = scheme.unicodeScalars.first, first.properties.isASCIIHexDigit || ("a" ... "z").contains(first)
            || ("A" ... "Z").contains(first),
          scheme.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0" ... "9").contains($0) || "+-.".unicodeScalars.contains($0)) }),
          !("0" ... "9").contains(first)
    else { throw fail("scheme '\(scheme)' is not letters, digits, '+', '-', '.' starting with a letter") }

    let rest = text[schemeEnd.upperBound...]
    guard let questionMark = rest.firstIndex(of: "?") else { throw fail("no query: want_data is required") }
    let beforeQuery = rest[..<questionMark]
    let query = rest[rest.index(after: questionMark)...]
    let authorityEnd = beforeQuery.firstIndex(of: "/") ?? beforeQuery.endIndex
    let authority = beforeQuery[..<authorityEnd]
    let rawPath = beforeQuery[authorityEnd...]

    // Authority: host[:port], IPv6 in brackets.
    var host = ""
    var port: UInt16?
    var portText: Substring?
    if authority.hasPrefix("[") {
      guard let close = authority.firstIndex(of: "]") else { throw fail("unclosed '[' in host") }
      host = String(authority[authority.index(after: authority.startIndex) ..< close])
      guard !host.isEmpty, host.contains(":"),
            host.allSatisfy({ $0.isHexDigit || $0 == ":" || $0 == "." || $0 == "%" })
      else { throw fail("'[\(host)]' is not an IPv6 address") }
      let after = authority[authority.index(after: close)...]
      if !after.isEmpty {
        guard after.hasPrefix(":") else { throw fail("unexpected '\(after)' after ']'") }
        portText = after.dropFirst()
      }
    } else {
      let parts = authority.split(separator: ":", maxSplits: 1, omittingEmptySubsequences: false)
      host = String(parts.first ?? "")
      guard host.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-._~".contains($0)) }) else {
        throw fail("host '\(host)' has characters outside letters, digits, '-', '.', '_', '~'")
      }
      if parts.count == 2 { portText = parts[1] }
    }
    if let portText {
      guard !portText.isEmpty, portText.count <= 5, portText.allSatisfy({ $0.isASCII && $0.isNumber }),
            let value = UInt16(portText)
      else { throw fail("port '\(portText)' is not a number from 0 to 65535") }
      port = value
    }
    guard let path = Self.percentDecode(rawPath) else { throw fail("bad percent-encoding in the path") }

    // Query.
    var wantData: UInt64?
    var freeData: UInt64?
    var remoteHandle: [UInt8]?
    var others: [KeyValuePair] = []
    for parameter in query.split(separator: "&", omittingEmptySubsequences: true) {
      guard let equals = parameter.firstIndex(of: "=") else { throw fail("parameter '\(parameter)' has no '='") }
      guard let name = Self.percentDecode(parameter[..<equals]),
            let value = Self.percentDecode(parameter[parameter.index(after: equals)...])
      else { throw fail("bad percent-encoding in '\(parameter)'") }
      switch name {
      case "want_data":
        guard wantData == nil else { throw fail("want_data appears twice") }
        guard let number = Self.decimal(value) else { throw fail("want_data '\(PeerText.escaped(value.utf8))' is not a decimal UInt64") }
        wantData = number
      case "free_data":
        guard freeData == nil else { throw fail("free_data appears twice") }
        guard let number = Self.decimal(value) else { throw fail("free_data '\(PeerText.escaped(value.utf8))' is not a decimal UInt64") }
        freeData = number
      case "remote_handle":
        guard remoteHandle == nil else { throw fail("remote_handle appears twice") }
        guard let bytes = Base64.decode(value) else { throw fail("remote_handle is not base64") }
        remoteHandle = bytes
      default:
        others.append(KeyValuePair(name, value))
      }
    }
    guard let wantData else { throw fail("want_data is required") }
    self.init(scheme: scheme, host: host, port: port, path: path, wantData: wantData, freeData: freeData,
              remoteHandle: remoteHandle, otherParameters: others)
    // What parses must print to text that parses again: the canonical
    // form (which may encode more than the input did) is bounded too.
    guard description.utf8.count <= Self.maxLength else {
      throw fail("its canonical form is longer than \(Self.maxLength) bytes")
    }
  }

  /// The canonical URI text: decimal integers, standard padded base64,
  /// percent-encoding where needed.
  public var description: String {
    var text = scheme + "://"
    text += host.contains(":") ? "[\(host)]" : host
    if let port { text += ":\(port)" }
    text += Self.percentEncode(path, keeping: "/")
    text += "?want_data=\(wantData)"
    if let freeData { text += "&free_data=\(freeData)" }
    if let remoteHandle { text += "&remote_handle=" + Self.percentEncode(Base64.encode(remoteHandle), keeping: "") }
    for pair in otherParameters {
      text += "&" + Self.percentEncode(pair.name, keeping: "") + "=" + Self.percentEncode(pair.value, keeping: "")
    }
    return text
  }

  /// 1 to 20 ASCII digits whose value fits UInt64.
  static func decimal(_ text: String) -> UInt64? {
    guard !text.isEmpty, text.utf8.count <= 20, text.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
    return UInt64(text)
  }

  static func percentDecode(_ text: Substring) -> String? {
    var bytes: [UInt8] = []
    var iterator = text.utf8.makeIterator()
    while let byte = iterator.next() {
      guard byte == UInt8(ascii: "%") else {
        bytes.append(byte)
        continue
      }
      guard let high = iterator.next().flatMap(hexValue), let low = iterator.next().flatMap(hexValue) else { return nil }
      bytes.append(high << 4 | low)
    }
    return String(validating: bytes, as: UTF8.self)
  }

  private static func hexValue(_ byte: UInt8) -> UInt8? {
    switch byte {
    case UInt8(ascii: "0") ... UInt8(ascii: "9"): byte - UInt8(ascii: "0")
    case UInt8(ascii: "a") ... UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
    case UInt8(ascii: "A") ... UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
    default: nil
    }
  }

  /// Percent-encodes everything but RFC 3986 unreserved characters and `keeping`.
  static func percentEncode(_ text: String, keeping: String) -> String {
    let hex = Array("0123456789ABCDEF".utf8)
    var bytes: [UInt8] = []
    for byte in text.utf8 {
      let scalar = Unicode.Scalar(byte)
      if byte < 0x80, scalar.properties.isAlphabetic || ("0" ... "9").contains(scalar)
        || "-._~".unicodeScalars.contains(scalar) || keeping.unicodeScalars.contains(scalar) {
        bytes.append(byte)
      } else {
        bytes += [UInt8(ascii: "%"), hex[Int(byte >> 4)], hex[Int(byte & 15)]]
      }
    }
    return String(decoding: bytes, as: UTF8.self)
  }
}

/// Base64 (RFC 4648): writes the standard alphabet with padding; reads the
/// standard and the URL-safe alphabets, with or without padding.
enum Base64 {
  private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

  static func encode(_ bytes: [UInt8]) -> String {
    var output: [UInt8] = []
    output.reserveCapacity((bytes.count + 2) / 3 * 4)
    var index = 0
    while index < bytes.count {
      let chunk = bytes[index ..< min(index + 3, bytes.count)]
      let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (16 - 8 * UInt32($1.offset)) }
      for position in 0 ..< 4 {
        output.append(position <= chunk.count ? alphabet[Int(value >> (18 - 6 * UInt32(position)) & 63)] : UInt8(ascii: "="))
      }
      index += 3
    }
    return String(decoding: output, as: UTF8.self)
  }

  static func decode(_ text: String) -> [UInt8]? {
    var symbols = Array(text.utf8)
    while symbols.last == UInt8(ascii: "=") { symbols.removeLast() }
    guard symbols.count % 4 != 1, text.utf8.count - symbols.count <= 2 else { return nil }
    var output: [UInt8] = []
    var buffer: UInt32 = 0
    var bits = 0
    for symbol in symbols {
      let value: UInt8
      switch symbol {
      case UInt8(ascii: "A") ... UInt8(ascii: "Z"): value = symbol - UInt8(ascii: "A")
      case UInt8(ascii: "a") ... UInt8(ascii: "z"): value = symbol - UInt8(ascii: "a") + 26
      case UInt8(ascii: "0") ... UInt8(ascii: "9"): value = symbol - UInt8(ascii: "0") + 52
      case UInt8(ascii: "+"), UInt8(ascii: "-"): value = 62
      case UInt8(ascii: "/"), UInt8(ascii: "_"): value = 63
      default: return nil
      }
      buffer = buffer << 6 | UInt32(value)
      bits += 6
      if bits >= 8 {
        bits -= 8
        output.append(UInt8(truncatingIfNeeded: buffer >> UInt32(bits)))
      }
    }
    // Leftover bits must be zero (canonical encodings only).
    guard buffer & ((1 << UInt32(bits)) - 1) == 0 else { return nil }
    return output
  }
}
