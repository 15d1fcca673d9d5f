#!/usr/bin/env bash
# Runs the libFuzzer targets (Fuzz/FuzzTargets) under the address
# sanitizer, each for a bounded time, seeded from the pyarrow corpus and
# from every input that once crashed a target (Fuzz/Regressions/TARGET/).
#
#   bash scripts/fuzz.sh [--seconds N] [TARGET ...]
#
# N defaults to 60 per target; no TARGET means all of them. What a run
# learns stays in .build-fuzz/corpus/TARGET (the next run starts from it).
# A crash leaves its input in .build-fuzz/findings/ and fails the run: fix
# the cause, then copy the input to Fuzz/Regressions/TARGET/ so that the
# test suite (FuzzTests) replays it for ever.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=60
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  targets=(ipc-stream wire-codecs client-machine server-machine shm-control tcp-control fabric-control)
fi

bash scripts/setup.sh >/dev/null
python3 Tests/Interop/arrow_corpus.py .build/interop-corpus >/dev/null
# DIPC_FUZZ=1 adds the driver target, whose `main` libFuzzer supplies.
# SwiftPM's --sanitize=fuzzer makes the driver's entry point libFuzzer's;
# the sanitizers themselves are given to swiftc as one list: with two
# --sanitize options the compiler keeps only the last one, and the code
# was built without coverage (libFuzzer saw 19 counters, not 61,000).
DIPC_FUZZ=1 swift build --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address --scratch-path .build-fuzz --product dipc-fuzz 2>&1 \
  | grep -vE '^\[[0-9]+/[0-9]+\]|Cannot export local symbol' || true
fuzzer=.build-fuzz/debug/dipc-fuzz
[ -x "$fuzzer" ] || { echo "fuzz: $fuzzer was not built" >&2; exit 1; }

# Swift's runtime keeps metadata caches for the process's life: leak
# reports would be about them, not this code.
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=0}"
# Swift's own crash backtracer, run under the address sanitizer, can hang
# a crashing target instead of letting libFuzzer report it.
export SWIFT_BACKTRACE=enable=no
mkdir -p .build-fuzz/findings
failed=()
for target in "${targets[@]}"; do
  corpus=.build-fuzz/corpus/$target
  seeds=.build-fuzz/seeds/$target
  regressions=Fuzz/Regressions/$target
  rm -rf "$seeds"
  mkdir -p "$corpus" "$regressions" "$seeds"
  DIPC_FUZZ_TARGET=$target DIPC_FUZZ_SEEDS=$seeds DIPC_FUZZ_STREAMS=.build/interop-corpus "$fuzzer" 2>&1 | tail -n 1
  log=.build-fuzz/$target.log
  if DIPC_FUZZ_TARGET=$target "$fuzzer" -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
      -artifact_prefix=".build-fuzz/findings/$target-" -print_final_stats=1 \
      "$corpus" "$seeds" "$regressions" >"$log" 2>&1; then
    # A build without coverage fuzzes blind: the driver alone has a few
    # dozen counters, the code under test tens of thousands.
    counters=$(grep -aoE 'Loaded 1 modules +\([0-9]+ inline' "$log" | grep -oE '[0-9]+ inline' | grep -oE '[0-9]+' || echo 0)
    if [ "$counters" -lt 1000 ]; then
      echo "fuzz: $target ran with $counters coverage counters: the code under test is not instrumented" >&2
      failed+=("$target")
      continue
    fi
    runs=$(grep -aoE 'stat::number_of_executed_units: [0-9]+' "$log" | grep -oE '[0-9]+$' || echo "?")
    coverage=$(grep -aoE 'cov: [0-9]+' "$log" | tail -n 1 | grep -oE '[0-9]+$' || echo "?")
    echo "fuzz: $target: $runs inputs in ${seconds} s, no crash (coverage $coverage edges, corpus $(ls "$corpus" | wc -l) inputs)"
  else
    echo "fuzz: $target: CRASH, input in .build-fuzz/findings/ (log: $log)" >&2
    grep -aE 'ERROR|Fatal error|SUMMARY|invariant' "$log" | head -n 5 >&2
    failed+=("$target")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
