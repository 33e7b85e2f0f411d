"""Feature groups with the online store: consistency with the offline tables, crash
recovery between the two writes of an insert, materialize."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

import pitstop as ps
from pitstop import errors

UTC = dt.timezone.utc


def ts(*s):
    return pa.array([x * 1_000_000 for x in s], pa.timestamp("us", "UTC"))


@st.composite
def inserts(draw):
    """Batches with unique created times, so no two rows of a key tie fully."""
    batches, created = [], 0
    for _ in range(draw(st.integers(1, 4))):
        n = draw(st.integers(0, 8))
        rows = []
        for _ in range(n):
            created += 1
            rows.append((draw(st.integers(0, 3)), draw(st.integers(0, 6)), created,
                         draw(st.one_of(st.none(), st.floats(-5, 5, allow_nan=False)))))
        rows = draw(st.permutations(rows))
        batches.append(pa.table({
            "k": pa.array([r[0] for r in rows], pa.int64()), "ts": ts(*[r[1] for r in rows]),
            "c": ts(*[r[2] for r in rows]), "v": pa.array([r[3] for r in rows], pa.float64()),
            "w": pa.array([None if r[3] is None else int(r[3] * 10) for r in rows], pa.int64()),
        }))
    return batches


@settings(max_examples=25)
@given(inserts(), st.sampled_from([None, "2s", "4s"]), st.integers(6, 12))
def test_online_equals_training_data_at_now(tmp_path_factory, batches, ttl, now_s):
    """The online store keeps the latest row per key, which is the as-of answer for any
    ``now`` at or after the latest event time (event times here are 0..6): serving at
    the wall clock. TTL expiry makes values disappear on both sides alike."""
    fs = ps.FeatureStore(tmp_path_factory.mktemp("s") / "store")
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", created_time="c",
                                online=True, ttl=ttl)
    for b in batches:
        g.insert(b)
    fv = fs.create_feature_view("v", features=[g.select(["v", "w"])])
    keys = [0, 1, 2, 3, 4]
    now = dt.datetime.fromtimestamp(now_s, UTC)
    spine = pa.table({"k": pa.array(keys, pa.int64()), "t": ts(*[now_s] * len(keys))})
    offline = fv.training_data(spine)
    online = fv.get_feature_vectors({"k": keys}, now=now)
    assert online.column("v").to_pylist() == offline.column("v").to_pylist()
    assert online.column("w").to_pylist() == offline.column("w").to_pylist()
    matrix = fv.get_feature_vectors({"k": keys}, as_matrix=True, now=now)
    want = np.array([[np.nan if v is None else v for v in offline.column(c).to_pylist()] for c in ("v", "w")],
                    np.float32).T
    np.testing.assert_array_equal(matrix, want)
    fs.close()


CRASH = textwrap.dedent("""
    import os, signal, sys
    import pyarrow as pa
    import pitstop as ps
    from pitstop.online import PreparedWrite

    def die(self, watermark=None):  # the moment after the Delta commit, before the online upsert
        os.kill(os.getpid(), signal.SIGKILL)

    PreparedWrite.commit = die
    fs = ps.FeatureStore(sys.argv[1])
    g = fs.get_feature_group("g")
    g.insert(pa.table({"k": [1, 2], "ts": pa.array([5_000_000, 5_000_000], pa.timestamp("us", "UTC")),
                       "v": [10.0, 20.0]}))
""")


def test_crash_between_offline_and_online_is_caught_up(tmp_path):
    path = tmp_path / "store"
    fs = ps.FeatureStore(path)
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [1], "ts": ts(1), "v": [1.0]}))
    fs.close()
    res = subprocess.run([sys.executable, "-c", CRASH, str(path)], capture_output=True)
    assert res.returncode == -9, res.stderr
    fs = ps.FeatureStore(path)  # opening catches the online store up
    g = fs.get_feature_group("g")
    assert g.offline.version() == 1
    assert fs.online.watermark(g.online_table) == 1
    got = fs.online.read(g.online_table, [1, 2], features=["v"])
    assert got.column("v").to_pylist() == [10.0, 20.0]
    fs.close()


def test_materialize_rebuilds(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [1, 2], "ts": ts(1, 2), "v": [1.0, 2.0]}))
    fs.online.drop(g.online_table)
    with pytest.raises(errors.NotFoundError):
        fs.online.read(g.online_table, [1], features=["v"])
    assert g.materialize() == 2
    assert fs.online.read(g.online_table, [1, 2], features=["v"]).column("v").to_pylist() == [1.0, 2.0]
    off = fs.create_feature_group("off", primary_key="k", event_time="ts")
    with pytest.raises(errors.InvalidArgumentError, match="offline only"):
        off.materialize()
    fs.close()


def test_bad_insert_leaves_online_unchanged(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [1], "ts": ts(1), "v": [1.0]}))
    with pytest.raises(errors.SchemaError):
        g.insert(pa.table({"k": [1], "ts": ts(9), "v": ["oops"]}))
    with pytest.raises(errors.DataError):
        g.insert(pa.table({"k": [1, None], "ts": ts(9, 9), "v": [5.0, 6.0]}))
    assert g.offline.version() == 0
    assert fs.online.read(g.online_table, [1], features=["v"]).column("v").to_pylist() == [1.0]
    fs.close()


def test_delete_group_drops_everything(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [1], "ts": ts(1), "v": [1.0]}))
    fs.delete_feature_group("g", 1)
    assert not g.offline.path.exists()
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [1], "ts": ts(1), "v": ["now a string"]}))  # a new schema is fine
    assert fs.online.read(g.online_table, [1], features=["v"]).column("v").to_pylist() == ["now a string"]
    fs.close()
