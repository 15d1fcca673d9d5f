/// Text a peer chose (a ticket, an error frame's message) made safe to put
/// in a log line, an error or on a terminal (DIPC-LIM-9): at most `limit`
/// bytes are shown; printable ASCII stays as it is, everything else —
/// control characters, escape sequences, bytes of other scripts — becomes
/// `\xNN`. A longer text ends in `...` and its size. The result is
/// printable ASCII, so escaping it again (a client showing a server's
/// error) leaves it as it is.
public enum PeerText {
  /// The first bytes shown of a peer's text, by default.
  public static let defaultLimit = 64

  /// `bytes` escaped and cut to `limit` bytes.
  public static func escaped(_ bytes: some Collection<UInt8>, limit: Int = defaultLimit) -> String {
    var text = ""
    for byte in bytes.prefix(limit) {
      switch byte {
      case 0x20 ... 0x7E: text.unicodeScalars.append(Unicode.Scalar(byte))
      default:
        let hex = String(byte, radix: 16)
        text += "\\x" + (byte < 16 ? "0" : "") + hex
      }
    }
    if bytes.count > limit { text += "... (\(bytes.count) bytes)" }
    return text
  }
}
