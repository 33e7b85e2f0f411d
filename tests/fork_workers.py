"""Code that runs in forked children and child processes for tests/test_fork.py and
tests/test_offline_damage.py (importable, so ``python -c`` children can use it)."""

from __future__ import annotations

import datetime as dt
import json
import os
import pickle
import signal
import sys
import tempfile
import time
import traceback
import warnings
from typing import Any, Callable

import pyarrow as pa

import pitstop as ps

UTC = dt.timezone.utc
NOW = dt.datetime.fromtimestamp(1_000, UTC)


def ts(*s: int) -> pa.Array:
    return pa.array([int(x) * 1_000_000 for x in s], pa.timestamp("us", "UTC"))


def rows(users: list[int], t: int, x: float) -> pa.Table:
    n = len(users)
    return pa.table({"user_id": users, "ts": ts(*[t] * n), "x": [x + u for u in users],
                     "y": [2 * x + u for u in users]})


def fork() -> int:
    """``os.fork()``, without Python 3.12's warning about forking a process with threads
    (deltalake's and Arrow's): surviving that fork is what these tests check."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return os.fork()


def run_in_fork(fn: Callable[..., Any], *args: Any, timeout: float = 120) -> Any:
    """Runs ``fn(*args)`` in a child made by a bare ``os.fork()``; returns its result.
    A child that raises (anything, BaseException included) or exits otherwise fails
    the caller with the child's exit code and traceback; one that runs past ``timeout``
    seconds is killed."""
    fd, out = tempfile.mkstemp(suffix=".pickle")
    os.close(fd)
    pid = fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 3
        try:
            try:
                payload, code = ("ok", fn(*args)), 0
            except BaseException:  # noqa: BLE001 - reported to the parent
                payload, code = ("error", traceback.format_exc()), 1
            with open(out, "wb") as f:
                pickle.dump(payload, f)
        finally:
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError(f"the forked child ran past {timeout} s and was killed")
        time.sleep(0.02)
    code = os.waitstatus_to_exitcode(status)
    try:
        with open(out, "rb") as f:
            kind, value = pickle.load(f)
    except (OSError, EOFError, pickle.UnpicklingError):
        kind, value = "error", "(the child reported nothing)"
    finally:
        os.unlink(out)
    if code != 0 or kind != "ok":
        raise AssertionError(f"the forked child failed with exit code {code}:\n{value}")
    return value


def process_gone(pid: int, timeout: float = 20) -> bool:
    """Whether process ``pid`` exits (or is a zombie) within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.05)
    return False


def insert_into_new_group(path: str, group: str, batch: int) -> None:
    """A writer process: opens the store, creates ``group`` if needed, inserts one batch
    of 100 rows (users 100*batch ..)."""
    fs = ps.FeatureStore(path)
    try:
        g = fs.get_feature_group(group, 1)
    except ps.errors.NotFoundError:
        g = fs.create_feature_group(group, primary_key="user_id", event_time="ts", online=True)
    g.insert(rows(list(range(100 * batch, 100 * batch + 100)), batch, float(batch)))
    print(json.dumps({"inserted": batch}), flush=True)


def deltalake_first_then_fork(path: str) -> None:
    """A process that used deltalake itself (not through pitstop) before forking; the
    child then uses pitstop's offline store. Exits 0 when the child succeeded."""
    import deltalake

    deltalake.write_deltalake(os.path.join(path, "outside"), pa.table({"a": [1]}))

    def child() -> list[int]:
        fs = ps.FeatureStore(os.path.join(path, "store"))
        g = fs.create_feature_group("g", primary_key="user_id", event_time="ts")
        g.insert(rows([1, 2], 1, 0.5))
        g.insert(rows([3], 2, 0.5))
        return g.read().column("user_id").to_pylist()

    got = run_in_fork(child, timeout=120)
    assert got == [1, 2, 3], got
    print(json.dumps({"child_read": got}), flush=True)


if __name__ == "__main__":
    globals()[sys.argv[1]](*[json.loads(a) for a in sys.argv[2:]])
