"""The point-in-time join on local Spark: pitstop's kernel per bucket against pandas
``merge_asof`` per bucket (the same cogroup plumbing, only the per-bucket function
differs), and the single-machine ``pitstop.pit_join`` on the same data.

    python -m benches.spark                  # 1M spine x 1M feature rows
    python -m benches.spark --rows 200000 --runs 1

The data is written to Parquet first and read back by Spark (as a Delta table would
be), so every Spark run reads, shuffles, joins and writes (to the ``noop`` sink: the
whole plan runs, nothing is kept). Each figure is the median of ``--runs`` runs after
one warm-up; release build only (``make bench-spark`` builds it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import pitstop as ps
from pitstop import spark as pss

from .harness import machine, markdown_table, median, repeat, today, versions

KEYS_PER_ROW = 10  # feature rows per key, on average


def make_data(rows: int, seed: int = 0) -> tuple[pa.Table, pa.Table]:
    """A spine and a feature table of ``rows`` rows each: int64 user ids (rows / 10 of
    them), millisecond timestamps over a year, two float features and a count."""
    rng = np.random.default_rng(seed)
    users = max(1, rows // KEYS_PER_ROW)
    start = np.datetime64("2025-01-01T00:00:00", "ms").astype(np.int64)
    year_ms = 365 * 86_400_000

    def times(n: int) -> pa.Array:
        return pa.array(start + rng.integers(0, year_ms, n), pa.timestamp("ms", "UTC"))

    spine = pa.table({
        "user_id": pa.array(rng.integers(0, users, rows)),
        "t": times(rows),
        "label": pa.array(np.arange(rows)),
    })
    feats = pa.table({
        "user_id": pa.array(rng.integers(0, users, rows)),
        "ts": times(rows),
        "spend_7d": pa.array(rng.random(rows) * 100),
        "sessions_7d": pa.array(rng.integers(0, 50, rows)),
        "score": pa.array(rng.random(rows)),
    })
    return spine, feats


def pandas_bucket(step: Any, spine: pa.Table, feats: pa.Table) -> pa.Table:
    """The per-bucket join with pandas ``merge_asof``: the peer. Same result as the
    kernel on this data (no null keys or times): equal event times go to the row last
    in input order, because the stable sort by time keeps the row-id order."""
    import pandas as pd

    key, t, ts = step.spine_keys[0], step.spine_time, step.time
    s = spine.to_pandas()
    s["__pos"] = np.arange(len(s))
    f = feats.to_pandas().sort_values(pss.ROW_ID, kind="stable").sort_values(ts, kind="stable")
    f = f.drop(columns=[pss.ROW_ID]).rename(columns={step.feature_keys[0]: key})
    m = pd.merge_asof(
        s.sort_values(t, kind="stable"), f, left_on=t, right_on=ts, by=key,
        allow_exact_matches=step.allow_exact_matches,
        tolerance=None if step.ttl_ns is None else pd.Timedelta(step.ttl_ns, "ns"),
    ).sort_values("__pos")
    out = m.drop(columns=["__pos", ts])
    return pa.Table.from_pandas(out, preserve_index=False).cast(
        pa.schema([*spine.schema, *(feats.schema.field(c) for c in out.columns[spine.num_columns:])])
    )


def spark_session(partitions: int):
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    session = (
        SparkSession.builder.master(f"local[{os.cpu_count()}]")
        .appName("pitstop-bench")
        .config("spark.sql.shuffle.partitions", str(partitions))
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "6g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    return session


def spark_join(spine_df, feats_df, *, buckets: int | None, bucket_fn=None):
    """The Spark plan of pitstop.spark.pit_join, with an optional other bucket function."""
    if bucket_fn is None:
        return pss.pit_join(spine_df, feats_df, on="user_id", spine_time="t", feature_time="ts",
                            ttl="30d", buckets=buckets)
    step = pss._Step(label="feature table", spine_time="t", spine_keys=("user_id",),
                     feature_keys=("user_id",), time="ts", created=None, ttl_ns=30 * 86_400 * 10**9,
                     prefix=None, allow_exact_matches=True, knowledge_time=False)
    if buckets is None:
        buckets = pss.default_buckets(spine_df.sparkSession, [spine_df, feats_df])
    return pss._join_one(spine_df, feats_df, step, buckets, bucket_fn)


def run(df) -> None:
    df.write.format("noop").mode("overwrite").save()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows of the spine and of the feature table")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per engine (median reported)")
    ap.add_argument("--partitions", type=int, default=2 * (os.cpu_count() or 1), help="spark.sql.shuffle.partitions")
    ap.add_argument("--sweep", type=int, nargs="*", default=[8, 32, 128, 512],
                    help="bucket counts to time pitstop on Spark with (second table)")
    args = ap.parse_args(argv)
    # pyspark warns that it does not fully support pandas 3; its Arrow path uses none.
    warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas", FutureWarning)

    spine, feats = make_data(args.rows)
    local = ps.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts", ttl="30d")
    rows: list[list[Any]] = []
    t_local = median(repeat(
        lambda: ps.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts", ttl="30d"),
        times=args.runs))

    spark = spark_session(args.partitions)
    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        pq.write_table(spine, f"{tmp}/spine.parquet", row_group_size=131_072)
        pq.write_table(feats, f"{tmp}/feats.parquet", row_group_size=131_072)
        spine_df = spark.read.parquet(f"{tmp}/spine.parquet")
        feats_df = spark.read.parquet(f"{tmp}/feats.parquet")
        default = pss.default_buckets(spark, [spine_df, feats_df])

        # Both Spark paths must give the local result before anything is timed.
        for name, fn in [("pitstop", None), ("pandas", pandas_bucket)]:
            got = spark_join(spine_df, feats_df, buckets=None, bucket_fn=fn).toArrow().sort_by("label")
            assert got.column_names == local.column_names and got.num_rows == local.num_rows
            for col in got.column_names:
                same = got.column(col).equals(local.column(col).cast(got.schema.field(col).type))
                assert same, f"{name} on Spark differs from pitstop.pit_join in column {col!r}"
            print(f"checked: {name} on Spark == pitstop.pit_join ({got.num_rows:,} rows)", file=sys.stderr)

        t_pitstop = median(repeat(lambda: run(spark_join(spine_df, feats_df, buckets=None)), times=args.runs))
        t_pandas = median(repeat(
            lambda: run(spark_join(spine_df, feats_df, buckets=None, bucket_fn=pandas_bucket)), times=args.runs))
        # The plumbing alone: read, bucket, shuffle, hand each bucket to Python and back.
        t_plumbing = median(repeat(
            lambda: run(spark_join(spine_df, feats_df, buckets=None, bucket_fn=_spine_only)), times=args.runs))

        sweep = []
        for b in args.sweep:
            t0 = time.perf_counter()
            times_b = repeat(lambda: run(spark_join(spine_df, feats_df, buckets=b)), times=max(1, args.runs - 1),
                             warmup=0)
            sweep.append([b, f"{args.rows / b:,.0f}", median(times_b)])
            print(f"buckets={b}: {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    spark.stop()

    fastest = min(t_pitstop, t_pandas)
    rows = [
        ["pitstop on Spark (kernel per bucket)", default, t_pitstop, t_pitstop / fastest],
        ["pandas merge_asof on Spark (per bucket)", default, t_pandas, t_pandas / fastest],
        ["Spark plumbing alone (bucket fn returns the spine)", default, t_plumbing, t_plumbing / fastest],
        ["pitstop.pit_join, one process, in memory", "-", t_local, t_local / fastest],
    ]
    n = f"{args.rows:,}"
    print(f"\n### Point-in-time join on Spark: {n} spine x {n} feature rows, TTL 30d\n")
    print(f"{machine()}; {today()}; Spark local[{os.cpu_count()}], "
          f"{args.partitions} shuffle partitions; {versions('pyspark', 'pyarrow', 'pandas')}; "
          f"median of {args.runs} runs, seconds\n")
    print(markdown_table(["engine", "buckets", "median s", "vs fastest Spark"], rows))
    print("\npitstop on Spark by bucket count:\n")
    print(markdown_table(["buckets", "spine rows per bucket", "median s"], sweep))


def _spine_only(step: Any, spine: pa.Table, feats: pa.Table) -> pa.Table:
    """A bucket function that joins nothing: the spine plus all-null feature columns."""
    cols = [f for f in feats.schema if f.name not in (pss.ROW_ID, step.time, *step.feature_keys)]
    out = spine
    for f in cols:
        out = out.append_column(f.name, pa.nulls(spine.num_rows, f.type))
    return out


if __name__ == "__main__":
    main()
