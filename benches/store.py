"""Training data end to end from the store, against Feast and DuckDB.

Same data for all (size S: spine 1M rows, 3 feature groups x 1M rows, 100k entities,
4 float + 1 int + 1 string feature each): pitstop's ``fv.training_data`` reading its
Delta tables; DuckDB's ASOF LEFT JOIN x3 over the same rows as Parquet, reads included;
Feast's ``get_historical_features`` with its DuckDB offline store (run from a separate
environment given by ``--feast-python``; skipped when absent). Also insert throughput
(rows/s) into an offline and an online feature group.

    python -m benches.store [--repeat 3] [--feast-python /path/to/venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benches import harness

ROOT = Path(__file__).resolve().parent.parent
YEAR_US = 365 * 86_400 * 10**6
START_US = 1_735_689_600 * 10**6  # 2025-01-01


def generate(directory: Path, rows: int, entities: int, seed: int = 1) -> None:
    if (directory / "spine.parquet").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    words = np.array(["free", "basic", "pro", "team", "enterprise"])
    for j in range(3):
        t = pa.table({
            "user_id": rng.integers(0, entities, rows),
            "ts": pa.array(START_US + rng.integers(0, YEAR_US, rows), pa.timestamp("us", "UTC")),
            **{f"t{j}_f{k}": rng.random(rows) for k in range(4)},
            f"t{j}_n": rng.integers(0, 1000, rows),
            f"t{j}_s": words[rng.integers(0, len(words), rows)],
        })
        pq.write_table(t, directory / f"features_{j}.parquet")
    spine = pa.table({
        "user_id": rng.integers(0, entities, rows),
        "ts": pa.array(START_US + rng.integers(0, YEAR_US, rows), pa.timestamp("us", "UTC")),
    })
    pq.write_table(spine, directory / "spine.parquet")


def bench_pitstop(data: Path, repeat: int) -> dict:
    import pitstop as ps

    tables = [pq.read_table(data / f"features_{j}.parquet") for j in range(3)]
    spine = pq.read_table(data / "spine.parquet")
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        fs = ps.FeatureStore(Path(tmp) / "store")
        groups = []
        t0 = time.perf_counter()
        for j, t in enumerate(tables):
            g = fs.create_feature_group(f"t{j}", primary_key="user_id", event_time="ts")
            g.insert(t)
            groups.append(g)
        offline_rate = sum(t.num_rows for t in tables) / (time.perf_counter() - t0)
        g = fs.create_feature_group("online_t0", primary_key="user_id", event_time="ts", online=True)
        t0 = time.perf_counter()
        g.insert(tables[0])
        online_rate = tables[0].num_rows / (time.perf_counter() - t0)
        fv = fs.create_feature_view("v", features=[g.select_all() for g in groups])
        times = harness.repeat(lambda: fv.training_data(spine, spine_time="ts"), times=repeat)
        rows = fv.training_data(spine, spine_time="ts").num_rows
        fs.close()
    return {"engine": "pitstop", "times": times, "rows": rows, "offline_rows_s": offline_rate,
            "online_insert_rows_s": online_rate, "peak_rss_mb": harness.peak_rss_mb()}


def bench_duckdb(data: Path, repeat: int) -> dict:
    import duckdb

    con = duckdb.connect()
    con.execute(f"SET threads={os.cpu_count()}")
    f = [str(data / f"features_{j}.parquet") for j in range(3)]
    cols = ", ".join(f"f{j}.t{j}_f{k}" for j in range(3) for k in range(4))
    cols += ", " + ", ".join(f"f{j}.t{j}_n, f{j}.t{j}_s" for j in range(3))
    sql = (
        f"SELECT s.*, {cols} FROM read_parquet('{data / 'spine.parquet'}') s "
        + " ".join(
            f"ASOF LEFT JOIN read_parquet('{f[j]}') f{j} ON s.user_id = f{j}.user_id AND s.ts >= f{j}.ts"
            for j in range(3))
    )

    def run():
        out = con.sql(sql).arrow()
        return out.read_all() if hasattr(out, "read_all") else out

    times = harness.repeat(run, times=repeat)
    return {"engine": "duckdb", "times": times, "rows": run().num_rows, "peak_rss_mb": harness.peak_rss_mb()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--entities", type=int, default=100_000)
    ap.add_argument("--feast-python", default=os.environ.get("FEAST_PYTHON"))
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:  # child process: one engine, one JSON line
        fn = {"pitstop": bench_pitstop, "duckdb": bench_duckdb}[args.engine]
        print(json.dumps(fn(Path(args.data), args.repeat)))
        return
    data = ROOT / "bench-data" / f"store-{args.rows}-{args.entities}"
    generate(data, args.rows, args.entities)
    results = []
    for engine in ("pitstop", "duckdb"):
        print(f"running {engine} ...", flush=True)
        results.append(harness.run_child("benches.store", ["--engine", engine, "--data", str(data),
                                                            "--repeat", str(args.repeat)]))
    if args.feast_python:
        print("running feast ...", flush=True)
        proc = subprocess.run([args.feast_python, "-m", "benches.store_feast", str(data), "1"],
                              capture_output=True, text=True, cwd=ROOT, timeout=3600)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        results.append(json.loads(lines[-1]) if lines else
                       {"engine": "feast", "error": (proc.stderr.strip().splitlines() or ["?"])[-1]})
    best = harness.median(results[0]["times"])
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r.get("engine", "?"), "failed: " + r["error"][:80], "", ""])
            continue
        m = harness.median(r["times"])
        rows.append([r["engine"], m, m / best, r["peak_rss_mb"]])
    print(f"\n{harness.today()} · {harness.machine()} · "
          f"{harness.versions('pitstop', 'duckdb', 'deltalake', 'pyarrow')}")
    print(f"training data end to end: spine {args.rows:,} x 3 groups of {args.rows:,} rows, "
          f"{args.entities:,} entities (reads included)")
    print(harness.markdown_table(["engine", "median s", "x pitstop", "peak RSS MiB"], rows))
    p = results[0]
    print(f"\ninsert throughput: offline {p['offline_rows_s']:,.0f} rows/s, "
          f"online (offline + LMDB) {p['online_insert_rows_s']:,.0f} rows/s")


if __name__ == "__main__":
    main()
