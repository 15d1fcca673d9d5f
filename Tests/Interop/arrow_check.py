#!/usr/bin/env python3
"""Reference checker for Arrow IPC *stream* files, built on pyarrow.

The Swift Arrow IPC library is tested against pyarrow with this script: the
Swift side writes streams that are compared with pyarrow-written ones, and
pyarrow-written streams are read by the Swift side and compared with the
values printed here.

Usage:
    arrow_check.py hash FILE...           print the logical content hash (HASH  FILE per line for several)
    arrow_check.py equal FILE_A FILE_B    exit 0 iff both have equal content
    arrow_check.py values FILE            print schema and values as JSON
    arrow_check.py write-sample FILE      write the small fixture stream
    arrow_check.py tensor-write FILE      write a tensor message
    arrow_check.py tensor-read FILE       read a tensor message, print JSON

Exit status: 0 success, 1 mismatch or unreadable input (message on stderr),
2 usage error.

Content hash
------------
`hash` digests the *logical* content of a stream, never its bytes:

* the schema: every field (nested ones too) with its name, type, nullability
  and custom metadata, plus the schema's custom metadata; metadata is sorted
  by key, so the order in which a writer emits pairs does not matter;
* every record batch in order: its row count and, for each column, a digest of
  a canonical encoding of the column's values.

The canonical encoding of a column only ever looks at values that are
logically visible:

* dictionary arrays are decoded, run-end-encoded arrays are expanded and
  binary/string views are converted to offset-based binary, so the hash does
  not depend on how a dictionary was delivered (delta or replacement), how
  runs were split or how views share buffers (the schema part of the hash
  still records the declared type);
* a validity bitmap is hashed as one bit per row (or as a single "no nulls"
  marker when every row is valid, whether or not a bitmap was present); the
  slots behind nulls are then dropped, so bytes under null slots, offsets of
  null list slots and struct children under null parents never reach the
  hash;
* offsets are replaced by per-row lengths, so slicing, offset bases,
  list-view ordering/overlap and buffer padding do not matter;
* union children are only hashed at the slots that select them.

Every component is framed with a tag and its byte length and the order of
components is fixed by the schema, so the encoding is injective: two streams
hash equal exactly when pyarrow reads them as equal schemas and batches with
the same boundaries and equal values (see below). Compression, padding, message
alignment, legacy framing and metadata version are invisible to it.

"Equal values" means: floating-point values compare bitwise (0.0 and -0.0
differ, NaN equals the same NaN), dictionary columns compare by decoded
values, run-end-encoded columns by expanded values, and a union value
includes its type code (a null int child differs from a null string child).

Streams using interval[months] or interval[day_time] cannot be checked:
pyarrow reads those types but has no Python array class for them.
"""

import argparse
import hashlib
import json
import math
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.types as pat

EXIT_OK = 0
EXIT_FAIL = 1

# Prefix of the top-level digest; change it whenever the canonical encoding
# changes so that stale recorded hashes cannot match by accident.
HASH_DOMAIN = b"arrow-content-hash-v1\0"


class CheckError(Exception):
    """A failure to report on stderr with exit status 1."""


# ---------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------

def read_stream(path):
    """Yield (schema, batch) for every batch of the stream at `path`.

    The schema is yielded as (schema, None) first, so a schema-only stream
    still reports its schema. Every batch is fully validated: a malformed
    file must fail with a message, not crash pyarrow further down.
    """
    try:
        source = pa.memory_map(path, "r")
    except (OSError, pa.ArrowException) as exc:
        raise CheckError(f"{path}: cannot open: {_describe(exc)}") from exc
    with source:
        try:
            reader = ipc.open_stream(source)
        except (OSError, pa.ArrowException) as exc:
            raise CheckError(f"{path}: cannot read schema: {_describe(exc)}") from exc
        _check_exposable(path, reader.schema)
        yield reader.schema, None
        index = 0
        while True:
            try:
                batch = reader.read_next_batch()
            except StopIteration:
                return
            except (OSError, pa.ArrowException) as exc:
                raise CheckError(f"{path}: cannot read batch {index}: {_describe(exc)}") from exc
            try:
                batch.validate(full=True)
            except pa.ArrowException as exc:
                raise CheckError(f"{path}: batch {index} is invalid: {_describe(exc)}") from exc
            yield reader.schema, batch
            index += 1


# Types pyarrow reads from IPC but cannot expose as Python array objects.
UNEXPOSABLE_TYPES = {pa.lib.Type_INTERVAL_MONTHS, pa.lib.Type_INTERVAL_DAY_TIME}


def _all_types(data_type):
    """`data_type` and every type nested in it."""
    yield data_type
    if pat.is_dictionary(data_type):
        yield from _all_types(data_type.value_type)
    elif isinstance(data_type, pa.ExtensionType):
        yield from _all_types(data_type.storage_type)
    else:
        for i in range(data_type.num_fields):
            yield from _all_types(data_type.field(i).type)


def _check_exposable(path, schema):
    for field in schema:
        for data_type in _all_types(field.type):
            if data_type.id in UNEXPOSABLE_TYPES:
                raise CheckError(f"{path}: field '{field.name}' uses type {data_type}, which "
                                 f"pyarrow {pa.__version__} reads but cannot expose to Python")


def read_batch(path, wanted):
    """Return batch number `wanted` of the stream at `path`."""
    batches = (batch for _, batch in read_stream(path) if batch is not None)
    for index, batch in enumerate(batches):
        if index == wanted:
            return batch
    raise CheckError(f"{path}: has no batch {wanted}")


def _describe(exc):
    return f"{type(exc).__name__}: {exc}"


# ---------------------------------------------------------------------------
# Schema description
# ---------------------------------------------------------------------------

def _metadata_desc(metadata):
    """Key/value metadata as a key-sorted list of [key, value] pairs.

    Text that is valid UTF-8 is kept as a string; anything else becomes
    {"hex": ...}, which cannot collide with a string in the JSON encoding.
    """
    def text(raw):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            return {"hex": raw.hex()}
    return [[text(k), text(v)] for k, v in sorted((metadata or {}).items())]


def _child_fields(data_type):
    """The nested fields of a type (dictionary/extension: of the value type)."""
    if pat.is_dictionary(data_type):
        return _child_fields(data_type.value_type)
    if isinstance(data_type, pa.ExtensionType):
        return _child_fields(data_type.storage_type)
    return [data_type.field(i) for i in range(data_type.num_fields)]


def _field_desc(field):
    # str(type) carries every type parameter (widths, units, time zones,
    # index types, union codes, ...); the children add what it omits:
    # nested nullability and metadata.
    desc = {"name": field.name, "type": str(field.type), "nullable": field.nullable,
            "metadata": _metadata_desc(field.metadata)}
    children = _child_fields(field.type)
    if children:
        desc["children"] = [_field_desc(child) for child in children]
    return desc


def schema_desc(schema):
    """A JSON-serialisable, canonical description of a schema."""
    return {"fields": [_field_desc(field) for field in schema],
            "metadata": _metadata_desc(schema.metadata)}


# ---------------------------------------------------------------------------
# Canonical column encoding
# ---------------------------------------------------------------------------

def _put(h, tag, data):
    """Feed one framed component: 1-byte tag, 8-byte length, payload."""
    payload = memoryview(data).cast("B")
    h.update(tag + len(payload).to_bytes(8, "little"))
    h.update(payload)


def _unwrap(arr):
    """Replace encodings that do not change logical values by plain arrays."""
    while True:
        t = arr.type
        if isinstance(t, pa.ExtensionType):
            arr = arr.storage
        elif pat.is_dictionary(t):
            arr = arr.dictionary_decode()
        elif pat.is_run_end_encoded(t):
            arr = pc.run_end_decode(arr)
        elif pat.is_binary_view(t) or pat.is_string_view(t):
            arr = arr.cast(pa.large_binary())
        else:
            return arr


def _is_leaf(t):
    return not (pat.is_nested(t) or pat.is_null(t))


def _buffer(arr, index, dtype, count):
    """`count` items of buffer `index` starting at the array's offset."""
    itemsize = np.dtype(dtype).itemsize
    if count == 0:
        return np.zeros(0, dtype)
    return np.frombuffer(arr.buffers()[index], dtype, count, arr.offset * itemsize)


def _ranges_to_indices(starts, lengths):
    """Concatenation of range(s, s + n) for every (s, n), as int64 indices."""
    starts = starts.astype(np.int64, copy=False)
    lengths = lengths.astype(np.int64, copy=False)
    total = int(lengths.sum())
    first_out = np.cumsum(lengths) - lengths
    return np.arange(total, dtype=np.int64) + np.repeat(starts - first_out, lengths)


def _feed_validity(h, valid):
    """Hash the validity of the rows being hashed; True if any is null."""
    if valid is None or valid.all():
        _put(h, b"N", b"")
        return False
    _put(h, b"V", np.packbits(valid, bitorder="little"))
    return True


def _feed_leaf(h, arr):
    """Primitive, boolean, fixed-size binary, decimal, interval, binary."""
    if arr.null_count:
        valid = arr.is_valid()
        _feed_validity(h, valid.to_numpy(zero_copy_only=False))
        arr = arr.filter(valid)
    else:
        _feed_validity(h, None)
    n = len(arr)
    t = arr.type
    if pat.is_boolean(t):
        bits = np.unpackbits(np.frombuffer(arr.buffers()[1], np.uint8), bitorder="little") \
            if n else np.zeros(0, np.uint8)
        _put(h, b"D", np.packbits(bits[arr.offset:arr.offset + n], bitorder="little"))
    elif pat.is_binary(t) or pat.is_string(t) or pat.is_large_binary(t) or pat.is_large_string(t):
        large = pat.is_large_binary(t) or pat.is_large_string(t)
        offsets = _buffer(arr, 1, np.int64 if large else np.int32, n + 1)
        _put(h, b"L", np.diff(offsets).astype(np.int64))
        data = arr.buffers()[2]
        if n and offsets[-1] > offsets[0]:
            _put(h, b"B", memoryview(data)[offsets[0]:offsets[-1]])
        else:
            _put(h, b"B", b"")
    else:
        width = t.bit_width // 8
        data = memoryview(arr.buffers()[1]) if n else memoryview(b"")
        _put(h, b"D", data[arr.offset * width:(arr.offset + n) * width])


def _feed_array(h, arr, sel=None):
    """Hash the canonical encoding of `arr` restricted to the rows `sel`.

    `sel` is None (all rows) or an int64 numpy array of row positions. Nested
    arrays push the selection down to their children instead of using
    take/filter, which pyarrow does not implement for every child type.
    """
    arr = _unwrap(arr)
    t = arr.type
    if pat.is_null(t):
        return
    if _is_leaf(t):
        _feed_leaf(h, arr if sel is None else arr.take(sel))
        return
    n = len(arr)
    if pat.is_union(t):
        _feed_union(h, arr, sel)
        return
    valid = arr.is_valid().to_numpy(zero_copy_only=False) if arr.null_count else None
    if valid is not None and sel is not None:
        valid = valid[sel]
    if _feed_validity(h, valid):
        sel = (np.arange(n, dtype=np.int64) if sel is None else sel)[valid]
    if pat.is_struct(t):
        for i in range(t.num_fields):
            _feed_array(h, arr.field(i), sel)
    else:
        _feed_list(h, arr, sel)


def _feed_list(h, arr, sel):
    """List, large list, fixed-size list, list view, map: lengths + values."""
    t = arr.type
    n = len(arr)
    if pat.is_fixed_size_list(t):
        starts = (arr.offset + np.arange(n, dtype=np.int64)) * t.list_size
        lengths = np.full(n, t.list_size, np.int64)
    elif pat.is_list_view(t) or pat.is_large_list_view(t):
        dtype = np.int64 if pat.is_large_list_view(t) else np.int32
        starts = _buffer(arr, 1, dtype, n)
        lengths = _buffer(arr, 2, dtype, n)
    else:  # list, large_list, map: offsets
        dtype = np.int64 if pat.is_large_list(t) else np.int32
        offsets = _buffer(arr, 1, dtype, n + 1)
        starts = offsets[:-1]
        lengths = np.diff(offsets)
    if sel is not None:
        starts, lengths = starts[sel], lengths[sel]
    _put(h, b"L", lengths.astype(np.int64))
    values = arr.values
    if sel is None and not (pat.is_list_view(t) or pat.is_large_list_view(t)):
        # All rows, non-view list: the values form one contiguous range.
        first = int(starts[0]) if n else 0
        _feed_array(h, values.slice(first, int(lengths.sum())))
    else:
        _feed_array(h, values, _ranges_to_indices(starts, lengths))


def _feed_union(h, arr, sel):
    """Union: per-row type codes, then each child at the rows choosing it."""
    t = arr.type
    n = len(arr)
    rows = np.arange(n, dtype=np.int64) if sel is None else sel
    codes = _buffer(arr, 1, np.int8, n)[rows]
    _put(h, b"T", codes)
    dense = t.mode == "dense"
    if dense:
        child_rows = _buffer(arr, 2, np.int32, n)[rows].astype(np.int64)
    for child, code in enumerate(t.type_codes):
        chosen = codes == code
        # Sparse children are aligned with the union (pyarrow slices them
        # along with it); dense children are indexed through the offsets.
        _feed_array(h, arr.field(child), (child_rows if dense else rows)[chosen])


def column_digest(arr):
    """SHA-256 digest of the canonical encoding of one column."""
    h = hashlib.sha256()
    _feed_array(h, arr)
    return h.digest()


# ---------------------------------------------------------------------------
# Stream digests
# ---------------------------------------------------------------------------

class StreamDigest:
    """Schema description plus per-batch row counts and column digests."""

    def __init__(self, path):
        self.schema = None
        self.batches = []  # [(num_rows, [column digest, ...]), ...]
        for schema, batch in read_stream(path):
            if batch is None:
                self.schema = schema
                continue
            self.batches.append((batch.num_rows,
                                 [column_digest(column) for column in batch.columns]))
        self.desc = schema_desc(self.schema)

    def hexdigest(self):
        h = hashlib.sha256(HASH_DOMAIN)
        _put(h, b"S", json.dumps(self.desc, sort_keys=True, ensure_ascii=True).encode())
        for num_rows, digests in self.batches:
            _put(h, b"R", num_rows.to_bytes(8, "little"))
            for digest in digests:
                _put(h, b"C", digest)
        _put(h, b"E", len(self.batches).to_bytes(8, "little"))
        return h.hexdigest()


def content_hash(path):
    """Hex content hash of the stream at `path` (raises CheckError)."""
    return StreamDigest(path).hexdigest()


# ---------------------------------------------------------------------------
# Difference reporting for `equal`
# ---------------------------------------------------------------------------

MAX_REPORTED = 10


def _schema_differences(a, b):
    out = []
    fields_a, fields_b = a.desc["fields"], b.desc["fields"]
    if len(fields_a) != len(fields_b):
        out.append(f"schema: {len(fields_a)} fields vs {len(fields_b)} fields")
    for i, (fa, fb) in enumerate(zip(fields_a, fields_b)):
        if fa != fb:
            out.append(f"schema field #{i}:\n    A: {json.dumps(fa)}\n    B: {json.dumps(fb)}")
    if a.desc["metadata"] != b.desc["metadata"]:
        out.append(f"schema metadata:\n    A: {json.dumps(a.desc['metadata'])}\n"
                   f"    B: {json.dumps(b.desc['metadata'])}")
    return out


def _first_differing_row(col_a, col_b):
    """Smallest row r such that the rows [0, r] differ (by bisection).

    Prefix equality is monotonic, and the canonical digest is slice-safe, so
    this finds the first row whose value or validity differs.
    """
    lo, hi = 0, len(col_a) - 1  # invariant: prefix [0, hi] differs
    while lo < hi:
        mid = (lo + hi) // 2
        if column_digest(col_a.slice(0, mid + 1)) != column_digest(col_b.slice(0, mid + 1)):
            hi = mid
        else:
            lo = mid + 1
    return lo


def _row_repr(col, row):
    return json.dumps(json_values(col.slice(row, 1))[0], ensure_ascii=True)


def differences(path_a, path_b, a, b):
    """Human-readable list of differences between two StreamDigests."""
    out = _schema_differences(a, b)
    if len(a.batches) != len(b.batches):
        out.append(f"batch count: {len(a.batches)} vs {len(b.batches)}")
    names = a.schema.names
    detailed = False
    for index, ((rows_a, cols_a), (rows_b, cols_b)) in enumerate(zip(a.batches, b.batches)):
        if rows_a != rows_b:
            out.append(f"batch {index}: {rows_a} rows vs {rows_b} rows")
            continue
        for col, (da, db) in enumerate(zip(cols_a, cols_b)):
            if da == db:
                continue
            name = names[col] if col < len(names) else "?"
            line = f"batch {index}, column #{col} '{name}': values differ"
            if not detailed and a.schema.field(col).type == b.schema.field(col).type:
                # Pinpoint the first difference once; later ones only by name.
                detailed = True
                ca = read_batch(path_a, index).column(col)
                cb = read_batch(path_b, index).column(col)
                row = _first_differing_row(ca, cb)
                line += f" (first at row {row}: A={_row_repr(ca, row)} B={_row_repr(cb, row)})"
            out.append(line)
    return out


# ---------------------------------------------------------------------------
# JSON values for `values`
# ---------------------------------------------------------------------------

def _json_float(value):
    if value is None or math.isfinite(value):
        return value
    return str(value)  # "nan", "inf", "-inf": JSON has no such numbers


def json_values(arr):
    """The values of `arr` as a JSON-safe Python list (null -> None).

    bytes -> lowercase hex; decimals -> fixed-point strings with exactly
    `scale` fractional digits; dates, times and timestamps -> Arrow's own
    string rendering (full precision, e.g. nanoseconds; "Z" or "+0700" style
    suffix when the type has a time zone); durations -> integer counts of
    their unit; non-finite floats -> "nan"/"inf"/"-inf"; month_day_nano intervals ->
    [months, days, nanoseconds]; maps -> lists of [key, value] pairs;
    dictionary and run-end-encoded arrays -> their decoded values.
    """
    t = arr.type
    if isinstance(t, pa.ExtensionType):
        return json_values(arr.storage)
    if pat.is_dictionary(t):
        return json_values(arr.dictionary_decode())
    if pat.is_run_end_encoded(t):
        return json_values(pc.run_end_decode(arr))
    if pat.is_interval(t):  # checked first: is_temporal() includes intervals
        return [None if v is None else list(v) for v in arr.to_pylist()]
    if pat.is_duration(t):
        return arr.cast(pa.int64()).to_pylist()
    if pat.is_temporal(t):
        return arr.cast(pa.string()).to_pylist()
    if pat.is_decimal(t):
        return [None if v is None else format(v, "f") for v in arr.to_pylist()]
    if pat.is_binary(t) or pat.is_large_binary(t) or pat.is_binary_view(t) \
            or pat.is_fixed_size_binary(t):
        return [None if v is None else v.hex() for v in arr.to_pylist()]
    if pat.is_floating(t):
        return [_json_float(v) for v in arr.to_pylist()]
    if pat.is_struct(t):
        valid = arr.is_valid().to_pylist()
        children = [json_values(arr.field(i)) for i in range(t.num_fields)]
        return [dict(zip((f.name for f in t), row)) if ok else None
                for ok, row in zip(valid, zip(*children) if children else [()] * len(arr))]
    if pat.is_map(t):
        entries = arr.view(pa.list_(t.field(0)))
        return [None if v is None else [[e[t.key_field.name], e[t.item_field.name]] for e in v]
                for v in json_values(entries)]
    if pat.is_list(t) or pat.is_large_list(t) or pat.is_fixed_size_list(t) \
            or pat.is_list_view(t) or pat.is_large_list_view(t):
        flat = iter(json_values(arr.flatten()))  # flatten() skips null slots
        lengths = pc.list_value_length(arr).to_pylist()  # null for null slots
        return [None if n is None else [next(flat) for _ in range(n)] for n in lengths]
    if pat.is_union(t):
        n = len(arr)
        codes = _buffer(arr, 1, np.int8, n)
        rows = _buffer(arr, 2, np.int32, n).tolist() if t.mode == "dense" else range(n)
        children = {code: json_values(arr.field(i)) for i, code in enumerate(t.type_codes)}
        return [children[code][row] for code, row in zip(codes.tolist(), rows)]
    return arr.to_pylist()  # null, boolean, integers, strings, string views


def stream_values(path):
    schema, batches = None, []
    for schema, batch in read_stream(path):
        if batch is not None:
            batches.append({"num_rows": batch.num_rows,
                            "columns": {name: json_values(col)
                                        for name, col in zip(batch.schema.names, batch.columns)}})
    return {"schema": [{"name": f.name, "type": str(f.type), "nullable": f.nullable}
                       for f in schema],
            "batches": batches}


# ---------------------------------------------------------------------------
# Sample fixture
# ---------------------------------------------------------------------------

# The fixture written by `write-sample`: an uncompressed stream with schema
#   id: int32, x: double, flag: bool, name: string   (all nullable, no metadata)
# and three record batches:
#   batch 0 (3 rows): id=[1, null, 3]  x=[0.5, -1.25, 3.0]
#                     flag=[true, null, false]  name=["alpha", null, "γάμμα"]
#   batch 1 (2 rows): id=[null, 5]  x=[1e100, -0.0]
#                     flag=[null, true]  name=["", "e"]
#   batch 2 (4 rows): id=[2147483647, -2147483648, 0, null]
#                     x=[2.5, 1e-300, 123456.789, -7.0]
#                     flag=[false, false, true, null]  name=["z", null, "🦀 crab", "x"]
SAMPLE_SCHEMA = pa.schema([("id", pa.int32()), ("x", pa.float64()),
                           ("flag", pa.bool_()), ("name", pa.string())])
SAMPLE_BATCHES = [
    {"id": [1, None, 3], "x": [0.5, -1.25, 3.0],
     "flag": [True, None, False], "name": ["alpha", None, "γάμμα"]},
    {"id": [None, 5], "x": [1e100, -0.0],
     "flag": [None, True], "name": ["", "e"]},
    {"id": [2147483647, -2147483648, 0, None], "x": [2.5, 1e-300, 123456.789, -7.0],
     "flag": [False, False, True, None], "name": ["z", None, "🦀 crab", "x"]},
]


def write_sample(path):
    with ipc.new_stream(path, SAMPLE_SCHEMA) as writer:
        for columns in SAMPLE_BATCHES:
            writer.write_batch(pa.record_batch(columns, schema=SAMPLE_SCHEMA))


# ---------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------

def cmd_hash(args):
    """One file: its hash alone. Several: `HASH  FILE` per line, so one
    process (one pyarrow import) serves a whole corpus."""
    if len(args.files) == 1:
        print(content_hash(args.files[0]))
    else:
        for path in args.files:
            print(f"{content_hash(path)}  {path}")
    return EXIT_OK


def cmd_equal(args):
    a, b = StreamDigest(args.file_a), StreamDigest(args.file_b)
    if a.hexdigest() == b.hexdigest():
        return EXIT_OK
    found = differences(args.file_a, args.file_b, a, b)
    print(f"streams differ: A={args.file_a} B={args.file_b}", file=sys.stderr)
    for line in found[:MAX_REPORTED]:
        print("  " + line, file=sys.stderr)
    if len(found) > MAX_REPORTED:
        print(f"  ... and {len(found) - MAX_REPORTED} more differences", file=sys.stderr)
    return EXIT_FAIL


def cmd_values(args):
    json.dump(stream_values(args.file), sys.stdout, ensure_ascii=True)
    print()
    return EXIT_OK


def cmd_write_sample(args):
    try:
        write_sample(args.file)
    except (OSError, pa.ArrowException) as exc:
        raise CheckError(f"{args.file}: cannot write: {_describe(exc)}") from exc
    return EXIT_OK


def cmd_tensor_write(args):
    """A pyarrow tensor message: 3x4 int64, non-contiguous (a transposed
    view), with dimension names."""
    import numpy as np
    values = np.arange(12, dtype=np.int64).reshape(4, 3).T
    tensor = pa.Tensor.from_numpy(values, dim_names=["rows", "cols"])
    with pa.OSFile(args.file, "wb") as sink:
        pa.ipc.write_tensor(tensor, sink)
    return EXIT_OK


def cmd_tensor_read(args):
    """Reads a tensor message with pyarrow; prints its shape, strides,
    names and values as JSON."""
    with pa.memory_map(args.file) as source:
        tensor = pa.ipc.read_tensor(source)
    print(json.dumps({"shape": list(tensor.shape), "strides": list(tensor.strides),
                      "dim_names": list(tensor.dim_names), "type": str(tensor.type),
                      "values": tensor.to_numpy().tolist()}))
    return EXIT_OK


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Hash, compare and dump Arrow IPC stream files with pyarrow.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("hash", help="print the logical content hash of one or more streams")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(run=cmd_hash)
    p = sub.add_parser("equal", help="exit 0 iff two streams have equal content")
    p.add_argument("file_a")
    p.add_argument("file_b")
    p.set_defaults(run=cmd_equal)
    p = sub.add_parser("values", help="print schema and values as JSON (small files)")
    p.add_argument("file")
    p.set_defaults(run=cmd_values)
    p = sub.add_parser("write-sample", help="write the small deterministic fixture stream")
    p.add_argument("file")
    p.set_defaults(run=cmd_write_sample)
    p = sub.add_parser("tensor-write", help="write a pyarrow tensor message (3x4 int64, strided)")
    p.add_argument("file")
    p.set_defaults(run=cmd_tensor_write)
    p = sub.add_parser("tensor-read", help="read a tensor message with pyarrow, print JSON")
    p.add_argument("file")
    p.set_defaults(run=cmd_tensor_read)
    args = parser.parse_args(argv)  # exits with status 2 on usage errors
    try:
        return args.run(args)
    except CheckError as exc:
        print(f"arrow_check: error: {exc}", file=sys.stderr)
    except Exception as exc:  # e.g. a type pyarrow reads but cannot convert
        print(f"arrow_check: error: {_describe(exc)}", file=sys.stderr)
    return EXIT_FAIL


if __name__ == "__main__":
    sys.exit(main())
