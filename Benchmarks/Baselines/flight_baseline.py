#!/usr/bin/env python3
"""Arrow Flight DoGet baseline for `dipc bench`: the usual way to move Arrow
data between processes today, measured on loopback with the same shape of
data the Swift benchmark moves.

    flight_baseline.py --batches N --batch-bytes B [--touch] [--rounds R]

Starts a pyarrow Flight server in a child process (so client and server do
not share the Python interpreter lock), then fetches N record batches of
one int64 column of B bytes each with DoGet, R times; with --touch the
client reads every value (a sum), as `dipc bench`'s consumer reads every
byte. Prints one JSON line
per round: {"seconds": s, "bytes": total body bytes, "batches": n}.
"""
import argparse
import json
import multiprocessing
import os
import sys
import time

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.flight as flight


def make_table(batches, batch_bytes):
    rows = max(1, batch_bytes // 8)
    batch = pa.record_batch([pa.array(range(rows), pa.int64())], names=["v"])
    # The same batch N times: no memory cost, every batch is still sent.
    return pa.Table.from_batches([batch] * batches)


class Server(flight.FlightServerBase):
    def __init__(self, location, table):
        super().__init__(location)
        self.table = table

    def do_get(self, context, ticket):
        return flight.RecordBatchStream(self.table)


def serve(port_queue, batches, batch_bytes):
    # Let go of the parent's stdout, so whoever reads it sees its end when
    # the parent exits.
    sys.stdout = open("/dev/null", "w")
    os.close(1)
    server = Server("grpc://127.0.0.1:0", make_table(batches, batch_bytes))
    port_queue.put(server.port)
    server.serve()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, required=True)
    parser.add_argument("--batch-bytes", type=int, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--touch", action="store_true", help="read every value of every batch")
    args = parser.parse_args()

    ports = multiprocessing.Queue()
    child = multiprocessing.Process(target=serve, args=(ports, args.batches, args.batch_bytes), daemon=True)
    child.start()
    try:
        port = ports.get(timeout=30)
        client = flight.FlightClient(f"grpc://127.0.0.1:{port}")
        for _ in range(args.rounds):
            started = time.perf_counter()
            reader = client.do_get(flight.Ticket(b"t"))
            batches = 0
            total = 0
            checksum = 0
            for chunk in reader:
                batches += 1
                total += chunk.data.nbytes
                if args.touch:
                    checksum += pc.sum(chunk.data.column(0)).as_py() or 0
            elapsed = time.perf_counter() - started
            if batches != args.batches:
                print(f"flight_baseline: received {batches} batches, expected {args.batches}", file=sys.stderr)
                return 1
            print(json.dumps({"seconds": elapsed, "bytes": total, "batches": batches}), flush=True)
    finally:
        child.kill()
        child.join(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
