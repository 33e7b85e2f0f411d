"""pit_join accepts every tabular input, and checks it against peer engines."""

from __future__ import annotations

import os
import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

import pitstop as ps

import strategies as S


def small():
    spine = pa.table({"user_id": [1, 2, 1, 3], "t": pa.array([5, 5, 9, 9], pa.timestamp("us")),
                      "label": [0, 1, 0, 1]})
    feats = pa.table({"user_id": [1, 1, 2], "ts": pa.array([1, 7, 6], pa.timestamp("us")),
                      "x": [1.0, 2.0, 3.0], "name": ["a", "b", "c"]})
    return spine, feats


def test_every_input_library_gives_the_same_result():
    import duckdb
    import pandas as pd
    import polars as pl

    spine, feats = small()
    want = ps.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts")
    assert want.column("x").to_pylist() == [1.0, None, 2.0, None]
    inputs = [
        (spine.to_pandas(), feats.to_pandas()),
        (pl.from_arrow(spine), pl.from_arrow(feats)),
        (spine.to_batches()[0], feats.to_reader()),
    ]
    con = duckdb.connect()
    con.register("s", spine)
    con.register("f", feats)
    inputs.append((con.sql("select * from s"), con.sql("select * from f")))
    for s, f in inputs:
        got = ps.pit_join(s, f, on="user_id", spine_time="t", feature_time="ts")
        assert got.column("x").to_pylist() == want.column("x").to_pylist(), type(s)
        assert got.column("name").to_pylist() == want.column("name").to_pylist(), type(s)
        assert got.column("label").to_pylist() == [0, 1, 0, 1]
    assert isinstance(pd, object)


def test_pandas_index_is_dropped_and_zone_kept():
    import pandas as pd

    spine = pd.DataFrame({"k": [1], "t": pd.to_datetime(["2026-01-02"]).tz_localize("Europe/Paris")},
                         index=[42])
    feats = pd.DataFrame({"k": [1], "ts": pd.to_datetime(["2026-01-01 23:30"]), "v": [3]})
    out = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    # 2026-01-02 00:00 Paris is 2026-01-01 23:00 UTC: before the feature row
    assert out.column_names == ["k", "t", "v"]
    assert out.column("v").to_pylist() == [None]


def tie_free(draw_data, n_spine, n_feat, keys):
    import random

    rng = random.Random(draw_data)
    pairs = rng.sample([(k, t) for k in range(keys) for t in range(200)], n_feat)
    feats = pa.table({"k": pa.array([p[0] for p in pairs], pa.int64()), "ts": pa.array([p[1] for p in pairs], pa.timestamp("s")),
                      "v": pa.array([float(i) for i in range(n_feat)], pa.float64())})
    spine = pa.table({"k": pa.array([rng.randrange(keys + 1) for _ in range(n_spine)], pa.int64()),
                      "t": pa.array([rng.randrange(220) for _ in range(n_spine)], pa.timestamp("s")),
                      "row": pa.array(range(n_spine), pa.int64())})
    return spine, feats


@given(st.integers(0, 10**6), st.integers(0, 60), st.integers(0, 60))
def test_duckdb_asof_agrees_on_tie_free_data(seed, n_spine, n_feat):
    import duckdb

    spine, feats = tie_free(seed, n_spine, n_feat, keys=4)
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    con = duckdb.connect()
    con.register("spine", spine)
    con.register("feats", feats)
    want = con.sql(
        "select s.row, f.v from spine s asof left join feats f on s.k = f.k and s.t >= f.ts order by s.row"
    ).arrow()
    want = want.read_all() if hasattr(want, "read_all") else want
    assert got.column("v").to_pylist() == want.column("v").to_pylist()


@given(st.integers(0, 10**6), st.integers(0, 60), st.integers(0, 60))
def test_polars_join_asof_agrees_on_tie_free_data(seed, n_spine, n_feat):
    import polars as pl

    spine, feats = tie_free(seed, n_spine, n_feat, keys=4)
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts", allow_exact_matches=False)
    want = (
        pl.from_arrow(spine).sort("t")
        .join_asof(pl.from_arrow(feats).sort("ts"), left_on="t", right_on="ts", by="k",
                   strategy="backward", allow_exact_matches=False)
        .sort("row")
    )
    assert got.column("v").to_pylist() == want["v"].to_list()


THREADS_SCRIPT = r"""
import hashlib, random, sys
import pyarrow as pa, pitstop as ps
rng = random.Random(11)
n = 200_000
feats = pa.table({"k": [rng.randrange(300) for _ in range(n)],
                  "ts": pa.array([rng.randrange(500) for _ in range(n)], pa.timestamp("s")),
                  "c": pa.array([rng.randrange(5) for _ in range(n)], pa.timestamp("s")),
                  "v": list(range(n))})
spine = pa.table({"k": [rng.randrange(320) for _ in range(n)],
                  "t": pa.array([rng.randrange(520) for _ in range(n)], pa.timestamp("s"))})
out = ps.pit_join(spine, [feats, feats], on="k", spine_time="t", feature_time="ts",
                  created_time="c", ttl="100s", prefix=["a_", "b_"])
sink = pa.BufferOutputStream()
with pa.ipc.new_stream(sink, out.schema) as w:
    w.write_table(out.combine_chunks())
print(hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest())
"""


def test_result_does_not_depend_on_thread_count():
    digests = set()
    for threads in ("1", "2", "5"):
        env = dict(os.environ, RAYON_NUM_THREADS=threads)
        res = subprocess.run([sys.executable, "-c", THREADS_SCRIPT], env=env, check=True,
                             capture_output=True, text=True)
        digests.add(res.stdout.strip())
    assert len(digests) == 1


def test_empty_inputs():
    spine, feats = small()
    out = ps.pit_join(spine.slice(0, 0), feats, on="user_id", spine_time="t", feature_time="ts")
    assert out.num_rows == 0 and out.column_names == ["user_id", "t", "label", "x", "name"]
    out = ps.pit_join(spine, feats.slice(0, 0), on="user_id", spine_time="t", feature_time="ts")
    assert out.column("x").to_pylist() == [None] * 4
    empty = pa.Table.from_batches([], schema=spine.schema)
    out = ps.pit_join(empty, feats, on="user_id", spine_time="t", feature_time="ts")
    assert out.num_rows == 0


def test_join_works_in_a_forked_child():
    """A process that joined and then forked (gunicorn with preload) can join again in
    the child: the kernel's thread pool is rebuilt after fork."""
    import multiprocessing as mp

    spine, feats = small()
    ps.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts")  # pool started
    ctx = mp.get_context("fork")
    q = ctx.Queue()

    def child():
        out = ps.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts")
        q.put(out.column("x").to_pylist())

    p = ctx.Process(target=child)
    p.start()
    p.join(60)
    assert p.exitcode == 0
    assert q.get(timeout=5) == [1.0, None, 2.0, None]
