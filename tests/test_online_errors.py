"""Every kind of bad input or damaged file: a pitstop error that says what is wrong, and
the store unchanged."""

from __future__ import annotations

import gc
import os

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

US = pa.timestamp("us")


def feats(ids, ts, **cols):
    return pa.table({"user_id": ids, "ts": pa.array(ts, US), **cols})


@pytest.fixture
def store(tmp_path):
    s = ps.OnlineStore(tmp_path / "store")
    s.write("t", feats([1, 2], [1, 1], x=[1.0, 2.0], n=pa.array([1, 2], pa.int32())),
            keys="user_id", event_time="ts")
    return s


def unchanged(store):
    assert store.read("t", [1, 2]).to_pydict() == {
        "x": [1.0, 2.0], "n": [1, 2], "status": ["found", "found"]}
    assert store.tables() == ["t"]


def write(store, data, **kw):
    args = dict(keys="user_id", event_time="ts")
    args.update(kw)
    return store.write("t", data, **args)


def test_wrong_key_types(store):
    with pytest.raises(errors.ColumnTypeError, match="key column 'user_id' of table 't' holds integers; got"):
        write(store, feats(["1"], [5], x=[9.0], n=[9]))
    with pytest.raises(errors.ColumnTypeError, match="holds integers; got the str '1'"):
        store.read("t", ["1"])
    with pytest.raises(TypeError):  # also the builtin
        store.read("t", pa.table({"user_id": ["1"]}))
    with pytest.raises(errors.InputTypeError, match="keys must be integers or strings.*float"):
        store.read("t", [1.5])
    with pytest.raises(errors.InputTypeError, match="not bool"):
        store.read("t", [True])
    with pytest.raises(errors.ColumnTypeError, match="key column 'user_id' has type Float64"):
        write(store, feats([1.0], [5], x=[9.0], n=[9]))
    unchanged(store)


def test_missing_key_columns(store):
    with pytest.raises(errors.SchemaError, match=r"has no column 'uid'; keys must name the entity key columns"):
        store.write("new", feats([1], [5], x=[9.0]), keys="uid", event_time="ts")
    with pytest.raises(errors.SchemaError, match=r"entity key is \['user_id'\] but this write names \['uid'\]"):
        write(store, feats([1], [5], x=[9.0], n=[9]), keys="uid")
    with pytest.raises(errors.SchemaError, match=r"keys have no column 'user_id'.*found: \['id'\]"):
        store.read("t", {"id": [1]})
    with pytest.raises(errors.SchemaError, match=r"keys has no column 'user_id'"):
        store.read("t", pa.table({"id": [1]}))
    with pytest.raises(errors.SchemaError, match=r"keys entry 0 has no 'user_id'"):
        store.read("t", [{"id": 1}])
    with pytest.raises(errors.SchemaError, match=r"entity key is \['user_id'\] but this write names \['x'\]"):
        write(store, feats([1], [5], x=[9.0], n=[9]), keys="x")
    unchanged(store)


def test_unknown_table_and_feature(store):
    with pytest.raises(errors.NotFoundError, match=r"no table 'nope'; write to it first \(tables: \['t'\]\)"):
        store.read("nope", [1])
    with pytest.raises(KeyError):
        store.read("nope", [1])
    with pytest.raises(errors.NotFoundError, match=r"table 't' has no feature 'y' \(features: \['x', 'n'\]\)"):
        store.read("t", [1], features=["y"])
    with pytest.raises(errors.NotFoundError, match="has no feature 'y'"):
        store.read_matrix(["t"], [1], features=["y"])
    with pytest.raises(errors.InvalidArgumentError, match="names a table that is not read"):
        store.read_matrix(["t"], [1], features=[("u", "x")])
    unchanged(store)


def test_values_that_do_not_fit_the_schema(store):
    with pytest.raises(errors.DataError, match="column 'n' has values that do not fit its stored type Int32"):
        write(store, feats([1], [5], x=[9.0], n=pa.array([2**40], pa.int64())))
    with pytest.raises(errors.ColumnTypeError, match="column 'x' is Float64 in the store but the data has Utf8"):
        write(store, feats([1], [5], x=["9"], n=[9]))
    with pytest.raises(errors.SchemaError, match=r"lacks feature column\(s\) \['n'\]"):
        write(store, feats([1], [5], x=[9.0]))
    with pytest.raises(errors.SchemaError, match=r"has column\(s\) \['z'\] that the table does not"):
        write(store, feats([1], [5], x=[9.0], n=[9], z=[1]))
    with pytest.raises(errors.DataError, match="column 'ts' has 1 null value"):
        write(store, pa.table({"user_id": [1], "ts": pa.array([None], US), "x": [9.0], "n": [9]}))
    with pytest.raises(errors.DataError, match="column 'user_id' has 1 null value"):
        write(store, pa.table({"user_id": [None, 1], "ts": pa.array([5, 5], US), "x": [9.0, 9.0], "n": [9, 9]}))
    with pytest.raises(errors.ColumnTypeError, match="column 'ts' has type Int64; event_time must be a timestamp"):
        write(store, pa.table({"user_id": [1], "ts": [5], "x": [9.0], "n": [9]}))
    with pytest.raises(errors.ColumnTypeError, match="read_matrix returns float32"):
        store.write("s", pa.table({"user_id": [1], "ts": pa.array([1], US), "name": ["a"]}),
                    keys="user_id", event_time="ts")
        store.read_matrix(["s"], [1], features=["name"])
    with pytest.raises(errors.ColumnTypeError, match="features must be booleans"):
        store.write("l", pa.table({"user_id": [1], "ts": pa.array([1], US), "v": [[1, 2]]}),
                    keys="user_id", event_time="ts")
    with pytest.raises(errors.SchemaError, match="may not be called 'status'"):
        store.write("st", pa.table({"user_id": [1], "ts": pa.array([1], US), "status": [1]}),
                    keys="user_id", event_time="ts")
    with pytest.raises(errors.DataError, match="limited to 507 bytes"):
        store.write("long", pa.table({"k": ["x" * 600], "ts": pa.array([1], US), "v": [1]}),
                    keys="k", event_time="ts")
    assert "l" not in store.tables() and "st" not in store.tables() and "long" not in store.tables()
    # Compatible types convert: narrower ints, ints into floats.
    write(store, feats([2], [5], x=pa.array([7], pa.int8()), n=pa.array([3], pa.uint8())))
    assert store.read("t", [2]).to_pylist() == [{"x": 7.0, "n": 3, "status": "found"}]


def test_bad_arguments(store):
    with pytest.raises(errors.InvalidArgumentError, match="is not a duration"):
        store.read("t", [1], ttl="soon")
    with pytest.raises(errors.InvalidArgumentError, match="now must be a datetime"):
        store.read("t", [1], now="today")
    with pytest.raises(errors.InvalidArgumentError, match="is a single value; pass a list"):
        store.read("t", "1")
    with pytest.raises(errors.InvalidArgumentError, match="ttl has 2 entries for 1 tables"):
        store.reader(["t"], features=["x"], ttl=["1d", "2d"])
    with pytest.raises(errors.InvalidArgumentError, match="give 2 value"):
        store.read("t", [(1, 2)])
    with pytest.raises(errors.InputTypeError, match="data must be a table"):
        store.write("t", [1, 2], keys="user_id", event_time="ts")
    unchanged(store)


def test_paths_that_are_not_stores(tmp_path):
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(errors.NotAStoreError, match="is not a pitstop store: it is a non-empty directory"):
        ps.OnlineStore(tmp_path)
    with pytest.raises(errors.NotAStoreError, match="it is a file"):
        ps.OnlineStore(tmp_path / "notes.txt")
    with pytest.raises(errors.NotAStoreError, match="no online store in it"):
        ps.OnlineStore(tmp_path / "new", readonly=True)
    with pytest.raises(OSError):  # StoreError is an OSError
        ps.OnlineStore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_lmdb_environment_of_something_else(tmp_path):
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(tmp_path / "other"), max_dbs=2)
    env.open_db(b"theirs")
    env.close()
    with pytest.raises(errors.NotAStoreError, match="LMDB environment of something else"):
        ps.OnlineStore(tmp_path / "other")


def test_truncated_data_file(tmp_path):
    s = ps.OnlineStore(tmp_path / "store")
    n = 20_000
    s.write("t", feats(list(range(n)), [1] * n, x=[1.0] * n), keys="user_id", event_time="ts")
    path = s.path
    del s
    gc.collect()  # the last handle closes the LMDB environment
    data = os.path.join(path, "data.mdb")
    size = os.path.getsize(data)
    with open(data, "r+b") as f:
        f.truncate(size // 2)
    with pytest.raises(errors.CorruptStoreError, match="data.mdb is truncated"):
        ps.OnlineStore(tmp_path / "store")
    with open(data, "r+b") as f:
        f.truncate(100)
    with pytest.raises(errors.CorruptStoreError, match="less than its two meta pages"):
        ps.OnlineStore(tmp_path / "store")


def test_garbage_data_file(tmp_path):
    s = ps.OnlineStore(tmp_path / "store")
    s.write("t", feats([1], [1], x=[1.0]), keys="user_id", event_time="ts")
    path = s.path
    del s
    gc.collect()
    with open(os.path.join(path, "data.mdb"), "r+b") as f:
        f.write(os.urandom(16384))
    with pytest.raises(errors.CorruptStoreError, match="not a valid LMDB file"):
        ps.OnlineStore(tmp_path / "store")


def test_corrupt_row_is_an_error_not_a_crash(tmp_path):
    s = ps.OnlineStore(tmp_path / "store")
    marker = 12345.678
    s.write("t", feats([1], [1], x=[marker], s=["abc"]), keys="user_id", event_time="ts")
    data = os.path.join(s.path, "data.mdb")
    with open(data, "rb") as f:
        raw = bytearray(f.read())
    at = raw.find(pa.array([marker]).buffers()[1].to_pybytes())
    assert at > 0
    # Damage the value under the open store (the map shares the page cache): the
    # row's checksum catches it on read.
    with open(data, "r+b") as f:
        f.seek(at)
        f.write(bytes([raw[at] ^ 1]))
    with pytest.raises(errors.CorruptStoreError, match="stored row of table 't' is unreadable"):
        s.read("t", [1])
    s.close()
    gc.collect()
    # Opened again, the check of the whole file catches it before any read; so does
    # damage to the row's format byte (21 + 1 bytes before the float).
    with pytest.raises(errors.CorruptStoreError, match="row of table 't'.*pitstop repair"):
        ps.OnlineStore(tmp_path / "store")
    raw[at - 22] = 0xEE
    with open(data, "wb") as f:
        f.write(bytes(raw))
    with pytest.raises(errors.CorruptStoreError, match="row of table 't': unknown row format"):
        ps.OnlineStore(tmp_path / "store")
