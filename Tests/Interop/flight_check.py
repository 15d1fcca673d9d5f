#!/usr/bin/env python3
"""pyarrow.flight as the client of our Flight service (the tests' oracle).

Usage:
    flight_check.py list URI FOLDER     list the flights; check each one's schema against
                                        FOLDER/<name> (pyarrow reads the stream file); print
                                        one JSON object per flight: path, ticket, locations
    flight_check.py get URI TICKET OUT  DoGet TICKET; write what arrived to the IPC stream OUT
    flight_check.py get-all URI OUTDIR  DoGet every listed flight into OUTDIR/<name>
    flight_check.py info URI NAME       GetFlightInfo of the path [NAME]; print its locations as JSON
    flight_check.py error URI NAME...   GetFlightInfo of a path (NAME... its elements) that should
                                        fail; print the exception's class and message (exit 0
                                        only if it failed)

Exit status: 0 success, 1 a check failed (message on stderr), 2 usage error.
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.flight as flight


def flights(uri, folder):
    client = flight.FlightClient(uri)
    for info in client.list_flights():
        name = info.descriptor.path[0].decode()
        expected = pa.ipc.open_stream(os.path.join(folder, name)).schema
        if not info.schema.equals(expected, check_metadata=True):
            print(f"flight_check: {name}: FlightInfo's schema differs from the file's", file=sys.stderr)
            return 1
        schema = client.get_schema(flight.FlightDescriptor.for_path(name)).schema
        if not schema.equals(expected, check_metadata=True):
            print(f"flight_check: {name}: GetSchema differs from the file's", file=sys.stderr)
            return 1
        endpoint = info.endpoints[0]
        print(json.dumps({"path": name, "ticket": endpoint.ticket.ticket.decode(),
                          "locations": [location.uri.decode() for location in endpoint.locations]}))
    return 0


def get(uri, ticket, out):
    reader = flight.FlightClient(uri).do_get(flight.Ticket(ticket.encode()))
    # Batch by batch, as they arrived (a table would drop empty batches).
    with pa.OSFile(out, "wb") as sink, pa.ipc.new_stream(sink, reader.schema) as writer:
        for chunk in reader:
            writer.write_batch(chunk.data)
    return 0


def get_all(uri, outdir):
    for found in flight.FlightClient(uri).list_flights():
        name = found.descriptor.path[0].decode()
        get(uri, name, os.path.join(outdir, name))
    return 0


def info(uri, name):
    found = flight.FlightClient(uri).get_flight_info(flight.FlightDescriptor.for_path(name))
    print(json.dumps([location.uri.decode() for location in found.endpoints[0].locations]))
    return 0


def error(uri, *names):
    try:
        flight.FlightClient(uri).get_flight_info(flight.FlightDescriptor.for_path(*names))
    except Exception as failure:  # the class tells which status pyarrow saw
        print(f"{type(failure).__name__}: {failure}")
        return 0
    print("flight_check: the call succeeded", file=sys.stderr)
    return 1


def main(argv):
    commands = {"list": (flights, 2), "get": (get, 3), "get-all": (get_all, 2), "info": (info, 2), "error": (error, 2)}
    if len(argv) < 2 or argv[1] not in commands or len(argv) - 2 < commands[argv[1]][1] \
            or (argv[1] != "error" and len(argv) - 2 != commands[argv[1]][1]):
        print(__doc__, file=sys.stderr)
        return 2
    function, _ = commands[argv[1]]
    return function(*argv[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
