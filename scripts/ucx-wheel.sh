#!/usr/bin/env bash
# Builds, tests or runs the package against UCX 1.22 from the pip wheel
# `libucx-cu12` instead of Debian bookworm's UCX 1.13 (Spec/ucx.md,
# UCX-VER-1 says when to prefer which). Installs the wheel once into
# .build-ucx-wheel/, describes it to SwiftPM with a pkg-config file there,
# and runs `swift SUBCOMMAND ARGS…` with that build folder, an rpath to
# the wheel's libraries (the binaries need no environment to find them),
# and the wheel's tools (ucx_perftest, ucx_info) first on PATH:
#   bash scripts/ucx-wheel.sh build -c release --product dipc   # .build-ucx-wheel/release/dipc
#   bash scripts/ucx-wheel.sh test --filter UCXTests
#   bash scripts/ucx-wheel.sh run -c release dipc bench --transports ucx --baselines ucx_perftest
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: bash scripts/ucx-wheel.sh build|test|run [swift arguments…]" >&2; exit 2; }

bash scripts/setup.sh >/dev/null
version=1.22.0
scratch=$PWD/.build-ucx-wheel
install=$scratch/libucx-cu12
prefix=$install/libucx
if [ "$(cat "$install/.installed" 2>/dev/null)" != "$version" ]; then
  echo "ucx-wheel: installing libucx-cu12 $version into $install" >&2
  rm -rf "$install"
  python3 -m pip install --quiet --disable-pip-version-check --no-deps --target "$install" "libucx-cu12==$version"
  echo "$version" > "$install/.installed"
fi

# The wheel's own .pc files name the prefix it was built in; SwiftPM reads
# .pc files itself (no --define-prefix), so this one names where it is.
mkdir -p "$scratch/pkgconfig"
cat > "$scratch/pkgconfig/ucx.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: ucx
Description: UCX $version from the libucx-cu12 wheel
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -lucp -luct -lucs -lucm
PC

subcommand=$1
shift
export PKG_CONFIG_PATH=$scratch/pkgconfig
# The wheel's tools carry no rpath of their own.
export PATH=$prefix/bin:$PATH
export LD_LIBRARY_PATH=$prefix/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
exec swift "$subcommand" --scratch-path "$scratch" -Xlinker -rpath -Xlinker "$prefix/lib" "$@"
