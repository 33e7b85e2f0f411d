"""pit_join against the naive reference (tests/reference.py) on adversarial data."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

import pitstop as ps
from pitstop._inputs import duration_ns

import reference
import strategies as S


def run_both(spine, tables, *, ks, ttls, created, allow_exact, knowledge, prefixes=None):
    got = ps.pit_join(
        spine,
        tables,
        on=ks.names,
        spine_time="t",
        feature_time="ts",
        ttl=ttls,
        created_time=created,
        allow_exact_matches=allow_exact,
        knowledge_time=knowledge,
        prefix=prefixes,
    )
    want = reference.pit_join(
        spine,
        tables,
        spine_keys=ks.names,
        keys=ks.names,
        spine_time="t",
        feature_times=["ts"] * len(tables),
        ttls_ns=[duration_ns(t) for t in ttls],
        created=created,
        allow_exact_matches=allow_exact,
        knowledge_time=knowledge,
        prefixes=prefixes,
    )
    return got, want


def assert_same(got: pa.Table, want: pa.Table) -> None:
    assert got.schema == want.schema
    assert got.num_rows == want.num_rows
    assert got.to_pydict() == want.to_pydict()


@st.composite
def join_case(draw):
    ks = draw(S.key_space())
    n_tables = draw(st.integers(1, 3))
    with_created = draw(st.booleans())
    tables = [draw(S.feature_table(ks, j, with_created)) for j in range(n_tables)]
    return dict(
        spine=draw(S.spine_table(ks)),
        tables=tables,
        ks=ks,
        ttls=[draw(S.ttl()) for _ in range(n_tables)],
        created=["created" if with_created else None] * n_tables,
        allow_exact=draw(st.booleans()),
        knowledge=with_created and draw(st.booleans()),
    )


@given(join_case())
def test_matches_reference(case):
    got, want = run_both(**case)
    assert_same(got, want)


@given(join_case())
def test_spine_is_preserved(case):
    got, _ = run_both(**case)
    spine = case["spine"]
    assert got.num_rows == spine.num_rows
    assert got.select(spine.column_names).equals(spine)


@given(st.data())
def test_keys_named_differently(data):
    ks = S.KeySpace("int", 1, ["k0"])
    spine = data.draw(S.spine_table(ks)).rename_columns({"k0": "user"})
    table = data.draw(S.feature_table(ks, 0, False))
    got = ps.pit_join(spine, table, on={"user": "k0"}, spine_time="t", feature_time="ts")
    want = reference.pit_join(
        spine, [table], spine_keys=["user"], keys=["k0"], spine_time="t",
        feature_times=["ts"], ttls_ns=[None], created=[None],
    )
    assert_same(got, want)


def test_composite_keys_never_collide():
    spine = pa.table({"a": [1, 12], "b": [23, 3], "t": pa.array([10, 10], pa.timestamp("s"))})
    feats = pa.table({"a": [12, 1], "b": [3, 23], "ts": pa.array([1, 2], pa.timestamp("s")),
                      "v": ["12|3", "1|23"]})
    out = ps.pit_join(spine, feats, on=["a", "b"], spine_time="t", feature_time="ts")
    assert out.column("v").to_pylist() == ["1|23", "12|3"]
    s_spine = spine.cast(pa.schema([("a", pa.string()), ("b", pa.string()), ("t", pa.timestamp("s"))]))
    s_feats = feats.cast(pa.schema([("a", pa.string()), ("b", pa.string()),
                                    ("ts", pa.timestamp("s")), ("v", pa.string())]))
    out = ps.pit_join(s_spine, s_feats, on=["a", "b"], spine_time="t", feature_time="ts")
    assert out.column("v").to_pylist() == ["1|23", "12|3"]


def test_big_unsigned_keys_do_not_meet_negative_ones():
    spine = pa.table({"k": pa.array([2**64 - 1, 5], pa.uint64()), "t": pa.array([9, 9], pa.timestamp("s"))})
    feats = pa.table({"k": pa.array([-1, 5], pa.int64()), "ts": pa.array([1, 1], pa.timestamp("s")),
                      "v": [1.0, 2.0]})
    out = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    assert out.column("v").to_pylist() == [None, 2.0]


def test_zones_compare_as_instants():
    instant = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    spine = pa.table({"k": [1, 1], "t": pa.array([instant, instant - dt.timedelta(seconds=1)],
                                                  pa.timestamp("s", tz="Asia/Tokyo"))})
    feats = pa.table({"k": [1], "ts": pa.array([instant.replace(tzinfo=None)], pa.timestamp("ns")),
                      "v": [7]})
    out = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts")
    assert out.column("v").to_pylist() == [7, None]


def test_dates_are_midnight_utc():
    spine = pa.table({"k": [1, 1], "d": pa.array([dt.date(2026, 1, 2), dt.date(2026, 1, 1)])})
    feats = pa.table({"k": [1], "ts": pa.array([dt.datetime(2026, 1, 1, 23, 59)], pa.timestamp("ms", "UTC")),
                      "v": [7]})
    out = ps.pit_join(spine, feats, on="k", spine_time="d", feature_time="ts")
    assert out.column("v").to_pylist() == [7, None]


def test_large_case_matches_reference_sample():
    """Many batches and many rows per key (the parallel paths), checked row by row
    on a sample against the reference."""
    import random

    rng = random.Random(3)
    n = 40_000
    feats = pa.table({
        "k": [rng.randrange(50) for _ in range(n)],
        "ts": pa.array([rng.randrange(10**6) for _ in range(n)], pa.timestamp("ms")),
        "v": list(range(n)),
    })
    feats = pa.Table.from_batches(feats.to_batches(max_chunksize=7_000))
    spine = pa.table({"k": [rng.randrange(60) for _ in range(3_000)],
                      "t": pa.array([rng.randrange(10**6) for _ in range(3_000)], pa.timestamp("ms"))})
    got = ps.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts", ttl="5min")
    want = reference.pit_join(spine.slice(0, 300), [feats], spine_keys=["k"], keys=["k"], spine_time="t",
                              feature_times=["ts"], ttls_ns=[300 * 10**9], created=[None])
    assert got.slice(0, 300).to_pydict() == want.to_pydict()


@pytest.mark.parametrize(
    "text,ns",
    [("30d", 30 * 86_400 * 10**9), ("1d12h", 36 * 3600 * 10**9), ("90s", 90 * 10**9),
     ("500ms", 500 * 10**6), ("15min", 900 * 10**9), ("2w", 14 * 86_400 * 10**9)],
)
def test_durations(text, ns):
    assert duration_ns(text) == ns


def test_duration_objects():
    import numpy as np
    import pandas as pd

    assert duration_ns(dt.timedelta(days=1, microseconds=5)) == 86_400 * 10**9 + 5_000
    assert duration_ns(pd.Timedelta(nanoseconds=7)) == 7
    assert duration_ns(np.timedelta64(3, "s")) == 3 * 10**9
