#!/usr/bin/env bash
# Proves the package builds and runs where neither UCX nor libfabric is
# installed: in a private mount namespace their headers, pkg-config files
# and libraries are hidden, the package is built with its default traits
# (UCX, Fabric) turned off, and the `dipc` built must list neither ucx://
# nor fabric://, link neither library, and move a stream over tcp://.
# Extra arguments go to `swift build` (e.g. --traits Fabric, which then
# fails for want of libfabric's headers: a check of the check).
# Needs root (unshare -m); runs scripts/setup.sh first, whose packages it hides.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${DIPC_NATIVE_HIDDEN:-}" != 1 ]; then
  bash scripts/setup.sh >/dev/null
  exec unshare --mount --propagation private env DIPC_NATIVE_HIDDEN=1 bash "$0" "$@"
fi

empty=$(mktemp -d)
trap 'rm -rf "$empty"' EXIT
hidden=0
while read -r path; do
  if [ -d "$path" ] && [[ "$path" == /usr/include/* ]]; then
    mount --bind "$empty" "$path"
  elif [[ "$path" == *.pc || "$path" == *.so ]] && [ -e "$path" ]; then
    mount --bind /dev/null "$(readlink -f "$path")"
  else
    continue
  fi
  hidden=$((hidden + 1))
done < <(dpkg -L libucx-dev libfabric-dev | grep -E '^/usr/include/[^/]+$|\.pc$|\.so$')
echo "build-without-native: $hidden paths of libucx-dev and libfabric-dev hidden"
if pkg-config --exists ucx 2>/dev/null || pkg-config --exists libfabric 2>/dev/null; then
  echo "build-without-native: pkg-config still finds UCX or libfabric" >&2
  exit 1
fi

scratch=.build-without-native
swift build --scratch-path "$scratch" --disable-default-traits --product dipc "$@"
dipc="$scratch/debug/dipc"

schemes=$("$dipc" transports | awk 'NR > 1 && NF { print $1 }' | sort | tr '\n' ' ')
echo "build-without-native: dipc transports lists: $schemes"
case " $schemes " in
  *" ucx "* | *" fabric "*) echo "build-without-native: a native backend is still built" >&2; exit 1 ;;
esac
case " $schemes " in
  *" tcp "*) ;;
  *) echo "build-without-native: tcp:// is missing" >&2; exit 1 ;;
esac
if ldd "$dipc" | grep -E 'libucp|libuct|libucs|libfabric'; then
  echo "build-without-native: dipc still links a native library" >&2
  exit 1
fi

# One stream over tcp:// between a server and a client process.
corpus=$(mktemp -d)
trap 'rm -rf "$empty" "$corpus"; [ -n "${server:-}" ] && kill "$server" 2>/dev/null || true' EXIT
python3 - "$corpus/numbers.arrows" <<'PY'
import sys, pyarrow as pa
table = pa.table({"n": pa.array(range(100_000), pa.int64())})
with pa.ipc.new_stream(sys.argv[1], table.schema) as writer:
    writer.write_table(table, max_chunksize=10_000)
PY
"$dipc" serve "$corpus/numbers.arrows" --listen tcp://127.0.0.1:0 > "$corpus/locations" &
server=$!
for _ in $(seq 1 300); do grep -q '^numbers.arrows' "$corpus/locations" 2>/dev/null && break; sleep 0.1; done
location=$(awk '/^numbers.arrows/ { print $2; exit }' "$corpus/locations")
[ -n "$location" ] || { echo "build-without-native: the server printed no location" >&2; exit 1; }
"$dipc" fetch "$location" --out "$corpus/copy.arrows"
python3 - "$corpus/numbers.arrows" "$corpus/copy.arrows" <<'PY'
import sys, pyarrow as pa
source, copy = (pa.ipc.open_stream(path).read_all() for path in sys.argv[1:])
assert copy.equals(source), "the copy differs from the source"
PY
echo "build-without-native: ok (a stream over tcp:// equals its source)"
