"""Benchmark: the point-in-time join, pitstop against DuckDB, polars and pandas.

    python -m benches.pit --size S|L [--engines pitstop,duckdb,polars,pandas]
                          [--repeat N] [--warmup N] [--threads N]

Generates the data once per size (``benches/pit_data.py``, Parquet under
``bench-data/<size>/``), then runs each engine in its own child process
(``benches/pit_child.py`` through ``harness.run_child``) so that its peak RSS is its own:
the child reads the Parquet files (the read time), runs the whole 3-table as-of join
warmup + repeat times (the join time is the median of the repeats) and reports. Every
engine gets the same thread count (default: all cores), set in the child's environment
before it imports anything. The engines' outputs are checked against pitstop's on a
sample of spine rows (matched by ``row_id``, one float feature per table compared);
mismatches are reported, not hidden.

Prints a markdown table (and writes it to ``bench-results/pit-<size>.md``): read time,
join time, join time relative to pitstop's, peak RSS, the check. An engine that fails,
runs out of memory, passes the memory guard or the time limit gets a row saying so.
"""

from __future__ import annotations

import argparse
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
from .pit_child import ENGINES
from .pit_data import OUTPUT_COLUMNS, RESULTS_DIR, SIZES, Size, ensure, sample_ids

DEFAULT_ENGINES = "pitstop,duckdb,polars,pandas"
PEERS_OF = {"duckdb-table": "duckdb", "polars-stream": "polars"}


def _check(size: Size, sample: Path, reference: Path | None) -> str:
    """Compares an engine's sample rows with pitstop's: same row ids, and for each
    feature table the same float value (both null counts as equal)."""
    import pyarrow.parquet as pq

    got = pq.read_table(sample)
    ids = sample_ids(size)
    if got.num_rows != len(ids) or not np.array_equal(got.column("row_id").to_numpy(), ids):
        return f"FAIL: sample has {got.num_rows} rows, expected {len(ids)} row ids"
    if reference is None:
        return "n/a (no pitstop run)"
    ref = pq.read_table(reference)
    bad = np.zeros(len(ids), dtype=bool)
    per_column = []
    for name in ref.column_names[1:]:
        a = ref.column(name).to_numpy(zero_copy_only=False).astype(float)
        b = got.column(name).to_numpy(zero_copy_only=False).astype(float)
        differ = ~((a == b) | (np.isnan(a) & np.isnan(b)))
        bad |= differ
        if differ.any():
            per_column.append(f"{name}: {int(differ.sum())}")
    if not bad.any():
        return f"ok ({len(ids):,} rows)"
    return f"MISMATCH in {int(bad.sum()):,} of {len(ids):,} rows ({', '.join(per_column)})"


def _fmt_s(x: float | None) -> str:
    return "—" if x is None or math.isnan(x) else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benches.pit", description=__doc__.split("\n")[0])
    ap.add_argument("--size", choices=sorted(SIZES), default="S")
    ap.add_argument(
        "--engines",
        default=DEFAULT_ENGINES,
        help=f"comma-separated, from {', '.join(ENGINES)} (default {DEFAULT_ENGINES})",
    )
    ap.add_argument("--repeat", type=int, default=None, help="timed runs (default S: 5, L: 3)")
    ap.add_argument("--warmup", type=int, default=None, help="untimed runs first (S: 1, L: 0)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="for every engine")
    ap.add_argument(
        "--run-timeout",
        type=float,
        default=900.0,
        help="seconds allowed per join run; a child gets 300 + this x runs (default 900)",
    )
    ap.add_argument(
        "--rss-limit-mb",
        type=float,
        default=None,
        help="kill an engine whose RSS passes this (default 85%% of MemAvailable at start)",
    )
    args = ap.parse_args(argv)

    size = SIZES[args.size]
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"unknown engines {unknown}; choose from {', '.join(ENGINES)}")
    if "pitstop" in engines:  # the reference: run it first
        engines.remove("pitstop")
        engines.insert(0, "pitstop")
    big = size.spine_rows >= 10_000_000
    repeat = args.repeat if args.repeat is not None else (3 if big else 5)
    warmup = args.warmup if args.warmup is not None else (0 if big else 1)
    rss_limit = args.rss_limit_mb or 0.85 * harness.available_memory_mb()
    child_timeout = 300 + args.run_timeout * (repeat + warmup)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    ensure(size, log=log)
    load_start = harness.load_average()
    env = {
        "PITSTOP_BENCH_THREADS": str(args.threads),
        "POLARS_MAX_THREADS": str(args.threads),
        "RAYON_NUM_THREADS": str(args.threads),
        "OMP_NUM_THREADS": str(args.threads),
    }
    tmp = Path(tempfile.mkdtemp(prefix="pit-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for engine in engines:
            log(f"{engine}: size {size.name}, {warmup} warmup + {repeat} runs, "
                f"{args.threads} threads ...")
            sample = tmp / f"{engine}.parquet"
            child_args = ["--engine", engine, "--size", size.name, "--repeat", str(repeat),
                          "--warmup", str(warmup), "--sample", str(sample)]
            try:
                r = harness.run_child("benches.pit_child", child_args, timeout=child_timeout,
                                      env=env, rss_limit_mb=rss_limit)
            except subprocess.TimeoutExpired:
                r = {"error": f"timed out (over {child_timeout:,.0f} s in all)"}
            if "error" not in r:
                if engine == "pitstop":
                    r["check"] = _check(size, sample, None).replace("n/a (no pitstop run)", (
                        "reference, spine order kept" if r.get("spine_order")
                        else "reference; SPINE ORDER LOST"))
                else:
                    pitstop_ok = "error" not in results.get("pitstop", {"error": ""})
                    r["check"] = _check(size, sample, tmp / "pitstop.parquet" if pitstop_ok else None)
                if r["rows"] != size.spine_rows:
                    r["check"] = f"FAIL: {r['rows']:,} rows, spine has {size.spine_rows:,}; " + r["check"]
                if r["columns"] != OUTPUT_COLUMNS:
                    r["check"] += f"; columns differ: {r['columns']}"
                log(f"  read {r['read_s']:.3f} s, join {r['join_s']:.3f} s (runs "
                    f"{', '.join(f'{t:.3f}' for t in r['join_times'])}), "
                    f"peak {r['peak_rss_mb']:,.0f} MiB, {r['check']}")
            else:
                log(f"  {r['error']}")
            results[engine] = r
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    load_end = harness.load_average()

    report = render(size, results, args.threads, repeat, warmup, load_start, load_end, rss_limit)
    print(report)
    RESULTS_DIR.mkdir(exist_ok=True)
    out = RESULTS_DIR / f"pit-{size.name}.md"
    out.write_text(report + "\n")
    log(f"written to {out}")
    return 0


def render(size: Size, results: dict[str, dict[str, Any]], threads: int, repeat: int,
           warmup: int, load_start: str, load_end: str, rss_limit: float) -> str:
    ok = {e: r for e, r in results.items() if "error" not in r}
    base = ok.get("pitstop", {}).get("join_s")
    peers = {e: r["join_s"] for e, r in ok.items() if e != "pitstop"}
    fastest = min(peers, key=peers.get) if peers else None
    rows = []
    for engine, r in results.items():
        if "error" in r:
            peak = r.get("peak_rss_mb")
            rows.append([engine, "—", "—", "—", "—", "—",
                         f"≥ {peak:,.0f}" if peak else "—", "—", f"not measured: {r['error']}"])
            continue
        ratio = f"{r['join_s'] / base:.2f}x" if base else "—"
        speedup = ""
        if engine == "pitstop" and fastest is not None:
            speedup = f"{peers[fastest] / base:.2f}x ({fastest})"
        rows.append([engine, _fmt_s(r["read_s"]), _fmt_s(r["join_s"]), ratio, speedup,
                     f"{r['join_cpu_s']:.2f}", f"{r['peak_rss_mb']:,.0f}",
                     f"{r['rss_after_read_mb']:,.0f}", r["check"]])
    versions = harness.versions("pitstop", "duckdb", "polars", "pandas", "pyarrow", "numpy")
    header = (
        f"Point-in-time join, size {size.name}: spine {size.spine_rows:,} rows, "
        f"3 feature tables x {size.feature_rows:,} rows, {size.entities:,} entities; "
        f"{threads} threads per engine; join = median of {repeat} runs after {warmup} warmup.  \n"
        f"{harness.today()} · {harness.machine()} · {versions}  \n"
        f"{load_start} at start, {load_end} at end (1/5/15 min)"
    )
    table = harness.markdown_table(
        ["engine", "read s", "join s", "join / pitstop", "fastest peer / pitstop",
         "join CPU s", "peak RSS MiB", "RSS after read MiB", "check vs pitstop (sample)"],
        rows,
    )
    notes = [
        "Each engine runs in its own process; peak RSS is that process's max resident "
        "memory (read + joins, outputs included). Join time excludes reading; it includes "
        "the sorts polars and pandas need (pitstop takes unsorted input).",
        "pitstop returns the spine's rows in the spine's order; the peers need not and "
        "do not (polars/pandas return them sorted by time), and are not charged for "
        "restoring it.",
        "join CPU s: user + system CPU seconds of the engine's process during one join "
        "(median); on a busy machine it varies less than wall time.",
        f"The memory guard kills an engine past {rss_limit:,.0f} MiB resident.",
        "join CPU s split user + system: " + "; ".join(
            f"{e} {r['join_user_s']:.2f} + {r['join_sys_s']:.2f}" for e, r in ok.items()),
        "Join runs (s): " + "; ".join(
            f"{e} {', '.join(f'{t:.2f}' for t in r['join_times'])}" for e, r in ok.items()),
    ]
    for e, r in ok.items():
        if "settings" in r:
            notes.append(f"{e} settings: " + ", ".join(f"{k}={v}" for k, v in r["settings"].items()))
    notes.append("duckdb fetches the result to a pyarrow Table (to_arrow_table()); "
                 "duckdb-table materializes it with CREATE TABLE AS instead. polars runs a lazy "
                 "plan on the in-memory engine; polars-stream sorts by (user_id, ts) and uses "
                 "the streaming engine.")
    return header + "\n\n" + table + "\n\n" + "\n".join(f"- {n}" for n in notes)


if __name__ == "__main__":
    sys.exit(main())
