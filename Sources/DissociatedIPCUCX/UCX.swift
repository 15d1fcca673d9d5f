// Every raw UCX call of the ucx:// backend, and the few libc calls around
// them (address resolution, poll, memstream). Above this file the backend
// speaks in handles that free themselves and in closures run on the owning
// worker's progress thread (Spec/ucx.md, UCX-THREAD-1).

#if UCX
internal import ArrowIPC
internal import CUCX
internal import DissociatedIPC
internal import DissociatedIPCBackendKit
#if canImport(Glibc)
internal import Glibc
internal import Synchronization
#endif

// MARK: Status codes

/// A failed UCX call: which call and its `ucs_status_t`.
struct UCXFailure: Error, CustomStringConvertible {
  var call: String
  var status: ucs_status_t

  /// The operation was cancelled (by a forced close).
  var isCancellation: Bool { status == UCS_ERR_CANCELED }

  /// `call: UCX's text for the status (code)`.
  var description: String { "\(call): \(UCXStatus.text(status)) (\(status.rawValue))" }
}

/// Helpers on `ucs_status_t` (imported as a RawRepresentable struct, so
/// unknown codes still round-trip).
enum UCXStatus {
  static func text(_ status: ucs_status_t) -> String { String(cString: ucs_status_string(status)) }

  static func check(_ status: ucs_status_t, _ call: String) throws(UCXFailure) {
    if status != UCS_OK { throw UCXFailure(call: call, status: status) }
  }

  /// Statuses that mean "the peer is not there" when connecting.
  static func meansUnreachable(_ status: ucs_status_t) -> Bool {
    [UCS_ERR_UNREACHABLE, UCS_ERR_REJECTED, UCS_ERR_CONNECTION_RESET, UCS_ERR_NOT_CONNECTED,
     UCS_ERR_ENDPOINT_TIMEOUT, UCS_ERR_TIMED_OUT, UCS_ERR_IO_ERROR, UCS_ERR_CANCELED].contains(status)
  }
}

// MARK: Socket addresses (libc)

/// A resolved IPv4 or IPv6 socket address.
struct SocketAddress: @unchecked Sendable {
  // Sendable: a plain value; the storage is copied with the struct.
  var storage = sockaddr_storage()
  var length: socklen_t = 0

  /// Resolves `host` (a name or a numeric address) and `port`.
  static func resolve(host: String, port: UInt16) throws(DissociatedIPCError) -> SocketAddress {
    var hints = addrinfo()
    hints.ai_family = AF_UNSPEC
    hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
    hints.ai_flags = AI_NUMERICSERV
    var list: UnsafeMutablePointer<addrinfo>?
    let result = getaddrinfo(host, "\(port)", &hints, &list)
    guard result == 0, let first = list else {
      throw DissociatedIPCError(.invalidLocation, "ucx://: cannot resolve '\(host)': \(String(cString: gai_strerror(result)))")
    }
    defer { freeaddrinfo(list) }
    var address = SocketAddress()
    withUnsafeMutableBytes(of: &address.storage) { raw in
      raw.copyMemory(from: UnsafeRawBufferPointer(start: first.pointee.ai_addr, count: Int(first.pointee.ai_addrlen)))
    }
    address.length = first.pointee.ai_addrlen
    return address
  }

  /// The port, or 0 for an unknown family.
  var port: UInt16 {
    withUnsafeBytes(of: storage) { raw in
      switch Int32(raw.load(as: sa_family_t.self)) {
      case AF_INET: UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in>.offset(of: \.sin_port)!, as: UInt16.self))
      case AF_INET6: UInt16(bigEndian: raw.load(fromByteOffset: MemoryLayout<sockaddr_in6>.offset(of: \.sin6_port)!, as: UInt16.self))
      default: 0
      }
    }
  }

  func withPointer<T>(_ body: (UnsafePointer<sockaddr>) -> T) -> T {
    withUnsafeBytes(of: storage) { body($0.baseAddress!.assumingMemoryBound(to: sockaddr.self)) }
  }
}

// MARK: Library

/// The UCX library this process runs, against the headers it was built with.
enum UCXLibrary {
  /// The loaded library's version (`ucp_get_version`).
  static let version: (major: UInt32, minor: UInt32, release: UInt32) = {
    var (major, minor, release): (UInt32, UInt32, UInt32) = (0, 0, 0)
    ucp_get_version(&major, &minor, &release)
    return (major, minor, release)
  }()

  /// The headers' API version (`UCP_API_MAJOR`, `UCP_API_MINOR`).
  static var headerVersion: (major: UInt32, minor: UInt32) { (cucx_api_major(), cucx_api_minor()) }

  /// Whether the loaded library is older than `major.minor`.
  static func isOlder(than major: UInt32, _ minor: UInt32) -> Bool {
    version.major < major || (version.major == major && version.minor < minor)
  }
}

// MARK: Context

/// A UCP context (`ucp_init` … `ucp_cleanup`): features AM, TAG, RMA and
/// WAKEUP, shared by the workers of many threads.
final class UCXContext: @unchecked Sendable {
  // Sendable: the handle is immutable; UCP allows concurrent worker
  // creation with `mt_workers_shared`.
  let handle: OpaquePointer

  /// Reads UCX's configuration from the environment (`UCX_*`, with the
  /// defaults the program set as it loaded, UCX-CONF-2), then applies
  /// `options` (names without the `UCX_` prefix) on top with
  /// `ucp_config_modify` (UCX-CONF-1).
  init(options: [String: String]) throws(UCXFailure) {
    Self.quietUnusedVariableWarnings
    var config: OpaquePointer?
    try UCXStatus.check(ucp_config_read(nil, nil, &config), "ucp_config_read")
    defer { ucp_config_release(config) }
    for (name, value) in options.sorted(by: { $0.key < $1.key }) {
      try UCXStatus.check(ucp_config_modify(config, name, value), "ucp_config_modify(\(name)=\(value))")
    }
    var params = ucp_params_t()
    params.field_mask = UInt64(UCP_PARAM_FIELD_FEATURES.rawValue | UCP_PARAM_FIELD_MT_WORKERS_SHARED.rawValue
      | UCP_PARAM_FIELD_NAME.rawValue)
    params.features = UInt64(UCP_FEATURE_AM.rawValue | UCP_FEATURE_TAG.rawValue | UCP_FEATURE_RMA.rawValue
      | UCP_FEATURE_WAKEUP.rawValue)
    params.mt_workers_shared = 1
    var context: OpaquePointer?
    let status = "dissociated-ipc".withCString { name in
      params.name = name
      return ucp_init_version(cucx_api_major(), cucx_api_minor(), &params, config, &context)
    }
    try UCXStatus.check(status, "ucp_init")
    handle = context!
  }

  deinit { ucp_cleanup(handle) }

  /// Turns off UCX's warning of `UCX_*` variables that no loaded transport
  /// read, unless the environment names `UCX_WARN_UNUSED_ENV_VARS`: it
  /// warned of `UCX_MM_ERROR_HANDLING` (UCX-LANE-1) on every run over
  /// `UCX_TLS=tcp` (UCX-CONF-2). A global option, read as libucs loads,
  /// so it is changed in place, once, before the first context reads its
  /// configuration.
  private static let quietUnusedVariableWarnings: Void = {
    if getenv("UCX_WARN_UNUSED_ENV_VARS") == nil { _ = ucs_global_opts_set_value("WARN_UNUSED_ENV_VARS", "n") }
  }()
}

// MARK: Worker

/// What arrived as an active message.
enum ActiveMessageData {
  /// Eager data, valid only during the handler call: copy it.
  case inline(UnsafeRawBufferPointer)
  /// Rendezvous: call ``UCXWorker/receiveActiveMessage(_:into:count:completion:)``
  /// during the handler call to fetch the data.
  case rendezvous(descriptor: UnsafeMutableRawPointer, length: Int)
}

/// A message found by ``UCXWorker/probe(tag:mask:)`` and taken out of the
/// worker's unexpected queue; receive it with ``UCXWorker/receive(_:into:count:completion:)``.
struct ProbedMessage {
  let handle: OpaquePointer
  let senderTag: UInt64
  let length: Int
}

/// A UCP worker used by exactly one thread (`UCS_THREAD_MODE_SINGLE`):
/// every call except ``signal()`` must come from that thread; callbacks run
/// on it inside ``progress()``.
final class UCXWorker: @unchecked Sendable {
  // Sendable: only `signal()` is called from other threads (thread safe by
  // UCX's documentation); everything else from the owning thread.
  let context: UCXContext
  let handle: OpaquePointer
  private let eventFD: Int32
  private var handlers: [ActiveMessageHandler] = []

  init(context: UCXContext) throws(UCXFailure) {
    self.context = context
    var params = ucp_worker_params_t()
    params.field_mask = UInt64(UCP_WORKER_PARAM_FIELD_THREAD_MODE.rawValue | UCP_WORKER_PARAM_FIELD_FLAGS.rawValue)
    params.thread_mode = UCS_THREAD_MODE_SINGLE
    params.flags = UInt64(UCP_WORKER_FLAG_IGNORE_REQUEST_LEAK.rawValue)
    var worker: OpaquePointer?
    try UCXStatus.check(ucp_worker_create(context.handle, &params, &worker), "ucp_worker_create")
    handle = worker!
    var fd: Int32 = -1
    let status = ucp_worker_get_efd(handle, &fd)
    guard status == UCS_OK else {
      ucp_worker_destroy(handle)
      throw UCXFailure(call: "ucp_worker_get_efd", status: status)
    }
    eventFD = fd
  }

  deinit { ucp_worker_destroy(handle) }

  /// Runs callbacks; true when something happened.
  @discardableResult
  func progress() -> Bool { ucp_worker_progress(handle) != 0 }

  /// Sleeps until the worker has an event, ``signal()`` is called or
  /// `timeoutMilliseconds` pass (-1: no limit), unless `hasWork()` says
  /// there is something to do after arming (no lost wake-ups).
  func sleep(timeoutMilliseconds: Int32, unless hasWork: () -> Bool) {
    // BUSY: events are pending (a signal included); the caller progresses.
    guard ucp_worker_arm(handle) == UCS_OK, !hasWork() else { return }
    var descriptor = pollfd(fd: eventFD, events: Int16(POLLIN), revents: 0)
    _ = poll(&descriptor, 1, timeoutMilliseconds)
  }

  /// Wakes the thread sleeping in ``sleep(timeoutMilliseconds:unless:)``;
  /// callable from any thread.
  func signal() { _ = ucp_worker_signal(handle) }

  /// Calls `body` on this thread for every active message with `id`
  /// (whole messages; the header is ignored).
  func setActiveMessageHandler(id: UInt32, _ body: @escaping (ActiveMessageData) -> Void) throws(UCXFailure) {
    let handler = ActiveMessageHandler(body)
    handlers.append(handler)
    var params = ucp_am_handler_param_t()
    params.field_mask = UInt64(UCP_AM_HANDLER_PARAM_FIELD_ID.rawValue | UCP_AM_HANDLER_PARAM_FIELD_CB.rawValue
      | UCP_AM_HANDLER_PARAM_FIELD_ARG.rawValue | UCP_AM_HANDLER_PARAM_FIELD_FLAGS.rawValue)
    params.id = id
    params.flags = UInt32(UCP_AM_FLAG_WHOLE_MSG.rawValue)
    params.arg = Unmanaged.passUnretained(handler).toOpaque()  // kept alive by `handlers`
    params.cb = { arg, _, _, data, length, param in
      let handler = Unmanaged<ActiveMessageHandler>.fromOpaque(arg!).takeUnretainedValue()
      let attributes = param!.pointee.recv_attr
      if attributes & UInt64(UCP_AM_RECV_ATTR_FLAG_RNDV.rawValue) != 0 {
        handler.body(.rendezvous(descriptor: data!, length: length))
      } else {
        handler.body(.inline(UnsafeRawBufferPointer(start: data, count: length)))
      }
      return UCS_OK  // inline data was copied; a rendezvous was started or dropped
    }
    try UCXStatus.check(ucp_worker_set_am_recv_handler(handle, &params), "ucp_worker_set_am_recv_handler")
  }

  /// Fetches a rendezvous active message into `buffer`; `completion` runs
  /// once, on this thread (possibly before this returns).
  func receiveActiveMessage(_ descriptor: UnsafeMutableRawPointer, into buffer: UnsafeMutableRawPointer, count: Int,
                            completion: @escaping (UCXFailure?) -> Void) {
    let box = Unmanaged.passRetained(Completion("ucp_am_recv_data_nbx", completion)).toOpaque()
    var params = hostParams(user: box)
    params.cb.recv_am = { request, status, _, user in
      Completion.finish(request, status, user)
    }
    Completion.started(ucp_am_recv_data_nbx(handle, descriptor, buffer, count, &params), box)
  }

  /// Takes the first unexpected tagged message matching `(tag, mask)` (in
  /// arrival order) out of the worker's queue, if one has arrived.
  func probe(tag: UInt64, mask: UInt64) -> ProbedMessage? {
    var info = ucp_tag_recv_info_t()
    guard let message = ucp_tag_probe_nb(handle, tag, mask, 1, &info) else { return nil }
    return ProbedMessage(handle: message, senderTag: info.sender_tag, length: info.length)
  }

  /// Receives a probed message into `buffer` (its `length` bytes).
  func receive(_ message: ProbedMessage, into buffer: UnsafeMutableRawPointer, count: Int,
               completion: @escaping (UCXFailure?) -> Void) {
    let box = Unmanaged.passRetained(Completion("ucp_tag_msg_recv_nbx", completion)).toOpaque()
    var params = hostParams(user: box)
    params.op_attr_mask |= UInt32(UCP_OP_ATTR_FIELD_DATATYPE.rawValue)
    params.datatype = cucx_dt_contig_bytes()
    params.cb.recv = { request, status, _, user in
      Completion.finish(request, status, user)
    }
    Completion.started(ucp_tag_msg_recv_nbx(handle, buffer, count, message.handle, &params), box)
  }
}

/// An active-message handler kept alive by its worker.
final class ActiveMessageHandler {
  let body: (ActiveMessageData) -> Void
  init(_ body: @escaping (ActiveMessageData) -> Void) { self.body = body }
}

/// The completion of one non-blocking operation, passed to UCX as
/// `user_data` (retained until it runs).
final class Completion {
  let call: String
  let body: (UCXFailure?) -> Void
  init(_ call: String, _ body: @escaping (UCXFailure?) -> Void) {
    self.call = call
    self.body = body
  }

  func run(_ status: ucs_status_t) { body(status == UCS_OK ? nil : UCXFailure(call: call, status: status)) }

  /// The UCX callback: frees the request, runs and releases the completion.
  static func finish(_ request: UnsafeMutableRawPointer?, _ status: ucs_status_t, _ user: UnsafeMutableRawPointer?) {
    if let request { ucp_request_free(request) }
    Unmanaged<Completion>.fromOpaque(user!).takeRetainedValue().run(status)
  }

  /// What an `…_nbx` call returned: NULL (done now) or an error run the
  /// completion at once; a request runs it later from `progress()`.
  static func started(_ result: UnsafeMutableRawPointer?, _ box: UnsafeMutableRawPointer) {
    guard let result else {
      return Unmanaged<Completion>.fromOpaque(box).takeRetainedValue().run(UCS_OK)
    }
    if cucx_ptr_is_err(result) != 0 {
      Unmanaged<Completion>.fromOpaque(box).takeRetainedValue().run(cucx_ptr_status(result))
    }
  }
}

/// Parameters for an operation on host memory with a completion callback.
private func hostParams(user: UnsafeMutableRawPointer) -> ucp_request_param_t {
  var params = ucp_request_param_t()
  params.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_CALLBACK.rawValue | UCP_OP_ATTR_FIELD_USER_DATA.rawValue
    | UCP_OP_ATTR_FIELD_MEMORY_TYPE.rawValue)
  params.memory_type = UCS_MEMORY_TYPE_HOST
  params.user_data = user
  return params
}

// MARK: Endpoint

/// A UCP endpoint with peer error handling (`UCP_ERR_HANDLING_MODE_PEER`);
/// used from its worker's thread only.
final class UCXEndpoint {
  let worker: UCXWorker
  private var handle: OpaquePointer?
  private let errorHandler: ErrorHandler

  final class ErrorHandler {
    let body: (UCXFailure) -> Void
    init(_ body: @escaping (UCXFailure) -> Void) { self.body = body }
  }

  /// Connects to a listener at `address` (client–server mode). The
  /// connection is established in the background: flush it to wait.
  /// `peerErrorHandling` false leaves the error-handling mode unset
  /// (`NONE`), as Arrow's reference client does.
  convenience init(worker: UCXWorker, connectingTo address: SocketAddress, peerErrorHandling: Bool = true,
                   onError: @escaping (UCXFailure) -> Void) throws(UCXFailure) {
    var params = ucp_ep_params_t()
    params.field_mask = UInt64(UCP_EP_PARAM_FIELD_FLAGS.rawValue | UCP_EP_PARAM_FIELD_SOCK_ADDR.rawValue)
    params.flags = UInt32(UCP_EP_PARAMS_FLAGS_CLIENT_SERVER.rawValue)
    // ucp_ep_create copies the address; `stored` outlives the call anyway.
    let stored = UnsafeMutablePointer<sockaddr_storage>.allocate(capacity: 1)
    defer { stored.deallocate() }
    stored.initialize(to: address.storage)
    params.sockaddr.addr = UnsafeRawPointer(stored).assumingMemoryBound(to: sockaddr.self)
    params.sockaddr.addrlen = address.length
    try self.init(worker: worker, params: &params, peerErrorHandling: peerErrorHandling, onError: onError)
  }

  /// Accepts a connection request delivered to a listener. The endpoint
  /// takes the client's error-handling mode, whichever it is (UCX-CLOSE-2):
  /// UCX refuses an endpoint whose mode differs from its client's.
  convenience init(worker: UCXWorker, accepting request: UCXConnectionRequest,
                   onError: @escaping (UCXFailure) -> Void) throws(UCXFailure) {
    var params = ucp_ep_params_t()
    params.field_mask = UInt64(UCP_EP_PARAM_FIELD_CONN_REQUEST.rawValue)
    params.conn_request = request.handle
    try self.init(worker: worker, params: &params, peerErrorHandling: false, onError: onError)
  }

  /// With `peerErrorHandling`, the endpoint uses `UCP_ERR_HANDLING_MODE_PEER`;
  /// without, it sets no mode. The error handler is installed either way
  /// (UCX calls it in both modes).
  private init(worker: UCXWorker, params: inout ucp_ep_params_t, peerErrorHandling: Bool = true,
               onError: @escaping (UCXFailure) -> Void) throws(UCXFailure) {
    self.worker = worker
    errorHandler = ErrorHandler(onError)
    params.field_mask |= UInt64(UCP_EP_PARAM_FIELD_ERR_HANDLER.rawValue)
    if peerErrorHandling {
      params.field_mask |= UInt64(UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE.rawValue)
      params.err_mode = UCP_ERR_HANDLING_MODE_PEER
    }
    params.err_handler.arg = Unmanaged.passUnretained(errorHandler).toOpaque()  // lives as long as self
    params.err_handler.cb = { arg, _, status in
      Unmanaged<ErrorHandler>.fromOpaque(arg!).takeUnretainedValue().body(UCXFailure(call: "endpoint error", status: status))
    }
    var endpoint: OpaquePointer?
    try UCXStatus.check(ucp_ep_create(worker.handle, &params, &endpoint), "ucp_ep_create")
    handle = endpoint
  }

  /// Sends `parts` (gathered, not copied) as an active message with `id`
  /// and no header. `completion` runs once on the worker thread; the parts
  /// stay alive until then.
  func sendActiveMessage(id: UInt32, _ parts: [ArrowBytes], completion: @escaping (UCXFailure?) -> Void) {
    send("ucp_am_send_nbx", parts, completion: completion) { handle, buffer, count, params in
      ucp_am_send_nbx(handle, id, nil, 0, buffer, count, &params)
    }
  }

  /// Sends `parts` as one tagged message.
  func sendTagged(_ tag: UInt64, _ parts: [ArrowBytes], completion: @escaping (UCXFailure?) -> Void) {
    send("ucp_tag_send_nbx", parts, completion: completion) { handle, buffer, count, params in
      ucp_tag_send_nbx(handle, buffer, count, tag, &params)
    }
  }

  /// One part goes as contiguous bytes, several as an IOV list; the list
  /// and the parts live in the completion until UCX is done with them.
  private func send(_ name: String, _ parts: [ArrowBytes], completion: @escaping (UCXFailure?) -> Void,
                    _ call: (OpaquePointer, UnsafeRawPointer?, Int, inout ucp_request_param_t) -> UnsafeMutableRawPointer?) {
    guard let handle else { return completion(UCXFailure(call: name, status: UCS_ERR_NOT_CONNECTED)) }
    let nonEmpty = parts.filter { !$0.isEmpty }
    var iov: UnsafeMutableBufferPointer<ucp_dt_iov_t>?
    if nonEmpty.count > 1 {
      let list = UnsafeMutableBufferPointer<ucp_dt_iov_t>.allocate(capacity: nonEmpty.count)
      for (index, part) in nonEmpty.enumerated() {
        list[index] = ucp_dt_iov_t(buffer: UnsafeMutableRawPointer(mutating: part.unsafeBaseAddress), length: part.count)
      }
      iov = list
    }
    let box = Unmanaged.passRetained(Completion(name) { failure in
      withExtendedLifetime(nonEmpty) {}
      iov?.deallocate()
      completion(failure)
    }).toOpaque()
    var params = hostParams(user: box)
    params.op_attr_mask |= UInt32(UCP_OP_ATTR_FIELD_DATATYPE.rawValue)
    params.cb.send = { request, status, user in Completion.finish(request, status, user) }
    let result: UnsafeMutableRawPointer?
    if let iov {
      params.datatype = cucx_dt_iov()
      result = call(handle, UnsafeRawPointer(iov.baseAddress), iov.count, &params)
    } else {
      params.datatype = cucx_dt_contig_bytes()
      // A 0-byte message still needs a valid pointer.
      let base = nonEmpty.first?.unsafeBaseAddress ?? UnsafeRawPointer(handle)
      result = call(handle, base, nonEmpty.first?.count ?? 0, &params)
    }
    Completion.started(result, box)
  }

  /// Completes once everything sent so far is complete at the transport
  /// level; on a fresh client endpoint, once the connection is up.
  func flush(completion: @escaping (UCXFailure?) -> Void) {
    guard let handle else { return completion(UCXFailure(call: "ucp_ep_flush_nbx", status: UCS_ERR_NOT_CONNECTED)) }
    let box = Unmanaged.passRetained(Completion("ucp_ep_flush_nbx", completion)).toOpaque()
    var params = hostParams(user: box)
    params.cb.send = { request, status, user in Completion.finish(request, status, user) }
    Completion.started(ucp_ep_flush_nbx(handle, &params), box)
  }

  /// `ucp_ep_rkey_unpack` of a packed key (see ``UCXRemoteKey``).
  fileprivate func unpack(_ packed: UnsafeRawPointer, into key: inout OpaquePointer?) -> ucs_status_t {
    guard let handle else { return UCS_ERR_NOT_CONNECTED }
    return ucp_ep_rkey_unpack(handle, packed, &key)
  }

  /// Reads `count` bytes at the peer's `address` (covered by `key`) into
  /// `buffer` (`ucp_get_nbx`); `completion` runs once, on this thread.
  func get(into buffer: UnsafeMutableRawPointer, count: Int, from address: UInt64, key: UCXRemoteKey,
           completion: @escaping (UCXFailure?) -> Void) {
    guard let handle else { return completion(UCXFailure(call: "ucp_get_nbx", status: UCS_ERR_NOT_CONNECTED)) }
    let box = Unmanaged.passRetained(Completion("ucp_get_nbx", completion)).toOpaque()
    var params = hostParams(user: box)
    params.cb.send = { request, status, user in Completion.finish(request, status, user) }
    Completion.started(ucp_get_nbx(handle, buffer, count, address, key.handle, &params), box)
  }

  /// Releases the endpoint now (`UCP_EP_CLOSE_FLAG_FORCE`): outstanding
  /// operations complete with `UCS_ERR_CANCELED`; the peer sees a
  /// disconnect. Idempotent.
  func close() {
    guard let endpoint = handle else { return }
    handle = nil
    var params = ucp_request_param_t()
    params.op_attr_mask = UInt32(UCP_OP_ATTR_FIELD_FLAGS.rawValue)
    params.flags = UInt32(UCP_EP_CLOSE_FLAG_FORCE.rawValue)
    guard let request = ucp_ep_close_nbx(endpoint, &params), cucx_ptr_is_ptr(request) != 0 else { return }
    while ucp_request_check_status(request) == UCS_INPROGRESS { worker.progress() }
    ucp_request_free(request)
  }

  /// UCX's own description of the endpoint's lanes (`ucp_ep_print_info`
  /// written to a memstream); nil once closed or when it cannot be read.
  func lanes() -> UCXLanes? {
    guard let handle else { return nil }
    var buffer: UnsafeMutablePointer<CChar>?
    var size = 0
    guard let stream = open_memstream(&buffer, &size) else { return nil }
    ucp_ep_print_info(handle, stream)
    fclose(stream)
    defer { free(buffer) }
    guard let buffer else { return nil }
    return UCXLanes(parsing: String(cString: buffer))
  }

  deinit { close() }
}

/// What `ucp_ep_print_info` says about an endpoint's lanes.
struct UCXLanes: Equatable {
  /// `tl/device` of every `lane[…]` line, in lane order, without repeats;
  /// connection-manager lanes (`cm rdmacm`, no device) are left out
  /// (UCX-PATH-1).
  var transports: [String] = []
  /// UCX reads remote memory with native gets: it lists get protocols
  /// (`get[…]` lines, one per RMA lane) and a lane runs a transport other
  /// than tcp. Otherwise `ucp_get_nbx` is emulated with active messages
  /// that the peer's progress thread answers (UCX-RM-7, UCX-RM-8).
  var nativeGets = false
  /// Bodies go as descriptors under `.automatic` (UCX-RM-8): gets are
  /// native on a lane between hosts (not tcp, not a same-host transport on
  /// the `memory` device: cma, sysv, posix, knem, xpmem), where they beat
  /// inline bodies. Over cma they did not (UCX-RM-9).
  var descriptorsPayOff: Bool {
    nativeGets && transports.contains { !$0.hasPrefix("tcp/") && $0.split(separator: "/").last?.hasPrefix("memory") != true }
  }

  init(parsing info: String) {
    var listsGets = false
    for line in info.split(separator: "\n") {
      if line.contains("lane["),
         let token = line.split(separator: " ").first(where: { $0.contains("/") && $0.contains(":") }) {
        let name = String(token.split(separator: ":", maxSplits: 1).last ?? token)
        if !transports.contains(name) { transports.append(name) }
      }
      if line.contains(" get[") { listsGets = true }
    }
    nativeGets = listsGets && transports.contains { !$0.hasPrefix("tcp/") }
  }

  /// The transports joined with commas, e.g. `tcp/lo.0, posix/memory.0`.
  var summary: String { transports.isEmpty ? "no lanes yet" : transports.joined(separator: ", ") }
}

// MARK: Memory (body type 1)

/// Host memory registered with a UCP context (`ucp_mem_map`) for remote
/// reads: an anonymous mapping of `length` bytes whose pages are committed
/// only when touched, and the packed rkey that lets a peer read it
/// (UCX-RM-1). Unmapped, and unregistered, when the last reference goes.
final class UCXMemoryRegistration: @unchecked Sendable {
  // Sendable: the handles are immutable; `ucp_mem_unmap` is a context call
  // (serialised by UCX with `mt_workers_shared`), made once, in deinit.
  let context: UCXContext
  let base: UnsafeMutableRawPointer
  let length: Int
  /// `ucp_rkey_pack`'s output, copied (the UCX buffer is released at once).
  let packedKey: [UInt8]
  private let memory: OpaquePointer
  private static let liveCount = Atomic<Int>(0)

  /// Registrations of this process now (servers' stats, leak tests).
  static var live: Int { liveCount.load(ordering: .relaxed) }

  init(context: UCXContext, length: Int) throws(UCXFailure) {
    self.context = context
    self.length = length
    // MAP_NORESERVE: the bound costs address space, not memory, until used.
    let mapped = mmap(nil, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
    guard let mapped, mapped != MAP_FAILED else { throw UCXFailure(call: "mmap(\(length))", status: UCS_ERR_NO_MEMORY) }
    base = mapped
    var params = ucp_mem_map_params_t()
    params.field_mask = UInt64(UCP_MEM_MAP_PARAM_FIELD_ADDRESS.rawValue | UCP_MEM_MAP_PARAM_FIELD_LENGTH.rawValue)
    params.address = mapped
    params.length = length
    var registered: OpaquePointer?
    let status = ucp_mem_map(context.handle, &params, &registered)
    guard status == UCS_OK, let registered else {
      munmap(mapped, length)
      throw UCXFailure(call: "ucp_mem_map", status: status)
    }
    memory = registered
    var buffer: UnsafeMutableRawPointer?
    var size = 0
    let packed = ucp_rkey_pack(context.handle, registered, &buffer, &size)
    guard packed == UCS_OK, let buffer else {
      ucp_mem_unmap(context.handle, registered)
      munmap(mapped, length)
      throw UCXFailure(call: "ucp_rkey_pack", status: packed)
    }
    packedKey = Array(UnsafeRawBufferPointer(start: buffer, count: size))
    ucp_rkey_buffer_release(buffer)
    Self.liveCount.add(1, ordering: .relaxed)
  }

  deinit {
    ucp_mem_unmap(context.handle, memory)
    munmap(base, length)
    Self.liveCount.subtract(1, ordering: .relaxed)
  }
}

/// A peer's rkey unpacked on an endpoint (`ucp_ep_rkey_unpack`), destroyed
/// with `ucp_rkey_destroy` in deinit. Used, and released, on the worker's
/// thread only.
final class UCXRemoteKey {
  let handle: OpaquePointer

  /// Unpacks `packed` (the peer's `ucp_rkey_pack` output) for `endpoint`.
  /// UCX 1.13 crashes on a key it rejects (UCX-LIM-5): check its integrity first.
  init(_ packed: [UInt8], endpoint: UCXEndpoint) throws(UCXFailure) {
    var key: OpaquePointer?
    let status = packed.withUnsafeBytes { bytes in endpoint.unpack(bytes.baseAddress!, into: &key) }
    guard status == UCS_OK, let key else { throw UCXFailure(call: "ucp_ep_rkey_unpack", status: status) }
    handle = key
  }

  deinit { ucp_rkey_destroy(handle) }
}

// MARK: Listener

/// A connection request delivered to a listener; accept it with an
/// endpoint or reject it, once.
struct UCXConnectionRequest: @unchecked Sendable {
  // Sendable: an opaque handle passed from the listener's thread to the
  // thread of the connection that accepts it.
  let handle: OpaquePointer
}

/// A UCP listener on a socket address (`ucp_listener_create`), used from
/// its worker's thread only.
final class UCXListenerHandle {
  let worker: UCXWorker
  private let handle: OpaquePointer
  private let handler: Handler
  /// The port actually bound.
  let port: UInt16

  final class Handler {
    let body: (UCXConnectionRequest) -> Void
    init(_ body: @escaping (UCXConnectionRequest) -> Void) { self.body = body }
  }

  init(worker: UCXWorker, address: SocketAddress, onRequest: @escaping (UCXConnectionRequest) -> Void) throws(UCXFailure) {
    self.worker = worker
    handler = Handler(onRequest)
    var params = ucp_listener_params_t()
    params.field_mask = UInt64(UCP_LISTENER_PARAM_FIELD_SOCK_ADDR.rawValue | UCP_LISTENER_PARAM_FIELD_CONN_HANDLER.rawValue)
    params.conn_handler.arg = Unmanaged.passUnretained(handler).toOpaque()  // lives as long as self
    params.conn_handler.cb = { request, arg in
      Unmanaged<Handler>.fromOpaque(arg!).takeUnretainedValue().body(UCXConnectionRequest(handle: request!))
    }
    var listener: OpaquePointer?
    let status = address.withPointer { pointer in
      params.sockaddr.addr = pointer
      params.sockaddr.addrlen = address.length
      return ucp_listener_create(worker.handle, &params, &listener)
    }
    try UCXStatus.check(status, "ucp_listener_create")
    handle = listener!
    var attributes = ucp_listener_attr_t()
    attributes.field_mask = UInt64(UCP_LISTENER_ATTR_FIELD_SOCKADDR.rawValue)
    if ucp_listener_query(handle, &attributes) == UCS_OK {
      var bound = SocketAddress()
      bound.storage = attributes.sockaddr
      port = bound.port
    } else {
      port = address.port
    }
  }

  /// Refuses a request nobody will accept.
  func reject(_ request: UCXConnectionRequest) { _ = ucp_listener_reject(handle, request.handle) }

  deinit { ucp_listener_destroy(handle) }
}

/// Milliseconds on the monotonic clock (for deadlines on progress threads).
func monotonicMilliseconds() -> Int64 { Int64(monotonicNanoseconds() / 1_000_000) }

/// Microseconds on the monotonic clock.
func monotonicMicroseconds() -> Int64 { Int64(monotonicNanoseconds() / 1000) }

/// The kernel's id of the calling thread (for /proc/self/task/ID).
func currentThreadID() -> Int32 { cucx_thread_id() }

/// Runs `handler` when the process exits (`atexit`), before the library
/// destructors of UCX, which was loaded earlier.
func atProcessExit(_ handler: @convention(c) () -> Void) { atexit(handler) }

/// Runs `handler` with exit's status when the process exits (glibc's
/// `on_exit`), before the library destructors.
func atProcessExitWithStatus(_ handler: @convention(c) (Int32, UnsafeMutableRawPointer?) -> Void) {
  on_exit(handler, nil)
}

/// Ends the process with `status` at once, after flushing stdio: no
/// further exit handlers, no library destructors (`_exit`).
func endProcess(status: Int32) -> Never {
  fflush(nil)
  _exit(status)
}

/// Sleeps the calling thread for `microseconds`.
func sleepThread(microseconds: UInt32) { usleep(microseconds) }

/// Gives the processor to another runnable thread (`sched_yield`).
func yieldThread() { sched_yield() }
#endif  // UCX
