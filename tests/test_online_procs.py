"""The online store across processes: concurrent readers never see half a write, a
writer killed mid-batch leaves the last committed state, forked workers read safely."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

import online_workers as W
import pitstop as ps


def test_four_readers_see_whole_batches_only(tmp_path):
    path = str(tmp_path / "store")
    ps.OnlineStore(path).write("t", W.batch(1), keys="user_id", event_time="ts")
    ctx = mp.get_context("spawn")
    ready, stop, out = ctx.Queue(), ctx.Event(), ctx.Queue()
    readers = [ctx.Process(target=W.reader, args=(path, ready, stop, out)) for _ in range(4)]
    for p in readers:
        p.start()
    assert all(ready.get(timeout=60) for _ in readers)
    writer = ctx.Process(target=W.writer, args=(path, 40))
    writer.start()
    writer.join(60)
    assert writer.exitcode == 0
    stop.set()
    results = [out.get(timeout=60) for _ in readers]
    for p in readers:
        p.join(30)
        assert p.exitcode == 0
    for reads, batches, problems in results:
        assert problems == []
        assert reads >= 3
    # The readers ran while the writer wrote: together they saw many batches.
    assert sum(batches for _, batches, _ in results) > 8
    assert ps.OnlineStore(path).read("t", [0]).column("tag").to_pylist() == [41]


def kill_during_commit(path: str) -> bool:
    """Runs the crash writer and kills it (SIGKILL) as soon as its big batch's commit
    starts writing pages (the data file grows); False if it finished first."""
    proc = subprocess.Popen([sys.executable, W.__file__, path], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "committed"
        data = os.path.join(path, "online", "data.mdb")
        committed = os.path.getsize(data)
        assert proc.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            if os.path.getsize(data) > committed:
                proc.send_signal(signal.SIGKILL)
                proc.wait(30)
                return proc.returncode == -signal.SIGKILL
            time.sleep(0.0005)
        return False
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(30)
        proc.stdout.close()


def test_kill_9_mid_commit_leaves_the_last_commit(tmp_path):
    for attempt in range(3):
        path = str(tmp_path / f"store{attempt}")
        if kill_during_commit(path):
            break
    else:
        pytest.fail("the writer always finished before it could be killed mid-commit")
    store = ps.OnlineStore(path)
    keys = list(range(0, 4_000_000, 997))
    m = store.read_matrix(["t"], keys, features=["x"])[:, 0]
    want = np.where(np.array(keys) < 100_000, 1.0, np.nan).astype(np.float32)
    np.testing.assert_array_equal(m, want)  # exactly the first commit, nothing of the second
    # The dead writer's lock and reader slots are recovered: writing works.
    assert store.write("t", W.batch(9, 10), keys="user_id", event_time="ts").written == 10
    assert store.read("t", [5]).column("tag").to_pylist() == [9]


def test_a_reader_adopts_a_map_another_process_grew(tmp_path):
    path = str(tmp_path / "store")
    store = ps.OnlineStore(path, map_size=1 << 20)  # this process maps 1 MiB
    store.write("t", W.batch(1, 10), keys="user_id", event_time="ts")
    assert store.read("t", [1]).column("tag").to_pylist() == [1]
    code = (f"import online_workers as W, pitstop as ps; "
            f"ps.OnlineStore({path!r}).write('t', W.batch(2, 200_000), keys='user_id', event_time='ts')")
    env = dict(os.environ, PYTHONPATH=os.path.dirname(W.__file__))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    # The file is now far beyond our 1 MiB map: the next read adopts the new size.
    assert store.read("t", [199_999]).column("tag").to_pylist() == [2]
    assert store._core.map_size() > 1 << 20
    assert store.write("t", W.batch(3, 10), keys="user_id", event_time="ts").written == 10


def test_forked_workers_open_their_own_environment(tmp_path):
    store = ps.OnlineStore(tmp_path / "store")
    store.write("t", W.batch(1, 5000), keys="user_id", event_time="ts")
    reader = store.reader(["t"], features=["x"])
    keys = list(range(5000))
    assert (reader.matrix(keys) == 1).all()  # the parent has an open env, pooled txns
    pids = []
    for i in range(3):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                ok = (reader.matrix(keys) == 1).all() and store.read("t", [7]).num_rows == 1
                store.write("t", W.batch(1, 1, offset=10_000 + i), keys="user_id", event_time="ts")
                big = store.read_matrix(["t"], list(range(20_000)), features=["x"])  # parallel path
                code = 0 if ok and (big[:5000] == 1).all() else 2
            finally:
                os._exit(code)
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    # The parent's handle still works and sees the children's writes.
    assert store.read("t", [10_000, 10_001, 10_002]).column("status").to_pylist() == ["found"] * 3
