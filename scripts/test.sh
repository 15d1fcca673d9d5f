#!/usr/bin/env bash
# Runs every test: installs what they need, then `swift test`.
# Extra arguments go to `swift test` (e.g. --filter Interop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec swift test "$@"
