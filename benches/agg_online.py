"""The online part of the window-aggregation benchmark (``python -m benches.agg
--online`` / ``--online-only``; ``benches/agg.py`` holds the offline part and the
command line).

A store with an (offline) transactions group and an online aggregation of it (the same
16 features as the offline part, ``fs.create_aggregation(..., online=True)``), built
from generated events in time order (as a stream arrives): 1,000 light entities with
1,000 events each in their 30-day window and 200 older ones, and one heavy entity with
100,000. Measured:

- ingest: ``fg.insert`` of 10,000- and 100,000-event batches into the group with the
  aggregation (events/s), next to the same batches into a group without one;
- reads: p50/p99 of ``fv.get_feature_vectors`` (a table, and a float32 matrix as a
  predictor reads) for 1 light entity, the heavy entity and 100 entities at once, next
  to a per-request DuckDB query computing the same features from the raw events (an
  in-memory table sorted by key and time, one ``FILTER`` per window).

Pitstop's vectors are first checked against the DuckDB query (float32, rtol 1e-6). The
cost is dominated by the ingest (1.3M events into four groups: each batch size with and
without the aggregation) and ``--online-calls`` calls per read case (2,000 by default).
Skipped, with a message, on a build of pitstop without
``FeatureStore.create_aggregation``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .agg_data import WINDOWS, feature_names, pitstop_aggs

ONLINE_LIGHT_EVENTS = 1_000      # events per light entity in its 30-day window
ONLINE_HEAVY_EVENTS = 100_000    # events of the heavy entity in its window
ONLINE_LIGHT_ENTITIES = 1_000
ONLINE_OLD_EVENTS = 200          # per light entity, older than 30 days (outside every window)
ONLINE_BATCH = 10_000            # events per fg.insert
ONLINE_BIG_BATCH = 100_000       # the same, in larger batches
HEAVY_KEY = 10_000_000


def _online_events(now_us: int) -> "Any":
    """Events of the online part, in time order (as a stream arrives): light entities
    0..999 with 1,000 events in [now - 30d, now) and 200 older ones, the heavy entity
    with 100,000 in its window."""
    import pyarrow as pa

    rng = np.random.default_rng(3)
    month = WINDOWS["30d"]
    n_light = ONLINE_LIGHT_ENTITIES * ONLINE_LIGHT_EVENTS
    n_old = ONLINE_LIGHT_ENTITIES * ONLINE_OLD_EVENTS
    keys = np.concatenate([
        np.repeat(np.arange(ONLINE_LIGHT_ENTITIES, dtype=np.int64), ONLINE_LIGHT_EVENTS),
        np.repeat(np.arange(ONLINE_LIGHT_ENTITIES, dtype=np.int64), ONLINE_OLD_EVENTS),
        np.full(ONLINE_HEAVY_EVENTS, HEAVY_KEY, np.int64)])
    ts = np.concatenate([
        now_us - 1 - rng.integers(0, month, n_light),
        now_us - month - 1 - rng.integers(0, month, n_old),
        now_us - 1 - rng.integers(0, month, ONLINE_HEAVY_EVENTS)])
    amount = np.round(rng.lognormal(3.0, 1.0, len(keys)), 2)
    order = np.argsort(ts, kind="stable")
    return pa.table({"user_id": keys[order],
                     "ts": pa.array(ts[order], pa.int64()).cast(pa.timestamp("us")),
                     "amount": amount[order]})


def _create_online_aggregation(fs, group, name: str):
    """The one place that knows how ``FeatureStore.create_aggregation`` is called:
    returns what a feature view selects. Fits itself to the signature it finds."""
    import inspect

    create = fs.create_aggregation
    params = inspect.signature(create).parameters
    kw: dict[str, Any] = {}  # today: create_aggregation(name, source=, aggregations=, online=)
    for p in ("group", "source", "feature_group", "events"):
        if p in params:
            kw[p] = group
            break
    if "aggregations" in params:
        kw["aggregations"] = pitstop_aggs()
    positional = [name] if "name" in params else []
    if "on" in params and params["on"].default is inspect.Parameter.empty:
        kw["on"] = "user_id"
    if "event_time" in params and params["event_time"].default is inspect.Parameter.empty:
        kw["event_time"] = "ts"
    if "online" in params:
        kw["online"] = True
    a = create(*positional, **kw)
    if hasattr(a, "select_all"):
        return a.select_all()
    return group.select([f for f in feature_names()])


def _ingest(fs, name: str, events, step: int):
    """Inserts ``events`` in ``step``-event batches into a group with an online
    aggregation and into the same group without one: (what a view selects, events/s with
    the aggregation, events/s without). Raw events are an offline group (nothing to serve
    per row); the aggregation is what is online."""
    fg = fs.create_feature_group(name, primary_key="user_id", event_time="ts")
    plain = fs.create_feature_group(f"{name}_plain", primary_key="user_id", event_time="ts")
    fg.insert(events.slice(0, 1))  # the schema, before the aggregation is declared
    selection = _create_online_aggregation(fs, fg, f"{name}_aggs")
    batches = [events.slice(i, step) for i in range(1, events.num_rows, step)]
    t0 = time.perf_counter()
    for b in batches:
        fg.insert(b)
    agg_rate = (events.num_rows - 1) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for b in [events.slice(0, 1), *batches]:
        plain.insert(b)
    return selection, agg_rate, events.num_rows / (time.perf_counter() - t0)


def _latencies(fn, calls: list, warm: int = 50) -> list[float]:
    for c in calls[:warm]:
        fn(c)
    out = []
    for c in calls:
        t0 = time.perf_counter()
        fn(c)
        out.append(time.perf_counter() - t0)
    return out


class DuckDBPerRequest:
    """The same 16 features by SQL over the raw events at request time (a DuckDB table
    sorted by key and time, so a key's rows are found through its zone maps)."""

    def __init__(self, events, threads: int):
        import duckdb

        self.con = duckdb.connect(config={"threads": threads})
        self.con.register("raw", events)
        self.con.execute("CREATE TABLE ev AS SELECT * FROM raw ORDER BY user_id, ts").fetchall()
        self.con.unregister("raw")
        cols = []
        for op, fn in (("count", "count"), ("sum", "sum"), ("mean", "avg"), ("max", "max")):
            for w, us in WINDOWS.items():
                cond = f"ts >= $now - to_microseconds({us})"
                cols.append(f"{fn}(amount) FILTER (WHERE {cond})")
        month = WINDOWS["30d"]
        where = f"ts >= $now - to_microseconds({month}) AND ts < $now"
        self.one_sql = f"SELECT {', '.join(cols)} FROM ev WHERE user_id = $k AND {where}"
        self.many_sql = (f"SELECT user_id, {', '.join(cols)} FROM ev "
                         f"WHERE user_id IN (SELECT unnest($k)) AND {where} GROUP BY user_id")

    def vector(self, key: int, now) -> np.ndarray:
        row = self.con.execute(self.one_sql, {"k": key, "now": now}).fetchone()
        return np.array([np.nan if v is None else v for v in row], np.float32)

    def matrix(self, keys: list[int], now) -> np.ndarray:
        rows = self.con.execute(self.many_sql, {"k": keys, "now": now}).fetchall()
        out = np.full((len(keys), len(feature_names())), np.nan, np.float32)
        out[:, :len(WINDOWS)] = 0  # counts of keys with no events in the window
        pos = {k: i for i, k in enumerate(keys)}
        for r in rows:
            out[pos[r[0]]] = [np.nan if v is None else v for v in r[1:]]
        return out


def online(args: argparse.Namespace, log) -> str | None:
    import datetime as dt

    import pitstop as ps

    if not hasattr(ps.FeatureStore, "create_aggregation"):
        log("online part skipped: FeatureStore.create_aggregation does not exist in this "
            "build of pitstop yet")
        return None
    now = dt.datetime(2025, 7, 1)
    now_us = int((now - dt.datetime(1970, 1, 1)).total_seconds()) * 10**6
    events = _online_events(now_us)
    log(f"online: {events.num_rows:,} events; building the store ...")
    rows: list[list[Any]] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="agg-online-") as tmp:
        fs = ps.FeatureStore(Path(tmp) / "store")
        selection, agg_rate, plain_rate = _ingest(fs, "txn", events, ONLINE_BATCH)
        log(f"  ingest: {agg_rate:,.0f} events/s with the aggregation, {plain_rate:,.0f} plain")
        step = ONLINE_BIG_BATCH  # the same events in larger batches, into other groups
        _, big_rate, big_plain_rate = _ingest(fs, "txn_big", events, step)
        log(f"  ingest ({step:,}-event batches): {big_rate:,.0f} events/s with the aggregation, "
            f"{big_plain_rate:,.0f} plain")
        fv = fs.create_feature_view("txn_view", features=[selection])
        sql = DuckDBPerRequest(events, args.threads)
        rng = np.random.default_rng(5)
        calls = args.online_calls
        light = [int(k) for k in rng.integers(0, ONLINE_LIGHT_ENTITIES, calls)]
        heavy = [HEAVY_KEY] * max(calls // 5, 100)
        hundred = [sorted(rng.choice(ONLINE_LIGHT_ENTITIES, 100, replace=False).tolist())
                   for _ in range(max(calls // 5, 100))]

        # Equality first: pitstop's vectors against the SQL, float32 (rtol 1e-6).
        check = []
        for k in [light[0], HEAVY_KEY]:
            a = fv.get_feature_vectors({"user_id": [k]}, as_matrix=True, now=now)[0]
            b = sql.vector(k, now)
            check.append(np.allclose(a, b, rtol=1e-6, equal_nan=True))
        a = fv.get_feature_vectors({"user_id": hundred[0]}, as_matrix=True, now=now)
        check.append(np.allclose(a, sql.matrix(hundred[0], now), rtol=1e-6, equal_nan=True))
        agree = "ok" if all(check) else f"MISMATCH ({check})"
        log(f"  pitstop vs DuckDB per request: {agree}")

        cases = [
            ("1 entity, 1,000 events: get_feature_vectors -> table", light,
             lambda k: fv.get_feature_vectors({"user_id": [k]}, now=now)),
            ("1 entity, 1,000 events: float32 matrix (predictor-style)", light,
             lambda k: fv.get_feature_vectors({"user_id": [k]}, as_matrix=True, now=now)),
            ("1 entity, 1,000 events: DuckDB query over raw events", light,
             lambda k: sql.vector(k, now)),
            ("1 entity, 100,000 events: float32 matrix", heavy,
             lambda k: fv.get_feature_vectors({"user_id": [k]}, as_matrix=True, now=now)),
            ("1 entity, 100,000 events: DuckDB query over raw events", heavy,
             lambda k: sql.vector(k, now)),
            ("100 entities x 1,000 events: float32 matrix", hundred,
             lambda ks: fv.get_feature_vectors({"user_id": ks}, as_matrix=True, now=now)),
            ("100 entities x 1,000 events: DuckDB query over raw events", hundred,
             lambda ks: sql.matrix(ks, now)),
        ]
        for name, inputs, fn in cases:
            xs = _latencies(fn, inputs)
            rows.append([name, f"{harness.percentile(xs, 50) * 1e6:,.0f}",
                         f"{harness.percentile(xs, 99) * 1e6:,.0f}", f"{len(xs):,}"])
            log(f"  {name}: p50 {rows[-1][1]} µs, p99 {rows[-1][2]} µs")
        fs.close()
    notes.append(f"ingest, fg.insert of {ONLINE_BATCH:,}-event batches in time order: "
                 f"{agg_rate:,.0f} events/s into the group with the online aggregation, "
                 f"{plain_rate:,.0f} events/s into the same group without it (offline "
                 "write only; same batches).")
    notes.append(f"ingest in {ONLINE_BIG_BATCH:,}-event batches: {big_rate:,.0f} events/s with "
                 f"the online aggregation, {big_plain_rate:,.0f} events/s without it.")
    notes.append(f"pitstop's vectors vs the DuckDB query (float32, rtol 1e-6): {agree}.")
    notes.append("DuckDB: one in-memory table of the raw events sorted by (user_id, ts), a "
                 "parameterized query per request with FILTER per window, fetched to a float32 "
                 f"vector / matrix; {args.threads} threads.")
    header = (f"Online window aggregations: {ONLINE_LIGHT_ENTITIES:,} entities x "
              f"{ONLINE_LIGHT_EVENTS:,} events in their 30-day window (+{ONLINE_OLD_EVENTS} older), "
              f"one with {ONLINE_HEAVY_EVENTS:,}; 16 features (count/sum/mean/max x "
              f"{'/'.join(WINDOWS)}), read at now.  \n"
              f"{harness.today()} · {harness.machine()} · "
              f"{harness.versions('pitstop', 'duckdb', 'numpy')} · {harness.load_average()}")
    table = harness.markdown_table(["read", "p50 µs", "p99 µs", "calls"], rows)
    return header + "\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes)
