#!/usr/bin/env bash
# Runs the random-mutation test under the address sanitizer, in its own
# build folder. ARROWIPC_MUTATIONS (default 100000) and
# ARROWIPC_MUTATION_SEED choose the run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export ARROWIPC_MUTATIONS="${ARROWIPC_MUTATIONS:-100000}"
# Leak reports come from XCTest and Foundation.Process inside the toolchain,
# not from this code; this run is about out-of-bounds access.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
# Without the Flight trait: gRPC and SwiftNIO under the sanitizer would
# double this build for no test it runs.
exec swift test --sanitize=address --scratch-path .build-asan --traits UCX,Fabric --filter "MutationTests"
