"""A damaged online/data.mdb never crashes the process and never answers wrong.

A small store (three tables: int and string keys, a few thousand rows so there are
branch pages, values of a few KB so there are overflow pages, rewrites so there is a
free list) is made once. Each round damages a copy of its data.mdb at positions drawn
from a seeded RNG (a few bytes of one page's header, one whole page of random bytes,
random bit flips, or a random run of bytes), then a fresh process (forked from a
clean fork server, fuzz_online_child.py) opens it, reads every key of every table,
writes a batch, reads it back and drops a table. Every round must end without a
signal; every error must be a PitstopError; every step that succeeds must give
exactly what the same step gives on the undamaged copy (which the parent checks
against the values it wrote).

PITSTOP_FUZZ_ROUNDS and PITSTOP_FUZZ_SEED change the number of rounds and the seed.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

import fuzz_online_child as C
import pitstop as ps

ROUNDS = int(os.environ.get("PITSTOP_FUZZ_ROUNDS", "320"))
SEED = int(os.environ.get("PITSTOP_FUZZ_SEED", "20261129"))
PAGE = 4096


def ints_table(ts: int, scale: float) -> pa.Table:
    n = C.N_INTS
    cols: dict[str, Any] = {
        "user_id": pa.array(range(n), pa.int64()),
        "ts": pa.array([ts] * n, pa.timestamp("us")),
    }
    for k in range(5):
        cols[f"f{k}"] = pa.array([scale * i + k for i in range(n)], pa.float32())
    cols["label"] = pa.array([f"label-{i}-{ts}" for i in range(n)])
    return pa.table(cols)


def strs_table() -> pa.Table:
    n = C.N_STRS
    return pa.table({
        "name": C.keys_of("strs"),
        "ts": pa.array([5] * n, pa.timestamp("us")),
        "v": pa.array([i / 7 for i in range(n)], pa.float64()),
        "n": pa.array([i * 1_000_003 for i in range(n)], pa.int64()),
    })


def big_table() -> pa.Table:
    n = C.N_BIG
    return pa.table({
        "user_id": pa.array(range(n), pa.int64()),
        "ts": pa.array([5] * n, pa.timestamp("us")),
        "blob": pa.array([bytes([i]) * (1000 + 100 * i) for i in range(n)], pa.binary()),
    })


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The undamaged store's online/ directory."""
    root = tmp_path_factory.mktemp("fuzz") / "store"
    store = ps.OnlineStore(root)
    store.write("ints", ints_table(1, 0.5), keys="user_id", event_time="ts")
    store.write("strs", strs_table(), keys="name", event_time="ts")
    store.write("big", big_table(), keys="user_id", event_time="ts")
    final = ints_table(2, 0.25)  # rewrites every row of ints: a free list
    store.write("ints", final, keys="user_id", event_time="ts")
    # The store holds exactly what was written.
    for table, data in [("ints", final), ("strs", strs_table()), ("big", big_table())]:
        key = C.TABLES[table]
        got = store.read(table, {key: C.keys_of(table)})
        features = [c for c in data.column_names if c not in (key, "ts")]
        assert got.select(features).to_pydict() == data.select(features).to_pydict()
        assert set(got.column("status").to_pylist()) == {"found"}
    store.close()
    online = root / "online"
    assert (online / "data.mdb").stat().st_size > 100 * PAGE
    return online


class Server:
    """The fork server: one child process per round, each forked from a clean one."""

    def __init__(self) -> None:
        here = Path(__file__).resolve().parent
        self.proc = subprocess.Popen(
            [sys.executable, str(here / "fuzz_online_child.py")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": os.pathsep.join([str(here), *sys.path])},
        )

    def run(self, path: Path) -> tuple[int, dict[str, Any] | None]:
        """(wait status, outcomes) of one round on the store at ``path``."""
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(f"{path}\n")
        self.proc.stdin.flush()
        status = int(self.proc.stdout.readline())
        out = path / "outcome.json"
        return status, json.loads(out.read_text()) if out.exists() else None

    def close(self) -> None:
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.close()
        self.proc.wait(30)
        self.proc.stdout.close()


def damage(data: bytearray, rng: random.Random, kind: int) -> str:
    pages = len(data) // PAGE
    if kind == 0:
        page = rng.randrange(pages)
        spots = [page * PAGE + rng.randrange(16) for _ in range(rng.randint(1, 4))]
        for at in spots:
            data[at] = rng.randrange(256)
        return f"header bytes of page {page}"
    if kind == 1:
        page = rng.randrange(pages)
        data[page * PAGE:(page + 1) * PAGE] = rng.randbytes(PAGE)
        return f"random page {page}"
    if kind == 2:
        bits = [rng.randrange(len(data) * 8) for _ in range(rng.randint(1, 16))]
        for b in bits:
            data[b // 8] ^= 1 << (b % 8)
        return f"{len(bits)} bit flips"
    start = rng.randrange(len(data))
    n = rng.randint(1, 512)
    data[start:start + n] = rng.randbytes(len(data[start:start + n]))
    return f"{n} random bytes at {start}"


def test_damaged_data_file_is_an_error_never_a_crash_nor_a_wrong_answer(
    pristine: Path, tmp_path: Path
) -> None:
    original = (pristine / "data.mdb").read_bytes()
    server = Server()
    try:
        reference = tmp_path / "reference"
        shutil.copytree(pristine, reference)
        status, expected = server.run(reference)
        assert status == 0 and expected is not None
        assert all("ok" in v for v in expected.values()), expected
        rng = random.Random(SEED)
        failures: list[str] = []
        counts = {"crashed": 0, "corrupt": 0, "other error": 0, "read fine": 0}
        for i in range(ROUNDS):
            data = bytearray(original)
            what = damage(data, rng, i % 4)
            if data == original:
                continue
            d = tmp_path / f"round-{i}"
            d.mkdir()
            (d / "data.mdb").write_bytes(data)
            status, outcome = server.run(d)
            label = f"round {i} ({what})"
            if os.WIFSIGNALED(status):
                counts["crashed"] += 1
                failures.append(f"{label}: killed by signal {os.WTERMSIG(status)}")
                continue
            if status != 0 or outcome is None:
                failures.append(f"{label}: the round failed (status {status})")
                continue
            errors = [v for v in outcome.values() if "error" in v]
            for step, v in outcome.items():
                if "error" in v and not v["pitstop"]:
                    failures.append(f"{label}: {step} raised {v['error']}: {v['message']}\n{v['trace']}")
                elif "ok" in v and v["ok"] != expected[step]["ok"]:
                    failures.append(f"{label}: {step} answered differently from the undamaged store")
            if any(v.get("corrupt") for v in errors):
                counts["corrupt"] += 1
            elif errors:
                counts["other error"] += 1
            else:
                counts["read fine"] += 1
            shutil.rmtree(d)
    finally:
        server.close()
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    print(f"\nfuzzed data.mdb: {ROUNDS} rounds (seed {SEED}): {summary}")
    assert not failures, "\n".join(failures[:20])
    assert counts["corrupt"] > ROUNDS // 10


def test_the_open_check_passes_while_another_process_writes(tmp_path: Path) -> None:
    """Each open walks the snapshot of its own read transaction, whose pages a
    concurrent writer never reuses: no false alarm however the commits interleave."""
    import multiprocessing as mp
    import time

    import online_workers as W

    path = str(tmp_path / "store")
    ps.OnlineStore(path).write("t", W.batch(1), keys="user_id", event_time="ts")
    writer = mp.get_context("spawn").Process(target=W.writer, args=(path, 60))
    writer.start()
    opens = 0
    try:
        while writer.is_alive() or opens < 3:
            store = ps.OnlineStore(path, readonly=True)  # a new handle: checked again
            t = store.read("t", list(range(W.N_KEYS)), features=["tag"])
            assert len(set(t.column("tag").to_pylist())) == 1
            store.close()
            opens += 1
            time.sleep(0.001)
    finally:
        writer.join(120)
    assert writer.exitcode == 0
    assert opens >= 3
