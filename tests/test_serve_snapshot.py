"""``pitstop snapshot`` / ``OnlineStore.copy``: a consistent copy taken while a writer
runs (never half of a batch), servable by ``pitstop serve`` on another host."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

from serve_client import post_json

N = 50
WRITER = """
import sys, numpy as np, pyarrow as pa, pitstop as ps
fs = ps.FeatureStore(sys.argv[1])
g = fs.get_feature_group("profile")
print("ready", flush=True)
for k in range(2, 2 + int(sys.argv[2])):
    g.insert(pa.table({"user_id": np.arange(%d), "ts": pa.array([k * 1_000_000] * %d, pa.timestamp("us")),
                       "batch": np.full(%d, float(k))}))
""" % (N, N, N)


def test_snapshot_while_writing_is_consistent_and_servable(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = fs.create_feature_group("profile", primary_key="user_id", event_time="ts", online=True)
    g.insert(pa.table({"user_id": np.arange(N), "ts": pa.array([1_000_000] * N, pa.timestamp("us")),
                       "batch": np.full(N, 1.0)}))
    fs.create_feature_view("v", features=[g.select(["batch"])])
    fs.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tmp_path / "s"), "15"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "ready"
        copies = []
        for i in range(3):
            out = tmp_path / f"snap{i}"
            subprocess.run([sys.executable, "-m", "pitstop", "snapshot", "--store", str(tmp_path / "s"),
                            str(out)], check=True, timeout=120, capture_output=True)
            copies.append(out)
    finally:
        writer.wait(timeout=300)
        writer.stdout.close()
    for out in copies:
        online = ps.OnlineStore(out / "online", readonly=True)
        values = online.read("profile.v1", {"user_id": list(range(N))}).column("batch").to_pylist()
        assert len(set(values)) == 1, values  # one batch for every entity: never half of one
        online.close()
    copy = ps.FeatureStore(copies[-1], readonly=True)  # no catch-up: there are no offline tables
    want = ps.OnlineStore(copies[-1] / "online", readonly=True).read(
        "profile.v1", {"user_id": [0]}).column("batch")[0].as_py()
    with copy.serve_background() as srv:
        status, body = post_json(srv.url, "/v1/features/v", {"entities": {"user_id": [0, 1, N + 5]}})
        assert status == 200 and body["values"] == [[want], [want], [None]]
        assert body["status"] == [["found"], ["found"], ["missing"]]
    copy.close()


def test_copy_refuses_a_non_empty_target(tmp_path):
    online = ps.OnlineStore(tmp_path / "s")
    online.write("t", pa.table({"k": [1], "ts": pa.array([1], pa.timestamp("us")), "x": [1.0]}),
                 keys="k", event_time="ts")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    with pytest.raises(errors.InvalidArgumentError, match="not an empty directory"):
        online.copy(tmp_path / "full")
    size = online.copy(tmp_path / "c", compact=True)
    assert size > 0
    assert ps.OnlineStore(tmp_path / "c", readonly=True).read("t", {"k": [1]}).column("x").to_pylist() == [1.0]
