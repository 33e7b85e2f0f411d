"""The child side of test_fuzz_online.py: a fork server.

Started once per test (``python fuzz_online_child.py``), it imports pitstop but never
opens a store, then reads one store path per line on stdin, forks a fresh process
per path that runs :func:`run_round` on it and writes the outcomes to
``<path>/outcome.json``, and answers with one line: the raw wait status of that
process. A round that crashes (a signal) therefore kills only its own process, and
the test learns which round it was; starting a round costs a fork, not a Python
start-up.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import traceback
from typing import Any, Callable

import pyarrow as pa

import pitstop as ps
from pitstop.errors import CorruptStoreError, PitstopError

TABLES = {"ints": "user_id", "strs": "name", "big": "user_id"}
N_INTS, N_STRS, N_BIG = 3000, 2000, 60
WRITE_KEYS = list(range(0, N_INTS, 37))


def keys_of(table: str) -> list[Any]:
    if table == "ints":
        return list(range(N_INTS))
    if table == "strs":
        return [f"name-{i:05d}" for i in range(N_STRS)]
    return list(range(N_BIG))


def digest(t: pa.Table) -> str:
    """A digest of a table's values (exact: floats by their repr)."""
    return hashlib.sha256(repr(t.to_pydict()).encode()).hexdigest()


def write_batch() -> pa.Table:
    """The batch each round writes to ``ints``: newer rows for some entities."""
    n = len(WRITE_KEYS)
    cols: dict[str, Any] = {
        "user_id": pa.array(WRITE_KEYS, pa.int64()),
        "ts": pa.array([10_000] * n, pa.timestamp("us")),
    }
    for k in range(5):
        cols[f"f{k}"] = pa.array([float(-i - k) for i in WRITE_KEYS], pa.float32())
    cols["label"] = pa.array([f"new-{i}" for i in WRITE_KEYS])
    return pa.table(cols)


def attempt(fn: Callable[[], Any]) -> dict[str, Any]:
    try:
        return {"ok": fn()}
    except Exception as e:  # every error is recorded; the test judges its type
        return {
            "error": type(e).__name__,
            "pitstop": isinstance(e, PitstopError),
            "corrupt": isinstance(e, CorruptStoreError),
            "message": str(e)[:400],
            "trace": "" if isinstance(e, PitstopError) else traceback.format_exc()[-2000:],
        }


def run_round(path: str) -> dict[str, Any]:
    """Opens the store, reads every key of every table, writes a batch (and reads it
    back), drops a table. Each step's outcome: a digest of its result, or the error."""
    out: dict[str, Any] = {}
    opened = attempt(lambda: ps.OnlineStore(path))
    store = opened.pop("ok", None)
    out["open"] = opened or {"ok": True}
    if store is None:
        return out
    for table, key in TABLES.items():
        out[f"read {table}"] = attempt(
            lambda: digest(store.read(table, {key: keys_of(table)}))
        )
    out["write"] = attempt(
        lambda: list(store.write("ints", write_batch(), keys="user_id", event_time="ts"))
    )
    out["read back"] = attempt(
        lambda: digest(store.read("ints", {"user_id": WRITE_KEYS}))
    )
    out["drop"] = attempt(lambda: store.drop("strs"))
    out["read after drop"] = attempt(
        lambda: digest(store.read("ints", {"user_id": keys_of("ints")}))
    )
    store.close()
    return out


def serve() -> None:
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        pid = os.fork()
        if pid == 0:
            code = 0
            signal.alarm(120)  # a round that hangs dies of SIGALRM: the test reports it
            try:
                outcome = run_round(path)
                with open(os.path.join(path, "outcome.json"), "w") as f:
                    json.dump(outcome, f)
            except BaseException:
                traceback.print_exc()
                code = 3
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        print(status, flush=True)


if __name__ == "__main__":
    serve()
