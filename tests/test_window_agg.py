"""window_agg against the naive reference (tests/agg_reference.py) on adversarial data,
against DuckDB's window frames on a large random case, and on every bad input."""

from __future__ import annotations

import datetime as dt
import math
import random

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from pitstop import agg as A
from pitstop import errors
from reference import instants

import agg_reference as R
import agg_strategies as AS
import strategies as S

FLOAT_OPS = ("sum", "mean", "std")
REL = 1e-9


def run_both(spine, events, **kw):
    got = A.window_agg(spine, events, **kw)
    want = R.window_agg_ref(spine, events, **kw)
    return got, want


def float_scale(a: A.Agg, events: pa.Table) -> float:
    """The absolute error a float op may have where its exact value is (near) zero:
    a sum kept as double-double prefix sums errs by ~2**-106 of the prefix, below
    1e-12 of the column's absolute sum; a std, through the square root, by ~1e-16 of
    the largest value."""
    values = [abs(v) for v in events.column(a.column).to_pylist() if v is not None]
    if not values:
        return 0.0
    return (1e-6 * max(values)) if a.op == "std" else (1e-12 * math.fsum(values))


def close(got: float | None, want: float | None, scale: float) -> bool:
    if got is None or want is None:
        return got is None and want is None
    return abs(got - want) <= REL * max(abs(want), scale)


def assert_same(got: pa.Table, want: pa.Table, spine: pa.Table, events: pa.Table, aggregations) -> None:
    assert got.column_names == want.column_names
    for f in want.schema:
        assert got.schema.field(f.name).type == f.type, f.name
    assert got.num_rows == spine.num_rows
    assert got.select(spine.column_names).equals(spine)
    for a in A.flatten(aggregations):
        g, w = got.column(a.name).to_pylist(), want.column(a.name).to_pylist()
        if a.op in FLOAT_OPS:
            scale = float_scale(a, events)
            bad = [(i, x, y) for i, (x, y) in enumerate(zip(g, w)) if not close(x, y, scale)]
            assert not bad, f"{a.name}: (row, got, want) {bad[:5]}"
        else:
            assert g == w, a.name


def check(case: AS.Case) -> None:
    got, want = run_both(case.spine, case.events, **case.kwargs())
    assert_same(got, want, case.spine, case.events, case.aggregations)


# --- hypothesis: the kernel against the reference -------------------------------------


@given(AS.agg_case())
def test_matches_reference(case):
    check(case)


@given(AS.agg_case(max_spine=4, max_events=60))
def test_matches_reference_few_labels_many_events(case):
    check(case)


@given(st.data())
def test_keys_named_differently(data):
    ks = S.KeySpace("int", 1, ["k0"])
    spine = data.draw(S.spine_table(ks)).rename_columns({"k0": "user"})
    label_ns = [v for v in instants(spine.column("t")) if v is not None]
    events = data.draw(AS.events_table(ks, label_ns, [10**9], False))
    aggs = [A.count(windows=["1s", "3s"]), A.sum("vf", windows=["3s"]), A.last("row")]
    kw = dict(on={"user": "k0"}, spine_time="t", event_time="ts", aggregations=aggs)
    got, want = run_both(spine, events, **kw)
    assert_same(got, want, spine, events, aggs)


@given(st.data())
def test_min_max_and_sums_on_keys_with_many_events(data):
    """Min and max scan each window when the windows hold fewer events in all than the
    key's history up to its last label, and keep a monotonic deque otherwise (chosen
    per key and window); sums skip their counts when every value is present and
    finite. Windows from one second to longer than the history, on keys with up to
    hundreds of events, ties (equal times, equal values, 0.0 and -0.0), nulls or none."""
    n = data.draw(st.integers(0, 300), label="events")
    n_keys = data.draw(st.integers(1, 3), label="keys")
    nulls = data.draw(st.booleans(), label="nulls")
    floats = [0.0, -0.0, 1.0, -1.0, 2.5, 1e15, 0.1] + ([None] * 3 if nulls else [])
    ints = [0, 1, -1, 7, -7] + ([None] if nulls else [])
    span = data.draw(st.sampled_from([5, 60, 400]), label="span")
    ev = data.draw(st.lists(st.tuples(st.integers(0, n_keys - 1), st.integers(0, span),
                                      st.sampled_from(floats), st.sampled_from(ints)),
                            min_size=n, max_size=n), label="rows")
    labels = data.draw(st.lists(st.tuples(st.integers(0, n_keys), st.integers(0, span + 10)),
                                min_size=1, max_size=40), label="labels")
    events = pa.table({"k": pa.array([r[0] for r in ev], pa.int64()),
                       "ts": pa.array([r[1] for r in ev], pa.timestamp("s")),
                       "vf": pa.array([r[2] for r in ev], pa.float64()),
                       "vi": pa.array([r[3] for r in ev], pa.int64())})
    spine = pa.table({"k": pa.array([r[0] for r in labels], pa.int64()),
                      "t": pa.array([r[1] for r in labels], pa.timestamp("s"))})
    ws = ["1s", "3s", "20s", "200s", "1d"]
    aggs = [A.min("vf", windows=ws), A.max("vf", windows=ws), A.min("vi", windows=ws),
            A.max("vi", windows=ws), A.count("vf", windows=ws), A.sum("vf", windows=ws),
            A.mean("vf", windows=ws), A.std("vf", windows=["20s"])]
    closed = data.draw(st.sampled_from(AS.CLOSED), label="closed")
    kw = dict(on="k", spine_time="t", event_time="ts", aggregations=aggs, closed=closed)
    got, want = run_both(spine, events, **kw)
    assert_same(got, want, spine, events, aggs)


# --- the contract on small hand-made cases --------------------------------------------


def ts(*seconds, unit="s", tz=None):
    return pa.array(list(seconds), pa.timestamp(unit, tz))


def test_window_edges_by_closed():
    spine = pa.table({"k": [1], "t": ts(10)})
    events = pa.table({"k": [1, 1, 1, 1], "ts": ts(7, 8, 9, 10), "v": [1000, 100, 10, 1]})
    aggs = [A.count(windows=["2s"]), A.sum("v", windows=["2s"]), A.last("v")]
    want = {"left": (2, 110.0, 10), "right": (2, 11.0, 1), "both": (3, 111.0, 1)}
    for closed, (n, s, last) in want.items():
        out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                           aggregations=aggs, closed=closed)
        assert out.column("count_2s").to_pylist() == [n], closed
        assert out.column("sum_v_2s").to_pylist() == [s], closed
        assert out.column("last_v").to_pylist() == [last], closed


def test_ties_break_by_created_time_then_input_order():
    spine = pa.table({"k": [1, 1], "t": ts(10, 5)})
    events = pa.table({
        "k": [1, 1, 1, 1],
        "ts": ts(3, 3, 3, 3),
        "created": ts(4, 2, 4, 1),
        "v": ["a", "b", "c", "d"],
    })
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       created_time="created",
                       aggregations=[A.last("v"), A.last_k("v", k=3, window="1d")])
    assert out.column("last_v").to_pylist() == ["c", "c"]
    assert out.column("last3_v_1d").to_pylist() == [["c", "a", "b"], ["c", "a", "b"]]
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       aggregations=[A.last("v"), A.last_k("v", k=3, window="1d")])
    assert out.column("last_v").to_pylist() == ["d", "d"]  # input order alone
    assert out.column("last3_v_1d").to_pylist() == [["d", "c", "b"], ["d", "c", "b"]]


def test_knowledge_time_counts_only_known_events():
    spine = pa.table({"k": [1, 1, 1], "t": ts(10, 12, 20)})
    events = pa.table({"k": [1, 1, 1], "ts": ts(5, 6, 7), "created": ts(5, 12, 30), "v": [1.0, 2.0, 4.0]})
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", created_time="created",
                       knowledge_time=True, aggregations=[A.count(windows=["1d"]), A.sum("v", windows=["1d"]),
                                                          A.last("v")])
    assert out.column("count_1d").to_pylist() == [1, 2, 2]  # created at exactly t counts
    assert out.column("sum_v_1d").to_pylist() == [1.0, 3.0, 3.0]
    assert out.column("last_v").to_pylist() == [1.0, 2.0, 2.0]


def test_nulls_are_skipped_and_empty_windows_conventions():
    spine = pa.table({"k": [1, 2, 3, None], "t": ts(10, 10, 10, 10)})
    events = pa.table({"k": [1, 1, 1, 2, 2], "ts": ts(5, 6, 7, 5, 6),
                       "v": pa.array([2.0, None, 4.0, None, None]),
                       "s": ["x", None, "x", None, None]})
    aggs = [A.count(windows=["1d"]), A.count("v", windows=["1d"]), A.sum("v", windows=["1d"]),
            A.mean("v", windows=["1d"]), A.std("v", windows=["1d"]), A.min("v", windows=["1d"]),
            A.max("v", windows=["1d"]), A.last("v"), A.last_k("s", k=2, window="1d"),
            A.approx_distinct("s", windows=["1d"])]
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=aggs).to_pydict()
    # key 1: values 2, 4; key 2: rows but only null values; key 3: no rows; null key: nothing
    assert out["count_1d"] == [3, 2, 0, 0]
    assert out["count_v_1d"] == [2, 0, 0, 0]
    assert out["sum_v_1d"] == [6.0, None, None, None]
    assert out["mean_v_1d"] == [3.0, None, None, None]
    assert out["std_v_1d"] == [math.sqrt(2.0), None, None, None]
    assert out["min_v_1d"] == [2.0, None, None, None]
    assert out["max_v_1d"] == [4.0, None, None, None]
    assert out["last_v"] == [4.0, None, None, None]
    assert out["last2_s_1d"] == [["x", "x"], None, None, None]
    assert out["approx_distinct_s_1d"] == [1, 0, 0, 0]


def test_min_max_of_integers_when_no_label_finds_its_key():
    """No spine row meets an event (no events, or no key in common, or null keys): min
    and max of an integer column are still int64 nulls."""
    spine = pa.table({"k": [1, None], "t": ts(10, 10)})
    for keys in ([], [2], [None]):
        events = pa.table({"k": pa.array(keys, pa.int64()), "ts": ts(*[5] * len(keys)),
                           "v": pa.array([3] * len(keys), pa.int8())})
        out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                           aggregations=[A.min("v", windows=["1d"]), A.max("v", windows=["1d"])])
        assert out.schema.field("min_v_1d").type == pa.int64()
        assert out.column("min_v_1d").to_pylist() == [None, None], keys
        assert out.column("max_v_1d").to_pylist() == [None, None], keys


def test_a_label_with_a_null_time_has_an_empty_window():
    """A null label time matches no event, like a null key: count 0, nulls elsewhere
    (counts stay non-null, as the module doc's "an empty window gives count 0")."""
    spine = pa.table({"k": [1, 1, None], "t": pa.array([10, None, None], pa.timestamp("s"))})
    events = pa.table({"k": [1], "ts": ts(5), "v": [2.0]})
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       aggregations=[A.count(windows=["1d"]), A.approx_distinct("v", windows=["1d"]),
                                     A.sum("v", windows=["1d"]), A.last("v")]).to_pydict()
    assert out["count_1d"] == [1, 0, 0]
    assert out["approx_distinct_v_1d"] == [1, 0, 0]
    assert out["sum_v_1d"] == [2.0, None, None]
    assert out["last_v"] == [2.0, None, None]


def test_std_needs_two_values_and_min_max_keep_integers():
    spine = pa.table({"k": [1, 1], "t": ts(6, 10)})
    events = pa.table({"k": [1, 1], "ts": ts(5, 7), "v": pa.array([3, -9], pa.int8())})
    aggs = [A.std("v", windows=["1d"]), A.min("v", windows=["1d"]), A.max("v", windows=["1d"]),
            A.last("v"), A.last_k("v", k=5, window="1d")]
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=aggs)
    assert out.schema.field("min_v_1d").type == pa.int64()
    assert out.schema.field("max_v_1d").type == pa.int64()
    assert out.schema.field("last_v").type == pa.int8()
    assert out.schema.field("last5_v_1d").type == pa.list_(pa.int8())
    assert out.column("std_v_1d").to_pylist() == [None, pytest.approx(math.sqrt(72.0))]
    assert out.column("min_v_1d").to_pylist() == [3, -9]
    assert out.column("max_v_1d").to_pylist() == [3, 3]
    assert out.column("last5_v_1d").to_pylist() == [[3], [-9, 3]]


def test_units_zones_and_dates_compare_as_instants():
    instant = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    spine = pa.table({"k": [1, 1], "t": pa.array([instant, instant + dt.timedelta(hours=1)],
                                                 pa.timestamp("s", tz="Asia/Tokyo"))})
    events = pa.table({"k": [1, 1], "ts": pa.array([instant.replace(tzinfo=None) - dt.timedelta(hours=1),
                                                     instant.replace(tzinfo=None)], pa.timestamp("ns")),
                       "v": [1, 2]})
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       aggregations=[A.sum("v", windows=["1h"])])
    assert out.column("sum_v_1h").to_pylist() == [1.0, 2.0]  # [t - 1h, t): the event at t - 1h
    days = pa.table({"k": [1, 1], "d": pa.array([dt.date(2026, 1, 2), dt.date(2026, 1, 1)])})
    events = pa.table({"k": [1, 1], "ts": pa.array([dt.datetime(2026, 1, 1), dt.datetime(2026, 1, 1, 23, 59)],
                                                   pa.timestamp("ms", "UTC")), "v": [1, 2]})
    out = A.window_agg(days, events, on="k", spine_time="d", event_time="ts",
                       aggregations=[A.sum("v", windows=["1d"])])
    assert out.column("sum_v_1d").to_pylist() == [3.0, None]


def test_int_keys_match_across_widths_and_not_strings():
    spine = pa.table({"k": pa.array([5, 2**64 - 1, 7], pa.uint64()), "t": ts(9, 9, 9)})
    events = pa.table({"k": pa.array([5, -1, 7, 7], pa.int8()), "ts": ts(1, 1, 1, 2), "v": [1, 1, 1, 1]})
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       aggregations=A.count(windows=["1d"]))
    assert out.column("count_1d").to_pylist() == [1, 0, 2]
    s_spine = pa.table({"k": pa.array(["5", "7"], pa.large_string()), "t": ts(9, 9)})
    s_events = pa.table({"k": pa.array(["7", "5", "5"], pa.string_view()), "ts": ts(1, 1, 1), "v": [1, 1, 1]})
    out = A.window_agg(s_spine, s_events, on="k", spine_time="t", event_time="ts",
                       aggregations=A.count(windows=["1d"]))
    assert out.column("count_1d").to_pylist() == [2, 1]


def test_composite_keys_never_collide():
    spine = pa.table({"a": [1, 12], "b": [23, 3], "t": ts(10, 10)})
    events = pa.table({"a": [12, 1, 1], "b": [3, 23, 23], "ts": ts(1, 2, 3), "v": [5, 6, 7]})
    out = A.window_agg(spine, events, on=["a", "b"], spine_time="t", event_time="ts",
                       aggregations=A.sum("v", windows=["1d"]))
    assert out.column("sum_v_1d").to_pylist() == [13.0, 5.0]


def test_every_input_library_gives_the_same_result():
    import duckdb
    import pandas as pd
    import polars as pl

    spine = pa.table({"k": [1, 2, 1], "t": ts(5, 5, 9, unit="us"), "label": [0, 1, 0]})
    events = pa.table({"k": [1, 1, 2], "ts": ts(1, 7, 6, unit="us"), "v": [1.0, 2.0, 3.0]})
    aggs = [A.count(windows=["1d"]), A.sum("v", windows=["1d"])]
    kw = dict(on="k", spine_time="t", event_time="ts", aggregations=aggs)
    want = A.window_agg(spine, events, **kw)
    assert want.column("sum_v_1d").to_pylist() == [1.0, None, 3.0]
    con = duckdb.connect()
    con.register("s", spine)
    con.register("e", events)
    inputs = [(spine.to_pandas(), events.to_pandas()), (pl.from_arrow(spine), pl.from_arrow(events)),
              (spine.to_batches()[0], events.to_reader()), (con.sql("select * from s"), con.sql("select * from e"))]
    for s, e in inputs:
        got = A.window_agg(s, e, **kw)
        assert got.select(["count_1d", "sum_v_1d"]).equals(want.select(["count_1d", "sum_v_1d"])), type(s)
    assert isinstance(pd, object)


# --- the spine's rows, order and columns ----------------------------------------------


ALL = [A.count(windows=["1d"]), A.count("v", windows=["1d"]), A.sum("v", windows=["1d"]),
       A.mean("v", windows=["1d"]), A.std("v", windows=["1d"]), A.min("v", windows=["1d"]),
       A.max("v", windows=["1d"]), A.last("v"), A.last_k("v", k=2, window="1d"),
       A.approx_distinct("v", windows=["1d"])]


def test_zero_spine_rows_give_zero_rows():
    spine = pa.table({"k": pa.array([], pa.int64()), "t": pa.array([], pa.timestamp("ms")),
                      "label": pa.array([], pa.string())})
    events = pa.table({"k": [1], "ts": ts(1), "v": pa.array([1], pa.int32())})
    got = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=ALL)
    want = R.window_agg_ref(spine, events, on="k", spine_time="t", event_time="ts", aggregations=ALL)
    assert got.num_rows == 0
    assert got.schema.names == want.schema.names
    assert [f.type for f in got.schema] == [f.type for f in want.schema]


def test_empty_events_give_counts_of_zero_and_nulls():
    spine = pa.table({"k": [3, 1, 3], "t": ts(5, 6, 7), "label": ["a", "b", "c"]})
    events = pa.table({"k": pa.array([], pa.int64()), "ts": pa.array([], pa.timestamp("ns")),
                       "v": pa.array([], pa.float32())})
    got = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=ALL)
    want = R.window_agg_ref(spine, events, on="k", spine_time="t", event_time="ts", aggregations=ALL)
    assert_same(got, want, spine, events, ALL)
    assert got.column("count_1d").to_pylist() == [0, 0, 0]
    assert got.column("approx_distinct_v_1d").to_pylist() == [0, 0, 0]
    assert got.column("sum_v_1d").to_pylist() == [None, None, None]
    assert got.column("last2_v_1d").to_pylist() == [None, None, None]


def test_spine_columns_and_order_are_kept():
    spine = pa.table({
        "t": pa.array([9, 2, 9, 4], pa.timestamp("s", "Europe/Paris")),
        "extra": pa.array([[1], None, [2, 3], []], pa.list_(pa.int16())),
        "k": pa.array(["b", "a", "b", None], pa.large_string()),
        "label": [0.5, None, 0.5, 1.0],
    })
    spine = pa.Table.from_batches(spine.to_batches(max_chunksize=1))
    events = pa.table({"k": ["a", "b", "b"], "ts": ts(1, 1, 3), "v": [1, 2, 3]})
    got = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=ALL)
    assert got.select(spine.column_names).equals(spine)
    assert got.schema.field("t").type == pa.timestamp("s", "Europe/Paris")
    assert got.column("count_1d").to_pylist() == [2, 1, 2, 0]


# --- large cases -------------------------------------------------------------------


def test_one_key_with_many_events_matches_reference():
    """10^4 events in one key beside 300 keys of one event each: the reference on
    every label."""
    rng = random.Random(11)
    n_big = 10_000
    keys = [0] * n_big + list(range(1, 301))
    times = [rng.randrange(0, 20_000) for _ in range(n_big)] + [rng.randrange(0, 20_000) for _ in range(300)]
    values = [None if rng.random() < 0.05 else rng.choice([0.1, 1e12, -3.5, rng.random()])
              for _ in keys]
    order = list(range(len(keys)))
    rng.shuffle(order)
    events = pa.table({"k": [keys[i] for i in order],
                       "ts": pa.array([times[i] for i in order], pa.timestamp("ms")),
                       "v": [values[i] for i in order],
                       "g": [rng.randrange(40) for _ in order]})
    events = pa.Table.from_batches(events.to_batches(max_chunksize=3_000))
    label_times = [rng.choice([times[rng.randrange(n_big)], rng.randrange(0, 21_000)]) for _ in range(100)]
    spine = pa.table({"k": [0] * 60 + [rng.randrange(0, 320) for _ in range(40)],
                      "t": pa.array(label_times, pa.timestamp("ms"))})
    aggs = [A.count(windows=["100ms", "5s"]), A.sum("v", windows=["100ms", "5s"]), A.mean("v", windows=["5s"]),
            A.std("v", windows=["5s"]), A.min("v", windows=["5s"]), A.max("v", windows=["100ms"]),
            A.last("v"), A.last_k("g", k=7, window="5s"), A.approx_distinct("g", windows=["100ms", "5s"])]
    for closed in ("left", "both"):
        kw = dict(on="k", spine_time="t", event_time="ts", aggregations=aggs, closed=closed)
        got, want = run_both(spine, events, **kw)
        assert_same(got, want, spine, events, aggs)


def _medium_case(seed: int):
    """Hundreds of events over few keys (deques evict, distinct counts go up and down,
    lags cross many events): random windows, closed, created times and knowledge_time."""
    rng = random.Random(seed)
    n, m, nk = rng.choice([300, 1500]), rng.choice([40, 100]), rng.choice([1, 3, 8])
    span = rng.choice([20, 200, 5000])
    times = [rng.randrange(span) for _ in range(n)]
    events = pa.table({
        "k": [rng.randrange(nk) if rng.random() > 0.02 else None for _ in range(n)],
        "ts": pa.array(times, pa.timestamp("ms")),
        "c": pa.array([rng.randrange(span + 50) for _ in range(n)], pa.timestamp(rng.choice(["us", "ms"]))),
        "vi": pa.array([None if rng.random() < 0.2 else rng.randrange(-50, 50) for _ in range(n)], pa.int32()),
        "vf": [None if rng.random() < 0.2 else rng.choice([0.5, -1.25, 3.0, 1e6, rng.random()]) for _ in range(n)],
        "tag": [None if rng.random() < 0.2 else rng.choice("abcdefgh") for _ in range(n)],
        "row": list(range(n)),
    })
    events = pa.Table.from_batches(events.to_batches(max_chunksize=rng.choice([7, 100, 10_000])))
    label_times = [rng.choice(times) + rng.choice([0, 0, 1, -1, 5, 10, 100]) if rng.random() < 0.7
                   else rng.randrange(span) for _ in range(m)]
    spine = pa.table({"k": [rng.randrange(nk + 1) for _ in range(m)],
                      "t": pa.array(label_times, pa.timestamp("ms", "UTC"))})
    ws = rng.sample(["1ms", "5ms", "10ms", "100ms", "1s", "2s", "1h"], rng.randint(1, 3))
    k = rng.randint(1, 6)
    aggs = [A.count(windows=ws), A.count("vf", windows=ws),
            *[getattr(A, op)(c, windows=ws) for op in ("sum", "mean", "std", "min", "max") for c in ("vi", "vf")],
            A.last("vi"), A.last("tag"), A.last("row"),
            *[A.last_k(c, k=k, window=w) for c in ("row", "tag") for w in ws],
            A.approx_distinct("vi", windows=ws), A.approx_distinct("tag", windows=ws)]
    knowledge = rng.random() < 0.5
    created = "c" if knowledge or rng.random() < 0.5 else None
    return spine, events, dict(on="k", spine_time="t", event_time="ts", aggregations=aggs,
                               closed=rng.choice(["left", "right", "both"]), created_time=created,
                               knowledge_time=knowledge)


@pytest.mark.parametrize("seed", range(12))
def test_medium_random_cases_match_reference(seed):
    spine, events, kw = _medium_case(seed)
    got, want = run_both(spine, events, **kw)
    assert_same(got, want, spine, events, kw["aggregations"])


def _sorted_events(n: int, seed: int):
    """One key, n events at random microseconds (many ties), in random input order,
    values near 1e9 in the first half of the time range and below 1e-3 in the second
    (a sum kept in plain doubles loses the small ones; double-double keeps them).
    Returns the events and their times, values and groups ordered by (time, input
    position)."""
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, n * 1_000_000, n))  # one event per second on average
    v = np.where(np.arange(n) < n // 2, 1e9 + rng.random(n), rng.random(n) * 1e-3)
    g = rng.integers(0, 50, n)
    perm = rng.permutation(n)
    t, v, g = t[perm], v[perm], g[perm]
    events = pa.table({"k": np.zeros(n, np.int64), "ts": pa.array(t, pa.timestamp("us")), "v": v, "g": g})
    events = pa.Table.from_batches(events.to_batches(max_chunksize=30_000))
    order = np.lexsort((np.arange(n), t))  # by time, then input position
    return events, t[order], v[order], g[order]


def test_1e5_events_in_one_key():
    n = 100_000
    events, t, v, g = _sorted_events(n, 5)
    rng = np.random.default_rng(6)
    labels = np.concatenate([rng.choice(t, 100), rng.integers(0, n * 1_000_000, 100), [t[n // 2] + 1]])
    spine = pa.table({"k": np.zeros(len(labels), np.int64), "t": pa.array(labels, pa.timestamp("us"))})
    windows = {"10s": 10_000_000, "1h": 3_600_000_000, "2d": 2 * 86_400_000_000}
    aggs = [A.count(windows=list(windows)), A.sum("v", windows=list(windows)),
            A.mean("v", windows=list(windows)), A.min("v", windows=list(windows)),
            A.max("v", windows=list(windows)), A.last("v"), A.last_k("g", k=3, window="1h"),
            A.approx_distinct("g", windows=["10s", "1h"])]
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts", aggregations=aggs).to_pydict()
    for i, lt in enumerate(labels.tolist()):
        hi = int(np.searchsorted(t, lt, "left"))
        assert out["last_v"][i] == (float(v[hi - 1]) if hi else None), i
        for name, w in windows.items():
            lo = int(np.searchsorted(t, lt - w, "left"))
            sel = v[lo:hi].tolist()
            assert out[f"count_{name}"][i] == len(sel), (i, name)
            if not sel:
                assert out[f"sum_v_{name}"][i] is None
                continue
            s = math.fsum(sel)
            assert close(out[f"sum_v_{name}"][i], s, 0.0), (i, name, out[f"sum_v_{name}"][i], s)
            assert close(out[f"mean_v_{name}"][i], s / len(sel), 0.0), (i, name)
            assert out[f"min_v_{name}"][i] == min(sel) and out[f"max_v_{name}"][i] == max(sel), (i, name)
            if name != "2d":
                assert out[f"approx_distinct_g_{name}"][i] == len(set(g[lo:hi].tolist())), (i, name)
            if name == "1h":
                assert out["last3_g_1h"][i] == g[lo:hi].tolist()[::-1][:3], i


def test_std_is_accurate_after_large_values():
    """std of small values in a key whose earlier values are huge: sums of squares kept
    as running prefixes (even double-double ones) lose it; the module doc promises a
    sample std, so it must stay within 1e-9 of the exact one."""
    n = 100_000
    events, t, v, _ = _sorted_events(n, 7)
    rng = np.random.default_rng(8)
    labels = np.concatenate([rng.choice(t[n // 2:], 60), rng.choice(t[: n // 2], 20)])
    spine = pa.table({"k": np.zeros(len(labels), np.int64), "t": pa.array(labels, pa.timestamp("us"))})
    out = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                       aggregations=A.std("v", windows=["1h"])).column("std_v_1h").to_pylist()
    bad = []
    for i, lt in enumerate(labels.tolist()):
        hi = int(np.searchsorted(t, lt, "left"))
        lo = int(np.searchsorted(t, lt - 3_600_000_000, "left"))
        want = R.compute(A.std("v", windows=["1h"])[0], list(range(lo, hi)), v.tolist())
        if not close(out[i], want, 0.0):
            bad.append((i, hi - lo, out[i], want))
    assert not bad, f"{len(bad)} of {len(labels)} labels: (label, n, got, want) {bad[:5]}"


# --- DuckDB as a second oracle --------------------------------------------------------


def test_matches_duckdb_window_frames():
    """200k events, 20k labels, 1k keys (and 100 keys with no events); labels at event
    times and at event times + W, so both ends of every window are hit. DuckDB's RANGE
    frames over the union of labels and events: [t - W, t - 1us] is [t - W, t) on
    microsecond times, and [t - W + 1us, t] is (t - W, t]."""
    import duckdb

    rng = np.random.default_rng(42)
    n, m, span = 200_000, 20_000, 30 * 86_400_000_000
    windows = {"1h": 3_600_000_000, "1d": 86_400_000_000, "7d": 7 * 86_400_000_000}
    ek = rng.integers(0, 1_000, n)
    et = rng.integers(0, span, n)
    ev = rng.integers(-1_000, 1_000, n)
    ev_null = rng.random(n) < 0.1
    ex = rng.normal(0, 100, n)
    events = pa.table({"k": ek, "ts": pa.array(et, pa.timestamp("us")),
                       "v": pa.array(ev, mask=ev_null), "x": ex})
    events = pa.Table.from_batches(events.to_batches(max_chunksize=50_000))
    pick = rng.integers(0, n, m)
    shift = rng.choice([0, 0, windows["1h"], windows["1d"], windows["7d"], 1, -1], m)
    exact = rng.random(m) < 0.6
    sk = np.where(exact, ek[pick], rng.integers(0, 1_100, m))
    st_ = np.where(exact, et[pick] + shift, rng.integers(0, span, m))
    spine = pa.table({"lid": np.arange(m), "k": sk.astype(np.int32),
                      "t": pa.array(st_ * 1_000, pa.timestamp("ns", "UTC"))})  # other unit and zone
    aggs = [A.count(windows=list(windows))] + [
        getattr(A, op)(c, windows=list(windows)) for op in ("sum", "mean", "min", "max") for c in ("v", "x")]
    names = [a.name for a in A.flatten(aggs)]

    con = duckdb.connect()
    con.register("ev", events)
    con.register("sp", pa.table({"lid": np.arange(m), "k": sk, "t": pa.array(st_, pa.timestamp("us"))}))
    frames = {
        "left": lambda w: f"RANGE BETWEEN INTERVAL {w} MICROSECOND PRECEDING AND INTERVAL 1 MICROSECOND PRECEDING",
        "right": lambda w: f"RANGE BETWEEN INTERVAL {w - 1} MICROSECOND PRECEDING AND CURRENT ROW",
    }
    for closed, frame in frames.items():
        cols = []
        for name, w in windows.items():
            win = f"(PARTITION BY k ORDER BY ts {frame(w)})"
            cols += [f"count(is_event) OVER {win} AS count_{name}"]
            for c in ("v", "x"):
                sum_ = "fsum" if c == "x" else "sum"
                cols += [f"CAST({sum_}({c}) OVER {win} AS DOUBLE) AS sum_{c}_{name}",
                         f"avg({c}) OVER {win} AS mean_{c}_{name}",
                         f"min({c}) OVER {win} AS min_{c}_{name}",
                         f"max({c}) OVER {win} AS max_{c}_{name}"]
        sql = f"""
            WITH u AS (
                SELECT k, ts, v, x, 1 AS is_event, NULL::BIGINT AS lid FROM ev
                UNION ALL
                SELECT k, t, NULL, NULL, NULL, lid FROM sp
            ), w AS (SELECT lid, {", ".join(cols)} FROM u)
            SELECT * FROM w WHERE lid IS NOT NULL ORDER BY lid"""
        want = con.sql(sql).arrow()
        want = want if isinstance(want, pa.Table) else want.read_all()
        got = A.window_agg(spine, events, on="k", spine_time="t", event_time="ts",
                           aggregations=aggs, closed=closed)
        assert got.column("lid").to_pylist() == list(range(m))
        for name in names:
            g, w = got.column(name).to_pylist(), want.column(name).to_pylist()
            if name.startswith(("sum", "mean")):
                bad = [(i, a, b) for i, (a, b) in enumerate(zip(g, w)) if not close(a, b, 1e-3)]
            else:
                bad = [(i, a, b) for i, (a, b) in enumerate(zip(g, w)) if a != b]
            assert not bad, f"{closed} {name}: {len(bad)} rows differ, (label, got, duckdb) {bad[:5]}"


# --- bad input ----------------------------------------------------------------------


def tables():
    spine = pa.table({"user_id": [1, 2], "t": pa.array([5, 9], pa.timestamp("us"))})
    events = pa.table({"user_id": [1, 2], "ts": pa.array([1, 7], pa.timestamp("us")),
                       "amount": [1.0, 2.0], "name": ["a", "b"],
                       "made": pa.array([1, 7], pa.timestamp("us"))})
    return spine, events


def agg(spine, events, **kw):
    args = dict(on="user_id", spine_time="t", event_time="ts", aggregations=A.sum("amount", windows=["1d"]))
    args.update(kw)
    return A.window_agg(spine, events, **args)


def raises(cls, match):
    return pytest.raises(cls, match=match)


def test_missing_columns():
    spine, events = tables()
    with raises(errors.SchemaError, "spine has no column 'when'"):
        agg(spine, events, spine_time="when")
    with raises(errors.SchemaError, "no column 'time'"):
        agg(spine, events, event_time="time")
    with raises(errors.SchemaError, "spine has no column 'uid'"):
        agg(spine, events, on="uid")
    with raises(errors.SchemaError, "no column 'uid'"):
        agg(spine, events, on={"user_id": "uid"})
    with raises(errors.SchemaError, "no column 'created'"):
        agg(spine, events, created_time="created")
    for a in (A.sum("price", windows=["1d"]), A.count("price", windows=["1d"]), A.last("price"),
              A.last_k("price", k=2, window="1d"), A.approx_distinct("price", windows=["1d"])):
        with raises(errors.SchemaError, "no column 'price'"):
            agg(spine, events, aggregations=[A.count(windows=["1d"]), a])


def test_non_numeric_columns():
    spine, events = tables()
    for op in ("sum", "mean", "std", "min", "max"):
        with raises(errors.PitstopError, "column 'name' is Utf8.*numeric"):
            agg(spine, events, aggregations=[A.count(windows=["1d"]), getattr(A, op)("name", windows=["1d"])])
    with raises(errors.PitstopError, "column 'made' is Timestamp.*numeric"):  # not a number either
        agg(spine, events, aggregations=A.sum("made", windows=["1d"]))


def test_non_temporal_times():
    spine, events = tables()
    with raises(errors.ColumnTypeError, "column 't' has type Int64"):
        agg(spine.set_column(1, "t", pa.array([5, 9], pa.int64())), events)
    with raises(errors.ColumnTypeError, "column 'ts' has type Utf8"):
        agg(spine, events.set_column(1, "ts", pa.array(["a", "b"])))
    with raises(errors.ColumnTypeError, "column 'name' has type Utf8"):
        agg(spine, events, created_time="name")


def test_key_types():
    spine, events = tables()
    with raises(errors.ColumnTypeError, "key types differ"):
        agg(spine, events.set_column(0, "user_id", pa.array(["1", "2"])))
    with raises(errors.ColumnTypeError, "key column 'user_id' has type Float64"):
        agg(spine.set_column(0, "user_id", pa.array([1.0, 2.0])), events)


def test_null_times():
    spine, events = tables()
    with raises(errors.DataError, "column 'ts' has 1 null value"):
        agg(spine, events.set_column(1, "ts", pa.array([1, None], pa.timestamp("us"))))
    with raises(errors.DataError, "column 'made' has 1 null value"):
        agg(spine, events.set_column(4, "made", pa.array([None, 7], pa.timestamp("us"))), created_time="made")


@pytest.mark.parametrize("bad", ["0s", "-1d", "abc", 5, "", dt.timedelta(0), dt.timedelta(days=-1), None])
def test_windows_must_be_positive_durations(bad):
    with raises(errors.InvalidArgumentError, "window|duration"):
        A.sum("amount", windows=[bad])
    with raises(errors.InvalidArgumentError, "window|duration"):
        A.last_k("amount", k=2, window=bad)


def test_bad_arguments():
    spine, events = tables()
    with raises(errors.InvalidArgumentError, "closed must be one of"):
        agg(spine, events, closed="neither")
    with raises(errors.InvalidArgumentError, "aggregations is empty"):
        agg(spine, events, aggregations=[])
    with raises(errors.InvalidArgumentError, "not an aggregation"):
        agg(spine, events, aggregations=["sum"])
    with raises(errors.InvalidArgumentError, "knowledge_time=True needs created_time"):
        agg(spine, events, knowledge_time=True)
    with raises(errors.InvalidArgumentError, "windows must be a non-empty list"):
        A.sum("amount", windows="1d")
    with raises(errors.InvalidArgumentError, "k must be an integer"):
        A.last_k("amount", k=0, window="1d")
    with raises(errors.InvalidArgumentError, "on=\\[\\] must be"):
        agg(spine, events, on=[])
    with raises(errors.InputTypeError, "spine must be a table"):
        agg([1, 2], events)
    with raises(errors.InputTypeError, "events must be a table"):
        agg(spine, {"a": 1})


def test_output_names():
    spine, events = tables()
    with raises(errors.SchemaError, "both named 'sum_amount_1d'"):
        agg(spine, events, aggregations=[A.sum("amount", windows=["1d"]), A.sum("amount", windows=["24h"])])
    with raises(errors.SchemaError, "'count_1d'"):
        agg(spine.append_column("count_1d", pa.array([0, 0])), events, aggregations=A.count(windows=["1d"]))


def test_errors_come_before_any_work():
    """A bad last aggregation fails as fast on a large input as on a small one."""
    import time

    spine, events = tables()
    big = pa.table({"user_id": np.arange(2_000_000) % 1000, "ts": pa.array(np.arange(2_000_000), pa.timestamp("us")),
                    "amount": np.ones(2_000_000), "name": pa.array(["a"] * 2_000_000)})
    bad = [A.count(windows=["1d"]), A.sum("amount", windows=["1d"]), A.mean("name", windows=["1d"])]
    start = time.perf_counter()
    with raises(errors.PitstopError, "'name'"):
        agg(spine, big, aggregations=bad)
    failed = time.perf_counter() - start
    start = time.perf_counter()
    agg(spine, big, aggregations=bad[:2])
    worked = time.perf_counter() - start
    assert failed < max(0.05, worked / 3), (failed, worked)


@pytest.mark.parametrize("closed", ["left", "right", "both"])
def test_a_hot_key_swept_in_parallel_parts_equals_the_same_labels_swept_whole(closed):
    """A key with 2 x 8,192 labels or more is cut into parts swept on every thread, each
    from its first window's oldest event. The same labels fed in pieces too small to
    be cut give the reference: the results must be equal, value for value."""
    rng = np.random.default_rng(11)
    n, q = 150_000, 40_000
    ts = rng.integers(0, 30 * 86_400, n) * 1_000_000
    events = pa.table({
        "k": np.where(rng.random(n) < 0.9, 7, rng.integers(0, 50, n)),
        "ts": pa.array(ts, pa.timestamp("us")),
        "x": pa.array(np.where(rng.random(n) < 0.05, np.nan, rng.normal(0, 10, n)),
                      from_pandas=True),
        "m": pa.array([f"m{i}" for i in rng.integers(0, 40, n)]),
    })
    labels = pa.table({
        "k": np.where(rng.random(q) < 0.9, 7, rng.integers(0, 50, q)),
        "t": pa.array(np.concatenate([rng.integers(0, 31 * 86_400, q - 100) * 1_000_000,
                                      ts[:100]]), pa.timestamp("us")),
    })
    aggs = [A.count(windows=["1h", "1d"]), A.sum("x", windows=["1d", "7d"]),
            A.mean("x", windows=["7d"]), A.std("x", windows=["1d"]),
            A.min("x", windows=["1d"]), A.max("x", windows=["7d"]),
            A.last_k("m", k=3, window="1d"), A.approx_distinct("m", windows=["1d"])]
    run = lambda spine: A.window_agg(spine, events, on="k", spine_time="t",
                                     event_time="ts", aggregations=aggs, closed=closed)
    whole = run(labels)
    pieces = pa.concat_tables([run(labels.slice(i, 5_000)) for i in range(0, q, 5_000)])
    for name in whole.column_names:
        a, b = whole.column(name).to_pylist(), pieces.column(name).to_pylist()
        if name.startswith(("sum", "mean", "std")):
            for x, y in zip(a, b):
                assert (x is None and y is None) or math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-9), name
        else:
            assert a == b, name
