#!/usr/bin/env bash
# The main job on its embedded default: `dipc demo` (release build).
# Extra arguments go to `dipc demo` (see `dipc demo --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
swift build -c release --product dipc 2>&1 | grep -vE '^\[[0-9]+/[0-9]+\]' >&2 || true
exec .build/release/dipc demo "$@"
