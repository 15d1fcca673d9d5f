// Every raw libfabric call of the backend, and the handles that own what
// the calls create: each closes its object when the last reference goes,
// and holds what its object depends on (an endpoint its domain, address
// vector and completion queue), so objects close in the order libfabric
// requires.

#if Fabric
internal import CLibfabric
internal import Glibc
internal import Synchronization

/// The libfabric objects this process holds now: what leak checks count
/// and a listener's stats show (FABRIC-RAW-1).
enum FabricCensus {
  /// Endpoints open.
  static let endpoints = Atomic<Int>(0)
  /// Memory regions registered.
  static let memoryRegions = Atomic<Int>(0)
  /// Peers inserted into address vectors that are still open.
  static let addressEntries = Atomic<Int>(0)

  static func add(_ counter: borrowing Atomic<Int>, _ delta: Int) { counter.add(delta, ordering: .relaxed) }
}

/// Endpoints left open for good, with the buffers posted to them
/// (FABRIC-CLOSE-3): a read of ours was still unanswered when its
/// connection ended, and libfabric 1.17's tcp provider crashed closing an endpoint
/// whose read response was half received. Only a peer that stalls in the
/// middle of answering leaves one; the census counts them.
enum FabricAbandonedEndpoints {
  /// One endpoint and its buffers; nothing touches them again.
  private struct Kept: @unchecked Sendable {
    let endpoint: FabricEndpoint
    let buffers: [Any]
  }

  private static let kept = Mutex<[Kept]>([])

  /// Keeps `endpoint` and `buffers` alive until the process ends.
  static func keep(_ endpoint: FabricEndpoint, with buffers: [Any]) {
    let entry = Kept(endpoint: endpoint, buffers: buffers)
    kept.withLock { $0.append(entry) }
  }

  /// How many endpoints were left open.
  static var count: Int { kept.withLock { $0.count } }
}

/// A libfabric call that failed: the call and its (positive) error number.
struct FabricFailure: Error, CustomStringConvertible {
  let call: String
  let code: Int32

  init(_ call: String, _ result: some BinaryInteger) {
    self.call = call
    code = Int32(clamping: result.magnitude)
  }

  var description: String { "\(call): \(String(cString: fi_strerror(code))) (\(code))" }

  /// Whether the call only said "not now" (`-FI_EAGAIN`): progress, then retry.
  var isAgain: Bool { code == Int32(FI_EAGAIN) }
}

/// The libfabric API version asked for.
let fabricAPIVersion = clibfabric_version(1, 17)

/// `fid` is the first member of every libfabric object (`fid_ep`,
/// `fid_cq`, …): a pointer to the object is a pointer to its `fid`.
private func fid<Object>(of object: UnsafeMutablePointer<Object>) -> UnsafeMutablePointer<fid> {
  UnsafeMutableRawPointer(object).assumingMemoryBound(to: fid.self)
}

/// The object an `fi_…_open`-style call made through its out-parameter;
/// throws the call's failure when it returned non-zero or made nothing.
private func opened<Object>(_ call: String, _ open: (inout UnsafeMutablePointer<Object>?) -> Int32)
  throws(FabricFailure) -> UnsafeMutablePointer<Object> {
  var object: UnsafeMutablePointer<Object>?
  let result = open(&object)
  guard result == 0, let object else { throw FabricFailure(call, result == 0 ? FI_EINVAL : result) }
  return object
}

// MARK: Info

/// What `fi_getinfo` found for one provider: an RDM endpoint with tagged
/// messages, messages and remote reads (`fi_freeinfo` in deinit).
final class FabricInfo {
  let handle: UnsafeMutablePointer<fi_info>

  /// The first match for `provider` (`tcp;ofi_rxm`, `shm`, …). With
  /// `source`, `node`/`service` is where to bind (a server); without, the
  /// peer to reach (nil: any). Remote reads are asked for first; a
  /// provider without them is taken without (``remoteReads`` false).
  init(provider: String, node: String?, service: String?, source: Bool) throws(FabricFailure) {
    var lastFailure = FabricFailure("fi_getinfo(\(provider))", FI_ENODATA)
    for withReads in [true, false] {
      guard let hints = fi_allocinfo() else { throw FabricFailure("fi_allocinfo", FI_ENOMEM) }
      defer { fi_freeinfo(hints) }
      hints.pointee.ep_attr.pointee.type = FI_EP_RDM
      hints.pointee.caps = UInt64(FI_TAGGED) | UInt64(FI_MSG)
      if withReads { hints.pointee.caps |= UInt64(FI_RMA) | UInt64(FI_READ) | UInt64(FI_REMOTE_READ) }
      // Modes this backend can meet: virtual addresses for remote reads (it
      // says which it got), buffers it allocated itself.
      hints.pointee.domain_attr.pointee.mr_mode = Int32(FI_MR_VIRT_ADDR) | Int32(FI_MR_ALLOCATED)
      // Messages on one tag arrive in the order they were sent (FABRIC-WIRE-3).
      hints.pointee.tx_attr.pointee.msg_order = UInt64(FI_ORDER_SAS)
      hints.pointee.rx_attr.pointee.msg_order = UInt64(FI_ORDER_SAS)
      hints.pointee.fabric_attr.pointee.prov_name = strdup(provider)  // freed by fi_freeinfo
      var found: UnsafeMutablePointer<fi_info>?
      let result = fi_getinfo(fabricAPIVersion, node, service, source ? UInt64(FI_SOURCE) : 0, hints, &found)
      if result == 0, let found {
        handle = found
        remoteReads = withReads
        return
      }
      lastFailure = FabricFailure("fi_getinfo(\(provider))", result == 0 ? FI_ENODATA : result)
      // Only a provider that has no remote reads is worth a second try.
      guard result == -Int32(FI_ENODATA) else { break }
    }
    throw lastFailure
  }

  /// Whether the endpoint reads remote memory (`FI_RMA`, `FI_READ`).
  let remoteReads: Bool

  /// The version of the libfabric this process runs, "major.minor".
  static func libraryVersion() -> String {
    let version = fi_version()
    return "\(version >> 16).\(version & 0xFFFF)"
  }

  /// The providers this machine's libfabric offers, by name, each once.
  static func availableProviders() -> [String] {
    var found: UnsafeMutablePointer<fi_info>?
    guard fi_getinfo(fabricAPIVersion, nil, nil, 0, nil, &found) == 0, let found else { return [] }
    defer { fi_freeinfo(found) }
    var names: [String] = []
    var cursor: UnsafeMutablePointer<fi_info>? = found
    while let info = cursor {
      if let name = info.pointee.fabric_attr.pointee.prov_name.map({ String(cString: $0) }), !names.contains(name) { names.append(name) }
      cursor = info.pointee.next
    }
    return names
  }

  deinit { fi_freeinfo(handle) }

  /// The provider's name, e.g. `tcp;ofi_rxm`.
  var providerName: String { handle.pointee.fabric_attr.pointee.prov_name.map { String(cString: $0) } ?? "?" }

  /// Whether remote reads address a region by virtual address (else by
  /// offset from its start).
  var virtualAddresses: Bool { handle.pointee.domain_attr.pointee.mr_mode & Int32(FI_MR_VIRT_ADDR) != 0 }

  /// The largest message the endpoint sends.
  var maxMessageSize: Int { Int(clamping: handle.pointee.ep_attr.pointee.max_msg_size) }

  /// The peer's address as `fi_getinfo` resolved `node`/`service` (a
  /// client's info), for ``FabricAddressVector/insert(_:)``.
  var destinationAddress: [UInt8]? {
    guard let address = handle.pointee.dest_addr, handle.pointee.dest_addrlen > 0 else { return nil }
    return Array(UnsafeRawBufferPointer(start: address, count: handle.pointee.dest_addrlen))
  }
}

// MARK: Domain

/// A fabric and one domain on it (`fi_fabric`, `fi_domain`).
final class FabricDomain {
  let info: FabricInfo
  fileprivate let fabric: UnsafeMutablePointer<fid_fabric>
  let handle: UnsafeMutablePointer<fid_domain>

  init(info: FabricInfo) throws(FabricFailure) {
    self.info = info
    let fabric = try opened("fi_fabric") { fi_fabric(info.handle.pointee.fabric_attr, &$0, nil) }
    do {
      handle = try opened("fi_domain") { fi_domain(fabric, info.handle, &$0, nil) }
    } catch {
      fi_close(fid(of: fabric))
      throw error
    }
    self.fabric = fabric
  }

  deinit {
    fi_close(fid(of: handle))
    fi_close(fid(of: fabric))
  }
}

// MARK: Address vector

/// Peers' addresses, by the index libfabric gives each (`fi_av_open`,
/// table type).
final class FabricAddressVector {
  let domain: FabricDomain
  let handle: UnsafeMutablePointer<fid_av>

  /// Peers inserted and not removed.
  private var entries = 0

  init(domain: FabricDomain) throws(FabricFailure) {
    self.domain = domain
    var attributes = fi_av_attr()
    attributes.type = FI_AV_TABLE
    handle = try opened("fi_av_open") { fi_av_open(domain.handle, &attributes, &$0, nil) }
  }

  deinit {
    fi_close(fid(of: handle))
    FabricCensus.add(FabricCensus.addressEntries, -entries)
  }

  /// Adds the endpoint name `name` (an `fi_getname` blob); returns its
  /// address. A name the provider cannot parse is an error, never a crash.
  func insert(_ name: [UInt8]) throws(FabricFailure) -> fi_addr_t {
    var address = CLIBFABRIC_ADDR_NOTAVAIL
    let inserted = name.withUnsafeBytes { fi_av_insert(handle, $0.baseAddress, 1, &address, 0, nil) }
    guard inserted == 1, address != CLIBFABRIC_ADDR_NOTAVAIL else { throw FabricFailure("fi_av_insert", inserted < 0 ? inserted : FI_EINVAL) }
    entries += 1
    FabricCensus.add(FabricCensus.addressEntries, 1)
    return address
  }

  /// Removes `address`, inserted earlier (its connection, if any, goes too).
  func remove(_ address: fi_addr_t) {
    var address = address
    guard fi_av_remove(handle, &address, 1, 0) == 0 else { return }
    entries -= 1
    FabricCensus.add(FabricCensus.addressEntries, -1)
  }
}

// MARK: Completion queue

/// One completion: the operation's context token, its flags and length,
/// and for receives the tag that arrived; or the operation's error.
struct FabricCompletion {
  var token: UInt
  var flags: UInt64
  var length: Int
  var tag: UInt64
  var failure: FabricFailure?
}

/// A completion queue of tagged entries, read by polling (`fi_cq_open`),
/// with a file descriptor to sleep on where the provider offers one.
final class FabricCompletionQueue {
  let domain: FabricDomain
  let handle: UnsafeMutablePointer<fid_cq>
  /// Readable when completions may be waiting (`FI_WAIT_FD`); nil where
  /// the provider has none (shm) or none was asked for.
  let waitDescriptor: Int32?

  /// A queue of `size` entries; with `waitable`, one with a wait
  /// descriptor if the provider can (else without: check ``waitDescriptor``).
  init(domain: FabricDomain, size: Int = 1024, waitable: Bool = false) throws(FabricFailure) {
    self.domain = domain
    var attributes = fi_cq_attr()
    attributes.format = FI_CQ_FORMAT_TAGGED
    attributes.size = size
    if waitable {
      attributes.wait_obj = FI_WAIT_FD
      var queue: UnsafeMutablePointer<fid_cq>?
      if fi_cq_open(domain.handle, &attributes, &queue, nil) == 0, let queue {
        var descriptor: Int32 = -1
        if fi_control(fid(of: queue), Int32(FI_GETWAIT), &descriptor) == 0, descriptor >= 0 {
          handle = queue
          waitDescriptor = descriptor
          return
        }
        fi_close(fid(of: queue))
      }
    }
    attributes.wait_obj = FI_WAIT_NONE
    handle = try opened("fi_cq_open") { fi_cq_open(domain.handle, &attributes, &$0, nil) }
    waitDescriptor = nil
  }

  deinit { fi_close(fid(of: handle)) }

  /// Whether the caller may now sleep on ``waitDescriptor`` (`fi_trywait`):
  /// false while completions or provider work are pending, so read first.
  func readyToSleep() -> Bool {
    var fids: [UnsafeMutablePointer<fid>?] = [fid(of: handle)]
    return fi_trywait(domain.fabric, &fids, 1) == 0
  }

  /// Reads up to 16 completions into `into` (progressing the provider,
  /// which on manual-progress providers is what moves data); returns how
  /// many were added. A failed operation arrives as a completion with its
  /// failure; a failure of the queue itself is thrown.
  func poll(into completions: inout [FabricCompletion]) throws(FabricFailure) -> Int {
    var entries = [fi_cq_tagged_entry](repeating: fi_cq_tagged_entry(), count: 16)
    let count = fi_cq_read(handle, &entries, entries.count)
    if count < 0, count != -Int(FI_EAGAIN), count != -Int(FI_EAVAIL) { throw FabricFailure("fi_cq_read", count) }
    if count > 0 {
      for entry in entries[0 ..< count] {
        completions.append(FabricCompletion(token: UInt(bitPattern: entry.op_context), flags: entry.flags,
                                            length: entry.len, tag: entry.tag, failure: nil))
      }
      return count
    }
    guard count == -Int(FI_EAVAIL) else { return 0 }
    var error = fi_cq_err_entry()
    guard fi_cq_readerr(handle, &error, 0) == 1 else { return 0 }
    completions.append(FabricCompletion(token: UInt(bitPattern: error.op_context), flags: error.flags, length: error.len,
                                        tag: error.tag, failure: FabricFailure("completion", error.err)))
    return 1
  }
}

// MARK: Endpoint

/// A reliable-datagram endpoint bound to an address vector and one
/// completion queue for sends and receives (`fi_endpoint`). Operations
/// carry a token that their completion returns.
final class FabricEndpoint: @unchecked Sendable {
  // Unchecked: operations and `isOpen` belong to the owning thread; what
  // other threads touch (`hold`, `release`, the final close) is under
  // `lifetime`'s lock.
  let domain: FabricDomain
  let addresses: FabricAddressVector
  let completions: FabricCompletionQueue
  let handle: UnsafeMutablePointer<fid_ep>
  /// The name other endpoints of this process find it by, where the
  /// provider names endpoints (shm): ``FabricLocalEndpoints``.
  private let localName: String?

  init(domain: FabricDomain, addresses: FabricAddressVector, completions: FabricCompletionQueue) throws(FabricFailure) {
    self.domain = domain
    self.addresses = addresses
    self.completions = completions
    let ep = try opened("fi_endpoint") { fi_endpoint(domain.handle, domain.info.handle, &$0, nil) }
    var result = fi_ep_bind(ep, fid(of: addresses.handle), 0)
    if result == 0 { result = fi_ep_bind(ep, fid(of: completions.handle), UInt64(FI_TRANSMIT) | UInt64(FI_RECV)) }
    if result == 0 { result = fi_enable(ep) }
    guard result == 0 else {
      // Closed here: `handle` is set last, so deinit never runs for it.
      fi_close(fid(of: ep))
      throw FabricFailure("binding and enabling the endpoint", result)
    }
    handle = ep
    FabricCensus.add(FabricCensus.endpoints, 1)
    localName = domain.info.providerName == "shm" ? (try? Self.name(of: ep)).map(FabricLocalEndpoints.key) : nil
    if let localName { FabricLocalEndpoints.register(self, as: localName) }
  }

  deinit { close() }

  private var isOpen = true
  /// Whether the owner closed it, how many same-process peers hold it
  /// open, and whether it is closed in libfabric.
  private let lifetime = Mutex<(closeRequested: Bool, holders: Int, closed: Bool)>((false, 0, false))

  /// The owner is done: operations fail from now on (`EBADF`) and the
  /// endpoint closes, cancelling what is posted to it so that its buffers
  /// may be freed; an endpoint a same-process peer holds (``hold()``)
  /// closes in libfabric when the last holder lets go. Idempotent.
  func close() {
    isOpen = false
    let closeNow = lifetime.withLock { state -> Bool in
      state.closeRequested = true
      guard state.holders == 0, !state.closed else { return false }
      state.closed = true
      return true
    }
    if closeNow { closeInLibfabric() }
  }

  /// Keeps the endpoint open in libfabric until ``release()``: for a
  /// connection of this process whose peer it is (FABRIC-ADDR-6). False
  /// when it is closed already.
  func hold() -> Bool {
    lifetime.withLock { state in
      guard !state.closed else { return false }
      state.holders += 1
      return true
    }
  }

  /// Ends a ``hold()``.
  func release() {
    let closeNow = lifetime.withLock { state -> Bool in
      state.holders -= 1
      guard state.holders == 0, state.closeRequested, !state.closed else { return false }
      state.closed = true
      return true
    }
    if closeNow { closeInLibfabric() }
  }

  private func closeInLibfabric() {
    if let localName { FabricLocalEndpoints.unregister(self, as: localName) }
    fi_close(fid(of: handle))
    FabricCensus.add(FabricCensus.endpoints, -1)
  }

  private func checkOpen(_ call: String) throws(FabricFailure) {
    guard isOpen else { throw FabricFailure(call, EBADF) }
  }

  /// This endpoint's name, for a peer's address vector (`fi_getname`).
  func name() throws(FabricFailure) -> [UInt8] {
    try checkOpen("fi_getname")
    return try Self.name(of: handle)
  }

  private static func name(of endpoint: UnsafeMutablePointer<fid_ep>) throws(FabricFailure) -> [UInt8] {
    var length = 0
    _ = fi_getname(fid(of: endpoint), nil, &length)  // -FI_ETOOSMALL, with the length
    guard length > 0, length <= 4096 else { throw FabricFailure("fi_getname", FI_EINVAL) }
    var name = [UInt8](repeating: 0, count: length)
    let result = name.withUnsafeMutableBytes { fi_getname(fid(of: endpoint), $0.baseAddress, &length) }
    guard result == 0 else { throw FabricFailure("fi_getname", result) }
    return Array(name.prefix(length))
  }

  private static func context(_ token: UInt) -> UnsafeMutableRawPointer? { UnsafeMutableRawPointer(bitPattern: token) }

  /// Posts a tagged send of `count` bytes at `buffer` to `peer`; the
  /// buffer must stay valid until its completion. `-FI_EAGAIN` is thrown
  /// as a failure whose `isAgain` is true: progress, then retry.
  func sendTagged(_ buffer: UnsafeRawPointer?, count: Int, to peer: fi_addr_t, tag: UInt64, token: UInt) throws(FabricFailure) {
    try checkOpen("fi_tsend")
    let result = fi_tsend(handle, buffer, count, nil, peer, tag, Self.context(token))
    guard result == 0 else { throw FabricFailure("fi_tsend", result) }
  }

  /// Posts a tagged receive into `count` bytes at `buffer` for a tag
  /// equal to `tag` outside the `ignore` bits, from `peer` (nil: anyone).
  func receiveTagged(_ buffer: UnsafeMutableRawPointer?, count: Int, from peer: fi_addr_t?, tag: UInt64, ignore: UInt64,
                     token: UInt) throws(FabricFailure) {
    try checkOpen("fi_trecv")
    let result = fi_trecv(handle, buffer, count, nil, peer ?? CLIBFABRIC_ADDR_UNSPEC, tag, ignore, Self.context(token))
    guard result == 0 else { throw FabricFailure("fi_trecv", result) }
  }

  /// Posts a read of `count` bytes of `peer`'s region `key` at `address`
  /// (virtual or offset, as its provider says) into `buffer`.
  func read(into buffer: UnsafeMutableRawPointer, count: Int, from peer: fi_addr_t, address: UInt64, key: UInt64,
            token: UInt) throws(FabricFailure) {
    try checkOpen("fi_read")
    let result = fi_read(handle, buffer, count, nil, peer, address, key, Self.context(token))
    guard result == 0 else { throw FabricFailure("fi_read", result) }
  }
}

// MARK: Endpoints of this process

/// The shm endpoints of this process, by name (FABRIC-ADDR-6): libfabric
/// 1.17's shm reaches an endpoint of the same process through that
/// endpoint's own mapping, which closing it unmaps, so an operation toward
/// it after its close crashed (`fi_tsend`, `fi_read`, `fi_av_insert`). A
/// connection whose peer is one of these holds it open until it finishes.
enum FabricLocalEndpoints {
  private final class Entry: @unchecked Sendable {
    // Unchecked: `endpoint` is only read under the registry's lock.
    weak var endpoint: FabricEndpoint?
    init(_ endpoint: FabricEndpoint) { self.endpoint = endpoint }
  }

  private static let byName = Mutex<[String: Entry]>([:])

  /// The registry's key for an endpoint name: its text up to the first NUL.
  static func key(_ name: [UInt8]) -> String { String(decoding: name.prefix { $0 != 0 }, as: UTF8.self) }

  static func register(_ endpoint: FabricEndpoint, as name: String) {
    byName.withLock { $0[name] = Entry(endpoint) }
  }

  static func unregister(_ endpoint: FabricEndpoint, as name: String) {
    byName.withLock { entries in
      if entries[name]?.endpoint === endpoint || entries[name]?.endpoint == nil { entries[name] = nil }
    }
  }

  /// Holds the endpoint of this process named `name` open, if there is
  /// one; the caller releases it when done with it.
  static func hold(named name: [UInt8]) -> FabricEndpoint? {
    byName.withLock { entries in
      guard let endpoint = entries[key(name)]?.endpoint, endpoint.hold() else { return nil }
      return endpoint
    }
  }
}

// MARK: Memory

/// A region peers may read (`fi_mr_reg` with `FI_REMOTE_READ`), under a
/// key this side chose (unique per domain).
final class FabricMemoryRegion {
  let domain: FabricDomain
  private let handle: UnsafeMutablePointer<fid_mr>
  /// The key a reader passes.
  let key: UInt64

  init(domain: FabricDomain, base: UnsafeRawPointer, count: Int, key requested: UInt64) throws(FabricFailure) {
    self.domain = domain
    let mr = try opened("fi_mr_reg") { fi_mr_reg(domain.handle, base, count, UInt64(FI_REMOTE_READ), 0, requested, 0, &$0, nil) }
    handle = mr
    key = fi_mr_key(mr)
    FabricCensus.add(FabricCensus.memoryRegions, 1)
  }

  deinit {
    fi_close(fid(of: handle))
    FabricCensus.add(FabricCensus.memoryRegions, -1)
  }
}
#endif  // Fabric
