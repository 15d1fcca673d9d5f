#!/usr/bin/env python3
"""Generate the pyarrow-written corpus of Arrow IPC stream files.

Usage:
    arrow_corpus.py OUTDIR

Writes one `.arrows` stream per case into OUTDIR plus OUTDIR/manifest.json:

    {"version": CORPUS_VERSION, "pyarrow": "<version used>",
     "files": [{"name": ..., "description": ..., "size": bytes,
                "hash": <arrow_check.py content hash>}, ...]}

The output is deterministic (literal values and fixed seeds). When
OUTDIR/manifest.json already records the current CORPUS_VERSION the script
exits at once; otherwise it builds the corpus in a temporary sibling
directory and renames it into place, so an interrupted run never leaves a
partial corpus behind. A lock file next to OUTDIR serialises concurrent runs.

Exit status: 0 success, 1 failure, 2 usage error.
"""

import datetime
import decimal
import fcntl
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import arrow_check  # noqa: E402  (sibling script; provides the content hash)

# Bump whenever the corpus content changes, so existing corpora are rebuilt.
CORPUS_VERSION = 1

D = decimal.Decimal


# ---------------------------------------------------------------------------
# One array per Arrow type (each becomes its own file)
# ---------------------------------------------------------------------------

def _int_values(bits, signed):
    if signed:
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return [lo, -1, 0, None, 1, hi, 42]
    return [0, 1, None, (1 << bits) - 1, 42, 1 << (bits - 1), 7]


def _timestamp_values(unit):
    per_second = {"s": 1, "ms": 1_000, "us": 1_000_000, "ns": 1_000_000_000}[unit]
    # 2023-11-14 22:13:20 UTC plus a sub-second part, the epoch, a negative
    # (pre-1970) value, a null and a far date (2255-03-14, near the ns limit).
    return [1_700_000_000 * per_second + per_second // 3, 0, -per_second - 1, None,
            9_000_000_000 * per_second]


def _list_view(large):
    """A list view whose views are out of order, overlap and skip values."""
    values = pa.array(["a", "bb", None, "dddd", "e", "ff"] if large else [1, 2, None, 4, 5, 6],
                      pa.string() if large else pa.int32())
    offsets = pa.array([4, 0, 1, 0, 2, 3], pa.int64() if large else pa.int32())
    sizes = pa.array([2, 3, 2, 0, 0, 1], pa.int64() if large else pa.int32())
    cls = pa.LargeListViewArray if large else pa.ListViewArray
    # Row 3 is null; row 4 is an empty list.
    return cls.from_arrays(offsets, sizes, values,
                           mask=pa.array([False, False, False, True, False, False]))


def _views(binary):
    """A view array with inline (<= 12 bytes) and out-of-line values held in
    two variadic data buffers (concatenation keeps the buffers separate)."""
    if binary:
        first = [b"", b"\x00\x01\x02", None, b"twelve bytes", b"more than twelve bytes \xff"]
        second = [b"\xfe" * 40, None, b"short"]
        view_type = pa.binary_view()
    else:
        first = ["", "abc", None, "twelve bytes", "more than twelve bytes ü"]
        second = ["🦀" * 10, None, "short"]
        view_type = pa.string_view()
    return pa.concat_arrays([pa.array(first, view_type), pa.array(second, view_type)])


def type_samples():
    """(file stem, description, array) for every type pyarrow can write."""
    samples = [("null", "null type (5 rows)", pa.nulls(5)),
               ("bool", "boolean with nulls, more than 8 rows",
                pa.array([True, False, None, True, True, False, None, False, True, True]))]
    for bits in (8, 16, 32, 64):
        for signed in (True, False):
            name = f"{'' if signed else 'u'}int{bits}"
            samples.append((name, f"{name}: min/max/zero/null",
                            pa.array(_int_values(bits, signed), getattr(pa, name)())))
    specials = [0.0, -0.0, 1.5, None, float("inf"), float("-inf"), float("nan")]
    samples += [
        ("float16", "float16: signed zeros, max, subnormal, inf, nan, null",
         pa.array(specials + [65504.0, 6e-08], pa.float16())),
        ("float32", "float32: signed zeros, extremes, inf, nan, null",
         pa.array(specials + [3.4028234663852886e38, 1e-45], pa.float32())),
        ("float64", "float64: signed zeros, extremes, inf, nan, null",
         pa.array(specials + [1.7976931348623157e308, 5e-324], pa.float64())),
        ("decimal32", "decimal32(9, 2) with negative and null",
         pa.array([D("1234567.89"), D("-0.01"), None, D("0"), D("-9999999.99")], pa.decimal32(9, 2))),
        ("decimal64", "decimal64(18, 6) with negative and null",
         pa.array([D("123456789012.345678"), D("-1.5"), None, D("0")], pa.decimal64(18, 6))),
        ("decimal128", "decimal128(38, 10) at full precision, negative, null",
         pa.array([D("1234567890123456789012345678.0123456789"), D("-0.0000000001"), None,
                   D("-9999999999999999999999999999.9999999999")], pa.decimal128(38, 10))),
        ("decimal256", "decimal256(76, 20) at full precision, negative, null",
         pa.array([D("9" * 56 + "." + "9" * 20), D("-12345.6789"), None, D("0")],
                  pa.decimal256(76, 20))),
        ("date32", "date32 incl. pre-1970 and null",
         pa.array([datetime.date(1970, 1, 1), datetime.date(2024, 2, 29), None,
                   datetime.date(1900, 12, 31)], pa.date32())),
        ("date64", "date64 (ms, whole days) incl. pre-1970 and null",
         pa.array([0, 19782 * 86_400_000, None, -86_400_000], pa.date64())),
        ("time32_s", "time32[s] incl. last second of day and null",
         pa.array([0, 86_399, None, 45_296], pa.time32("s"))),
        ("time32_ms", "time32[ms] incl. last ms of day and null",
         pa.array([0, 86_399_999, None, 45_296_789], pa.time32("ms"))),
        ("time64_us", "time64[us] incl. last us of day and null",
         pa.array([0, 86_399_999_999, None, 45_296_789_012], pa.time64("us"))),
        ("time64_ns", "time64[ns] incl. last ns of day and null",
         pa.array([0, 86_399_999_999_999, None, 45_296_789_012_345], pa.time64("ns"))),
    ]
    for unit in ("s", "ms", "us", "ns"):
        for tz, tz_name in ((None, "naive"), ("UTC", "utc"), ("+07:00", "plus0700")):
            samples.append((f"timestamp_{unit}_{tz_name}",
                            f"timestamp[{unit}] {'without time zone' if tz is None else 'tz=' + tz}",
                            pa.array(_timestamp_values(unit), pa.timestamp(unit, tz))))
    for unit in ("s", "ms", "us", "ns"):
        samples.append((f"duration_{unit}", f"duration[{unit}] incl. negative and null",
                        pa.array([0, -5, None, 123_456_789, 2**63 - 1], pa.duration(unit))))
    samples += [
        ("interval_month_day_nano", "month_day_nano_interval incl. negative parts and null",
         pa.array([(1, 2, 3), (-1, -2, -3_000_000_000), None, (0, 0, 0), (14, 0, 86_400)],
                  pa.month_day_nano_interval())),
        ("binary", "binary: empty, non-UTF-8 bytes, null",
         pa.array([b"", b"\x00\x01\xff", None, b"hello", b"\xc3\x28"], pa.binary())),
        ("string", "utf8: empty, multi-byte, null",
         pa.array(["", "hello", None, "ünïcødé", "🦀 crab"], pa.string())),
        ("large_binary", "large_binary: empty, non-UTF-8 bytes, null",
         pa.array([b"", b"\x00\x01\xff", None, b"hello", b"\xc3\x28"], pa.large_binary())),
        ("large_string", "large_utf8: empty, multi-byte, null",
         pa.array(["", "hello", None, "ünïcødé", "🦀 crab"], pa.large_string())),
        ("binary_view", "binary_view: inline and out-of-line values, 2 variadic buffers, null",
         _views(binary=True)),
        ("string_view", "string_view: inline and out-of-line values, 2 variadic buffers, null",
         _views(binary=False)),
        ("fixed_size_binary", "fixed_size_binary[4] with null",
         pa.array([b"abcd", None, b"\x00\x00\x00\x00", b"\xff\xfe\xfd\xfc"], pa.binary(4))),
        ("list", "list<int32>: null list, empty list, null items",
         pa.array([[1, 2, 3], None, [], [None, 5], [6]], pa.list_(pa.int32()))),
        ("large_list", "large_list<utf8>: null list, empty list, null items",
         pa.array([["a", "bc"], [], None, [None], ["d", "", "e"]], pa.large_list(pa.string()))),
        ("fixed_size_list", "fixed_size_list<int16>[3]: null list, null items",
         pa.array([[1, 2, 3], None, [None, 5, 6], [-7, 8, None]], pa.list_(pa.int16(), 3))),
        ("list_view", "list_view<int32>: out-of-order and overlapping views, null, empty",
         _list_view(large=False)),
        ("large_list_view", "large_list_view<utf8>: out-of-order and overlapping views, null, empty",
         _list_view(large=True)),
        ("struct", "struct<id: int32 not null, name: utf8, inner: struct<flag: bool, "
                   "scores: list<float64>>>: nulls at both struct levels",
         pa.array([{"id": 1, "name": "a", "inner": {"flag": True, "scores": [1.5, None]}},
                   None,
                   {"id": 3, "name": None, "inner": None},
                   {"id": 4, "name": "d", "inner": {"flag": None, "scores": None}},
                   {"id": 5, "name": "", "inner": {"flag": False, "scores": []}}],
                  pa.struct([pa.field("id", pa.int32(), nullable=False),
                             ("name", pa.string()),
                             ("inner", pa.struct([("flag", pa.bool_()),
                                                  ("scores", pa.list_(pa.float64()))]))]))),
        ("map", "map<utf8, int32>: null map, empty map, null values",
         pa.array([[("a", 1), ("b", None)], None, [], [("c", 3)], [("d", 4), ("e", 5), ("f", 6)]],
                  pa.map_(pa.string(), pa.int32()))),
        ("sparse_union", "sparse_union<i: int32=5, s: utf8=10, f: float64=42> (non-default "
                         "type codes), nulls in children",
         pa.UnionArray.from_sparse(
             pa.array([5, 10, 42, 5, 10, 42], pa.int8()),
             [pa.array([1, 0, 0, None, 0, 0], pa.int32()),
              pa.array(["", "x", "", "", None, ""], pa.string()),
              pa.array([0.0, 0.0, 2.5, 0.0, 0.0, None], pa.float64())],
             ["i", "s", "f"], [5, 10, 42])),
        ("dense_union", "dense_union<i: int64=0, s: utf8=1>, nulls in children",
         pa.UnionArray.from_dense(
             pa.array([0, 1, 1, 0, 1, 0], pa.int8()),
             pa.array([0, 0, 1, 1, 2, 2], pa.int32()),
             [pa.array([10, None, -3], pa.int64()), pa.array(["x", None, "yz"], pa.string())],
             ["i", "s"])),
    ]
    return samples


def ree_batches():
    """run_end_encoded: int32 run ends over utf8 and int64 run ends over float64."""
    schema = pa.schema([("ree_utf8", pa.run_end_encoded(pa.int32(), pa.string())),
                        ("ree_float64", pa.run_end_encoded(pa.int64(), pa.float64()))])
    first = pa.record_batch([
        pa.RunEndEncodedArray.from_arrays(pa.array([3, 4, 7, 8], pa.int32()),
                                          pa.array(["aaa", None, "ccc", "d"])),
        pa.RunEndEncodedArray.from_arrays(pa.array([1, 5, 8], pa.int64()),
                                          pa.array([1.5, None, -2.0]))], schema=schema)
    second = pa.record_batch([
        pa.RunEndEncodedArray.from_arrays(pa.array([2], pa.int32()), pa.array([None], pa.string())),
        pa.RunEndEncodedArray.from_arrays(pa.array([1, 2], pa.int64()), pa.array([0.0, 9.0]))],
        schema=schema)
    return schema, [first, second]


def dictionary_sample(index_type, size):
    """Dictionary-encoded utf8 with null indices and a `size`-entry dictionary."""
    dictionary = pa.array([f"value-{i}" for i in range(size)])
    indices = [0, size - 1, None, 1, 0, None, size // 2, size - 1]
    return pa.DictionaryArray.from_arrays(pa.array(indices, index_type), dictionary)


# ---------------------------------------------------------------------------
# Multi-feature cases
# ---------------------------------------------------------------------------

def metadata_case():
    """Schema and field metadata (incl. nested fields) and non-nullable fields."""
    inner = pa.struct([pa.field("code", pa.int32(), nullable=False, metadata={"inner": "yes"}),
                       pa.field("note", pa.string())])
    schema = pa.schema(
        [pa.field("id", pa.int64(), nullable=False, metadata={"unit": "count", "role": "key"}),
         pa.field("label", pa.string(), nullable=False),
         pa.field("tags", pa.list_(pa.field("tag", pa.string(), nullable=False))),
         pa.field("info", inner, metadata={"description": "nested struct ü"})],
        metadata={"corpus": "arrow_corpus", "unicode": "schema-level ünïcode", "empty": ""})
    batch = pa.record_batch(
        [pa.array([1, 2, 3], pa.int64()), pa.array(["one", "two", "three"]),
         pa.array([["x"], None, []], schema.field("tags").type),
         pa.array([{"code": 1, "note": None}, None, {"code": 3, "note": "n"}], inner)],
        schema=schema)
    return schema, [batch]


def mixed_batches(rows, seed, batch_count):
    """Several column types with nulls, split into `batch_count` batches."""
    rng = np.random.default_rng(seed)
    words = np.array(["alpha", "beta", "gamma", "delta", "epsilon", ""])
    valid = rng.random(rows) > 0.1
    ints = np.arange(rows, dtype=np.int64) * 3
    list_lengths = rng.integers(0, 4, rows)
    list_offsets = np.concatenate([[0], np.cumsum(list_lengths)]).astype(np.int32)
    table = pa.table({
        "i64": pa.array(ints),
        "f64": pa.array(rng.standard_normal(rows), mask=~valid),
        "flag": pa.array(rng.random(rows) > 0.5, mask=rng.random(rows) < 0.05),
        "word": pa.array(words[rng.integers(0, len(words), rows)], mask=~valid),
        "ints": pa.ListArray.from_arrays(list_offsets,
                                         pa.array(rng.integers(-100, 100, int(list_offsets[-1]),
                                                               dtype=np.int32))),
        "pair": pa.StructArray.from_arrays([pa.array(ints // 7), pa.array(words[ints % 6])],
                                           ["n", "w"]),
        "color": pa.DictionaryArray.from_arrays(
            pa.array(rng.integers(0, 3, rows, dtype=np.int8)), pa.array(["red", "green", "blue"])),
    })
    step = -(-rows // batch_count)
    return table.schema, table.to_batches(max_chunksize=step)


DELTA_DICTIONARIES = {  # column -> dictionary for each batch; each extends the previous
    "color": [["red", "green"], ["red", "green", "blue"],
              ["red", "green", "blue", "cyan", "magenta"], ["red", "green", "blue", "cyan", "magenta"]],
    "size": [["S"], ["S", "M"], ["S", "M", "L"], ["S", "M", "L"]],
}
DELTA_INDICES = {
    "color": [[0, 1, None, 0], [2, 0, None, 2], [3, 4, 1, None], [4, 4, 0, 2]],
    "size": [[0, None, 0, 0], [1, 0, None, 1], [2, None, 1, 0], [0, 1, 2, None]],
}


def growing_dictionary_batches():
    """Four batches whose dictionaries only ever grow; the last batch reuses
    the third batch's dictionaries unchanged (no dictionary message at all)."""
    schema = pa.schema([("row", pa.int32()),
                        ("color", pa.dictionary(pa.int32(), pa.string())),
                        ("size", pa.dictionary(pa.int8(), pa.string()))])
    batches = []
    for b in range(4):
        columns = [pa.array(range(4 * b, 4 * b + 4), pa.int32())]
        for name in ("color", "size"):
            columns.append(pa.DictionaryArray.from_arrays(
                pa.array(DELTA_INDICES[name][b], schema.field(name).type.index_type),
                pa.array(DELTA_DICTIONARIES[name][b])))
        batches.append(pa.record_batch(columns, schema=schema))
    return schema, batches


def reordered_dictionary_batches():
    """Three batches whose dictionaries are replaced by unrelated/reordered ones."""
    schema = pa.schema([("color", pa.dictionary(pa.int16(), pa.string()))])
    content = [(["red", "green"], [0, 1, None, 1]),
               (["green", "red"], [0, 1, 1, None]),       # same strings, new order
               (["yellow", "black", "white"], [2, None, 0, 1])]
    return schema, [pa.record_batch([pa.DictionaryArray.from_arrays(
        pa.array(indices, pa.int16()), pa.array(dictionary))], schema=schema)
        for dictionary, indices in content]


def tiny_batches(count, seed):
    """`count` batches of 1-3 rows: id int64 (non-nullable) + text utf8."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 4, count)
    rows = int(sizes.sum())
    schema = pa.schema([pa.field("id", pa.int64(), nullable=False), ("text", pa.string())])
    whole = pa.record_batch([pa.array(np.arange(rows, dtype=np.int64)),
                             pa.array([f"row {i}" for i in range(rows)],
                                      mask=rng.random(rows) < 0.2)],
                            schema=schema)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return schema, [whole.slice(int(s), int(n)) for s, n in zip(starts, sizes)]


def large_batch(rows, seed):
    """One batch: int64 (non-nullable) + float64 with ~1% nulls."""
    rng = np.random.default_rng(seed)
    schema = pa.schema([pa.field("i", pa.int64(), nullable=False), ("x", pa.float64())])
    batch = pa.record_batch([pa.array(rng.integers(-2**62, 2**62, rows, dtype=np.int64)),
                             pa.array(rng.standard_normal(rows), mask=rng.random(rows) < 0.01)],
                            schema=schema)
    return schema, [batch]


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

def write_stream(path, schema, batches, options=None):
    """Write `batches` as one IPC stream; return the writer's statistics."""
    with ipc.new_stream(path, schema, options=options) as writer:
        for batch in batches:
            writer.write_batch(batch)
    return writer.stats


def expect_stats(name, stats, **expected):
    """Fail unless the writer really produced the dictionary messages wanted."""
    actual = {key: getattr(stats, key) for key in expected}
    if actual != expected:
        raise RuntimeError(f"{name}: expected writer stats {expected}, got {actual}")


def cases():
    """Yield (file name, description, schema, batches, write options, expected stats)."""
    for stem, description, array in type_samples():
        schema = pa.schema([(stem, array.type)])
        # Two batches: the full sample and a slice (exercises writer slicing).
        batches = [pa.record_batch([array], schema=schema),
                   pa.record_batch([array.slice(1, 3)], schema=schema)]
        yield f"type_{stem}.arrows", description + "; 2 batches", schema, batches, None, {}
    schema, batches = ree_batches()
    yield ("type_run_end_encoded.arrows", "run_end_encoded<int32, utf8> and "
           "run_end_encoded<int64, float64> with null runs; 2 batches", schema, batches, None, {})
    for index_type, size in ((pa.int8(), 3), (pa.int32(), 300)):
        array = dictionary_sample(index_type, size)
        schema = pa.schema([("dict", array.type)])
        yield (f"type_dictionary_{index_type}.arrows",
               f"dictionary<utf8, {index_type} indices>, {size}-entry dictionary, null indices",
               schema, [pa.record_batch([array], schema=schema)], None, {})

    yield ("metadata.arrows", "schema and field custom metadata (also on nested fields), "
           "non-nullable top-level and nested fields", *metadata_case(), None, {})
    schema = pa.schema([("i", pa.int32()), ("s", pa.string()), ("l", pa.list_(pa.int32()))])
    yield ("empty_batch.arrows", "one record batch with 0 rows (int32, utf8, list<int32>)",
           schema, [pa.record_batch([pa.array([], t) for t in schema.types], schema=schema)],
           None, {})
    schema = pa.schema([("i", pa.int32()), ("d", pa.dictionary(pa.int32(), pa.string())),
                        ("st", pa.struct([("a", pa.float64())]))])
    yield ("schema_only.arrows", "schema (incl. a dictionary field) and no record batches",
           schema, [], None, {})

    schema, batches = growing_dictionary_batches()
    yield ("dictionary_delta.arrows", "2 dictionary columns (int32 and int8 indices) over "
           "4 batches, dictionaries grown by delta batches; same content as "
           "dictionary_replacement.arrows", schema, batches,
           ipc.IpcWriteOptions(emit_dictionary_deltas=True),
           {"num_dictionary_deltas": 4, "num_replaced_dictionaries": 0})
    yield ("dictionary_replacement.arrows", "as dictionary_delta.arrows, but the grown "
           "dictionaries are sent as full replacements", schema, batches, None,
           {"num_dictionary_deltas": 0, "num_replaced_dictionaries": 4})
    schema, batches = reordered_dictionary_batches()
    yield ("dictionary_replacement_reordered.arrows", "dictionary<utf8, int16> replaced by "
           "reordered and unrelated dictionaries over 3 batches", schema, batches, None,
           {"num_dictionary_deltas": 0, "num_replaced_dictionaries": 2})

    schema, batches = mixed_batches(20_000, seed=1, batch_count=3)
    for codec in (None, "lz4", "zstd"):
        yield (f"compressed_{codec or 'none'}.arrows",
               f"int64, float64, bool, utf8, list<int32>, struct, dictionary; 20000 rows in "
               f"3 batches; body compression {codec or 'none'} (all compressed_* files have "
               f"the same content)", schema, batches,
               ipc.IpcWriteOptions(compression=codec), {})
    schema, batches = mixed_batches(1_000, seed=2, batch_count=2)
    yield ("legacy_format.arrows", "pre-0.15 framing (no continuation marker) with V4 metadata; "
           "int64, float64, bool, utf8, list<int32>, struct, dictionary; 2 batches",
           schema, batches,
           ipc.IpcWriteOptions(use_legacy_format=True,
                               metadata_version=ipc.MetadataVersion.V4), {})
    yield ("many_tiny_batches.arrows", "10000 batches of 1-3 rows: id int64 (non-nullable), "
           "text utf8 with nulls", *tiny_batches(10_000, seed=3), None, {})
    yield ("large_batch.arrows", "one batch of 4,500,000 rows: int64 (non-nullable) + float64 "
           "with ~1% nulls (body > 64 MiB)", *large_batch(4_500_000, seed=4), None, {})


def generate(outdir):
    files = []
    for name, description, schema, batches, options, expected in cases():
        path = os.path.join(outdir, name)
        stats = write_stream(path, schema, batches, options)
        expect_stats(name, stats, **expected)
        files.append({"name": name, "description": description,
                      "size": os.path.getsize(path), "hash": arrow_check.content_hash(path)})
    manifest = {"version": CORPUS_VERSION, "pyarrow": pa.__version__, "files": files}
    with open(os.path.join(outdir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=True)
        f.write("\n")


# ---------------------------------------------------------------------------
# Idempotent, atomic installation
# ---------------------------------------------------------------------------

def is_current(outdir):
    try:
        with open(os.path.join(outdir, "manifest.json"), encoding="utf-8") as f:
            return json.load(f).get("version") == CORPUS_VERSION
    except (OSError, ValueError, AttributeError):
        return False


def install(outdir):
    """Build the corpus next to `outdir` and move it into place."""
    parent, base = os.path.split(outdir)
    os.makedirs(parent, exist_ok=True)
    with open(os.path.join(parent, f".{base}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if is_current(outdir):  # another process finished while we waited
            return
        # Leftovers of killed runs (only the lock holder creates these).
        for entry in os.listdir(parent):
            if entry.startswith((f".{base}.tmp-", f".{base}.old-")):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)
        tmp = tempfile.mkdtemp(prefix=f".{base}.tmp-", dir=parent)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes it private (0700)
        try:
            generate(tmp)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if os.path.lexists(outdir):
            old = tempfile.mkdtemp(prefix=f".{base}.old-", dir=parent)
            os.rename(outdir, os.path.join(old, base))
            os.rename(tmp, outdir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, outdir)


def main(argv):
    if len(argv) != 2 or argv[1].startswith("-"):
        print("usage: arrow_corpus.py OUTDIR", file=sys.stderr)
        return 2
    outdir = os.path.abspath(argv[1])
    if is_current(outdir):
        return 0
    try:
        install(outdir)
    except (OSError, RuntimeError, pa.ArrowException, arrow_check.CheckError) as exc:
        print(f"arrow_corpus: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
