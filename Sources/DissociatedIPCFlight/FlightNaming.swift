#if Flight
import ArrowIPC
import Foundation
import GRPCCore

/// How streams are named in Flight (FLIGHT-DESC-1) and how names show in
/// errors.
enum FlightNaming {
  /// The longest ticket a descriptor may name: a catalog's tickets are
  /// file names and the like; a longer one names nothing (FLIGHT-LIM-1).
  static let maxTicketBytes = 4_096

  /// The ticket `descriptor` names: a path of exactly one element (its
  /// UTF-8 bytes) or a command (its bytes).
  static func ticket(of descriptor: Arrow_Flight_Protocol_FlightDescriptor) throws -> [UInt8] {
    let ticket: [UInt8]
    switch descriptor.type {
    case .path:
      guard descriptor.path.count == 1 else {
        throw RPCError(code: .notFound, message: "a path of \(descriptor.path.count) elements names no stream: a stream's path is its ticket alone")
      }
      ticket = Array(descriptor.path[0].utf8)
    case .cmd:
      ticket = [UInt8](descriptor.cmd)
    default:
      throw RPCError(code: .invalidArgument, message: "a descriptor must be a PATH or a CMD")
    }
    guard ticket.count <= maxTicketBytes else {
      throw RPCError(code: .invalidArgument, message: "a ticket of \(ticket.count) bytes is over the limit of \(maxTicketBytes)")
    }
    return ticket
  }

  /// The descriptor ListFlights gives `ticket`: its path when it is text,
  /// else a command.
  static func descriptor(for ticket: [UInt8]) -> Arrow_Flight_Protocol_FlightDescriptor {
    descriptor(for: String(validating: ticket, as: UTF8.self).map(FlightFetcher.Name.path) ?? .command(ticket))
  }

  /// The descriptor a client sends for `name`.
  static func descriptor(for name: FlightFetcher.Name) -> Arrow_Flight_Protocol_FlightDescriptor {
    var descriptor = Arrow_Flight_Protocol_FlightDescriptor()
    switch name {
    case .path(let path):
      descriptor.type = .path
      descriptor.path = [path]
    case .command(let command):
      descriptor.type = .cmd
      descriptor.cmd = Data(command)
    }
    return descriptor
  }

  /// NOT_FOUND for `ticket`, named safely.
  static func notFound(_ ticket: [UInt8]) -> RPCError {
    RPCError(code: .notFound, message: "no stream has the ticket \(printable(String(decoding: ticket.prefix(256), as: UTF8.self)))")
  }

  /// `text` with control characters and non-ASCII escaped: what a peer
  /// sent may reach a terminal or a log.
  static func printable(_ text: String) -> String {
    text.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value != 0x7F ? String($0) : $0.escaped(asASCII: true) }.joined()
  }

  /// The bytes of `bytes` as Data (protobuf's bytes fields): one copy.
  static func data(_ bytes: ArrowBytes) -> Data {
    bytes.withUnsafeBytes { Data($0) }
  }
}
#endif
