"""One engine's run of the point-in-time join benchmark, in its own process.

``python -m benches.pit_child --engine E --size S --repeat N --warmup W --sample OUT``
(started by ``benches.pit`` through ``harness.run_child``, with the thread-count
variables already in its environment). It reads the Parquet files (timed as the read),
runs the whole 3-table as-of join W + N times (the median of the last N is the join
time; each run's output is dropped, outside the timing, before the next starts), then,
outside any timing, writes the check columns of the sample rows of the last output to
``OUT`` (Parquet, sorted by ``row_id``) and prints one JSON line.

The join everywhere: a left join keeping every spine row, backward (feature time <=
spine time, exact matches allowed), by ``user_id``, the three feature tables in turn.
What each engine counts as its join (sorting included where the engine needs sorted
input, since pitstop takes unsorted input; the output is always complete and in memory):

- ``pitstop``: one ``pit_join`` call on the pyarrow Tables as read; output a pyarrow
  Table in spine order.
- ``duckdb``: one query chaining three ``ASOF LEFT JOIN``s over DuckDB in-memory tables
  (loaded from Parquet by DuckDB: that is the read), fetched to a pyarrow Table
  (``to_arrow_table()``). ``duckdb-table`` materializes it as ``CREATE TABLE AS``
  instead (no conversion to Arrow).
- ``polars``: a lazy plan sorting the spine and each feature table by ``ts`` and
  chaining three ``join_asof(by="user_id", strategy="backward")``, collected by the
  default (in-memory) engine. ``polars-stream`` sorts by (``user_id``, ``ts``) and
  collects with the streaming engine, as polars' docs advise to bound memory.
- ``pandas``: ``sort_values("ts")`` on each side and three ``merge_asof(by="user_id")``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
from typing import Any

from . import harness
from .pit_data import CHECK_COLUMNS, FEATURE_TABLES, SIZES, feature_columns, paths, sample_ids

ENGINES = ("pitstop", "duckdb", "duckdb-table", "polars", "polars-stream", "pandas")


class Engine:
    """read() -> state (timed); join(state) -> output (timed, repeated); the rest is
    inspection outside the timing."""

    package = ""
    modules: tuple[str, ...] = ()

    def prepare(self) -> None:
        """Imports the engine's modules, so that neither the read nor the first join
        pays for the import."""
        import importlib

        for m in self.modules:
            importlib.import_module(m)

    def read(self, files: dict[str, str]) -> Any:
        raise NotImplementedError

    def join(self, state: Any) -> Any:
        raise NotImplementedError

    def rows_and_columns(self, out: Any) -> tuple[int, list[str]]:
        raise NotImplementedError

    def sample(self, out: Any, ids: Any) -> Any:
        """The check columns of the rows whose row_id is in ``ids``, as a pyarrow Table
        sorted by row_id."""
        raise NotImplementedError

    def extra(self, state: Any, out: Any) -> dict[str, Any]:
        return {}

    def release(self, out: Any) -> None:
        """Frees an output before the next run (outside the timing)."""


class Pitstop(Engine):
    package = "pitstop"
    modules = ("pitstop", "pyarrow.parquet", "pyarrow.dataset", "pyarrow.compute")

    def read(self, files):
        import pyarrow.parquet as pq

        return {name: pq.read_table(path) for name, path in files.items()}

    def join(self, state):
        import pitstop

        return pitstop.pit_join(
            state["spine"],
            [state[t] for t in FEATURE_TABLES],
            on="user_id",
            spine_time="ts",
            feature_time="ts",
        )

    def rows_and_columns(self, out):
        return out.num_rows, out.column_names

    def sample(self, out, ids):
        return _arrow_sample(out, ids)

    def extra(self, state, out):
        # The contract: the spine's rows in the spine's order. Peers need not keep it.
        return {"spine_order": out.column("row_id").equals(state["spine"].column("row_id"))}


def _arrow_sample(table, ids):
    import pyarrow as pa
    import pyarrow.compute as pc

    t = table.select(CHECK_COLUMNS)
    t = t.filter(pc.is_in(t.column("row_id"), value_set=pa.array(ids)))
    return t.sort_by("row_id")


DUCKDB_QUERY = """
SELECT s.*, {features}
FROM spine AS s
{joins}
"""


def duckdb_query() -> str:
    features = ", ".join(
        f"{t}.{c}" for t in FEATURE_TABLES for c in feature_columns(t)
    )
    joins = "\n".join(
        f"ASOF LEFT JOIN {t} ON s.user_id = {t}.user_id AND s.ts >= {t}.ts"
        for t in FEATURE_TABLES
    )
    return DUCKDB_QUERY.format(features=features, joins=joins)


class DuckDB(Engine):
    package = "duckdb"
    modules = ("duckdb",)

    def read(self, files):
        import duckdb

        con = duckdb.connect(config={"threads": int(os.environ["PITSTOP_BENCH_THREADS"])})
        for name, path in files.items():
            con.execute(f"CREATE TABLE {name} AS SELECT * FROM read_parquet('{path}')").fetchall()
        return con

    def join(self, con):
        return con.sql(duckdb_query()).to_arrow_table()

    def rows_and_columns(self, out):
        return out.num_rows, out.column_names

    def sample(self, out, ids):
        return _arrow_sample(out, ids)

    def extra(self, con, out):
        settings = con.sql(
            "SELECT name, value FROM duckdb_settings() "
            "WHERE name IN ('threads', 'memory_limit', 'preserve_insertion_order')"
        ).fetchall()
        return {"settings": dict(settings)}


class DuckDBTable(DuckDB):
    """The same query materialized as a DuckDB table instead of fetched to Arrow."""

    def join(self, con):
        con.execute("CREATE OR REPLACE TABLE result AS " + duckdb_query()).fetchall()
        return con

    def release(self, con):
        con.execute("DROP TABLE IF EXISTS result").fetchall()

    def rows_and_columns(self, con):
        n = con.sql("SELECT count(*) FROM result").fetchall()[0][0]
        return n, [c[0] for c in con.sql("DESCRIBE result").fetchall()]

    def sample(self, con, ids):
        import pyarrow as pa

        sample_ids = pa.table({"row_id": pa.array(ids)})  # noqa: F841 (read by DuckDB)
        cols = ", ".join(CHECK_COLUMNS)
        return con.sql(
            f"SELECT {cols} FROM result WHERE row_id IN (SELECT row_id FROM sample_ids) "
            "ORDER BY row_id"
        ).to_arrow_table()

    def extra(self, con, out):
        return DuckDB.extra(self, con, out)


class Polars(Engine):
    package = "polars"
    modules = ("polars",)
    streaming = False

    def read(self, files):
        import polars as pl

        return {name: pl.read_parquet(path) for name, path in files.items()}

    def join(self, state):
        order = ["user_id", "ts"] if self.streaming else "ts"
        out = state["spine"].lazy().sort(order)
        for t in FEATURE_TABLES:
            out = out.join_asof(
                state[t].lazy().sort(order), on="ts", by="user_id", strategy="backward"
            )
        return out.collect(engine="streaming" if self.streaming else "in-memory")

    def rows_and_columns(self, out):
        return out.height, out.columns

    def sample(self, out, ids):
        import polars as pl

        return (
            out.select(CHECK_COLUMNS)
            .filter(pl.col("row_id").is_in(ids.tolist()))
            .sort("row_id")
            .to_arrow()
        )


class PolarsStreaming(Polars):
    streaming = True


class Pandas(Engine):
    package = "pandas"
    modules = ("pandas", "pyarrow.parquet", "pyarrow.dataset")

    def read(self, files):
        import pandas as pd

        return {name: pd.read_parquet(path) for name, path in files.items()}

    def join(self, state):
        import pandas as pd

        out = state["spine"].sort_values("ts")
        for t in FEATURE_TABLES:
            out = pd.merge_asof(
                out, state[t].sort_values("ts"), on="ts", by="user_id", direction="backward"
            )
        return out

    def rows_and_columns(self, out):
        return len(out), list(out.columns)

    def sample(self, out, ids):
        import pyarrow as pa

        s = out.loc[out["row_id"].isin(ids), CHECK_COLUMNS].sort_values("row_id")
        return pa.Table.from_pandas(s, preserve_index=False)


IMPLEMENTATIONS = {
    "pitstop": Pitstop,
    "duckdb": DuckDB,
    "duckdb-table": DuckDBTable,
    "polars": Polars,
    "polars-stream": PolarsStreaming,
    "pandas": Pandas,
}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benches.pit_child")
    ap.add_argument("--engine", choices=ENGINES, required=True)
    ap.add_argument("--size", choices=sorted(SIZES), required=True)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--sample", required=True, help="Parquet file for the sample rows")
    args = ap.parse_args(argv)

    threads = int(os.environ["PITSTOP_BENCH_THREADS"])
    import pyarrow as pa  # every engine's sample goes through pyarrow

    pa.set_cpu_count(threads)
    size = SIZES[args.size]
    files = {name: str(p) for name, p in paths(size).items()}
    engine = IMPLEMENTATIONS[args.engine]()
    engine.prepare()

    read_s, state = harness.timed(lambda: engine.read(files))
    rss_after_read = harness.peak_rss_mb()

    times: list[float] = []
    cpu: list[tuple[float, float]] = []  # (user, system) seconds of this process
    out = None
    for i in range(args.warmup + args.repeat):
        if out is not None:
            engine.release(out)
            out = None
            gc.collect()
        cpu0 = os.times()
        seconds, out = harness.timed(lambda: engine.join(state))
        if i >= args.warmup:
            times.append(seconds)
            cpu1 = os.times()
            cpu.append((cpu1.user - cpu0.user, cpu1.system - cpu0.system))
        print(f"run {i}: {seconds:.3f} s", file=sys.stderr, flush=True)
    peak = harness.peak_rss_mb()

    rows, columns = engine.rows_and_columns(out)
    import pyarrow.parquet as pq

    pq.write_table(engine.sample(out, sample_ids(size)), args.sample)
    result = {
        "engine": args.engine,
        "version": harness.versions(engine.package),
        "read_s": read_s,
        "join_s": harness.median(times),
        "join_times": times,
        "join_cpu_s": harness.median([u + s for u, s in cpu]),
        "join_user_s": harness.median([u for u, _ in cpu]),
        "join_sys_s": harness.median([s for _, s in cpu]),
        "rows": rows,
        "columns": columns,
        "rss_after_read_mb": rss_after_read,
        "peak_rss_mb": peak,
        **engine.extra(state, out),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
