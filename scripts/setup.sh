#!/usr/bin/env bash
# Installs what building, testing and benchmarking need, once: the native
# transport libraries and tools (Debian packages) and pyarrow (the interop
# oracle). Quick when everything is already there. Needs root or sudo for apt.
set -euo pipefail

APT_PACKAGES=(libucx-dev libfabric-dev librdmacm-dev libibverbs-dev ucx-utils libfabric-bin iperf3)
PIP_PACKAGES=(pyarrow)

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
for package in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}" >&2
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! python3 -c "import pyarrow" 2>/dev/null; then
  echo "setup: installing ${PIP_PACKAGES[*]}" >&2
  python3 -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
fi

command -v swift >/dev/null || { echo "setup: swift is not on PATH (Swift 6.1 or later is required)" >&2; exit 1; }
