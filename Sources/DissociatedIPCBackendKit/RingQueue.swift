/// A first-in, first-out queue on a ring of slots: appending and taking
/// from the front cost O(1) and move nothing, and the storage, once grown
/// to what a connection keeps queued, is reused rather than reallocated
/// (an array that drops its front either shifts its elements or keeps
/// growing). A slot may be emptied in place (``take(at:)``), as a tag
/// matcher does when a receive matches a message behind the front.
struct RingQueue<Element> {
  /// A power of two slots (or none), so positions wrap with a mask.
  private var slots: [Element?] = []
  private var head = 0
  /// Slots in use, from the front, holes included.
  private(set) var count = 0

  /// Whether no slot is in use.
  var isEmpty: Bool { count == 0 }

  /// Appends `element` at the back.
  mutating func append(_ element: Element) {
    if count == slots.count { grow() }
    slots[(head + count) & (slots.count - 1)] = element
    count += 1
  }

  /// The element `offset` slots behind the front (nil for a hole).
  subscript(offset: Int) -> Element? {
    precondition(offset >= 0 && offset < count, "offset outside the queue")
    return slots[(head + offset) & (slots.count - 1)]
  }

  /// Removes and returns the element `offset` slots behind the front,
  /// leaving a hole there; holes that reach the front are dropped.
  mutating func take(at offset: Int) -> Element? {
    precondition(offset >= 0 && offset < count, "offset outside the queue")
    let position = (head + offset) & (slots.count - 1)
    let element = slots[position]
    slots[position] = nil
    while count > 0, slots[head] == nil {
      head = (head + 1) & (slots.count - 1)
      count -= 1
    }
    return element
  }

  /// Removes and returns the front element, nil when empty.
  mutating func popFirst() -> Element? {
    isEmpty ? nil : take(at: 0)
  }

  /// Empties the queue, keeping its storage.
  mutating func removeAll() {
    for offset in 0 ..< count { slots[(head + offset) & (slots.count - 1)] = nil }
    head = 0
    count = 0
  }

  /// Doubles the ring (at least 16 slots), the elements in order from 0.
  private mutating func grow() {
    var larger = [Element?](repeating: nil, count: max(16, slots.count * 2))
    for offset in 0 ..< count { larger[offset] = slots[(head + offset) & (slots.count - 1)] }
    slots = larger
    head = 0
  }
}
