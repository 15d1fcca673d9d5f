internal import ArrowIPC
internal import DissociatedIPC
internal import Synchronization

extension InProcessTransport {
  /// One end of an in-process connection.
  final class Connection: InboxReceiving {
    /// What both ends share: the fault state and the exposed regions.
    final class Link: Sendable {
      let faults: Faults
      let sentMessages = Atomic<Int>(0)
      /// Server regions by id: the exposed bytes.
      let regions = Mutex<[UInt64: ArrowBytes]>([:])
      let nextRegion = Atomic<UInt64>(1)
      /// Where exposed bytes are counted.
      let network: Network

      init(faults: Faults, network: Network) {
        self.faults = faults
        self.network = network
      }
    }

    let inbox = MessageInbox()
    let link: Link
    nonisolated(unsafe) weak var peer: Connection?
    private let closed = Atomic<Bool>(false)
    /// Jittered tagged messages not yet delivered; close waits for them, as
    /// a real transport delivers what was sent before an orderly close.
    private let inFlight = Atomic<Int>(0)

    private init(link: Link) { self.link = link }

    static func pair(faults: Faults, network: Network) -> (client: Connection, server: Connection) {
      let link = Link(faults: faults, network: network)
      let client = Connection(link: link)
      let server = Connection(link: link)
      client.peer = server
      server.peer = client
      return (client, server)
    }

    var remoteMemory: (any RemoteMemory)? { InProcessMemory(link: link) }
    var pathDescription: String { "in-process" }

    /// Counts a sent message and applies the drop and delay faults; returns
    /// the peer to deliver to.
    private func prepareSend() async throws(DissociatedIPCError) -> Connection {
      guard !closed.load(ordering: .acquiring), let peer else {
        throw DissociatedIPCError(.connectionClosed, "the in-process connection is closed")
      }
      let count = link.sentMessages.wrappingAdd(1, ordering: .relaxed).newValue
      if let limit = link.faults.dropAfterMessages, count > limit {
        let broken = DissociatedIPCError(.connectionClosed, "connection dropped (fault injection)")
        inbox.close(error: broken)
        peer.inbox.close(error: broken)
        throw broken
      }
      if let delay = link.faults.delay { try? await Task.sleep(for: delay) }
      return peer
    }

    func sendFrame(_ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
      let peer = try await prepareSend()
      peer.inbox.deliverFrame(Self.join(parts))
    }

    func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes]) async throws(DissociatedIPCError) {
      let peer = try await prepareSend()
      let message = TaggedMessage(tag: tag, payload: Self.join(parts))
      guard let jitter = link.faults.reorderJitter else {
        peer.inbox.deliverTagged(message)
        return
      }
      let wait = jitter * Double.random(in: 0 ... 1)
      inFlight.wrappingAdd(1, ordering: .relaxed)
      Task {
        try? await Task.sleep(for: wait)
        peer.inbox.deliverTagged(message)
        self.inFlight.wrappingSubtract(1, ordering: .releasing)
      }
    }

    func close() async {
      guard !closed.exchange(true, ordering: .acquiringAndReleasing) else { return }
      while inFlight.load(ordering: .acquiring) > 0 { try? await Task.sleep(for: .milliseconds(1)) }
      inbox.close()
      peer?.inbox.close()
    }

    /// One payload from parts: no copy for a single part.
    static func join(_ parts: [ArrowBytes]) -> ArrowBytes {
      if parts.count == 1 { return parts[0] }
      return ArrowBytes(copying: parts.flatMap(\.array))
    }
  }

  /// Remote memory of an in-process connection: exposing records a view,
  /// fetching returns it (zero copy).
  struct InProcessMemory: RemoteMemory {
    let link: Connection.Link

    func expose(_ bytes: ArrowBytes) async throws(DissociatedIPCError) -> ExposedRegion {
      let id = link.nextRegion.wrappingAdd(1, ordering: .relaxed).oldValue
      link.regions.withLock { $0[id] = bytes }
      link.network.exposed(bytes.count)
      // The address is the region id in the top bits and the offset below,
      // so a lying address cannot name memory that was never exposed.
      return ExposedRegion(id: id, ranges: [RemoteRange(address: id << 40, length: UInt64(bytes.count))])
    }

    func release(_ region: UInt64) async {
      if let bytes = link.regions.withLock({ $0.removeValue(forKey: region) }) {
        link.network.exposed(-bytes.count)
      }
    }

    func fetch(_ ranges: [RemoteRange]) async throws(DissociatedIPCError) -> ArrowBytes {
      var pieces: [ArrowBytes] = []
      for range in ranges {
        let region = range.address >> 40
        let offset = range.address & (1 << 40 - 1)
        guard let bytes = link.regions.withLock({ $0[region] }),
              let piece = try? bytes.slice(offset: Int(offset), count: Int(range.length))
        else {
          throw DissociatedIPCError(.malformedDescriptor, "range \(range.address)+\(range.length) was not exposed")
        }
        pieces.append(piece)
      }
      return Connection.join(pieces)
    }
  }
}
