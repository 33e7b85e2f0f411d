"""Feast's ``push()`` into its SQLite online store, on the events of ``benches.stream``.

Runs in the Feast benchmark environment (Feast is never a pitstop dependency; the
venv is the one ``make bench-store`` builds): ``<feast-python> -m benches.stream_feast
EVENTS BATCH SINGLES``; prints one JSON line.

A feature view ``e`` (entity ``k``; ``x`` and ``sent`` as float64, event time ``ts``)
fed by a ``PushSource`` (its batch source a one-row parquet file, which ``push`` with
``PushMode.ONLINE`` never reads). The events are the ones the pitstop job streams
(``k = i % 1000``, ``ts = 1.8e12 + i`` ms, ``x = i / 2``), handed to Feast as typed
pandas frames, so Feast neither reads a broker nor parses text — a generous setting:

- **sustained**: ``EVENTS`` events pushed in frames of ``BATCH`` rows (the pitstop
  job's micro-batch); events/s and the latency of each push (p50, p99);
- **single events**: ``SINGLES`` pushes of one row each (a service pushing an event as
  it happens), p50/p99 latency — against pitstop's ``fg.push`` of one row.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benches import harness

KEYS = 1000
T0_MS = 1_800_000_000_000


def frame(start: int, n: int):
    import numpy as np
    import pandas as pd

    i = np.arange(start, start + n, dtype=np.int64)
    return pd.DataFrame({"k": i % KEYS,
                         "ts": pd.to_datetime(T0_MS + i, unit="ms", utc=True),
                         "x": i * 0.5, "sent": np.zeros(n)})


def main() -> None:
    events, batch, singles = (int(a) for a in sys.argv[1:4])
    repo = Path(tempfile.mkdtemp(prefix="feast-push-"))
    try:
        run(repo, events, batch, singles)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def run(repo: Path, events: int, batch: int, singles: int) -> None:
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource, PushSource, ValueType
    from feast.data_source import PushMode
    from feast.types import Float64

    (repo / "feature_store.yaml").write_text(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        "online_store:\n  type: sqlite\n  path: online.db\n"
        "entity_key_serialization_version: 3\n")
    frame(0, 1).to_parquet(repo / "seed.parquet")
    fs = FeatureStore(repo_path=str(repo))
    key = Entity(name="key", join_keys=["k"], value_type=ValueType.INT64)
    src = PushSource(name="events", batch_source=FileSource(
        path=str(repo / "seed.parquet"), timestamp_field="ts"))
    fs.apply([key, FeatureView(name="e", entities=[key], ttl=timedelta(days=3650),
                               schema=[Field(name="x", dtype=Float64),
                                       Field(name="sent", dtype=Float64)],
                               source=src, online=True)])
    frames = [frame(i, min(batch, events - i)) for i in range(0, events, batch)]
    fs.push("events", frames[0], to=PushMode.ONLINE)  # warm-up (same rows again below)
    lat = []
    t0 = time.perf_counter()
    for f in frames:
        t1 = time.perf_counter()
        fs.push("events", f, to=PushMode.ONLINE)
        lat.append(time.perf_counter() - t1)
    secs = time.perf_counter() - t0
    one = []
    for j in range(singles):
        f = frame(events + j, 1)
        t1 = time.perf_counter()
        fs.push("events", f, to=PushMode.ONLINE)
        one.append(time.perf_counter() - t1)
    # Check that the pushes landed: the newest value of key 0.
    last = max(i for i in range(events + singles) if i % KEYS == 0)
    got = fs.get_online_features(features=["e:x"], entity_rows=[{"k": 0}]).to_dict()
    assert got["x"] == [last * 0.5], (got, last)
    import feast

    print(json.dumps({"engine": "feast", "version": feast.__version__, "events": events,
                      "seconds": secs, "rate": events / secs,
                      "batch_p50_ms": harness.percentile(lat, 50) * 1e3,
                      "batch_p99_ms": harness.percentile(lat, 99) * 1e3,
                      "single_p50_ms": harness.percentile(one, 50) * 1e3,
                      "single_p99_ms": harness.percentile(one, 99) * 1e3,
                      "singles": singles}))


if __name__ == "__main__":
    main()
