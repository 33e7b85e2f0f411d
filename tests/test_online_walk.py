"""The page walker (rust/online/walk.rs) against LMDB's cursor path, through the
Python API: after writes made by another process while the reader's store is open
(so the pages read were never checked when it opened), and with pages of the rows
tree damaged under an open store (an error or the right answer, never a crash)."""

from __future__ import annotations

import multiprocessing as mp
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pitstop as ps
import walk_workers as W

KEYS = list(range(-50, 4050, 3))  # written keys are 0..4000: some never are


def readers(store: ps.OnlineStore) -> dict[bool, ps.Reader]:
    """A reader with the walker (True) and one through the cursor (False)."""
    out = {}
    for walk in (True, False):
        os.environ["PITSTOP_ONLINE_WALK"] = "1" if walk else "0"
        try:
            out[walk] = store.reader(W.TABLES, features=[("a", "x"), ("b", "x")])
        finally:
            del os.environ["PITSTOP_ONLINE_WALK"]
    return out


def blobs(store: ps.OnlineStore, walk: bool) -> list:
    os.environ["PITSTOP_ONLINE_WALK"] = "1" if walk else "0"
    try:
        return store.read("a", KEYS, features=["blob"]).column("blob").to_pylist()
    finally:
        del os.environ["PITSTOP_ONLINE_WALK"]


@pytest.fixture(scope="module")
def writer_pool():
    """A process that writes (spawned once: the writes come from another process)."""
    with mp.get_context("spawn").Pool(1) as pool:
        yield pool


writes_st = st.lists(
    st.tuples(
        st.integers(0, 1),
        st.lists(st.integers(0, 4000), min_size=1, max_size=1500, unique=True),
        st.sampled_from([0, 8, 40, 300, 2500, 9000]),
    ),
    min_size=1,
    max_size=5,
)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(writes=writes_st)
def test_walker_and_cursor_agree_after_another_process_writes(tmp_path_factory, writer_pool, writes):
    path = str(tmp_path_factory.mktemp("walk") / "store")
    W.write(path, [(0, [1, 2], 1, 5), (1, [2, 3], 1, 5)])
    store = ps.OnlineStore(path)  # open (and checked) before the other process writes
    rs = readers(store)
    versioned = [(j, keys, v + 2, size) for v, (j, keys, size) in enumerate(writes)]
    writer_pool.apply(W.write, (path, versioned))
    want: dict[tuple[int, int], tuple[float, bytes]] = {
        (0, 1): (W.x_of(1, 1), W.blob_of(1, 1, 5)), (0, 2): (W.x_of(2, 1), W.blob_of(2, 1, 5)),
        (1, 2): (W.x_of(2, 1), None), (1, 3): (W.x_of(3, 1), None),
    }
    for j, keys, v, size in versioned:
        for k in keys:
            want[(j, k)] = (W.x_of(k, v), W.blob_of(k, v, size))
    expect = np.array([[want[(j, k)][0] if (j, k) in want else np.nan for j in (0, 1)] for k in KEYS],
                      np.float32)
    for walk in (True, False):
        np.testing.assert_array_equal(rs[walk].matrix(KEYS), expect)
        assert blobs(store, walk) == [want[(0, k)][1] if (0, k) in want else None for k in KEYS]
    store.close()


def test_damaged_pages_under_an_open_store_are_errors_not_crashes(tmp_path):
    path = str(tmp_path / "store")
    rng = random.Random(20261130)
    W.write(path, [(0, list(range(4000)), 1, 30), (1, list(range(0, 4000, 2)), 1, 10),
                   (0, list(range(0, 4000, 9)), 2, 3000)])
    store = ps.OnlineStore(path, readonly=True)
    good = (readers(store)[False].matrix(KEYS).tobytes(), blobs(store, False))
    store.close()
    data_path = os.path.join(path, "online", "data.mdb")
    with open(data_path, "rb") as f:
        pages = W.rows_pages(f.read())
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=W.damaged_reader, args=(path, KEYS, child))
    proc.start()
    assert parent.recv() == "ready"
    errors = oks = 0
    with open(data_path, "r+b") as f:
        for _ in range(150):
            pg = rng.choice(pages)
            f.seek(pg * 4096)
            saved = f.read(4096)
            page = bytearray(saved)
            for _ in range(rng.randint(1, 8)):
                page[rng.randrange(4096)] = rng.randrange(256)
            if rng.random() < 0.3:
                at = rng.choice([0, 10, 12, 16])
                page[at:at + 2] = rng.randrange(65536).to_bytes(2, "little")
            f.seek(pg * 4096)
            f.write(page)
            f.flush()
            parent.send(True)
            assert parent.poll(60), "the reader process died or hung"
            got = parent.recv()
            if got[0] == "ok":
                # A damaged key may hide its row; a row shown is the right one.
                m = np.frombuffer(got[1], np.float32)
                g = np.frombuffer(good[0], np.float32)
                assert np.all((m == g) | np.isnan(m) & np.isnan(g) | np.isnan(m))
                assert all(b is None or b == w for b, w in zip(got[2], good[1]))
                oks += 1
            else:
                assert got[1] == "CorruptStoreError", got
                errors += 1
            f.seek(pg * 4096)
            f.write(saved)
            f.flush()
    parent.send(False)
    proc.join(30)
    assert proc.exitcode == 0
    assert errors > 0 and oks > 0
