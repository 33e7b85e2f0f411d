"""Crash consistency of online aggregation state: processes inserting raw events (late
ones included) into a group with an online aggregation, or rebuilding that state, are
killed (SIGKILL) at random points; after every kill the reopened store must serve, for
every key, exactly what training data computes from the committed events."""

from __future__ import annotations

import datetime as dt
import os
import random
import signal
import subprocess
from pathlib import Path

import pyarrow as pa

import agg_crash_workers as W
import crash_workers
import pitstop as ps
from pitstop import agg

ROUNDS = int(os.environ.get("PITSTOP_AGG_CRASH_ROUNDS", "24"))
SEED = 11
SCRIPT = str(Path(W.__file__))


def start(*args: str) -> subprocess.Popen:
    return crash_workers.start(SCRIPT, *args)


def check(store: Path, committed: int) -> int:
    fs = ps.FeatureStore(store)
    try:
        g = fs.get_feature_group("e")
        n = g.offline.version() + 1
        assert n >= committed, f"an insert that returned was lost ({n} < {committed})"
        fv = fs.get_feature_view("v")
        at_us = W.BASE_US + n * W.STEP_US + 1
        keys = list(range(W.KEYS))
        spine = pa.table({"k": keys, "t": pa.array([at_us] * len(keys), pa.timestamp("us"))})
        want = fv.training_data(spine, spine_time="t").select(fv.features)
        got = fv.get_feature_vectors({"k": keys}, now=dt.datetime(1970, 1, 1) +
                                     dt.timedelta(microseconds=at_us))
        for f in fv.features:
            a = want.column(f).to_pylist()
            b = got.column(f).to_pylist()
            for k, x, y in zip(keys, a, b):
                if isinstance(x, float) and isinstance(y, float):
                    assert abs(x - y) <= 1e-9 * max(abs(x), abs(y)), (f, k, x, y)
                else:
                    assert x == y, (f, k, x, y)
        return n
    finally:
        fs.close()


def test_aggregation_state_survives_kills_at_random_points(tmp_path):
    store = tmp_path / "store"
    fs = ps.FeatureStore(store)
    g = fs.create_feature_group("e", primary_key="k", event_time="ts")
    g.insert(W.batch(SEED, 0))
    a = fs.create_aggregation("a", source=g, online=True, aggregations=[
        agg.count(windows=["1h", "1d"]), agg.sum("x", windows=["1h", "1d"]),
        agg.max("x", windows=["1h"]), agg.std("x", windows=["1d"]), agg.last("m")])
    fs.create_feature_view("v", features=[a.select_all()])
    fs.close()
    rng = random.Random(SEED)
    committed, completed = 1, 0
    for round_ in range(ROUNDS):
        mode = "materialize" if round_ % 3 == 2 else "insert"
        worker = start(mode, str(store), str(SEED)) if mode == "insert" else start(mode, str(store))
        try:
            worker.wait(timeout=rng.uniform(0.05, 0.8))
        except subprocess.TimeoutExpired:
            pass
        worker.send_signal(signal.SIGKILL)
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == -signal.SIGKILL, err
        done = [int(line.split()[1]) for line in out.splitlines() if line.startswith("committed")]
        if done:
            committed = max(committed, done[-1] + 1)
        completed += len(out.splitlines())
        committed = check(store, committed)
    print(f"{ROUNDS} kills: {committed} whole inserts; {completed} inserts/rebuilds completed "
          "before their kills")
    assert committed > 3
