"""Feast's ``get_historical_features`` (DuckDB offline store) on the benchmark data.

Runs in the Feast benchmark environment (Feast is never a pitstop dependency):
``<feast-python> -m benches.store_feast DATA_DIR REPEAT``; prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from benches import harness


def main() -> None:
    data, repeat = Path(sys.argv[1]), int(sys.argv[2])
    import pandas as pd
    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float64, Int64, String

    repo = Path(tempfile.mkdtemp(prefix="feast-bench-"))
    (repo / "feature_store.yaml").write_text(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        "offline_store:\n  type: duckdb\n"
        "online_store:\n  type: sqlite\n  path: online.db\nentity_key_serialization_version: 3\n"
    )
    fs = FeatureStore(repo_path=str(repo))
    user = Entity(name="user", join_keys=["user_id"])
    views, refs = [], []
    for j in range(3):
        path = data / f"features_{j}.parquet"
        schema = pq.read_schema(path)
        fields = []
        for f in schema:
            if f.name in ("user_id", "ts"):
                continue
            t = {"double": Float64, "int64": Int64, "string": String}[str(f.type)]
            fields.append(Field(name=f.name, dtype=t))
            refs.append(f"t{j}:{f.name}")
        src = FileSource(path=str(path), timestamp_field="ts")
        views.append(FeatureView(name=f"t{j}", entities=[user], ttl=timedelta(days=3650),
                                 schema=fields, source=src))
    fs.apply([user, *views])
    t0 = time.perf_counter()
    spine = pd.read_parquet(data / "spine.parquet").rename(columns={"ts": "event_timestamp"})
    read = time.perf_counter() - t0
    times = []
    rows = 0
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fs.get_historical_features(entity_df=spine, features=refs).to_arrow()
        times.append(time.perf_counter() - t0)
        rows = out.num_rows
    print(json.dumps({"engine": "feast", "read_s": read, "times": times, "rows": rows,
                      "peak_rss_mb": harness.peak_rss_mb()}))


if __name__ == "__main__":
    main()
