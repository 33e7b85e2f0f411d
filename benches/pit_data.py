"""Generated data for the point-in-time join benchmark (``benches.pit``).

Deterministic (numpy, fixed seeds), written once per size as Parquet under
``bench-data/<size>/`` and reused while its ``meta.json`` matches the generator:

- ``spine.parquet``: ``user_id`` int64, ``ts`` timestamp[us], ``label`` bool, and
  ``row_id`` int64 (0..n-1, the spine row's identity: peers reorder rows, so the
  correctness check matches rows by it);
- ``f1.parquet`` .. ``f3.parquet``: ``user_id`` int64, ``ts`` timestamp[us], four
  float64 features ``t<i>_x0..t<i>_x3``, one int64 ``t<i>_n`` and one plain string
  ``t<i>_s`` (16 distinct values). Feature names carry the table's prefix, so no engine
  needs suffixes and all produce the same output columns.

Keys are uniform over the entities, times uniform random microseconds over one year
(2025), rows in random order (nothing is sorted). With ~10 feature rows per entity and
table, equal (user_id, ts) pairs or a spine time equal to a feature time are very
unlikely, so tie-breaking rules (which differ between engines) almost never matter.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "bench-data"
RESULTS_DIR = ROOT / "bench-results"

GENERATOR_VERSION = 1
FEATURE_TABLES = ("f1", "f2", "f3")
YEAR_START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
YEAR_US = 365 * 86_400 * 1_000_000
CATEGORIES = [f"category_{i:02d}" for i in range(16)]


@dataclass(frozen=True)
class Size:
    name: str
    spine_rows: int
    feature_rows: int  # per feature table
    entities: int
    sample_rows: int  # spine rows whose output the engines must agree on


SIZES = {
    "XS": Size("XS", 100_000, 100_000, 10_000, 10_000),  # a smoke test, seconds
    "S": Size("S", 1_000_000, 1_000_000, 100_000, 100_000),
    "L": Size("L", 10_000_000, 10_000_000, 1_000_000, 100_000),
}


def prefix(table: str) -> str:
    """The column prefix of a feature table: ``f1`` -> ``t1_``."""
    return f"t{table[1:]}_"


def feature_columns(table: str) -> list[str]:
    """The value columns of a feature table (everything but ``user_id`` and ``ts``)."""
    p = prefix(table)
    return [f"{p}x0", f"{p}x1", f"{p}x2", f"{p}x3", f"{p}n", f"{p}s"]


SPINE_COLUMNS = ["user_id", "ts", "label", "row_id"]
#: The columns every engine's output must have, in this order.
OUTPUT_COLUMNS = SPINE_COLUMNS + [c for t in FEATURE_TABLES for c in feature_columns(t)]
#: The columns the correctness check compares: the row id and one float per table.
CHECK_COLUMNS = ["row_id"] + [f"{prefix(t)}x0" for t in FEATURE_TABLES]


def paths(size: Size) -> dict[str, Path]:
    d = DATA_DIR / size.name
    return {name: d / f"{name}.parquet" for name in ("spine", *FEATURE_TABLES)}


def sample_ids(size: Size) -> np.ndarray:
    """The spine row ids the correctness check compares (sorted, deterministic)."""
    rng = np.random.default_rng(7)
    k = min(size.sample_rows, size.spine_rows)
    return np.sort(rng.choice(size.spine_rows, size=k, replace=False)).astype(np.int64)


def _keys_and_times(rng: np.random.Generator, n: int, entities: int):
    import pyarrow as pa

    keys = pa.array(rng.integers(0, entities, n, dtype=np.int64))
    ts = rng.integers(0, YEAR_US, n, dtype=np.int64) + YEAR_START_US
    return keys, pa.array(ts.view("datetime64[us]"), type=pa.timestamp("us"))


def _spine(size: Size):
    import pyarrow as pa

    rng = np.random.default_rng(1)
    keys, ts = _keys_and_times(rng, size.spine_rows, size.entities)
    label = pa.array(rng.random(size.spine_rows) < 0.1)
    row_id = pa.array(np.arange(size.spine_rows, dtype=np.int64))
    return pa.table([keys, ts, label, row_id], names=SPINE_COLUMNS)


def _feature_table(size: Size, table: str, seed: int):
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    n = size.feature_rows
    keys, ts = _keys_and_times(rng, n, size.entities)
    cols = [keys, ts]
    cols += [pa.array(rng.standard_normal(n)) for _ in range(4)]
    cols.append(pa.array(rng.integers(0, 1_000, n, dtype=np.int64)))
    codes = pa.array(rng.integers(0, len(CATEGORIES), n, dtype=np.int32))
    # A plain string column (not dictionary-typed); Parquet may still dictionary-encode
    # it on disk, which every reader decodes back to plain strings.
    cols.append(pa.DictionaryArray.from_arrays(codes, pa.array(CATEGORIES)).cast(pa.string()))
    return pa.table(cols, names=["user_id", "ts", *feature_columns(table)])


def ensure(size: Size, log=print) -> dict[str, Path]:
    """Generates the data of ``size`` unless a matching copy is already on disk."""
    import pyarrow.parquet as pq

    p = paths(size)
    d = DATA_DIR / size.name
    meta_path = d / "meta.json"
    meta = {"generator": GENERATOR_VERSION, **asdict(size)}
    if meta_path.exists() and all(f.exists() for f in p.values()):
        if json.loads(meta_path.read_text()) == meta:
            return p
    d.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # written last: a partial run regenerates
    log(f"generating size {size.name} into {d} ...")
    pq.write_table(_spine(size), p["spine"])
    for i, table in enumerate(FEATURE_TABLES):
        pq.write_table(_feature_table(size, table, seed=11 + i), p[table])
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return p
