"""Crash consistency: processes inserting into and materializing a feature group are
killed (SIGKILL) at random points, 50+ times, while another process reads it online.
After every kill the store is reopened (which catches the online store up) and must
hold: offline, only whole inserts, each exactly as written, in order; online, for every
key the newest offline row (greatest event time, then the later insert); and the
reader never saw an error, a missing table above all.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import crash_workers as W
import crash_workers
import pitstop as ps

ROUNDS = int(os.environ.get("PITSTOP_CRASH_ROUNDS", "50"))
SEED = 7
SCRIPT = str(Path(W.__file__))


def start(*args: str) -> subprocess.Popen:
    return crash_workers.start(SCRIPT, *args)


def newest_per_key(offline: pa.Table) -> dict[int, tuple[float, int]]:
    """The naive online oracle: per key, the row with the greatest event time, ties to
    the later row in insertion order."""
    out: dict[int, tuple] = {}
    for k, ts, x, b in zip(offline.column("k").to_pylist(), offline.column("ts").to_pylist(),
                           offline.column("x").to_pylist(), offline.column("b").to_pylist()):
        if k not in out or ts >= out[k][0]:
            out[k] = (ts, x, b)
    return {k: (x, b) for k, (_, x, b) in out.items()}


def check(store: Path, committed: int) -> int:
    """Reopens the store and checks both sides; returns the number of whole inserts."""
    fs = ps.FeatureStore(store)
    try:
        g = fs.get_feature_group("g")
        offline = g.read()
        batches = offline.column("b").to_numpy()
        n = g.offline.version() + 1
        assert n >= committed, f"an insert that returned was lost ({n} < {committed})"
        # Whole inserts only, in order, each exactly as written.
        assert offline.num_rows == n * W.BATCH
        for b in range(n):
            part = offline.slice(b * W.BATCH, W.BATCH)
            assert (batches[b * W.BATCH:(b + 1) * W.BATCH] == b).all()
            assert part.equals(W.batch(SEED, b).cast(part.schema)), f"batch {b} differs"
        # Online equals the newest offline row per key.
        want = newest_per_key(offline)
        keys = sorted(want)
        got = fs.online.read("g.v1", keys, now=4_000_000_000_000_000_000)
        assert got.column("status").to_pylist() == ["found"] * len(keys)
        assert list(zip(got.column("x").to_pylist(), got.column("b").to_pylist())) == \
            [want[k] for k in keys]
        assert fs.online.watermark("g.v1") == n - 1
        assert fs.online.tables() == ["g.v1"]
        return n
    finally:
        fs.close()


def test_kills_at_random_points_lose_nothing_and_never_hide_the_table(tmp_path):
    store = tmp_path / "store"
    fs = ps.FeatureStore(store)
    fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    fs.get_feature_group("g").insert(W.batch(SEED, 0))
    fs.close()
    rng = random.Random(SEED)
    reader = start("read", str(store), "3600")
    committed, kills, outcomes = 1, 0, {"insert": 0, "materialize": 0}
    try:
        for round_ in range(ROUNDS):
            mode = "insert" if round_ % 2 == 0 else "materialize"
            worker = start(mode, str(store), str(SEED)) if mode == "insert" else \
                start(mode, str(store))
            time.sleep(rng.uniform(0.0, 0.6))
            worker.send_signal(signal.SIGKILL)
            out, _ = worker.communicate(timeout=60)
            assert worker.returncode == -signal.SIGKILL
            kills += 1
            done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
            if done:
                committed = max(committed, done[-1] + 1)
            outcomes[mode] += len(out.splitlines())
            committed = check(store, committed)
            assert reader.poll() is None, reader.stderr.read()
    finally:
        reader.send_signal(signal.SIGTERM)
    out, err = reader.communicate(timeout=60)
    print(f"{kills} kills: {committed} whole inserts, {outcomes['insert']} inserts and "
          f"{outcomes['materialize']} rebuilds completed before their kills")
    assert "Error" not in err, err


def test_the_reader_counts_its_reads(tmp_path):
    """The reader process reports (reads, errors) when it ends by itself."""
    store = tmp_path / "store"
    fs = ps.FeatureStore(store)
    fs.create_feature_group("g", primary_key="k", event_time="ts", online=True).insert(
        W.batch(SEED, 0))
    fs.close()
    reader = start("read", str(store), "1")
    out, err = reader.communicate(timeout=60)
    reads, errors = map(int, out.split())
    assert reads > 10 and errors == 0, err


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
