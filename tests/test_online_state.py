"""The online store against a plain dict, driven by a hypothesis state machine.

The model is the contract spelled out: for each (table, key), keep the row whose
(event time, created time) is greatest, the later write winning an exact tie; a read
returns that row's values unless the key is unknown (missing) or its event time is older
than ``now - ttl`` (expired). Writes come out of order, with duplicate keys in a batch,
nulls, composite keys, with and without created times; tables are dropped and written
again; the store is reopened now and then.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile

import numpy as np
import pyarrow as pa
from hypothesis import settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

import pitstop as ps

NS = pa.timestamp("ns")
# table -> (key columns, key strategy, feature columns)
TABLES = {
    "a": (["uid"], st.integers(-3, 6)),
    "b": (["uid"], st.integers(-3, 6)),
    "c": (["k1", "k2"], st.tuples(st.sampled_from(["", "x", "xy"]), st.integers(0, 2))),
}
floats = st.one_of(st.none(), st.floats(-1e6, 1e6, allow_nan=False, width=32))
strs = st.one_of(st.none(), st.text(max_size=4))
times = st.integers(0, 6)


def key_tuple(table, k):
    return k if isinstance(k, tuple) else (k,)


class OnlineModel(RuleBasedStateMachine):
    @initialize()
    def open_store(self):
        # On tmpfs when there is one: commits fsync, and this test commits a lot.
        shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
        self.dir = tempfile.mkdtemp(prefix="pitstop-state-", dir=shm)
        self.store = ps.OnlineStore(self.dir)
        self.model: dict[tuple[str, tuple], tuple[int, int, float | None, str | None]] = {}
        self.created: set[str] = set()

    def teardown(self):
        self.store = None
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(
        table=st.sampled_from(sorted(TABLES)),
        data=st.data(),
        with_created=st.booleans(),
    )
    def write(self, table, data, with_created):
        names, keys = TABLES[table]
        rows = data.draw(st.lists(st.tuples(keys, times, times, floats, strs), max_size=12))
        cols = {}
        for j, name in enumerate(names):
            cols[name] = [key_tuple(table, r[0])[j] for r in rows]
        if not rows and table == "c":
            cols = {"k1": pa.array([], pa.string()), "k2": pa.array([], pa.int64())}
        elif not rows:
            cols = {"uid": pa.array([], pa.int64())}
        cols["e"] = pa.array([r[1] for r in rows], NS)
        if with_created:
            cols["c"] = pa.array([r[2] for r in rows], NS)
        cols["x"] = pa.array([r[3] for r in rows], pa.float32())
        cols["s"] = pa.array([r[4] for r in rows], pa.string())
        result = self.store.write(table, pa.table(cols), keys=names, event_time="e",
                                  created_time="c" if with_created else None)
        assert result.rows == len(rows)
        for k, e, c, x, s in rows:
            c = c if with_created else 0
            key = (table, key_tuple(table, k))
            old = self.model.get(key)
            if old is None or (e, c) >= old[:2]:
                self.model[key] = (e, c, x, s)
        if rows:
            self.created.add(table)

    @precondition(lambda self: self.created)
    @rule(data=st.data(), ttl=st.one_of(st.none(), st.integers(0, 4)), now=st.integers(0, 8))
    def read(self, data, ttl, now):
        table = data.draw(st.sampled_from(sorted(self.created)))
        names, keys = TABLES[table]
        asked = data.draw(st.lists(keys, max_size=8))
        got = self.store.read(table, [k for k in asked], ttl=None if ttl is None else f"{ttl}ns", now=now)
        assert got.column_names == ["x", "s", "status"]
        for k, row in zip(asked, got.to_pylist()):
            want = self.model.get((table, key_tuple(table, k)))
            if want is None:
                assert row == {"x": None, "s": None, "status": "missing"}
            elif ttl is not None and want[0] < now - ttl:
                assert row == {"x": None, "s": None, "status": "expired"}
            else:
                assert row == {"x": want[2], "s": want[3], "status": "found"}, (k, want)

    @precondition(lambda self: {"a", "b"} <= self.created)
    @rule(asked=st.lists(st.integers(-3, 6), max_size=8), now=st.integers(0, 8))
    def read_matrix(self, asked, now):
        reader = self.store.reader(["b", "a"], features=[("a", "x"), ("b", "x")], ttl=[None, "2ns"])
        m = reader.matrix(asked, now=now)
        assert m.shape == (len(asked), 2)
        # The naive path (one get per entity and table) agrees bit for bit.
        naive = np.frombuffer(reader._raw._naive_matrix(asked, now), np.float32).reshape(-1, 2)
        np.testing.assert_array_equal(m, naive)
        for i, k in enumerate(asked):
            for j, (table, ttl) in enumerate([("a", 2), ("b", None)]):
                want = self.model.get((table, (k,)))
                if want is None or want[2] is None or (ttl is not None and want[0] < now - ttl):
                    assert math.isnan(m[i, j])
                else:
                    assert m[i, j] == np.float32(want[2])

    @precondition(lambda self: self.created)
    @rule(data=st.data())
    def drop(self, data):
        table = data.draw(st.sampled_from(sorted(self.created)))
        assert self.store.drop(table)
        self.model = {k: v for k, v in self.model.items() if k[0] != table}
        self.created.discard(table)

    @rule()
    def reopen(self):
        self.store = ps.OnlineStore(self.dir)

    @invariant()
    def tables_are_listed(self):
        if hasattr(self, "store") and self.store is not None:
            assert set(self.store.tables()) >= self.created


TestOnlineModel = OnlineModel.TestCase
TestOnlineModel.settings = settings(max_examples=100, stateful_step_count=30, deadline=None)
