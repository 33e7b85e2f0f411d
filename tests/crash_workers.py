"""Processes the crash-consistency test kills (run as scripts, not imported by pytest).

``insert STORE SEED``: inserts batches into group ``g`` forever, printing ``committed
N`` after each insert returns. ``materialize STORE``: rebuilds ``g``'s online table
forever. ``read STORE SECONDS``: reads every key of ``g`` online in a loop and prints
``reads errors`` at the end; any exception (a missing table above all) is an error.
Each prints ``ready`` once its store is open, so the killer's clock starts there.
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow as pa

KEYS = 500
BATCH = 1_500


def start(script: str, *args: str):
    """Starts worker ``script`` with ``args`` and waits for its ``ready`` line (the
    killer's clock starts there)."""
    import subprocess

    p = subprocess.Popen([sys.executable, script, *args], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        raise AssertionError(f"worker {args} did not start: {line!r} {p.stderr.read()}")
    return p


def batch(seed: int, n: int) -> pa.Table:
    """Batch ``n``: random keys and event times (ties included), ``b`` = the batch,
    ``r`` = the row, so the test can tell whole inserts from partial ones."""
    rng = np.random.default_rng([seed, n])
    return pa.table({
        "k": rng.integers(0, KEYS, BATCH),
        "ts": pa.array(1_700_000_000_000_000 + rng.integers(0, 50, BATCH) * 1_000_000,
                       pa.timestamp("us")),
        "b": np.full(BATCH, n, dtype=np.int64),
        "r": np.arange(BATCH, dtype=np.int64),
        "x": rng.random(BATCH),
    })


def main(argv: list[str]) -> None:
    import pitstop as ps

    mode, store = argv[0], argv[1]
    if mode == "read":
        online = ps.OnlineStore(store, readonly=True)
        reader = online.reader("g.v1", features=["x", "b"])
        keys = list(range(KEYS))
        print("ready", flush=True)
        reads = errors = 0
        end = time.monotonic() + float(argv[2])
        while time.monotonic() < end:
            try:
                reader.matrix(keys, now=4_000_000_000_000_000_000)
                online.read("g.v1", keys[:10], now=4_000_000_000_000_000_000)
            except Exception as e:  # noqa: BLE001 - every error counts
                errors += 1
                print(f"{type(e).__name__}: {e}", file=sys.stderr, flush=True)
            reads += 1
        print(reads, errors, flush=True)
        return
    fs = ps.FeatureStore(store)
    g = fs.get_feature_group("g")
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
            g.materialize()
            print("materialized", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
