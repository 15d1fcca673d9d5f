#!/usr/bin/env python3
""""Just share a file" baseline for `dipc bench`: pyarrow writes the batches
to an Arrow IPC file in /dev/shm and a second process memory-maps it and
reads every batch, timed from the first write to the last read.

    shared_file_baseline.py --batches N --batch-bytes B [--touch] [--rounds R]

The writer writes N record batches of one int64 column of B bytes each;
the reader, started (and pyarrow imported) before the clock starts, waits
for the file to be complete, maps it and reads each batch; with --touch it
also reads every value (a sum), as `dipc bench`'s consumer reads every
byte. Both processes read CLOCK_MONOTONIC (time.perf_counter), so the
writer's start and the reader's end are on one clock. Prints one JSON line
per round: {"seconds": s, "bytes": total body bytes, "batches": n}.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import pyarrow as pa
import pyarrow.compute as pc


def make_batch(batch_bytes):
    rows = max(1, batch_bytes // 8)
    return pa.record_batch([pa.array(range(rows), pa.int64())], names=["v"])


def read(path, touch):
    """The reader process: waits for "go", reads the file, prints its end time."""
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    batches = 0
    total = 0
    checksum = 0
    with pa.memory_map(path) as source:
        reader = pa.ipc.open_file(source)
        for index in range(reader.num_record_batches):
            batch = reader.get_batch(index)
            batches += 1
            total += batch.nbytes
            if touch:
                checksum += pc.sum(batch.column(0)).as_py() or 0
    ended = time.perf_counter()
    print(json.dumps({"ended": ended, "bytes": total, "batches": batches, "checksum": checksum}), flush=True)
    return 0


def round_trip(batch, count, touch):
    """One round: a reader process, then the timed write and read."""
    with tempfile.NamedTemporaryFile(dir="/dev/shm", prefix="dipc-bench-shared-file-", suffix=".arrow", delete=False) as handle:
        path = handle.name
    reader = subprocess.Popen(
        [sys.executable, __file__, "--read", path] + (["--touch"] if touch else []),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        if reader.stdout.readline().strip() != "ready":
            raise RuntimeError("the reader did not start")
        started = time.perf_counter()
        with pa.OSFile(path, "wb") as sink:
            with pa.ipc.new_file(sink, batch.schema) as writer:
                for _ in range(count):
                    writer.write_batch(batch)
        reader.stdin.write("go\n")
        reader.stdin.flush()
        result = json.loads(reader.stdout.readline())
        if reader.wait(timeout=60) != 0:
            raise RuntimeError(f"the reader exited {reader.returncode}")
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
        os.unlink(path)
    if result["batches"] != count:
        raise RuntimeError(f"read {result['batches']} batches, wrote {count}")
    return {"seconds": result["ended"] - started, "bytes": result["bytes"], "batches": result["batches"]}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int)
    parser.add_argument("--batch-bytes", type=int)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--touch", action="store_true", help="read every value of every batch")
    parser.add_argument("--read", metavar="PATH", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.read:
        return read(args.read, args.touch)
    if args.batches is None or args.batch_bytes is None:
        parser.error("--batches and --batch-bytes are required")
    batch = make_batch(args.batch_bytes)
    for _ in range(args.rounds):
        print(json.dumps(round_trip(batch, args.batches, args.touch)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
