/// The inputs a hostile peer or file controls, each as one entry point
/// that takes arbitrary bytes and must return — a value or a typed error
/// inside — for every input: never trap, never read out of bounds, never
/// allocate beyond a documented bound. libFuzzer drives them
/// (`scripts/fuzz.sh`); the test suite replays their seeds and every
/// input that once crashed (`Fuzz/Regressions/TARGET/`).
public enum FuzzTarget: String, CaseIterable, Sendable {
  /// An Arrow IPC stream read end to end (flatbuffer verifier, message
  /// decoder, stream rules, body layout), every readable value touched.
  case ipcStream = "ipc-stream"
  /// The protocol's wire codecs: metadata frames, body tags and
  /// descriptors, free_data payloads, location URIs.
  case wireCodecs = "wire-codecs"
  /// The client's stream state machine fed an arbitrary sequence of
  /// events (frames, bodies, fetched bodies, closes) a server could cause.
  case clientMachine = "client-machine"
  /// The server's stream state machine driven by a correct driver while
  /// the client's free_data addresses and close are arbitrary.
  case serverMachine = "server-machine"
  /// shm:// control messages and batches as its reader parses them.
  case shmControl = "shm-control"
  /// tcp:// hello and message headers as its reader parses a byte stream.
  case tcpControl = "tcp-control"
  /// fabric:// control, side and handshake messages as its engine and
  /// listener decode them, and descriptor addresses as its fetch reads them.
  case fabricControl = "fabric-control"

  /// Runs the target on `input`.
  public func run(_ input: [UInt8]) {
    switch self {
    case .ipcStream: IPCStreamTarget.run(input)
    case .wireCodecs: WireCodecTarget.run(input)
    case .clientMachine: ClientMachineTarget.run(input)
    case .serverMachine: ServerMachineTarget.run(input)
    case .shmControl: ControlMessageTargets.shm(input)
    case .tcpControl: ControlMessageTargets.tcp(input)
    case .fabricControl: ControlMessageTargets.fabric(input)
    }
  }

  /// Inputs to start from, made from `streams` (whole Arrow IPC stream
  /// files, such as the pyarrow corpus) and from built-in cases.
  public func seeds(from streams: [[UInt8]]) -> [[UInt8]] {
    switch self {
    case .ipcStream: streams
    case .wireCodecs: WireCodecTarget.seeds
    case .clientMachine: streams.compactMap(ClientMachineTarget.seed(from:))
    case .serverMachine: ServerMachineTarget.seeds
    case .shmControl: ControlMessageTargets.shmSeeds
    case .tcpControl: ControlMessageTargets.tcpSeeds
    case .fabricControl: ControlMessageTargets.fabricSeeds
    }
  }
}

/// Reads an input as a sequence of operations: an operation byte, then a
/// little-endian 16-bit length and that many payload bytes (fewer at the
/// end of the input).
struct OperationReader {
  private let input: [UInt8]
  private var position = 0

  init(_ input: [UInt8]) { self.input = input }

  /// The next operation and its payload; nil at the end.
  mutating func next() -> (operation: UInt8, payload: [UInt8])? {
    guard position < input.count else { return nil }
    let operation = input[position]
    position += 1
    var length = 0
    for shift in [0, 8] where position < input.count {
      length |= Int(input[position]) << shift
      position += 1
    }
    let end = min(input.count, position + length)
    defer { position = end }
    return (operation, Array(input[position ..< end]))
  }

  /// `operations` encoded as ``next()`` reads them.
  static func encode(_ operations: [(UInt8, [UInt8])]) -> [UInt8] {
    var bytes: [UInt8] = []
    for (operation, payload) in operations {
      let length = min(payload.count, Int(UInt16.max))
      bytes += [operation, UInt8(length & 0xFF), UInt8(length >> 8)] + payload.prefix(length)
    }
    return bytes
  }
}

/// The first eight bytes of `bytes` as a little-endian integer (zeros
/// where there are fewer), and the rest.
func splitWord(_ bytes: [UInt8]) -> (UInt64, [UInt8]) {
  var word: UInt64 = 0
  for (index, byte) in bytes.prefix(8).enumerated() { word |= UInt64(byte) << (8 * index) }
  return (word, Array(bytes.dropFirst(8)))
}

/// `value` as eight little-endian bytes.
func littleEndianBytes(_ value: UInt64) -> [UInt8] { (0 ..< 8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
