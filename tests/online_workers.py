"""Processes for tests/test_online_procs.py (importable by spawned children)."""

from __future__ import annotations

import sys

import numpy as np
import pyarrow as pa

import pitstop as ps

N_KEYS = 3000


def batch(b: int, n: int = N_KEYS, offset: int = 0) -> pa.Table:
    """Batch ``b``: every key gets x = b and event time b."""
    ids = np.arange(offset, offset + n)
    return pa.table({
        "user_id": ids,
        "ts": pa.array(np.full(n, b, np.int64), pa.timestamp("us")),
        "x": np.full(n, b, np.float32),
        "tag": pa.array(np.full(n, b, np.int64)),
    })


def writer(path: str, batches: int) -> None:
    store = ps.OnlineStore(path)
    for b in range(2, batches + 2):
        store.write("t", batch(b), keys="user_id", event_time="ts")


def reader(path: str, ready, stop, out) -> None:
    """Reads all keys over and over; every read must show one committed batch, and
    batches never go backwards. Reports (reads, batches seen, problems)."""
    problems: list[str] = []
    reads, last, seen_batches = 0, 0, set()
    try:
        store = ps.OnlineStore(path, readonly=True)
        r = store.reader(["t"], features=["x"])
        keys = list(range(N_KEYS))
        ready.put(True)
        while not stop.is_set() or reads < 3:
            if reads % 2:
                seen = set(np.unique(r.matrix(keys)).tolist())
            else:
                t = store.read("t", keys, features=["tag"])
                seen = set(t.column("tag").to_pylist())
            if len(seen) != 1:
                problems.append(f"read {reads} mixes batches {sorted(seen)[:5]}")
            b = min(seen)
            if b < last:
                problems.append(f"read {reads} went back from batch {last} to {b}")
            last = max(last, b)
            seen_batches.add(b)
            reads += 1
    except Exception as e:  # reported to the parent, which fails the test
        problems.append(f"{type(e).__name__}: {e}")
        ready.put(False)
    out.put((reads, len(seen_batches), problems))


if __name__ == "__main__":
    # python online_workers.py PATH: the crash test's writer. Commits a batch of 100k
    # keys with x = 1, says so, then writes a batch of 4M rows with x = 2 until killed.
    path = sys.argv[1]
    store = ps.OnlineStore(path)
    store.write("t", batch(1, 100_000), keys="user_id", event_time="ts")
    print("committed", flush=True)
    big = batch(2, 4_000_000)
    print("writing", flush=True)
    store.write("t", big, keys="user_id", event_time="ts")
    print("done", flush=True)
