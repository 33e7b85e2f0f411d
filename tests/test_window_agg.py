"""window_agg against the naive reference (tests/agg_reference.py) on adversarial data
and on small hand-made cases of its contract. Large cases and DuckDB as a second
oracle are in test_window_agg_large.py (which shares the comparison helpers here),
bad input in test_window_agg_errors.py."""

from __future__ import annotations

import datetime as dt
import math

import pyarrow as pa
import pytest
from hypothesis import given, strategies as st

from pitstop import agg as A
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
