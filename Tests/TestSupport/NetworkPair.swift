import Foundation
internal import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// Two hosts for cross-host tests: two network namespaces, `server` and
/// `client`, joined by one point-to-point link whose packets a relay in
/// this process carries, so a test can delay, drop and reorder them
/// (``impair(_:)``) or cut the link (``cut()``).
///
/// ```
///  server namespace              this process               client namespace
///  10.77.0.1 ── tun ──read──▶ relay (delay, loss, ──write──▶ tun ── 10.77.0.2
///                 ◀──write──  reorder)          ◀──read───
/// ```
///
/// The link is a TUN device in each namespace rather than a veth pair with
/// `tc netem`: the kernels these tests run on lack `sch_netem` ("Specified
/// qdisc kind is unknown"), and a relay works wherever TUN does. Programs
/// run in a namespace with ``command(in:_:)`` (`ip netns exec`). Needs
/// root. Everything is removed by ``close()`` (also on deinit), and
/// namespaces that a dead test process left are removed when the next
/// pair is made.
public final class NetworkPair: @unchecked Sendable {
  /// One side of the link.
  public struct Host: Sendable {
    /// The namespace's name.
    public let namespace: String
    /// Its address on the link.
    public let address: String
    /// Its end of the link (a TUN device).
    public let device: String
  }

  /// What the relay does to each packet.
  public struct Impairment: Sendable {
    /// Every packet is held this long.
    public var delay: Duration
    /// The fraction of packets dropped.
    public var loss: Double
    /// The fraction of packets held a second `delay` (or 5 ms, whichever
    /// is longer) more, so that later ones overtake them.
    public var reorder: Double
    /// Bytes per second each direction carries at most (nil: no limit).
    public var rate: Int?

    /// Creates an impairment.
    public init(delay: Duration = .zero, loss: Double = 0, reorder: Double = 0, rate: Int? = nil) {
      self.delay = delay
      self.loss = loss
      self.reorder = reorder
      self.rate = rate
    }

    /// A clean link.
    public static let none = Impairment()
  }

  /// The host that serves.
  public let server: Host
  /// The host that fetches.
  public let client: Host
  private let relay: Relay
  private let closed = Mutex(false)

  /// Whether this machine can make pairs: root, `ip`, and TUN devices.
  public static var isSupported: Bool {
    getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip")
      && FileManager.default.fileExists(atPath: "/dev/net/tun")
  }

  private static let counter = Atomic<Int>(0)

  /// Makes the namespaces, their TUN devices and addresses, and starts the
  /// relay with a clean link.
  public init() throws {
    Self.removeLeftovers()
    // Device names are made in this namespace first: unique here, at most 15 bytes.
    let number = Self.counter.add(1, ordering: .relaxed).newValue
    let prefix = "dipc-\(getpid())-\(number)"
    server = Host(namespace: prefix + "-srv", address: "10.77.0.1", device: "dp\(getpid())s\(number % 1000)")
    client = Host(namespace: prefix + "-cli", address: "10.77.0.2", device: "dp\(getpid())c\(number % 1000)")
    var made: [String] = []
    do {
      for host in [server, client] {
        try Self.ip(["netns", "add", host.namespace])
        made.append(host.namespace)
      }
      let serverTUN = try Self.openTUN(named: server.device, in: server.namespace)
      let clientTUN: Int32
      do {
        clientTUN = try Self.openTUN(named: client.device, in: client.namespace)
      } catch {
        Glibc.close(serverTUN)
        throw error
      }
      relay = Relay(serverSide: serverTUN, clientSide: clientTUN)
      for (host, peer) in [(server, client), (client, server)] {
        try Self.ip(["-n", host.namespace, "link", "set", "lo", "up"])
        try Self.ip(["-n", host.namespace, "addr", "add", host.address, "peer", peer.address, "dev", host.device])
        try Self.ip(["-n", host.namespace, "link", "set", host.device, "up"])
      }
    } catch {
      for namespace in made { try? Self.ip(["netns", "del", namespace]) }
      throw error
    }
  }

  deinit { close() }

  /// Stops the relay and removes both namespaces (their devices go with
  /// them). Idempotent.
  public func close() {
    guard closed.withLock({ closed in defer { closed = true }; return !closed }) else { return }
    relay.stop()
    for host in [server, client] { try? Self.ip(["netns", "del", host.namespace]) }
  }

  /// From now on, packets in both directions are impaired so.
  public func impair(_ impairment: Impairment) { relay.impairment.withLock { $0 = impairment } }

  /// Takes the link down on both hosts, as a pulled cable: packets already
  /// sent are lost, nothing more passes, and no host is told.
  public func cut() throws {
    relay.cut.store(true, ordering: .relaxed)
    for host in [server, client] { try Self.ip(["-n", host.namespace, "link", "set", host.device, "down"]) }
  }

  /// Brings the link up again after ``cut()``.
  public func restore() throws {
    for host in [server, client] { try Self.ip(["-n", host.namespace, "link", "set", host.device, "up"]) }
    relay.cut.store(false, ordering: .relaxed)
  }

  /// The packets the relay carried and dropped so far.
  public var packets: (carried: Int, dropped: Int) {
    (relay.carried.load(ordering: .relaxed), relay.dropped.load(ordering: .relaxed))
  }

  /// `arguments` run inside `host`'s namespace: `ip netns exec`, which
  /// replaces itself with the program (same pid, so signals reach it).
  public func command(in host: Host, _ arguments: [String]) -> [String] {
    ["/usr/sbin/ip", "netns", "exec", host.namespace] + arguments
  }

  // MARK: Set-up

  private static func ip(_ arguments: [String]) throws { try ChildProcess.run(["/usr/sbin/ip"] + arguments, timeout: .seconds(30)) }

  /// Removes namespaces named `dipc-PID-…` whose process is gone.
  static func removeLeftovers() {
    let listing = (try? ChildProcess.run(["/usr/sbin/ip", "netns", "list"], timeout: .seconds(30))) ?? ""
    for line in listing.split(separator: "\n") {
      let name = String(line.split(separator: " ").first ?? "")
      let parts = name.split(separator: "-")
      guard parts.count == 4, parts[0] == "dipc", let pid = Int32(parts[1]), kill(pid, 0) != 0, errno == ESRCH else { continue }
      _ = try? ChildProcess.run(["/usr/sbin/ip", "netns", "del", name], timeout: .seconds(30))
    }
  }

  /// Opens a new TUN device `name` (IP packets, no extra header) and
  /// moves it into `namespace`; the descriptor stays attached to it.
  static func openTUN(named name: String, in namespace: String) throws -> Int32 {
    let device = open("/dev/net/tun", O_RDWR | O_CLOEXEC | O_NONBLOCK)
    guard device >= 0 else { throw ProcessFailure("open /dev/net/tun: errno \(errno)") }
    // struct ifreq: the name (16 bytes), then the flags (short).
    var request = [UInt8](repeating: 0, count: 40)
    for (index, byte) in name.utf8.prefix(15).enumerated() { request[index] = byte }
    let flags: UInt16 = 0x0001 | 0x1000  // IFF_TUN | IFF_NO_PI
    request[16] = UInt8(flags & 0xFF)
    request[17] = UInt8(flags >> 8)
    let status = request.withUnsafeMutableBytes { ioctl(device, 0x4004_54CA /* TUNSETIFF */, $0.baseAddress!) }
    guard status == 0 else {
      let error = errno
      Glibc.close(device)
      throw ProcessFailure("TUNSETIFF \(name): errno \(error)")
    }
    do {
      try ip(["link", "set", "dev", name, "netns", namespace])
    } catch {
      Glibc.close(device)  // the device goes with its last descriptor
      throw error
    }
    return device
  }

  // MARK: The relay

  /// Carries packets between the two TUN devices on a thread of its own,
  /// each after the delay the impairment asks for (or never).
  final class Relay: @unchecked Sendable {
    let impairment = Mutex(Impairment.none)
    let cut = Atomic(false)
    let carried = Atomic(0)
    let dropped = Atomic(0)
    private let stopped = Atomic(false)
    /// Packets the relay holds at most.
    static let maxInFlight = 100_000
    private let finished = DispatchSemaphore(value: 0)
    private let sides: [Int32]

    /// A packet on its way, due at `due` (monotonic nanoseconds).
    private struct InFlight {
      var due: UInt64
      var bytes: [UInt8]
      var to: Int32
    }

    init(serverSide: Int32, clientSide: Int32) {
      sides = [serverSide, clientSide]
      let thread = Thread { [self] in run() }
      thread.name = "netpair-relay"
      thread.start()
    }

    func stop() {
      stopped.store(true, ordering: .relaxed)
      finished.wait()
    }

    private static func now() -> UInt64 {
      var time = timespec()
      clock_gettime(CLOCK_MONOTONIC, &time)
      return UInt64(time.tv_sec) * 1_000_000_000 + UInt64(time.tv_nsec)
    }

    private func run() {
      defer {
        for side in sides { Glibc.close(side) }
        finished.signal()
      }
      // Seeded: a failing run can be repeated packet for packet.
      var random = SplitMix64(seed: 0x7E57_0001)
      var inFlight: [InFlight] = []
      // Per direction: when the link is free again (rate limit).
      var linkFree: [UInt64] = [0, 0]
      var buffer = [UInt8](repeating: 0, count: 65_536)
      var polls = sides.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
      while !stopped.load(ordering: .relaxed) {
        let now = Self.now()
        // Send what is due, in due order.
        while let first = inFlight.first, first.due <= now {
          inFlight.removeFirst()
          if !cut.load(ordering: .relaxed) {
            _ = first.bytes.withUnsafeBytes { write(first.to, $0.baseAddress, $0.count) }
          }
        }
        // Rounded up: a packet due in under 1 ms must not make poll spin.
        let wait = inFlight.first.map { Int32(min(5, ($0.due - now + 999_999) / 1_000_000)) } ?? 5
        guard poll(&polls, nfds_t(polls.count), wait) > 0 else { continue }
        for (index, entry) in polls.enumerated() where entry.revents & Int16(POLLIN) != 0 {
          let target = sides[1 - index]
          while true {
            let count = buffer.withUnsafeMutableBytes { read(entry.fd, $0.baseAddress, $0.count) }
            guard count > 0 else { break }
            let rules = impairment.withLock { $0 }
            // A full queue drops, as a router's would.
            if cut.load(ordering: .relaxed) || inFlight.count >= Self.maxInFlight
              || Double.random(in: 0 ..< 1, using: &random) < rules.loss {
              dropped.add(1, ordering: .relaxed)
              continue
            }
            carried.add(1, ordering: .relaxed)
            var delay = UInt64(rules.delay.components.seconds) * 1_000_000_000 + UInt64(rules.delay.components.attoseconds / 1_000_000_000)
            if Double.random(in: 0 ..< 1, using: &random) < rules.reorder { delay += max(delay, 5_000_000) }
            var sent = Self.now()
            if let rate = rules.rate, rate > 0 {
              // The packet leaves once the ones before it have, at `rate`.
              sent = max(sent, linkFree[index]) + UInt64(count) * 1_000_000_000 / UInt64(rate)
              linkFree[index] = sent
            }
            let packet = InFlight(due: sent + delay, bytes: Array(buffer[0 ..< count]), to: target)
            let position = inFlight.lastIndex { $0.due <= packet.due }.map { $0 + 1 } ?? 0
            inFlight.insert(packet, at: position)
          }
        }
        for index in polls.indices { polls[index].revents = 0 }
      }
    }
  }
}
