#!/usr/bin/env bash
# Allocation counts of the codec and state-machine hot paths against the
# thresholds checked in under Benchmarks/Thresholds/ (ordo-one/benchmark,
# release build, malloc counts only: counts do not vary like times).
#
#   bash scripts/check-allocations.sh          # fails on a regression
#   bash scripts/check-allocations.sh update   # writes new thresholds
#
# A benchmark may allocate at most its threshold plus the slack its
# configuration names (BenchmarkSupport.configuration) at the 90th
# percentile. Fewer allocations pass with a note: run `update` and commit
# the lower thresholds, so that the gain is kept.
set -euo pipefail
cd "$(dirname "$0")/../Benchmarks"
export DIPC_BENCHMARK_QUICK=1
common=(--metric mallocCountTotal --no-progress)
case "${1:-check}" in
  update)
    rm -rf Thresholds
    swift package --disable-sandbox --allow-writing-to-package-directory benchmark thresholds update "${common[@]}"
    ;;
  check)
    # `swift package` exits 1 for better and for worse alike: the verdict
    # is the tool's last word.
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    swift package --disable-sandbox benchmark thresholds check "${common[@]}" --path "$PWD/Thresholds" 2>&1 | tee "$log" || true
    if grep -q "is EQUAL to the defined thresholds" "$log"; then
      echo "check-allocations: every benchmark within its threshold"
    elif grep -q "is BETTER than the defined thresholds" "$log"; then
      echo "check-allocations: fewer allocations than the thresholds; run 'bash scripts/check-allocations.sh update' and commit them"
    else
      echo "check-allocations: an allocation regression, or the check did not run (above)" >&2
      exit 1
    fi
    ;;
  *) echo "usage: check-allocations.sh [check|update]" >&2; exit 2 ;;
esac
