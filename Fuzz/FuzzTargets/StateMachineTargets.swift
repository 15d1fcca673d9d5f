internal import ArrowIPC
internal import DissociatedIPC

/// The `client-machine` target: a client stream fed what a hostile server
/// could send, in any order. Operations: 0 a metadata frame; 1 a tagged
/// body (tag, then payload); 2 a fetched type-1 body (sequence, then
/// bytes); 3 take every ready item and read its values; 4 the peer closed.
enum ClientMachineTarget {
  /// Small bounds, so short inputs reach them.
  static let config = ClientStreamConfig(reorderWindow: 8, maxBufferedBytes: 1 << 20, maxDescriptorRanges: 16,
                                         arrowLimits: .defaults)

  static func run(_ input: [UInt8]) {
    var machine = ClientStreamStateMachine(config: config)
    var operations = OperationReader(input)
    var checksum = 0
    while let (operation, payload) = operations.next() {
      do throws(DissociatedIPCError) {
        switch operation % 5 {
        case 0: try machine.metadataReceived(ArrowBytes(copying: payload))
        case 1:
          let (tag, body) = splitWord(payload)
          if let descriptor = try machine.bodyReceived(tag: tag, payload: ArrowBytes(copying: body)) {
            checksum &+= Int(truncatingIfNeeded: descriptor.totalSize)
          }
        case 2:
          let (word, bytes) = splitWord(payload)
          checksum &+= try machine.bodyFetched(sequence: UInt32(truncatingIfNeeded: word), bytes: ArrowBytes(copying: bytes),
                                               release: word >> 32 & 1 == 1).count
        case 3: try drain(&machine, &checksum)
        default: try machine.peerClosed()
        }
      } catch {
        checksum &+= 1
      }
    }
    try? drain(&machine, &checksum)
    blackHole(checksum)
  }

  /// Takes every ready item, reading the values of batches and dictionaries.
  static func drain(_ machine: inout ClientStreamStateMachine, _ checksum: inout Int) throws(DissociatedIPCError) {
    while let item = try machine.nextItem() {
      do throws(ArrowIPCError) {
        switch item {
        case .schema(let schema): checksum &+= schema.fields.count
        case .recordBatch(let batch, _): try StreamExerciser.touch(batch, &checksum)
        case .dictionary(let dictionary, _): try StreamExerciser.touch(dictionary.values, &checksum)
        }
      } catch {
        checksum &+= 1
      }
    }
  }

  /// The stream `bytes` as a server sends it over one connection (frames,
  /// inline bodies, the end of stream), with every item taken as it is
  /// ready; nil when it is not a readable stream or a message does not fit
  /// in one operation.
  static func seed(from bytes: [UInt8]) -> [UInt8]? {
    var reader = IPCStreamReader(ArrowBytes(copying: bytes))
    var operations: [(UInt8, [UInt8])] = []
    var sequence: UInt32 = 0
    while let message = try? reader.next() {
      let frame = MetadataFrame.message(sequence: sequence, flatbuffer: message.metadata).encoded
      let body = littleEndianBytes(Tag(sequence: sequence, bodyType: .inline).rawValue) + message.body.array
      guard frame.count <= Int(UInt16.max), body.count <= Int(UInt16.max) else { return nil }
      operations.append((0, frame))
      if message.message.header.hasBody { operations.append((1, body)) }
      operations.append((3, []))
      sequence += 1
    }
    guard sequence > 0 else { return nil }
    operations += [(0, MetadataFrame.endOfStream(sequence: sequence).encoded), (3, []), (4, [])]
    return OperationReader.encode(operations)
  }
}

/// The `server-machine` target: a server stream driven as the driver
/// drives it (messages from a source, bodies exposed, the source's end)
/// while the client's free_data addresses and its close are arbitrary.
/// Operations: 0 the source's next message (payload byte 0: which), 1
/// free_data with the payload's addresses, 2 free_data for an address the
/// server exposed (payload byte 0: which), 3 the source ends, 4 the peer
/// closed.
enum ServerMachineTarget {
  /// A schema and a batch of 4,096 int64 values (32 KiB: exposed, not
  /// inline, with a 16 KiB rendezvous threshold).
  static let source: [OutgoingMessage] = {
    var builder = RecordBatchBuilder()
    builder.append("v", (0 ..< 4096).map { Int64($0) as Int64? })
    let schema = builder.schema
    let (message, body) = builder.finish()
    return [try? OutgoingMessage(Message(header: .schema(schema))), try? OutgoingMessage(message, body: body)].compactMap { $0 }
  }()

  static func run(_ input: [UInt8]) {
    guard source.count == 2, let first = input.first else { return }
    var machine = ServerStreamStateMachine(role: first & 1 == 0 ? .combined : .data, remoteMemory: first & 2 == 0,
                                           config: ServerStreamConfig(rendezvousThreshold: 16 << 10, maxOutstandingBytes: 96 << 10))
    var operations = OperationReader(Array(input.dropFirst()))
    var exposed: [UInt64] = []
    var nextAddress: UInt64 = 0x1000
    var nextRegion: UInt64 = 1
    var sentSchema = false
    var sourceEnded = false
    while let (operation, payload) = operations.next() {
      do throws(DissociatedIPCError) {
        switch operation % 5 {
        case 0:
          // As the driver: only while the machine takes messages, the
          // schema first, each exposed body with fresh addresses.
          guard !sourceEnded, machine.mayAcceptMessage else { continue }
          let send = try machine.message(source[sentSchema ? 1 : 0])
          sentSchema = true
          if case .expose(let sequence, let bytes) = send.body {
            // One range, or two when the payload says so.
            let split = payload.first.map { Int($0) % 2 == 1 } ?? false
            let half = UInt64(bytes.count / 2)
            let ranges = split && half > 0
              ? [RemoteRange(address: nextAddress, length: half), RemoteRange(address: nextAddress + half + 64, length: UInt64(bytes.count) - half)]
              : [RemoteRange(address: nextAddress, length: UInt64(bytes.count))]
            _ = try machine.bodyExposed(sequence: sequence, region: nextRegion, ranges: ranges)
            exposed += ranges.map(\.address)
            nextRegion += 1
            nextAddress += UInt64(bytes.count) + 4096
          }
        case 1:
          if let addresses = try? FreeDataPayload.decode(ArrowBytes(copying: payload)) {
            _ = try machine.freeData(addresses)
          }
        case 2:
          guard !exposed.isEmpty else { continue }
          let index = Int(payload.first ?? 0) % exposed.count
          _ = try machine.freeData([exposed.remove(at: index)])
        case 3:
          guard !sourceEnded, sentSchema else { continue }
          sourceEnded = true
          _ = machine.sourceFinished()
        default:
          _ = machine.peerClosed()
          exposed.removeAll()
        }
      } catch {
        continue
      }
    }
    blackHole(machine.isFinished)
  }

  static var seeds: [[UInt8]] {
    [[0] + OperationReader.encode([(0, []), (0, [0]), (0, [1]), (2, [0]), (2, [1]), (3, []), (2, [0]), (4, [])]),
     [2] + OperationReader.encode([(0, []), (0, []), (1, FreeDataPayload.encode([0x1000, 0xDEAD])), (3, []), (4, [])])]
  }
}
