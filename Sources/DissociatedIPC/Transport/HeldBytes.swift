/// Bytes of a peer's memory that the application holds, kept within a
/// limit that a single holding may exceed (DIPC-FREE-5, SHM-RING-7): what
/// would go beyond is copied and returned instead.
package struct HeldBytes: Sendable {
  /// The bytes held now.
  package private(set) var bytes = 0

  /// Nothing held.
  package init() {}

  /// Counts `count` more bytes unless that takes the total beyond `limit`
  /// (with nothing held, anything fits); false then, and nothing is counted.
  package mutating func hold(_ count: Int, limit: Int) -> Bool {
    guard bytes == 0 || bytes + count <= limit else { return false }
    bytes += count
    return true
  }

  /// `count` bytes held before were let go.
  package mutating func release(_ count: Int) { bytes -= count }
}
