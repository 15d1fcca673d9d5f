import Testing
@testable import ArrowIPC

@Suite("Slab allocator")
struct SlabAllocatorTests {
  @Test("small copies are exact, 64-byte aligned, disjoint, and outlive the allocator")
  func smallCopies() {
    var views: [ArrowBytes] = []
    do {
      var slab = SlabAllocator()
      // Enough buffers to span several chunks.
      for index in 0 ..< 3_000 {
        let bytes = (0 ..< (index % 300)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
        views.append(bytes.withUnsafeBytes { slab.copy($0.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!, count: $0.count) })
      }
    }
    for (index, view) in views.enumerated() {
      let expected = (0 ..< (index % 300)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ index) }
      #expect(view.array == expected)
      if let base = view.unsafeBaseAddress { #expect(Int(bitPattern: base) % AlignedStorage.alignment == 0) }
    }
    let starts = views.compactMap(\.unsafeBaseAddress).map { Int(bitPattern: $0) }
    #expect(Set(starts).count == starts.count, "two buffers share an address")
  }

  @Test("buffers above the slab size get their own allocation")
  func largeCopies() {
    var slab = SlabAllocator()
    let bytes = [UInt8](repeating: 0xAB, count: SlabAllocator.maxSlabSize + 1)
    let view = bytes.withUnsafeBytes { slab.copy($0.baseAddress!, count: $0.count) }
    #expect(view.array == bytes)
    #expect(Int(bitPattern: view.unsafeBaseAddress!) % AlignedStorage.alignment == 0)
  }
}
