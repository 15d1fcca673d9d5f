#!/usr/bin/env bash
# Runs every test: installs what they need, then `swift test`.
# Extra arguments go to `swift test` (e.g. --filter Interop).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Bounded: a test process that dies leaves server processes it started
# holding its output open, and `swift test` would wait for them for ever.
exec timeout --kill-after=30 1800 swift test "$@"
