"""Benchmark: window aggregations, pitstop's ``window_agg`` against polars and DuckDB.

    python -m benches.agg [--size XS|S|L] [--runs N] [--skew [--skew-engines ...]]
                          [--engines ...] [--online | --online-only]

Offline (the default): count, sum, mean and max of ``amount`` over 1h, 1d, 7d and 30d
(16 features) for every label, window ``[t - W, t)`` (``closed="left"``: an event at
exactly the label's time is not counted, one at exactly ``t - W`` is). Size ``L`` (the
default) is 10M events, 1M labels, 100k keys over 180 days; ``S`` is 1M / 100k / 10k.
The data is generated once (``benches/agg_data.py``, Parquet under
``bench-data/agg/``); each engine then runs in its own child process
(``python -m benches.agg --child ...`` through ``harness.run_child``), so its peak RSS
is its own: it reads the Parquet files (the read time), computes the features
``warmup + runs`` times (the time is the median of the runs), and writes the sampled
labels' features for the check. With ``--skew`` the same runs again on Zipf(1.1) keys,
and pitstop's skewed time is reported relative to its uniform time (target: 1.5x at
most). ``make bench-agg`` runs size L with ``--skew --skew-engines pitstop,polars``:
DuckDB's window frames take minutes per run on the skewed keys at that size (its
S-size skewed run is 15x its uniform one), so it runs on uniform keys only there.

What each engine counts as its computation (complete output, in memory):

- ``pitstop``: one ``pitstop.agg.window_agg`` call on the pyarrow Tables as read; output
  a pyarrow Table, the labels in their order plus 16 columns.
- ``polars``: events and labels concatenated (labels with a null ``amount`` and their
  ``row_id``, events with a null ``row_id``), sorted by (``user_id``, ``ts``),
  ``rolling_{sum,mean,max}_by("ts", window_size=W, closed="left").over("user_id")`` and
  a rolling sum of ``amount.is_not_null()`` for the count, then the label rows kept;
  lazy plan, in-memory engine. Why that gives pitstop's semantics, exactly:
  ``closed="left"`` is the window ``[t - W, t)`` by time value (not by row position),
  so an event at the label's time is excluded however the sort orders ties; label rows
  carry null amounts, which every rolling op skips, and the count counts non-null
  amounts (events never have a null amount here), so labels never count labels;
  ``min_samples=1`` makes an empty window null for sum/mean/max (as pitstop), while
  the count's rolling sum uses ``min_samples=0`` (0, as pitstop).
- ``duckdb``: the union of events and labels (labels with a null ``amount``) in
  DuckDB in-memory tables (loaded from Parquet by DuckDB: that is the read), window
  functions ``count(amount)``, ``sum``, ``avg``, ``max`` ``OVER (PARTITION BY user_id
  ORDER BY ts RANGE BETWEEN W PRECEDING AND 1 MICROSECOND PRECEDING)``: times are
  microseconds, so "1 µs preceding" is "strictly before t", and "W preceding" includes
  ``t - W``; the label rows kept, fetched to a pyarrow Table. Aggregates skip the
  labels' nulls, an empty frame gives count 0 and NULL otherwise (as pitstop).

Check: for 2,000 sampled labels, every engine's 16 features against a brute-force
numpy reference (``math.fsum`` sums) and against pitstop's: counts exactly, floats
within 1e-9 relative, nulls in the same places. A mismatch is reported in the table
and makes the exit status 1.

Online (``--online``, after the offline part; ``--online-only`` alone; the code is in
``benches/agg_online.py``): needs
``FeatureStore.create_aggregation`` and skips with a message without it. A store with
an (offline) transactions group and an online aggregation of it (the same 16
features, ``fs.create_aggregation(..., online=True)``); p50/p99 of
``fv.get_feature_vectors`` (a table, and a float32 matrix as a predictor reads) for 1
entity with 1,000 events in its 30-day window, 1 entity with 100,000, and 100
entities at once, next to a per-request DuckDB query computing the same features
from the raw events (table sorted by key and time); and the ingest rate of
``fg.insert`` batches (10,000 and 100,000 events) into the group with the aggregation (events/s), next to the
same group without one.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from . import harness
from .agg_data import (DISTS, RESULTS_DIR, SIZES, WINDOWS, Size, describe, ensure, feature_names,
                       paths, pitstop_aggs, sample_ids)
from .agg_online import online

ENGINES = ("pitstop", "polars", "duckdb")
REL_TOL = 1e-9


# ------------------------------------------------------------------------ engines
# Each runs in the child process: read(files) -> state (timed once), compute(state)
# -> output (timed, repeated), sample(output, ids) -> pyarrow Table sorted by row_id.

class Pitstop:
    package = "pitstop"
    modules = ("pitstop", "pitstop.agg", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.compute")

    def read(self, files):
        import pyarrow.parquet as pq

        return {name: pq.read_table(files[name]) for name in ("events", "labels")}

    def compute(self, state):
        from pitstop import agg

        return agg.window_agg(state["labels"], state["events"], on="user_id", spine_time="ts",
                              event_time="ts", aggregations=pitstop_aggs())

    def rows_and_columns(self, out):
        return out.num_rows, out.column_names

    def sample(self, out, ids):
        return _arrow_sample(out, ids)

    def extra(self, state, out):
        # The contract: the labels' rows in the labels' order. Peers need not keep it.
        return {"spine_order": out.column("row_id").equals(state["labels"].column("row_id"))}


def _arrow_sample(table, ids):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = table.select(["row_id", *feature_names()])
    t = t.filter(pc.is_in(t.column("row_id"), value_set=pa.array(ids)))
    return t.sort_by("row_id")


class Polars:
    package = "polars"
    modules = ("polars",)

    def read(self, files):
        import polars as pl

        return {name: pl.read_parquet(files[name]) for name in ("events", "labels")}

    def compute(self, state):
        import polars as pl

        events = state["events"].lazy().select(
            "user_id", "ts", "amount", pl.lit(None, pl.Int64).alias("row_id"))
        labels = state["labels"].lazy().select(
            "user_id", "ts", pl.lit(None, pl.Float64).alias("amount"), "row_id")
        rows = pl.concat([events, labels]).sort("user_id", "ts")
        amount = pl.col("amount")
        features = []
        for op in ("count", "sum", "mean", "max"):
            for w in WINDOWS:
                kw = {"window_size": w, "closed": "left"}
                if op == "count":  # non-null amounts = events (labels have null amounts)
                    e = amount.is_not_null().cast(pl.Int64).rolling_sum_by("ts", min_samples=0, **kw)
                    name = f"count_{w}"
                else:
                    e = getattr(amount, f"rolling_{op}_by")("ts", min_samples=1, **kw)
                    name = f"{op}_amount_{w}"
                features.append(e.over("user_id").alias(name))
        return (rows.with_columns(features)
                .filter(pl.col("row_id").is_not_null())
                .select("user_id", "ts", "row_id", *feature_names())
                .collect())

    def rows_and_columns(self, out):
        return out.height, out.columns

    def sample(self, out, ids):
        import polars as pl

        return (out.select("row_id", *feature_names())
                .filter(pl.col("row_id").is_in(ids.tolist())).sort("row_id").to_arrow())

    def extra(self, state, out):
        return {}


def duckdb_query() -> str:
    frames, cols = [], []
    for w, us in WINDOWS.items():
        frames.append(f"w{w} AS (PARTITION BY user_id ORDER BY ts RANGE BETWEEN "
                      f"to_microseconds({us}) PRECEDING AND to_microseconds(1) PRECEDING)")
    for op, fn in (("count", "count"), ("sum", "sum"), ("mean", "avg"), ("max", "max")):
        for w in WINDOWS:
            name = f"count_{w}" if op == "count" else f"{op}_amount_{w}"
            cols.append(f"{fn}(amount) OVER w{w} AS {name}")
    return f"""
WITH u AS (
    SELECT user_id, ts, amount, NULL::BIGINT AS row_id FROM events
    UNION ALL
    SELECT user_id, ts, NULL::DOUBLE AS amount, row_id FROM labels
), f AS (
    SELECT user_id, ts, row_id, {', '.join(cols)}
    FROM u
    WINDOW {', '.join(frames)}
)
SELECT * FROM f WHERE row_id IS NOT NULL
"""


class DuckDB:
    package = "duckdb"
    modules = ("duckdb",)

    def read(self, files):
        import duckdb

        con = duckdb.connect(config={"threads": int(os.environ["PITSTOP_BENCH_THREADS"])})
        for name in ("events", "labels"):
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{files[name]}')").fetchall()
        return con

    def compute(self, con):
        return con.sql(duckdb_query()).to_arrow_table()

    def rows_and_columns(self, out):
        return out.num_rows, out.column_names

    def sample(self, out, ids):
        return _arrow_sample(out, ids)

    def extra(self, con, out):
        settings = con.sql("SELECT name, value FROM duckdb_settings() "
                           "WHERE name IN ('threads', 'memory_limit')").fetchall()
        return {"settings": dict(settings)}


IMPLEMENTATIONS = {"pitstop": Pitstop, "polars": Polars, "duckdb": DuckDB}


def child(args: argparse.Namespace) -> None:
    """One engine on one data set, in this (child) process; prints one JSON line."""
    import importlib

    import pyarrow as pa
    import pyarrow.parquet as pq

    pa.set_cpu_count(int(os.environ["PITSTOP_BENCH_THREADS"]))
    size = SIZES[args.size]
    files = {name: str(p) for name, p in paths(size, args.dist).items()}
    engine = IMPLEMENTATIONS[args.child]()
    for m in engine.modules:  # neither the read nor the first run pays for imports
        importlib.import_module(m)

    read_s, state = harness.timed(lambda: engine.read(files))
    rss_after_read = harness.peak_rss_mb()
    times: list[float] = []
    cpu: list[float] = []
    out = None
    for i in range(args.warmup + args.runs):
        out = None
        gc.collect()
        c0 = os.times()
        seconds, out = harness.timed(lambda: engine.compute(state))
        c1 = os.times()
        if i >= args.warmup:
            times.append(seconds)
            cpu.append(c1.user - c0.user + c1.system - c0.system)
        print(f"run {i}: {seconds:.3f} s", file=sys.stderr, flush=True)
    peak = harness.peak_rss_mb()
    rows, columns = engine.rows_and_columns(out)
    pq.write_table(engine.sample(out, sample_ids(size)), args.sample)
    print(json.dumps({
        "engine": args.child, "version": harness.versions(engine.package), "read_s": read_s,
        "agg_s": harness.median(times), "times": times, "cpu_s": harness.median(cpu),
        "rows": rows, "columns": columns, "rss_after_read_mb": rss_after_read,
        "peak_rss_mb": peak, **engine.extra(state, out),
    }))


# ------------------------------------------------------------------------ the check

def compare(got_path: Path, ref_path: Path, ids: np.ndarray) -> str:
    """``ok (n rows)`` when the sample of ``got_path`` equals ``ref_path``'s: the same
    row ids, counts exactly, floats within ``REL_TOL`` relative, nulls in the same
    places; otherwise what differs (rows and columns, one example)."""
    import pyarrow.parquet as pq

    got, ref = pq.read_table(got_path), pq.read_table(ref_path)
    if got.num_rows != len(ids) or not np.array_equal(got.column("row_id").to_numpy(), ids):
        return f"FAIL: sample has {got.num_rows} rows, expected {len(ids)} row ids"
    bad = np.zeros(len(ids), dtype=bool)
    per_column, example = [], ""
    for name in feature_names():
        a = ref.column(name).to_numpy(zero_copy_only=False).astype(float)
        b = got.column(name).to_numpy(zero_copy_only=False).astype(float)
        both_null = np.isnan(a) & np.isnan(b)
        with np.errstate(invalid="ignore"):
            if name.startswith("count_"):
                close = a == b
            else:
                close = np.abs(a - b) <= REL_TOL * np.maximum(np.abs(a), np.abs(b))
        differ = ~(close | both_null)
        if differ.any():
            bad |= differ
            per_column.append(f"{name}: {int(differ.sum())}")
            if not example:
                i = int(np.flatnonzero(differ)[0])
                example = f"; e.g. row_id {ids[i]} {name} {b[i]!r} vs {a[i]!r}"
    if not bad.any():
        return f"ok ({len(ids):,} rows)"
    return f"MISMATCH in {int(bad.sum()):,} of {len(ids):,} rows ({', '.join(per_column)}){example}"


# ------------------------------------------------------------------------ offline

def offline(args: argparse.Namespace, engines: list[str], log) -> tuple[str, bool]:
    """Runs every engine on every data set; returns the markdown report and whether
    every check passed."""
    size = SIZES[args.size]
    dists = list(DISTS) if args.skew else ["uniform"]
    big = size.events >= 10_000_000
    warmup = args.warmup if args.warmup is not None else (0 if big else 1)
    rss_limit = args.rss_limit_mb or 0.85 * harness.available_memory_mb()
    child_timeout = 300 + args.run_timeout * (args.runs + warmup)
    skew_engines = engines if args.skew_engines is None else [
        e.strip() for e in args.skew_engines.split(",") if e.strip()]
    facts = {}
    for dist in dists:
        ensure(size, dist, log=log)
        facts[dist] = describe(size, dist)
    load_start = harness.load_average()
    log(f"{load_start} (1/5/15 min) at start; memory guard {rss_limit:,.0f} MiB per engine")
    env = {"PITSTOP_BENCH_THREADS": str(args.threads), "POLARS_MAX_THREADS": str(args.threads),
           "RAYON_NUM_THREADS": str(args.threads), "OMP_NUM_THREADS": str(args.threads)}
    ids = sample_ids(size)
    results: dict[tuple[str, str], dict[str, Any]] = {}
    ok = True
    tmp = Path(tempfile.mkdtemp(prefix="agg-bench-"))
    try:
        for dist in dists:
            ref = paths(size, dist)["reference"]
            for engine in engines:
                if dist == "zipf" and engine not in skew_engines:
                    continue
                log(f"{engine}: {size.name}-{dist}, {warmup} warmup + {args.runs} runs, "
                    f"{args.threads} threads ...")
                sample = tmp / f"{engine}-{dist}.parquet"
                child_args = ["--child", engine, "--size", size.name, "--dist", dist,
                              "--runs", str(args.runs), "--warmup", str(warmup),
                              "--sample", str(sample)]
                try:
                    r = harness.run_child("benches.agg", child_args, timeout=child_timeout,
                                          env=env, rss_limit_mb=rss_limit)
                except subprocess.TimeoutExpired:
                    r = {"error": f"timed out (over {child_timeout:,.0f} s in all)"}
                if "error" in r:
                    log(f"  {r['error']}")
                    ok = False
                else:
                    r["check_ref"] = compare(sample, ref, ids)
                    pit_sample = tmp / f"pitstop-{dist}.parquet"
                    if engine == "pitstop":
                        r["check_pit"] = ("reference, label order kept" if r.get("spine_order")
                                          else "reference; LABEL ORDER LOST")
                        ok &= bool(r.get("spine_order"))
                    elif pit_sample.exists():
                        r["check_pit"] = compare(sample, pit_sample, ids)
                        ok &= r["check_pit"].startswith("ok")
                    else:
                        r["check_pit"] = "n/a (no pitstop run)"
                    ok &= r["check_ref"].startswith("ok")
                    if r["rows"] != size.labels:
                        r["check_ref"] = f"FAIL: {r['rows']:,} rows, labels {size.labels:,}; " + r["check_ref"]
                        ok = False
                    log(f"  read {r['read_s']:.3f} s, agg {r['agg_s']:.3f} s (runs "
                        f"{', '.join(f'{t:.3f}' for t in r['times'])}), peak "
                        f"{r['peak_rss_mb']:,.0f} MiB; vs reference: {r['check_ref']}; "
                        f"vs pitstop: {r['check_pit']}")
                results[(engine, dist)] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = harness.load_average()
    report = render(size, dists, engines, results, facts, args.threads, args.runs, warmup,
                    load_start, load_end, rss_limit)
    return report, ok


def _fmt_s(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.3f}"


def render(size: Size, dists: list[str], engines: list[str], results, facts, threads: int,
           runs: int, warmup: int, load_start: str, load_end: str, rss_limit: float) -> str:
    rows = []
    for dist in dists:
        base = results.get(("pitstop", dist), {}).get("agg_s")
        for engine in engines:
            if (engine, dist) not in results:
                continue
            r = results[(engine, dist)]
            if "error" in r:
                peak = r.get("peak_rss_mb")
                rows.append([engine, dist, "—", "—", "—", "—", f"≥ {peak:,.0f}" if peak else "—",
                             "—", f"not measured: {r['error']}", "—"])
                continue
            ratio = f"{r['agg_s'] / base:.2f}x" if base else "—"
            rows.append([engine, dist, _fmt_s(r["read_s"]), _fmt_s(r["agg_s"]), ratio,
                         f"{r['cpu_s']:.2f}", f"{r['peak_rss_mb']:,.0f}",
                         f"{r['rss_after_read_mb']:,.0f}", r["check_ref"], r["check_pit"]])
    versions = harness.versions("pitstop", "polars", "duckdb", "pyarrow", "numpy")
    header = (
        f"Window aggregations, size {size.name}: {size.events:,} events, {size.labels:,} labels, "
        f"{size.keys:,} keys over 180 days; count/sum/mean/max of amount over "
        f"{'/'.join(WINDOWS)} (16 features), window [t - W, t); {threads} threads per engine; "
        f"time = median of {runs} runs after {warmup} warmup.  \n"
        f"{harness.today()} · {harness.machine()} · {versions}  \n"
        f"{load_start} at start, {load_end} at end (1/5/15 min)"
    )
    table = harness.markdown_table(
        ["engine", "keys", "read s", "agg s", "agg / pitstop", "agg CPU s", "peak RSS MiB",
         "RSS after read MiB", "check vs numpy reference (2,000 labels)", "check vs pitstop"],
        rows)
    notes = []
    uni, zipf = results.get(("pitstop", "uniform"), {}), results.get(("pitstop", "zipf"), {})
    if "agg_s" in uni and "agg_s" in zipf:
        x = zipf["agg_s"] / uni["agg_s"]
        notes.append(f"pitstop on Zipf(1.1) keys / uniform keys: {x:.2f}x "
                     f"({'within' if x <= 1.5 else 'OVER'} the 1.5x target).")
        for e in engines:
            a, b = results.get((e, "uniform"), {}), results.get((e, "zipf"), {})
            if e != "pitstop" and "agg_s" in a and "agg_s" in b:
                notes.append(f"{e} zipf / uniform: {b['agg_s'] / a['agg_s']:.2f}x.")
    for dist in dists:
        f = facts[dist]
        notes.append(f"{dist} keys: the busiest key has {f['top_key_share']:.3g} of the events; "
                     f"a sampled label's 30-day window holds {f['mean_30d_events']:,.0f} events "
                     f"on average, {f['max_30d_events']:,} at most.")
    notes += [
        "Each engine runs in its own process; peak RSS is that process's max resident memory "
        "(read + runs, outputs included). agg s excludes reading the Parquet files; it "
        "includes what each engine needs to get there (polars: concat + sort; DuckDB: the "
        "union and its sort; pitstop takes the unsorted tables).",
        "pitstop returns the labels in their order; the peers return them sorted by key and "
        "time and are not charged for restoring the order.",
        "Labels: 80% at random times, 10% at exactly an event's time (excluded), 10% at an "
        "event's time + W (on the left edge, included), so the check covers both edges.",
        f"The memory guard kills an engine past {rss_limit:,.0f} MiB resident.",
        "Runs (s): " + "; ".join(
            f"{e}/{d} {', '.join(f'{t:.2f}' for t in r['times'])}"
            for (e, d), r in results.items() if "times" in r),
    ]
    for (e, d), r in results.items():
        if "settings" in r and d == dists[0]:
            notes.append(f"{e} settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
    return header + "\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes)


# ------------------------------------------------------------------------ main

def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.agg", description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="L")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per engine (default 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (L: 0, else 1)")
    ap.add_argument("--skew", action="store_true", help="also on Zipf(1.1)-skewed keys")
    ap.add_argument("--skew-engines", default=None,
                    help="the engines run on the skewed keys (default: --engines); DuckDB "
                         "takes minutes per run there at size L")
    ap.add_argument("--engines", default=",".join(ENGINES),
                    help=f"comma-separated, from {', '.join(ENGINES)}")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="for every engine")
    ap.add_argument("--run-timeout", type=float, default=900.0,
                    help="seconds allowed per run; a child gets 300 + this x runs")
    ap.add_argument("--rss-limit-mb", type=float, default=None,
                    help="kill an engine whose RSS passes this (default 85%% of MemAvailable)")
    ap.add_argument("--online", action="store_true", help="then the online part")
    ap.add_argument("--online-only", action="store_true", help="only the online part")
    ap.add_argument("--online-calls", type=int, default=2_000, help="calls per online case")
    # The child process (started by the parent through harness.run_child).
    ap.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--dist", choices=DISTS, default="uniform", help=argparse.SUPPRESS)
    ap.add_argument("--sample", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args)
        return 0

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    if "pitstop" in engines:  # the reference of the peers' check: run it first
        engines.remove("pitstop")
        engines.insert(0, "pitstop")
    ok = True
    reports = []
    if not args.online_only:
        report, ok = offline(args, engines, log)
        reports.append(report)
        RESULTS_DIR.mkdir(exist_ok=True)
        out = RESULTS_DIR / f"agg-{args.size}{'-skew' if args.skew else ''}.md"
        out.write_text(report + "\n")
        print(report + "\n", flush=True)
        log(f"written to {out}")
    if args.online or args.online_only:
        report = online(args, log)
        if report is not None:
            reports.append(report)
            RESULTS_DIR.mkdir(exist_ok=True)
            (RESULTS_DIR / "agg-online.md").write_text(report + "\n")
            print(report + "\n", flush=True)
    if not ok:
        log("FAILED: an engine failed or disagreed (see the table)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
