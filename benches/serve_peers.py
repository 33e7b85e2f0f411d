"""The peers of ``benches.serve``, each a server process of its own:

- ``python -m benches.serve_peers fastapi LMDB_DIR PORT TABLES F``: FastAPI (uvicorn,
  one process) over python-lmdb in the layout of ``benches.online`` (one database per
  table, key = the entity as big-endian u64, value = its float32 features), answering
  ``/v1/features/bench`` in pitstop's JSON shape;
- ``<feast-python> -m benches.serve_peers feast-setup REPO DATA_DIR N``: a Feast repo
  (SQLite online store) with the Parquet files of ``DATA_DIR`` applied and
  materialized; the caller then runs ``feast serve`` in it.
"""


import struct
import sys
from pathlib import Path


def fastapi_main(lmdb_dir: str, port: int, tables: list[str], f: int) -> None:
    import lmdb
    import numpy as np
    import uvicorn
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse, PlainTextResponse

    env = lmdb.open(lmdb_dir, readonly=True, max_dbs=len(tables) + 1, lock=True)
    dbs = [env.open_db(t.encode(), create=False) for t in tables]
    names = [f"{t}_{k}" for t in tables for k in range(f)]
    with env.begin(buffers=True) as txn:  # map every page in this process (warm)
        for db in dbs:
            for _ in txn.cursor(db=db).iternext(keys=False, values=True):
                pass
    app = FastAPI()

    @app.get("/healthz")
    def healthz():
        return PlainTextResponse("ok\n")

    @app.post("/v1/features/bench")
    async def features(req: Request):
        body = await req.json()
        values, status = [], []
        with env.begin(buffers=True) as txn:
            for u in body["entities"]["user_id"]:
                row, st = [], []
                for db in dbs:
                    v = txn.get(struct.pack(">Q", u), db=db)
                    if v is None:
                        row += [None] * f
                        st += ["missing"] * f
                    else:
                        row += np.frombuffer(v, np.float32).tolist()
                        st += ["found"] * f
                values.append(row)
                status.append(st)
        return JSONResponse({"features": names, "values": values, "status": status})

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def feast_setup(repo: Path, data: Path, n_tables: int) -> None:
    from datetime import datetime, timedelta, timezone

    import pyarrow.parquet as pq
    from feast import Entity, FeatureStore, FeatureView, Field, FileSource
    from feast.types import Float32

    repo.mkdir(parents=True, exist_ok=True)
    (repo / "feature_store.yaml").write_text(
        "project: bench\nregistry: registry.db\nprovider: local\n"
        "offline_store:\n  type: duckdb\n"
        "online_store:\n  type: sqlite\n  path: online.db\nentity_key_serialization_version: 3\n")
    fs = FeatureStore(repo_path=str(repo))
    user = Entity(name="user", join_keys=["user_id"])
    views = []
    for j in range(n_tables):
        path = data / f"features_{j}.parquet"
        fields = [Field(name=c.name, dtype=Float32) for c in pq.read_schema(path)
                  if c.name not in ("user_id", "ts")]
        views.append(FeatureView(name=f"t{j}", entities=[user], ttl=timedelta(days=3650),
                                 schema=fields, source=FileSource(path=str(path), timestamp_field="ts")))
    fs.apply([user, *views])
    fs.materialize(datetime(1970, 1, 1, tzinfo=timezone.utc), datetime.now(timezone.utc) + timedelta(days=1))


if __name__ == "__main__":
    if sys.argv[1] == "fastapi":
        fastapi_main(sys.argv[2], int(sys.argv[3]), sys.argv[4].split(","), int(sys.argv[5]))
    elif sys.argv[1] == "feast-setup":
        feast_setup(Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]))
    else:
        raise SystemExit(f"unknown peer {sys.argv[1]!r}")
