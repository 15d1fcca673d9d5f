public import Dispatch
public import DissociatedIPC

/// The life of a connection's writer thread when it starts only once a
/// message has to wait for it (TCP-THREAD-2, SHM-THREAD-5). The connection
/// keeps one in its locked state and asks ``nudge(pendingWork:ending:)``
/// after every change the writer must see; ``LazyWriterOwner/perform(_:threadName:)``
/// does what it answers, outside the lock.
public struct LazyWriter: Sendable {
  /// What the writer needs to see a change.
  public enum Nudge: Sendable, Equatable {
    /// Nothing: it runs and will see the change, or it never will.
    case nothing
    /// A wake-up: it sleeps on its semaphore.
    case wake
    /// Its start: something waits to be sent and it never ran.
    case start
    /// Its part done by the caller: it never ran and never will (the
    /// connection ends).
    case finish
  }

  /// The thread was started, or will never be.
  private var settled = false
  /// The writer sleeps on its semaphore; a nudge must signal it. Set by
  /// the writer before it sleeps.
  public var sleeping = false

  public init() {}

  /// The nudge after a change: `pendingWork`, something waits for the
  /// writer; `ending`, nothing more will come (closing, failed, the peer
  /// gone). Before the writer ran, pending work starts it and an ending
  /// without work settles it as never started (`.finish`, once).
  public mutating func nudge(pendingWork: Bool, ending: Bool) -> Nudge {
    guard settled else {
      guard pendingWork || ending else { return .nothing }
      settled = true
      return pendingWork ? .start : .finish
    }
    defer { sleeping = false }
    return sleeping ? .wake : .nothing
  }

  /// The writer will never run (the connection could not start).
  public mutating func neverStart() { settled = true }
}

/// A connection whose writer thread is a ``LazyWriter``.
public protocol LazyWriterOwner: AnyObject, Sendable {
  /// What the writer sleeps on.
  var writerWake: DispatchSemaphore { get }
  /// The writer thread's body.
  func writeLoop()
  /// The writer could not start: the connection fails with `error`.
  func fail(_ error: DissociatedIPCError)
  /// The writer's part ends (its thread stopped, or it never ran).
  func finishWriting()
}

extension LazyWriterOwner {
  /// Does `nudge`: signals the writer, starts it on a thread named
  /// `threadName` (failing the connection when no thread can be had), or
  /// finishes its part.
  public func perform(_ nudge: LazyWriter.Nudge, threadName: StaticString) {
    switch nudge {
    case .nothing: break
    case .wake: writerWake.signal()
    case .start:
      do throws(DissociatedIPCError) {
        try startDedicatedThread(named: threadName) { [self] in writeLoop() }
      } catch {
        fail(error)
        finishWriting()
      }
    case .finish: finishWriting()
    }
  }
}
