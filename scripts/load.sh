#!/usr/bin/env bash
# Many clients at once against one `dipc serve`: every client must get the
# whole stream, none may take more than 3x the median, and the server's
# memory is reported (its peak RSS and the system's peak shared memory).
#
#   bash scripts/load.sh [--transports tcp,shm,ucx] [--clients 64] [--mib 200]
#
# Uses .build/release/dipc when it exists (swift build -c release), else
# the debug build. ucx:// runs with UCX_TLS=tcp on lo. Exits non-zero when
# a client fails or the slowest takes more than 3x the median.
set -euo pipefail
cd "$(dirname "$0")/.."

transports=tcp,shm,ucx
clients=64
mib=200
while [ $# -gt 0 ]; do
  case "$1" in
    --transports) transports=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --mib) mib=$2; shift 2 ;;
    *) echo "usage: $0 [--transports tcp,shm,ucx] [--clients N] [--mib M]" >&2; exit 2 ;;
  esac
done

bash scripts/setup.sh
dipc=.build/release/dipc
if [ ! -x "$dipc" ]; then
  swift build --product dipc >/dev/null
  dipc=.build/debug/dipc
fi
work=$(mktemp -d)
server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT

# One int64 column in 1 MiB batches.
python3 - "$work/load.arrows" "$mib" <<'PY'
import sys, numpy as np, pyarrow as pa
path, mib = sys.argv[1], int(sys.argv[2])
schema = pa.schema([("v", pa.int64())])
with pa.OSFile(path, "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
    for b in range(mib):
        writer.write_batch(pa.record_batch([pa.array(np.arange(b << 17, (b + 1) << 17, dtype=np.int64))], schema=schema))
PY

now() { date +%s.%N; }
status=0
printf '%-6s %8s %10s %10s %8s %16s %16s\n' scheme ok median_s max_s max/med peak_rss_MiB peak_shmem_MiB
for transport in ${transports//,/ }; do
  case "$transport" in
    tcp) listen=tcp://127.0.0.1:0 ;;
    shm) listen=shm:// ;;
    ucx) listen=ucx://127.0.0.1:0; export UCX_TLS=tcp UCX_NET_DEVICES=lo ;;
    *) echo "unknown transport $transport" >&2; exit 2 ;;
  esac
  "$dipc" serve "$work/load.arrows" --listen "$listen" >"$work/locations" 2>"$work/serve.log" &
  server=$!
  for _ in $(seq 1 100); do grep -q "^load.arrows" "$work/locations" && break; sleep 0.1; done
  location=$(grep "^load.arrows" "$work/locations" | head -1 | cut -f2)
  shmem_base=$(awk '/^Shmem:/ {print $2}' /proc/meminfo)
  : >"$work/memory"
  ( while kill -0 "$server" 2>/dev/null; do
      echo "$(awk '/^VmRSS:/ {print $2}' "/proc/$server/status" 2>/dev/null || echo 0) $(awk '/^Shmem:/ {print $2}' /proc/meminfo)"
      sleep 0.2
    done >>"$work/memory" ) &
  sampler=$!
  pids=()
  for i in $(seq 1 "$clients"); do
    ( started=$(now)
      if "$dipc" fetch "$location" -o /dev/null 2>"$work/fetch.$i.err"; then
        echo "ok $(echo "$(now) - $started" | bc)"
      else
        echo "failed $(head -c 300 "$work/fetch.$i.err" | tr '\n' ' ')"
      fi ) >"$work/result.$i" &
    pids+=($!)
  done
  wait "${pids[@]}"
  kill "$server"; wait "$server" 2>/dev/null || true; server=
  wait "$sampler" 2>/dev/null || true
  cat "$work"/result.* >"$work/results"
  ok=$(grep -c '^ok' "$work/results" || true)
  read -r median slowest < <(awk '/^ok/ {print $2}' "$work/results" | sort -n |
    awk '{t[NR]=$1} END {if (NR) print t[int((NR+1)/2)], t[NR]; else print 0, 0}')
  ratio=$(echo "scale=2; if ($median > 0) $slowest / $median else 0" | bc)
  read -r rss shmem < <(awk -v base="$shmem_base" '{if ($1>r) r=$1; if ($2-base>s) s=$2-base} END {printf "%d %d\n", r/1024, s/1024}' "$work/memory")
  printf '%-6s %4d/%-3d %10.2f %10.2f %8s %16d %16d\n' "$transport" "$ok" "$clients" "$median" "$slowest" "$ratio" "$rss" "$shmem"
  grep '^failed' "$work/results" | head -3 >&2 || true
  if [ "$ok" -ne "$clients" ] || [ "$(echo "$slowest > 3 * $median" | bc)" -eq 1 ]; then status=1; fi
  rm -f "$work"/result.* "$work"/fetch.*.err
done
exit $status
