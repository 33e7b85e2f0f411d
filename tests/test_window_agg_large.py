"""window_agg on large cases: one key with many events and medium random cases against
the naive reference (tests/agg_reference.py); 1e5 events in one key against sums,
counts and extremes computed directly with numpy (``math.fsum`` sums); a std's
accuracy after large values; DuckDB's window frames as a second oracle on 2e5 random
events; and a hot key swept in parallel parts against the same labels swept whole.
The comparison helpers (``run_both``, ``assert_same``, ``close``) are
test_window_agg.py's. The reference is quadratic, so the cases that use it stay
small; the others take 10^5 rows or more."""

from __future__ import annotations

import math
import random

import numpy as np
import pyarrow as pa
import pytest

from pitstop import agg as A

import agg_reference as R
from test_window_agg import assert_same, close, run_both


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
