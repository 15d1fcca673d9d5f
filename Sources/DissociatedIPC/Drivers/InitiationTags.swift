/// The tags of messages a client sends to a server (DIPC-CONN-1): the
/// initiating want_data (one value per role) and free_data.
///
/// The metadata and data values are those of Arrow's reference
/// implementation, so its clients can talk to our servers.
public enum ControlTag {
  /// want_data for a stream with metadata and bodies on one connection.
  public static let combined: UInt64 = 0x8000_0DEA_DBA0_BAB0
  /// want_data for the metadata flow alone (reference `kWantCtrlTag`).
  public static let metadata: UInt64 = 0xFFFF_FDEA_DBA0_BAB0
  /// want_data for the body flow alone (reference `kWantDataTag`).
  public static let data: UInt64 = 0x0000_0DEA_DBA0_BAB0
  /// free_data: addresses the client returns.
  public static let freeData: UInt64 = 0x4000_0DEA_DBA0_BAB0

  /// The role a want_data value asks for, if it is one.
  static func role(of tag: UInt64) -> StreamRole? {
    switch tag {
    case combined: .combined
    case metadata: .metadata
    case data: .data
    default: nil
    }
  }

  /// The want_data value of `role`.
  static func wantData(_ role: StreamRole) -> UInt64 {
    switch role {
    case .combined: combined
    case .metadata: metadata
    case .data: data
    }
  }
}
