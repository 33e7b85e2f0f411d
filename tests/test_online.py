"""OnlineStore: writes, reads, matrices, key inputs, TTL and `now`."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps

US = pa.timestamp("us")


def feats(ids, ts, **cols):
    return pa.table({"user_id": ids, "ts": pa.array(ts, US), **cols})


@pytest.fixture
def store(tmp_path):
    return ps.OnlineStore(tmp_path / "store")


def test_write_then_read_latest_values(store):
    r = store.write("eng", feats([1, 2, 1], [10, 5, 30], x=[1.0, 2.0, 3.0], s=["a", None, "c"]),
                    keys="user_id", event_time="ts")
    assert r == (3, 2, 1)
    got = store.read("eng", [2, 1, 7])
    assert got.column_names == ["x", "s", "status"]
    assert got.to_pydict() == {"x": [2.0, 3.0, None], "s": [None, "c", None],
                               "status": ["found", "found", "missing"]}
    assert store.tables() == ["eng"]
    assert store.schema("eng") == pa.schema([("x", pa.float64()), ("s", pa.string())])
    assert store.key_columns("eng") == ["user_id"]


def test_older_events_never_overwrite_newer_and_replays_change_nothing(store):
    store.write("t", feats([1, 2], [20, 20], x=[1.0, 2.0]), keys="user_id", event_time="ts")
    batch = feats([1, 2], [10, 30], x=[9.0, 8.0])
    assert store.write("t", batch, keys="user_id", event_time="ts").written == 1
    assert store.write("t", batch, keys="user_id", event_time="ts").written == 0
    assert store.read("t", [1, 2]).column("x").to_pylist() == [1.0, 8.0]


def test_created_time_breaks_ties_whatever_the_order(store):
    data = pa.table({"user_id": [1, 1, 1], "ts": pa.array([5, 5, 5], US),
                     "made": pa.array([3, 9, 1], US), "x": [3.0, 9.0, 1.0]})
    store.write("t", data, keys="user_id", event_time="ts", created_time="made")
    assert store.read("t", [1]).column("x").to_pylist() == [9.0]
    store.write("t", data.slice(2), keys="user_id", event_time="ts", created_time="made")
    assert store.read("t", [1]).column("x").to_pylist() == [9.0]


def test_features_selection_and_order(store):
    store.write("t", feats([1], [1], a=[1.0], b=[2], c=["z"]), keys="user_id", event_time="ts")
    got = store.read("t", [1], features=["c", "a"])
    assert got.column_names == ["c", "a", "status"]
    assert got.to_pylist() == [{"c": "z", "a": 1.0, "status": "found"}]


def test_ttl_and_now(store):
    day = 86_400 * 10**6
    store.write("t", feats([1, 2], [10 * day, 2 * day], x=[1.0, 2.0]), keys="user_id", event_time="ts")
    now = dt.datetime(1970, 1, 12)  # day 11, naive = UTC
    got = store.read("t", [1, 2], ttl="5d", now=now)
    assert got.column("status").to_pylist() == ["found", "expired"]
    assert got.column("x").to_pylist() == [1.0, None]
    for same in [np.datetime64("1970-01-12"), 11 * day * 1000, dt.datetime(1970, 1, 12, tzinfo=dt.timezone.utc)]:
        assert store.read("t", [1, 2], ttl=dt.timedelta(days=5), now=same).column("status").to_pylist() == [
            "found", "expired"]
    assert store.read("t", [1, 2], ttl=5 * day * 1000, now=now).column("status").to_pylist() == [
        "found", "expired"]  # an int TTL is in nanoseconds
    # Without a TTL nothing expires.
    assert store.read("t", [2], now=now).column("status").to_pylist() == ["found"]


def test_key_inputs_all_agree(store):
    pl = pytest.importorskip("polars")
    pd = pytest.importorskip("pandas")
    store.write("t", feats([1, 2, 3], [1, 1, 1], x=[1.0, 2.0, 3.0]), keys="user_id", event_time="ts")
    want = [3.0, None, 1.0]
    inputs = [
        [3, 99, 1],
        (3, 99, 1),
        {"user_id": [3, 99, 1]},
        {"user_id": np.array([3, 99, 1], dtype=np.int32)},
        [{"user_id": 3}, {"user_id": 99}, {"user_id": 1}],
        pa.table({"user_id": pa.array([3, 99, 1], pa.uint16())}),
        pl.DataFrame({"user_id": [3, 99, 1]}),
        pd.DataFrame({"user_id": [3, 99, 1]}),
        [np.int64(3), np.int64(99), np.int64(1)],
        np.array([3, 99, 1], dtype=np.uint32),
    ]
    for keys in inputs:
        assert store.read("t", keys).column("x").to_pylist() == want, keys


def test_composite_and_string_keys_never_collide(store):
    data = pa.table({"a": [1, 12], "b": ["23", "3"], "ts": pa.array([1, 1], US), "x": [1.0, 2.0]})
    store.write("t", data, keys=["a", "b"], event_time="ts")
    assert store.read("t", [(12, "3"), (1, "23"), (1, "3")]).column("x").to_pylist() == [2.0, 1.0, None]
    assert store.read("t", {"b": ["3"], "a": [12]}).column("x").to_pylist() == [2.0]
    assert store.read("t", [{"a": 1, "b": "23"}]).column("x").to_pylist() == [1.0]
    s = pa.table({"k": ["ab", "a"], "v": ["c", "bc"], "ts": pa.array([1, 1], US), "x": [1.0, 2.0]})
    store.write("s", s, keys=["k", "v"], event_time="ts")
    assert store.read("s", [("a", "bc"), ("ab", "c")]).column("x").to_pylist() == [2.0, 1.0]


def test_int_keys_of_any_width_meet(store):
    data = pa.table({"user_id": pa.array([7, 2**63 + 5], pa.uint64()), "ts": pa.array([1, 1], US), "x": [1.0, 2.0]})
    store.write("t", data, keys="user_id", event_time="ts")
    keys = pa.table({"user_id": pa.array([7], pa.int8())})
    assert store.read("t", keys).column("x").to_pylist() == [1.0]
    assert store.read("t", [2**63 + 5, 2**70, -1, None]).column("status").to_pylist() == [
        "found", "missing", "missing", "missing"]


def test_read_matrix_across_tables_in_feature_order(store):
    store.write("eng", feats([1, 2], [1, 1], clicks=[10, 20], mins=[1.5, 2.5]), keys="user_id", event_time="ts")
    store.write("mkt", feats([2], [1], opened=[True]), keys="user_id", event_time="ts")
    store.write("bill", feats([1, 2], [1, 1], mrr=pa.array([9.0, None], pa.float32())),
                keys="user_id", event_time="ts")
    m = store.read_matrix(["eng", "mkt", "bill"], [2, 1, 3],
                          features=["mrr", ("eng", "clicks"), "opened", "mins"])
    assert m.dtype == np.float32 and m.shape == (3, 4)
    np.testing.assert_array_equal(m, np.array([
        [np.nan, 20, 1, 2.5],
        [9, 10, np.nan, 1.5],
        [np.nan] * 4,
    ], dtype=np.float32))
    r = store.reader(["eng", "bill"], features=["mins", "mrr"], ttl=["1d", None])
    assert r.width == 2 and r.tables == ["eng", "bill"]
    np.testing.assert_array_equal(r.vector(1, now=0), np.array([1.5, 9], np.float32))
    # eng rows are at 1 us; a day later they expire, bill has no TTL.
    np.testing.assert_array_equal(r.vector(1, now=dt.datetime(1970, 1, 3)), np.array([np.nan, 9], np.float32))
    assert r.matrix([]).shape == (0, 2)
    assert r.matrix({"user_id": [1, 2]}).shape == (2, 2)


def test_big_batches_round_trip(store):
    n = 50_000
    rng = np.random.default_rng(0)
    ids = rng.permutation(n)
    x = rng.random((n, 3)).astype(np.float32)
    for j, name in enumerate(["a", "b", "c"]):
        store.write(name, feats(ids, np.ones(n, np.int64), x=x[:, j]), keys="user_id", event_time="ts")
    want_ids = rng.integers(0, n + 1000, 20_000)
    m = store.read_matrix(["a", "b", "c"], want_ids.tolist(), features=[("a", "x"), ("b", "x"), ("c", "x")])
    pos = np.empty(n, np.int64)
    pos[ids] = np.arange(n)
    known = want_ids < n
    np.testing.assert_array_equal(m[known], x[pos[want_ids[known]]])
    assert np.isnan(m[~known]).all()
    for threads in [1, 2]:  # the same answer whatever the split
        small = store.read_matrix(["a", "b", "c"], want_ids[:100].tolist(), threads=threads,
                                  features=[("a", "x"), ("b", "x"), ("c", "x")])
        np.testing.assert_array_equal(small, m[:100])
    with pytest.raises(ps.errors.InvalidArgumentError, match="threads=0"):
        store.reader(["a"], features=["x"], threads=0)


def test_reopen_and_readonly(tmp_path):
    path = tmp_path / "store"
    s = ps.OnlineStore(path)
    s.write("t", feats([1], [1], x=[1.0]), keys="user_id", event_time="ts")
    assert s.path.endswith("online")
    del s
    ro = ps.OnlineStore(path, readonly=True)
    assert ro.read("t", [1]).column("x").to_pylist() == [1.0]
    with pytest.raises(ps.errors.StoreError, match="readonly=True"):
        ro.write("t", feats([1], [2], x=[2.0]), keys="user_id", event_time="ts")
    # The online/ directory itself works too.
    assert ps.OnlineStore(path / "online", readonly=True).read("t", [1]).num_rows == 1


def test_map_grows_when_full(tmp_path):
    s = ps.OnlineStore(tmp_path / "store", map_size=1 << 20)
    n = 100_000
    s.write("t", feats(np.arange(n), np.ones(n, np.int64), **{f"f{i}": np.ones(n, np.float32) for i in range(10)}),
            keys="user_id", event_time="ts")
    assert s._core.map_size() > 1 << 20
    assert s.read("t", [n - 1], features=["f9"]).column("f9").to_pylist() == [1.0]


def test_all_feature_types_round_trip(store):
    data = pa.table({
        "user_id": ["u1", "u2"],
        "ts": pa.array([1, 2], pa.timestamp("ms")),
        "b": [True, None],
        "i8": pa.array([-1, 2], pa.int8()),
        "u64": pa.array([2**64 - 1, 0], pa.uint64()),
        "f16": pa.array([1.5, None], pa.float32()),
        "d": pa.array([dt.date(2026, 1, 1), None], pa.date32()),
        "t": pa.array([dt.datetime(2026, 1, 1, 12), None], pa.timestamp("ns", "Europe/Paris")),
        "s": pa.array(["é", ""], pa.large_string()),
        "bin": pa.array([b"\x00", None], pa.binary()),
    })
    store.write("t", data, keys="user_id", event_time="ts")
    got = store.read("t", ["u2", "u1"])
    want = data.drop_columns(["user_id", "ts"]).take([1, 0]).cast(store.schema("t"))
    assert got.drop_columns(["status"]).equals(want)
    assert store.schema("t").field("s").type == pa.string()


def test_drop_and_recreate_a_table(store):
    store.write("t", feats([1, 2], [1, 1], x=[1.0, 2.0]), keys="user_id", event_time="ts")
    store.write("u", feats([1], [1], y=[5.0]), keys="user_id", event_time="ts")
    r = store.reader(["t", "u"], features=["x", "y"])
    np.testing.assert_array_equal(r.matrix([1]), [[1, 5]])
    assert store.drop("t") is True
    assert store.drop("t") is False
    assert store.tables() == ["u"]
    with pytest.raises(ps.errors.NotFoundError, match="no table 't'"):
        store.read("t", [1])
    with pytest.raises(ps.errors.NotFoundError, match="no table 't'"):
        r.matrix([1])
    # Re-created (new id, new rows): the prepared reader picks it up.
    store.write("t", feats([1], [1], x=[9.0]), keys="user_id", event_time="ts")
    np.testing.assert_array_equal(r.matrix([1, 2]), [[9, 5], [np.nan, np.nan]])
    assert store.read("u", [1]).column("y").to_pylist() == [5.0]


def test_close(tmp_path):
    with ps.OnlineStore(tmp_path / "store") as s:
        s.write("t", feats([1], [1], x=[1.0]), keys="user_id", event_time="ts")
    with pytest.raises(ps.errors.StoreError, match="closed"):
        s.read("t", [1])
    # The online/ directory of a new store may be named directly.
    s2 = ps.OnlineStore(tmp_path / "other" / "online")
    s2.write("t", feats([1], [1], x=[1.0]), keys="user_id", event_time="ts")
    assert s2.path == str(tmp_path / "other" / "online")
