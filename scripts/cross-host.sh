#!/usr/bin/env bash
# Runs the cross-host tests (two network namespaces joined by a link that
# is delayed, lossy, reordering or cut: Tests/EndToEndTests/CrossHostTests)
# with larger streams, and prints one line per transport and impairment.
#
#   bash scripts/cross-host.sh [MIB]
#
# MIB (default 64) is the size of each stream of the impairment matrix.
# Needs root (network namespaces, TUN devices).
set -euo pipefail
cd "$(dirname "$0")/.."
mebibytes="${1:-64}"
bash scripts/setup.sh >/dev/null
swift build --build-tests 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' || true
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
DIPC_CROSS_HOST_MIB="$mebibytes" timeout 3600 swift test --skip-build --filter CrossHostTests >"$log" 2>&1 || status=$?
grep -aE '^cross-host: ' "$log" || true
grep -aE '^✘|Test run with' "$log" || true
exit $status
