import Testing
@testable import DissociatedIPC

@Suite("Location URIs")
struct LocationTests {
  @Test("the reference implementation's URI parses (decimal want_data, IPv4)")
  func reference() throws {
    let location = try Location(parsing: "ucx://10.0.0.5:4040?want_data=18446741783881759408")
    #expect(location.scheme == "ucx")
    #expect(location.host == "10.0.0.5")
    #expect(location.port == 4040)
    #expect(location.wantData == 0xFFFF_FDEA_DBA0_BAB0)
    #expect(location.freeData == nil)
  }

  @Test("every part round-trips through the canonical text")
  func roundTrip() throws {
    let location = Location(
      scheme: "TCP", host: "::1", port: 7000, path: "/a b/c", wantData: 1, freeData: .max,
      remoteHandle: [0xFB, 0xFF, 0x00, 0x3E], otherParameters: [.init("x", "1&2"), .init("y", "")])
    let text = location.description
    #expect(text == "tcp://[::1]:7000/a%20b/c?want_data=1&free_data=18446744073709551615&remote_handle=%2B%2F8APg%3D%3D&x=1%262&y=")
    #expect(try Location(parsing: text) == location)
  }

  @Test("paths without a host (shm)")
  func pathOnly() throws {
    let location = try Location(parsing: "shm:///run/dipc/s.sock?want_data=7&free_data=8")
    #expect(location.host.isEmpty && location.port == nil)
    #expect(location.path == "/run/dipc/s.sock")
    #expect(location.description == "shm:///run/dipc/s.sock?want_data=7&free_data=8")
  }

  @Test("remote_handle accepts URL-safe and unpadded base64")
  func base64Variants() throws {
    let standard = try Location(parsing: "x://h?want_data=1&remote_handle=%2B%2F8APg%3D%3D").remoteHandle
    let urlSafe = try Location(parsing: "x://h?want_data=1&remote_handle=-_8APg").remoteHandle
    #expect(standard == [0xFB, 0xFF, 0x00, 0x3E])
    #expect(urlSafe == standard)
  }

  @Test("base64 round-trips every length")
  func base64() {
    for length in 0 ..< 40 {
      let bytes = (0 ..< length).map { UInt8(truncatingIfNeeded: $0 * 37 + 11) }
      #expect(Base64.decode(Base64.encode(bytes)) == bytes)
    }
  }

  @Test("malformed locations are refused", arguments: [
    "", "tcp:/h?want_data=1", "tcp://h", "tcp://h?", "tcp://h?free_data=2", "tcp://h?want_data=",
    "tcp://h?want_data=-1", "tcp://h?want_data=+1", "tcp://h?want_data=0x10", "tcp://h?want_data=18446744073709551616",
    "tcp://h?want_data=1&want_data=2", "tcp://h?want_data=1&free_data=a", "tcp://h:99999?want_data=1",
    "tcp://h:?want_data=1", "tcp://h:1x?want_data=1", "tcp://[::1?want_data=1", "tcp://[zz]:1?want_data=1",
    "tcp://h?want_data=1#frag", "tcp://h?want_data=1&remote_handle=@@@", "1tcp://h?want_data=1",
    "tcp://h?want_data", "tcp://h%zz?want_data=1", "tcp://h/%zz?want_data=1", "tc p://h?want_data=1",
    "tcp://h?want_data=1&remote_handle=QQ%3D%3D%3D",
  ])
  func malformed(text: String) {
    #expect { try Location(parsing: text) } throws: { ($0 as? DissociatedIPCError)?.code == .invalidLocation }
  }

  @Test("bytes a URI must percent-encode are refused raw, and the error shows them escaped (DIPC-URI-1)",
        arguments: ["tcp://h:1?want_data=1&ticket=a b", "tcp://h:1?want_data=1&ticket=\u{1B}[31m", "tcp://h:1?want_data=1&ticket=é",
                    "tcp://h:1?want_data=1&ticket=\u{0}", "tcp://h:1?want_data=1&ticket=a\"b"])
  func rawBytes(text: String) {
    #expect { try Location(parsing: text) } throws: { error in
      guard let error = error as? DissociatedIPCError, error.code == .invalidLocation else { return false }
      return !error.detail.unicodeScalars.contains { $0.value < 0x20 || $0.value == 0x7F }
    }
  }

  @Test("a location whose canonical text would pass the length limit is refused, so what parses always prints to text that parses (found by fuzzing)")
  func canonicalLength() throws {
    // 3,000 '!' are 3,000 bytes as given and 9,000 once percent-encoded.
    let long = "tcp://h:1?want_data=1&ticket=" + String(repeating: "!", count: 3000)
    #expect { try Location(parsing: long) } throws: { ($0 as? DissociatedIPCError)?.code == .invalidLocation }
    let fits = "tcp://h:1?want_data=1&ticket=" + String(repeating: "!", count: 2000)
    let location = try Location(parsing: fits)
    #expect(try Location(parsing: location.description) == location)
  }
}

