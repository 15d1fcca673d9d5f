public import ArrowIPC

/// The error the protocol core, the drivers and every backend throw.
///
/// ``code`` is stable (programs and tests match on it); ``detail`` says
/// where and why. Spec/dissociated-ipc.md ("Errors") lists which rule raises
/// which code, and which codes travel to the peer in an error frame.
public struct DissociatedIPCError: Error, Hashable, Sendable, CustomStringConvertible {
  /// The kind of fault. Raw values are the numbers carried by error frames
  /// (DIPC-ERR-2); they never change.
  public enum Code: UInt32, Hashable, Sendable, CaseIterable {
    // Input the user gave.
    /// A location URI that does not follow the grammar (DIPC-URI-*).
    case invalidLocation = 1
    /// No backend is registered for the location's scheme.
    case unsupportedScheme = 2
    /// The backend cannot do what was asked (for example, remote memory).
    case unsupportedOperation = 3

    // The peer broke the protocol.
    /// A tag with reserved bits (32–55) set (DIPC-TAG-2).
    case reservedTagBits = 10
    /// A metadata frame of an unknown type (DIPC-META-4).
    case unknownMetadataType = 11
    /// A body of an unknown type (DIPC-BODY-4).
    case unknownBodyType = 12
    /// A metadata frame too short, or an end-of-stream frame not 5 bytes.
    case malformedFrame = 13
    /// A body descriptor whose sizes are inconsistent or overflow (DIPC-BODY-6).
    case malformedDescriptor = 14
    /// A free_data payload that is empty or not a multiple of 8 bytes.
    case malformedFreeData = 15
    /// A sequence number seen twice (DIPC-SEQ-3).
    case duplicateSequence = 16
    /// A message out of place: a first message that is not the Schema, a body
    /// for a message without one, a second initiation (DIPC-SEQ-*, DIPC-CONN-*).
    case unexpectedMessage = 17
    /// A body whose length differs from the metadata's bodyLength (DIPC-BODY-5).
    case bodyLengthMismatch = 18
    /// More out-of-order messages or bytes than the reorder window allows (DIPC-LIM-3).
    case reorderWindowExceeded = 19
    /// free_data for an address that was not handed to this client (DIPC-FREE-3).
    case unknownFreeAddress = 20
    /// The metadata is not valid Arrow IPC (see ``arrow``).
    case invalidArrow = 21
    /// A configured limit was exceeded (DIPC-LIM-*).
    case limitExceeded = 22

    // The stream could not be served or completed.
    /// The server has no stream for the ticket (DIPC-ERR-3).
    case unknownTicket = 30
    /// The peer closed, or the connection broke, before the stream ended
    /// (DIPC-TEAR-3).
    case streamTruncated = 31
    /// The peer sent an error frame; ``detail`` carries its text.
    case peerError = 32
    /// The source of a served stream failed.
    case sourceFailed = 33
    /// A timeout configured for a step elapsed.
    case timedOut = 34
    /// The server does not grant this want_data (or this ticket with it)
    /// under its access policy (DIPC-ACCESS-1).
    case accessDenied = 35

    // The transport.
    /// Nothing accepted the connection.
    case connectionRefused = 40
    /// The connection is closed: sending or receiving is no longer possible.
    case connectionClosed = 41
    /// A transport call failed for another reason (``detail`` says which).
    case transportFailure = 42
    /// The operation was cancelled.
    case cancelled = 43
    /// A local resource (a thread, a connection slot, a mapping) could not
    /// be had: its configured bound was reached or the system refused it
    /// (DIPC-LIM-*).
    case resourceExhausted = 44
  }

  /// The kind of fault.
  public var code: Code
  /// Where and why, for people.
  public var detail: String
  /// The Arrow decoding error, for ``Code/invalidArrow``.
  public var arrow: ArrowIPCError?

  /// Creates an error.
  public init(_ code: Code, _ detail: String, arrow: ArrowIPCError? = nil) {
    self.code = code
    self.detail = detail
    self.arrow = arrow
  }

  /// Wraps an Arrow decoding error.
  public init(_ arrow: ArrowIPCError) {
    self.init(.invalidArrow, arrow.description, arrow: arrow)
  }

  /// `code: detail`.
  public var description: String { "\(code): \(detail)" }
}
