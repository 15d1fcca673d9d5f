internal import Synchronization

/// A bounded queue between producer tasks (connection readers) and one
/// consumer: `push` waits while the queue is full, so a slow consumer stops
/// the readers and the transport's own flow control takes over.
final class AsyncEventQueue<Element: Sendable>: Sendable {
  private struct State {
    var buffer: [Element] = []
    var head = 0
    var consumer: CheckedContinuation<Element?, Never>?
    var producers: [CheckedContinuation<Bool, Never>] = []
    var finished = false

    var count: Int { buffer.count - head }

    mutating func takeFirst() -> Element {
      let element = buffer[head]
      head += 1
      if head > 32, head * 2 > buffer.count {
        buffer.removeFirst(head)
        head = 0
      }
      return element
    }
  }

  private enum PushOutcome {
    case done(Bool)
    case handOver(CheckedContinuation<Element?, Never>)
    case wait
  }

  private let state = Mutex(State())
  private let capacity: Int

  init(capacity: Int) {
    precondition(capacity > 0)
    self.capacity = capacity
  }

  /// Adds `element`, waiting while the queue is full; false once finished.
  @discardableResult
  func push(_ element: Element) async -> Bool {
    while true {
      let outcome: PushOutcome = state.withLock { state in
        if state.finished { return .done(false) }
        if let consumer = state.consumer {
          state.consumer = nil
          return .handOver(consumer)
        }
        if state.count < capacity {
          state.buffer.append(element)
          return .done(true)
        }
        return .wait
      }
      switch outcome {
      case .done(let accepted): return accepted
      case .handOver(let consumer):
        consumer.resume(returning: element)
        return true
      case .wait:
        let open = await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
          let resumeNow: Bool? = state.withLock { state in
            if state.finished { return false }
            if state.count < capacity { return true }
            state.producers.append(continuation)
            return nil
          }
          if let resumeNow { continuation.resume(returning: resumeNow) }
        }
        if !open { return false }
      }
    }
  }

  /// The next element, or nil once finished and drained, or when `timeout`
  /// elapses first (then `timedOut` is true).
  func pop(timeout: Duration?) async -> (element: Element?, timedOut: Bool) {
    let immediate: (Element?, Bool, CheckedContinuation<Bool, Never>?) = state.withLock { state in
      if state.count > 0 {
        let element = state.takeFirst()
        return (element, true, state.producers.isEmpty ? nil : state.producers.removeFirst())
      }
      return (nil, state.finished, nil)
    }
    immediate.2?.resume(returning: true)
    if immediate.1 { return (immediate.0, false) }

    let timer: Task<Void, Never>? = timeout.map { timeout in
      Task { [self] in
        try? await Task.sleep(for: timeout)
        guard !Task.isCancelled else { return }
        expireConsumer()
      }
    }
    let element = await withCheckedContinuation { (continuation: CheckedContinuation<Element?, Never>) in
      let ready: (Element?, Bool, CheckedContinuation<Bool, Never>?) = state.withLock { state in
        if state.count > 0 {
          let element = state.takeFirst()
          return (element, true, state.producers.isEmpty ? nil : state.producers.removeFirst())
        }
        if state.finished { return (nil, true, nil) }
        state.consumer = continuation
        return (nil, false, nil)
      }
      ready.2?.resume(returning: true)
      if ready.1 { continuation.resume(returning: ready.0) }
    }
    timer?.cancel()
    // nil without the queue finishing means the timer woke the consumer.
    return (element, element == nil && !state.withLock { $0.finished })
  }

  private func expireConsumer() {
    let consumer = state.withLock { state -> CheckedContinuation<Element?, Never>? in
      defer { state.consumer = nil }
      return state.consumer
    }
    consumer?.resume(returning: nil)
  }

  /// Ends the queue: waiting producers return false, the consumer drains
  /// what is left, then gets nil.
  func finish() {
    let (consumer, producers) = state.withLock { state in
      state.finished = true
      defer {
        state.consumer = nil
        state.producers = []
      }
      return (state.count == 0 ? state.consumer : nil, state.producers)
    }
    consumer?.resume(returning: nil)
    for producer in producers { producer.resume(returning: false) }
  }
}
