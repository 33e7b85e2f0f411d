"""A forked child (gunicorn worker, multiprocessing 'fork') of a process that used the
offline store can use every API. deltalake panics in any process but the one that made
its runtime, so offline.py runs deltalake in a helper process there; these tests fork
for real from a parent that opened, inserted, read and logged."""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors, offline

import fork_workers as W
from onnx_models import gbdt

USERS = list(range(10))


@pytest.fixture
def store(tmp_path):
    """A store the parent has used every offline path of: insert, read, training data,
    logged predictions (so its deltalake runtime exists before any fork)."""
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("a", primary_key="user_id", event_time="ts", online=True)
    g.insert(W.rows(USERS, 1, 0.25))
    fv = fs.create_feature_view("v", features=[g.select(["x", "y"])])
    fs.models.register("m", gbdt(2), feature_view=fv)
    with fs.predictor("m", log=True) as pred:
        pred.predict({"user_id": [1, 2]}, now=W.NOW)
        pred.flush()
    assert g.read().num_rows == 10 and fs.predictor("m").read_logs().num_rows == 2
    assert offline._owner == os.getpid()
    yield fs
    fs.close()


def spine() -> pa.Table:
    return pa.table({"user_id": USERS + [99], "t": W.ts(*[5] * 11)})


def child_uses_everything(path: str, want_training: dict) -> dict:
    """In the forked child: every offline and online API; returns what it saw."""
    t0 = time.perf_counter()
    fs = ps.FeatureStore(path)  # catches online groups up: a deltalake call
    opened = time.perf_counter() - t0
    g = fs.get_feature_group("a")
    assert g.read().column("user_id").to_pylist() == USERS
    fv = fs.get_feature_view("v")
    assert fv.training_data(spine()).to_pydict() == want_training
    assert g.insert(W.rows([100, 101], 2, 0.5)) == 1
    assert g.read(as_of=0).num_rows == 10 and g.read().num_rows == 12
    vec = fv.get_feature_vectors({"user_id": [100, 3]})
    assert vec.column("x").to_pylist() == [100.5, 3.25]
    with fs.predictor("m", log=True) as pred:
        y = pred.predict({"user_id": [100, 101, 3]}, now=W.NOW)
        pred.flush()
        assert pred.read_logs().num_rows == 5
    assert y.shape == (3,) and np.isfinite(y).all()
    with pytest.raises(errors.NotFoundError, match="there is no version 7"):
        g.read(as_of=7)  # raised in the helper, pickled back as itself
    t1 = time.perf_counter()
    for _ in range(20):
        g.offline.version()
    per_call = (time.perf_counter() - t1) / 20
    helper = offline._helper_obj
    assert helper is not None and offline._owner != os.getpid()
    fs.close()
    return {"helper_pid": helper.proc.pid, "open_s": opened, "per_call_s": per_call}


def test_a_forked_child_uses_every_api(store):
    want = store.get_feature_view("v").training_data(spine()).to_pydict()
    got = W.run_in_fork(child_uses_everything, str(store.path), want)
    print(f"child: open with helper start {got['open_s']:.2f} s, "
          f"version() via helper {got['per_call_s'] * 1e3:.2f} ms")
    # The helper exits with its child (os._exit: no atexit ran; the socket closed).
    assert W.process_gone(got["helper_pid"]), "the child's deltalake helper outlived it"
    # The parent sees the child's insert and log rows, and its own deltalake still works.
    g = store.get_feature_group("a")
    assert g.read().column("user_id").to_pylist() == USERS + [100, 101]
    assert g.insert(W.rows([102], 3, 0.5)) == 2
    logs = store.predictor("m").read_logs()
    assert sorted(logs.column("user_id").to_pylist()) == [1, 2, 3, 100, 101]
    assert offline._helper_obj is None  # the parent never needed one


def child_sees_damage(path: str) -> str:
    fs = ps.FeatureStore(path)
    try:
        fs.get_feature_group("broken").read()
    except errors.CorruptStoreError as e:
        return str(e)
    finally:
        fs.close()
    raise AssertionError("no CorruptStoreError")


def test_errors_in_the_helper_arrive_as_pitstop_errors(store):
    g = store.create_feature_group("broken", primary_key="user_id", event_time="ts")
    g.insert(W.rows([1], 1, 0.0))
    g.insert(W.rows([2], 2, 0.0))
    (g.offline.path / "_delta_log" / "00000000000000000001.json").write_text("{garbage")
    msg = W.run_in_fork(child_sees_damage, str(store.path))
    assert "is damaged" in msg and str(g.offline.path) in msg


def test_a_predictor_made_before_fork_predicts_in_the_child(store):
    """The pre-fork server pattern: the model session (ONNX Runtime from Rust) and the
    prepared input are made in the parent, the predictions come from the child."""
    pred = store.predictor("m")
    assert pred._direct
    keys = {"user_id": [1, 2, 3, 42]}
    want = pred.predict(keys, now=W.NOW).tobytes()
    assert W.run_in_fork(lambda: pred.predict(keys, now=W.NOW).tobytes()) == want
    assert pred.predict(keys, now=W.NOW).tobytes() == want  # the parent's still works
    pred.close()


def mp_worker(path: str, i: int) -> int:
    fs = ps.FeatureStore(path)
    g = fs.get_feature_group("a")
    g.insert(W.rows([200 + i], 2, 0.5))
    with fs.predictor("m", log=True) as pred:
        pred.predict({"user_id": [200 + i]}, now=W.NOW)
    fs.close()
    return i


@pytest.mark.filterwarnings("ignore:.*fork.*:DeprecationWarning")  # Python 3.12+: threads
def test_multiprocessing_fork_workers_insert_and_log_concurrently(store):
    ctx = mp.get_context("fork")
    with ctx.Pool(3) as pool:
        res = pool.starmap_async(mp_worker, [(str(store.path), i) for i in range(6)])
        assert sorted(res.get(timeout=180)) == list(range(6))
    g = store.get_feature_group("a")
    assert sorted(g.read().column("user_id").to_pylist()) == USERS + [200 + i for i in range(6)]
    assert g.offline.version() == 6
    logs = store.predictor("m").read_logs()
    assert sorted(logs.column("user_id").to_pylist()) == [1, 2] + [200 + i for i in range(6)]
    vec = store.get_feature_view("v").get_feature_vectors({"user_id": [205]})
    assert vec.column("x").to_pylist() == [205.5]


def test_deltalake_used_before_fork_outside_pitstop(tmp_path):
    # A fresh interpreter, so pitstop has not used deltalake there: the child's first
    # in-process call panics, and offline.py switches it to the helper and retries.
    env = dict(os.environ, PYTHONPATH=os.path.dirname(W.__file__))
    out = subprocess.run([sys.executable, W.__file__, "deltalake_first_then_fork", f'"{tmp_path}"'],
                         env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    assert '"child_read": [1, 2, 3]' in out.stdout


def test_a_helper_dies_with_its_child_even_mid_insert(store, tmp_path):
    # A child killed inside a big insert: its helper stops too (as an in-process write
    # would), rather than committing after the child's group lock was released.
    ready = tmp_path / "helper.pid"
    n = 3_000_000
    big = pa.table({"user_id": np.arange(1000, 1000 + n), "ts": W.ts(*[3] * n),
                    "x": np.random.default_rng(0).random(n), "y": np.zeros(n)})
    pid = W.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            fs = ps.FeatureStore(store.path)
            ready.write_text(str(offline._helper_obj.proc.pid))
            fs.get_feature_group("a").insert(big)
        finally:
            os._exit(0)
    deadline = time.monotonic() + 60
    while not ready.exists() or not ready.read_text():
        assert time.monotonic() < deadline and os.waitpid(pid, os.WNOHANG)[0] == 0
        time.sleep(0.01)
    time.sleep(0.5)  # inside the insert: validating, sending or writing
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    killed_at = time.monotonic()
    assert W.process_gone(int(ready.read_text()), timeout=30)
    print(f"helper gone {time.monotonic() - killed_at:.3f} s after its child")
    g = store.get_feature_group("a")
    assert g.read().num_rows in (10, 10 + n)  # whole inserts only
    assert g.insert(W.rows([7], 4, 0.5)) == g.offline.version()
