"""Processes tests/test_agg_crash.py kills (run as scripts): ``insert STORE SEED``
inserts batches of raw events into group ``e`` (whose online aggregation ``a`` is kept by
each insert) forever, printing ``committed N`` after each; ``materialize STORE`` rebuilds
the aggregation's online state forever. Each prints ``ready`` once its store is open."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

KEYS = 60
BATCH = 800
BASE_US = 1_700_000_000_000_000
STEP_US = 600 * 10**6  # each batch moves time 10 minutes on; events reach 2 hours back


def batch(seed: int, n: int) -> pa.Table:
    rng = np.random.default_rng([seed, n])
    newest = BASE_US + n * STEP_US
    x = rng.normal(10, 5, BATCH)
    x[rng.random(BATCH) < 0.1] = np.nan
    return pa.table({
        "k": rng.integers(0, KEYS, BATCH),
        "ts": pa.array(newest - rng.integers(0, 7200, BATCH) * 10**6, pa.timestamp("us")),
        "x": pa.array(x, from_pandas=True),
        "m": pa.array(rng.choice(["a", "b", "c"], BATCH)),
    })


def main(argv: list[str]) -> None:
    import pitstop as ps

    mode, store = argv[0], argv[1]
    fs = ps.FeatureStore(store)
    g = fs.get_feature_group("e")
    a = fs.get_aggregation("a")
    print("ready", flush=True)
    if mode == "insert":
        seed = int(argv[2])
        n = g.offline.version() + 1
        while True:
            g.insert(batch(seed, n))
            print(f"committed {n}", flush=True)
            n += 1
    elif mode == "materialize":
        while True:
            a.materialize()
            print("materialized", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
