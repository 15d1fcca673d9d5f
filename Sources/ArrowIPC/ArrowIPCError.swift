/// The error every ArrowIPC decoder, verifier and writer throws.
///
/// ``code`` says what kind of fault it is (stable, for programs and tests);
/// ``detail`` says where, for people. Spec/arrow-ipc.md lists the codes and
/// which checks raise them.
public struct ArrowIPCError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The kind of fault.
  public enum Code: String, Hashable, Sendable, CaseIterable {
    /// The input ends before a structure it declares (stream framing,
    /// metadata, body).
    case truncated
    /// A flatbuffer offset, vector, string or body range points outside the
    /// bytes it must lie in, or an integer computation on it overflows.
    case outOfBounds
    /// A flatbuffer vtable or table header is malformed.
    case invalidVTable
    /// A value is outside its domain: an unknown enum value, a negative
    /// length, an unsupported bit width, invalid UTF-8.
    case invalidValue
    /// A field the format requires is absent.
    case missingField
    /// The metadata version is one this reader does not accept (below V4).
    case unsupportedVersion
    /// Valid Arrow that this library does not handle in the requested way
    /// (for example, typed column access on a compressed body).
    case unsupportedFeature
    /// A configured limit (size, depth, count) was exceeded.
    case limitExceeded
    /// A batch's nodes and buffers do not fit the schema or the body.
    case layoutMismatch
    /// The sequence of messages breaks the IPC stream rules.
    case invalidStream
    /// An I/O call failed (opening or mapping a file, writing to a descriptor).
    case io
  }

  /// The kind of fault.
  public var code: Code
  /// Where and why, for people.
  public var detail: String

  /// Creates an error of kind `code`.
  public init(_ code: Code, _ detail: String) {
    self.code = code
    self.detail = detail
  }

  /// `code: detail`.
  public var description: String { "\(code.rawValue): \(detail)" }
}
