"""The gather of pit_join's feature columns (rust/join/gather.rs) against the naive
reference, on every value type: null-free fixed-width columns in several chunks (the
hand-made concatenation, `concat_fixed`), everything else (Arrow's `concat`), the
masking of unmatched spine rows, with nulls, empty, sliced and many chunks on both
sides. (Written for the joinfast branch's direct gather; kept for this one.)"""

from __future__ import annotations

import datetime as dt
import decimal

import pyarrow as pa
from hypothesis import given, settings, strategies as st

import pitstop as ps

import reference

TEXT = st.text(alphabet="ab\u00e9\u4e2d", max_size=40)

# (arrow type, strategy for one non-null value)
TYPES = [
    (pa.int8(), st.integers(-128, 127)),
    (pa.uint16(), st.integers(0, 2**16 - 1)),
    (pa.int32(), st.integers(-(2**31), 2**31 - 1)),
    (pa.uint64(), st.integers(0, 2**64 - 1)),
    (pa.int64(), st.integers(-(2**63), 2**63 - 1)),
    (pa.float32(), st.floats(width=32, allow_nan=False)),
    (pa.float64(), st.floats(allow_nan=False)),
    (pa.decimal128(10, 2), st.decimals(-(10**7), 10**7, places=2, allow_nan=False,
                                       allow_infinity=False)),
    (pa.timestamp("ms", tz="Europe/Paris"), st.integers(-(10**12), 10**12)),
    (pa.date32(), st.dates().map(lambda d: (d - dt.date(1970, 1, 1)).days)),
    (pa.duration("ns"), st.integers(-(10**15), 10**15)),
    (pa.bool_(), st.booleans()),
    (pa.string(), TEXT),
    (pa.large_string(), TEXT),
    (pa.binary(), st.binary(max_size=40)),
    (pa.large_binary(), st.binary(max_size=40)),
    (pa.list_(pa.int32()), st.lists(st.integers(-5, 5), max_size=3)),
]


def column(t: pa.DataType, values: list) -> pa.Array:
    if pa.types.is_decimal(t):
        values = [None if v is None else decimal.Decimal(v) for v in values]
    if pa.types.is_timestamp(t) or pa.types.is_date32(t) or pa.types.is_duration(t):
        storage = pa.int64() if not pa.types.is_date32(t) else pa.int32()
        return pa.array(values, storage).cast(t)
    return pa.array(values, t)


def rechunk(draw, table: pa.Table) -> pa.Table:
    """The same rows in random batches (empty ones too), each a slice of a larger
    array so that offsets are non-zero."""
    n = table.num_rows
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=6)))
    bounds = [0, *cuts, n]
    pad = draw(st.integers(0, 3))
    batches = []
    for lo, hi in zip(bounds, bounds[1:]):
        piece = table.slice(lo, hi - lo)
        if pad:  # a slice of a bigger batch: the same rows at an offset
            padded = pa.concat_tables([table.slice(0, pad), piece]).combine_chunks()
            piece = padded.slice(min(pad, table.num_rows), hi - lo)
        batches.extend(piece.to_batches())
    return pa.Table.from_batches(batches, schema=table.schema)


@st.composite
def case(draw):
    picked = draw(st.lists(st.sampled_from(range(len(TYPES))), min_size=1, max_size=4, unique=True))
    n = draw(st.integers(0, 30))
    keys = [draw(st.integers(0, 4)) for _ in range(n)]
    ts = [draw(st.integers(0, 20)) for _ in range(n)]
    cols = {"k": pa.array(keys, pa.int64()), "ts": pa.array(ts, pa.timestamp("s"))}
    for i in picked:
        t, values = TYPES[i]
        null_rate = draw(st.sampled_from([0, 3, 100]))
        vals = [None if null_rate and draw(st.integers(0, null_rate)) == 0 else draw(values)
                for _ in range(n)]
        cols[f"v{i}"] = column(t, vals)
    feats = rechunk(draw, pa.table(cols))
    m = draw(st.integers(0, 25))
    spine = pa.table({"k": pa.array([draw(st.integers(0, 5)) for _ in range(m)], pa.int64()),
                      "t": pa.array([draw(st.integers(-1, 22)) for _ in range(m)], pa.timestamp("s"))})
    return rechunk(draw, spine), feats


@settings(max_examples=300)
@given(case())
def test_gather_matches_reference(c):
    spine, feats = c
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    want = reference.pit_join(spine, [feats], spine_keys=["k"], keys=["k"], spine_time="t",
                              feature_times=["ts"], ttls_ns=[None], created=[None])
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    assert got.to_pydict() == want.to_pydict()


def test_many_chunks_and_long_strings():
    """More than 32 chunks (the binary-search path of locate) and values longer than
    the 16-byte fast copy, next to short ones at the end of a buffer."""
    n = 2_000
    vals = [("x" * (i % 40)) if i % 7 else None for i in range(n)]
    feats = pa.table({"k": [i % 13 for i in range(n)],
                      "ts": pa.array(list(range(n)), pa.timestamp("s")),
                      "s": vals, "b": pa.array([v.encode() if v else None for v in vals], pa.large_binary()),
                      "x": [float(i) for i in range(n)]})
    feats = pa.Table.from_batches(feats.to_batches(max_chunksize=37))
    spine = pa.table({"k": [i % 15 for i in range(500)],
                      "t": pa.array([(i * 7919) % (n + 50) for i in range(500)], pa.timestamp("s"))})
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    want = reference.pit_join(spine, [feats], spine_keys=["k"], keys=["k"], spine_time="t",
                              feature_times=["ts"], ttls_ns=[None], created=[None])
    assert got.to_pydict() == want.to_pydict()


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), chunk=st.sampled_from([None, 1_000, 30_000]),
       null_every=st.sampled_from([0, 3, 17]),
       kind=st.sampled_from([pa.string(), pa.large_string(), pa.binary(), pa.large_binary()]))
def test_short_values_of_large_columns_gather_as_cells(seed, chunk, null_every, kind):
    """A byte-array column of 65,536 rows or more whose values all fit in 15 bytes is
    gathered through 16-byte cells (rust/join/cells.rs). Each gathered value must be
    its feature row's own: checked through a row-id column gathered beside it (the
    row ids themselves are checked against the reference by the tests above)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 70_000
    pool = ["", "a", "h\u00e9llo \u4e2d", "exactly fifteen", "category_07"]
    picks = rng.integers(0, len(pool), n)
    vals = [None if null_every and i % null_every == 0 else pool[j] for i, j in enumerate(picks)]
    if kind in (pa.binary(), pa.large_binary()):
        vals = [None if v is None else v.encode() for v in vals]
    feats = pa.table({"k": rng.integers(0, 5_000, n), "ts": pa.array(rng.integers(0, 10**6, n), pa.timestamp("s")),
                      "s": pa.array(vals, kind), "rid": pa.array(range(n), pa.int64())})
    if chunk:
        feats = pa.Table.from_batches(feats.to_batches(max_chunksize=chunk))
    m = 20_000
    spine = pa.table({"k": rng.integers(0, 5_500, m), "t": pa.array(rng.integers(0, 10**6, m), pa.timestamp("s"))})
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    rid = got.column("rid")
    assert rid.null_count > 0 and rid.null_count < m  # some matched, some not
    want = feats.column("s").take(rid)
    assert got.column("s").type == kind
    assert got.column("s").to_pylist() == want.to_pylist()


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), chunk=st.sampled_from([None, 1_000, 30_000]),
       null_every=st.sampled_from([0, 3, 17]), m=st.sampled_from([5_000, 20_000]))
def test_row_groups_gather_each_rows_own_values(seed, chunk, null_every, m):
    """A table of 65,536 rows or more whose spine has at least a quarter as many rows
    (or that comes in several batches) has its fixed-width and short byte-array
    columns gathered together as records (rust/join/rows.rs; one batch and a spine of
    5,000 is the case that keeps the columns one by one). Each gathered value must be
    its feature row's own: checked against a row-id column joined alone (which the
    column-at-a-time gather takes, checked against the reference above)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    n = 70_000
    pool = np.array(["", "a", "h\u00e9llo \u4e2d", "exactly fifteen", "category_07"], dtype=object)

    def nulls(values, every, type=None):
        return pa.array(values, type, mask=(np.arange(n) % every == 0) if every else None)

    cols = {
        "k": rng.integers(0, 5_000, n),
        "ts": pa.array(rng.integers(0, 10**6, n), pa.timestamp("s")),
        "i8": nulls(rng.integers(-128, 128, n).astype(np.int8), null_every),
        "u16": pa.array(rng.integers(0, 2**16, n).astype(np.uint16)),
        "i32": nulls(rng.integers(-2**31, 2**31, n).astype(np.int32), null_every and null_every + 2),
        "f32": pa.array(rng.standard_normal(n).astype(np.float32)),
        "f64": nulls(rng.standard_normal(n), null_every),
        "i64": pa.array(rng.integers(-2**63, 2**63 - 1, n)),
        "dec": nulls([decimal.Decimal(int(v)) / 100 for v in rng.integers(-10**9, 10**9, n)],
                     null_every and null_every + 1, pa.decimal128(12, 2)),
        "f16": pa.array(rng.standard_normal(n).astype(np.float16)),
        "mdn": pa.array([pa.MonthDayNano([int(v) % 12, int(v) % 28, int(v)]) for v in rng.integers(0, 10**12, n)],
                        pa.month_day_nano_interval()),
        "when": pa.array(rng.integers(-10**12, 10**12, n), pa.timestamp("ms", tz="Europe/Paris")),
        "day": pa.array(rng.integers(0, 30_000, n).astype(np.int32), pa.int32()).cast(pa.date32()),
        "dur": pa.array(rng.integers(-10**15, 10**15, n), pa.duration("ns")),
        "s": nulls(pool[rng.integers(0, 5, n)], null_every, pa.string()),
        "ls": pa.array(pool[rng.integers(0, 5, n)], pa.large_string()),
        "b": pa.array([v.encode() for v in pool[rng.integers(0, 5, n)]], pa.binary()),
        "lb": nulls([v.encode() for v in pool[rng.integers(0, 5, n)]], null_every, pa.large_binary()),
        "flag": pa.array(rng.integers(0, 2, n).astype(bool)),
        "long": pa.array(["x" * int(i) for i in rng.integers(0, 40, n)]),
        "rid": pa.array(np.arange(n), pa.int64()),
    }
    feats = pa.table(cols)
    if chunk:  # several batches, an empty one among them
        batches = feats.to_batches(max_chunksize=chunk)
        empty = pa.RecordBatch.from_arrays([pa.array([], f.type) for f in feats.schema], schema=feats.schema)
        feats = pa.Table.from_batches([batches[0], empty, *batches[1:]])
    spine = pa.table({"k": rng.integers(0, 5_500, m), "t": pa.array(rng.integers(0, 10**6, m), pa.timestamp("s"))})
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    alone = ps.pit_join(spine, feats.select(["k", "ts", "rid"]), on="k", spine_time="t", feature_time="ts")
    rid = alone.column("rid")
    assert got.column("rid").equals(rid)
    assert rid.null_count > 0 and rid.null_count < m  # some matched, some not
    for name in cols:
        if name in ("k", "ts"):
            continue
        want = feats.column(name).take(rid)
        assert got.column(name).type == feats.schema.field(name).type, name
        assert got.column(name).to_pylist() == want.to_pylist(), name


def test_row_groups_are_used_where_they_should_be():
    """The trace (PITSTOP_TRACE=1, in a child process: it is read once) shows the
    row-group store for a 70,000-row table and a spine of 20,000 rows, and not for a
    spine of 5,000 (under a quarter of the table, which comes in one batch)."""
    import os
    import subprocess
    import sys

    script = """
import sys
import numpy as np, pyarrow as pa, pitstop as ps
rng = np.random.default_rng(1)
n = 70_000
feats = pa.table({"k": rng.integers(0, 5_000, n), "ts": pa.array(rng.integers(0, 10**6, n), pa.timestamp("s")),
                  "x": rng.standard_normal(n), "y": rng.integers(0, 9, n)})
for m in (20_000, 5_000):
    spine = pa.table({"k": rng.integers(0, 5_000, m), "t": pa.array(rng.integers(0, 10**6, m), pa.timestamp("s"))})
    print("spine", m, file=sys.stderr, flush=True)
    ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
"""
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PITSTOP_TRACE": "1"})
    assert r.returncode == 0, r.stderr
    big, small = r.stderr.split("spine 5000")
    assert "row store" in big and "row gather" in big
    assert "row store" not in small
