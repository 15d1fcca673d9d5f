/// Who may fetch a server's streams (DIPC-ACCESS-1).
public enum AccessPolicy: Sendable, Hashable {
  /// Any client that knows a ticket: want_data takes the fixed values of
  /// ``ControlTag``, as Arrow's reference implementation does, so its
  /// clients interoperate.
  case open
  /// Only clients given a location: each ticket and role gets a want_data
  /// value drawn at random (64 bits from the system's generator) when the
  /// server starts; a first message with any other tag, or with another
  /// ticket than the one its want_data was issued for, is refused with
  /// `accessDenied`. A location is then a capability: keep it secret.
  case capabilities
}

/// The want_data values a server issued under ``AccessPolicy/capabilities``,
/// and what each one grants.
struct Grants: Sendable {
  /// What one want_data value fetches.
  struct Grant: Sendable, Equatable {
    var ticket: [UInt8]
    var role: StreamRole
  }

  private var byTag: [UInt64: Grant] = [:]
  private var byTicket: [[UInt8]: [StreamRole: UInt64]] = [:]

  /// A value for each of `tickets` in each role.
  init(tickets: [[UInt8]]) {
    var generator = SystemRandomNumberGenerator()
    for ticket in tickets {
      for role in [StreamRole.combined, .metadata, .data] {
        var tag = Self.randomTag(using: &generator)
        while byTag[tag] != nil { tag = Self.randomTag(using: &generator) }
        byTag[tag] = Grant(ticket: ticket, role: role)
        byTicket[ticket, default: [:]][role] = tag
      }
    }
  }

  /// The want_data issued for `ticket` in `role`, if the catalog has it.
  func wantData(for ticket: [UInt8], role: StreamRole) -> UInt64? { byTicket[ticket]?[role] }

  /// What `tag` grants, if it was issued.
  func grant(_ tag: UInt64) -> Grant? { byTag[tag] }

  /// A random tag with reserved bits (32–55) set, so no body tag can equal
  /// it, and none of the fixed control tags.
  static func randomTag(using generator: inout some RandomNumberGenerator) -> UInt64 {
    while true {
      let tag = generator.next() as UInt64
      let fixed = [ControlTag.combined, ControlTag.metadata, ControlTag.data, ControlTag.freeData]
      if (tag >> 32) & 0xFF_FFFF != 0, !fixed.contains(tag) { return tag }
    }
  }
}
