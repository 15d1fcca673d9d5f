#if UCX
import DissociatedIPCUCX
import Testing

/// Makes the test process leave with `_exit` (keeping its status) once a
/// suite with this trait runs: UCX 1.13's library destructors can abort a
/// process that exits normally after ucx:// connections were torn down
/// (UCX-LIM-6), which would fail a run whose tests all passed.
struct ExitsWithoutUCXDestructors: SuiteTrait, TestTrait {
  /// Applies to every test of the suite.
  var isRecursive: Bool { true }

  func prepare(for test: Test) async throws { UCXTransport.leaveWithoutLibraryDestructors() }
}

extension Trait where Self == ExitsWithoutUCXDestructors {
  /// See ``ExitsWithoutUCXDestructors``.
  static var exitsWithoutUCXDestructors: Self { Self() }
}
#endif  // UCX
