"""Feature groups, views and training data on a real store (Delta Lake + SQLite)."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import subprocess
import sys

import pyarrow as pa
import pytest
from hypothesis import given, settings, strategies as st

import pitstop as ps
from pitstop import errors

import reference

UTC = dt.timezone.utc


def ts(*seconds):
    return pa.array([s * 1_000_000 for s in seconds], pa.timestamp("us", "UTC"))


@pytest.fixture
def fs(tmp_path):
    store = ps.FeatureStore(tmp_path / "store")
    yield store
    store.close()


def clicks(fs, **kw):
    return fs.create_feature_group("clicks", primary_key="user_id", event_time="ts", **kw)


def test_insert_read_and_time_travel(fs):
    g = clicks(fs)
    assert g.insert(pa.table({"user_id": [1, 2], "ts": ts(1, 2), "n": [10, 20]})) == 0
    assert g.insert(pa.table({"user_id": [1], "ts": ts(3), "n": [30]})) == 1
    assert g.read().column("n").to_pylist() == [10, 20, 30]
    assert g.read(as_of=0).column("n").to_pylist() == [10, 20]
    assert g.features == ["n"]
    assert fs.get_feature_group("clicks").version == 1


def test_every_input_library(fs):
    import duckdb
    import pandas as pd
    import polars as pl

    g = clicks(fs)
    base = pa.table({"user_id": [1], "ts": ts(1), "n": [1.5]})
    con = duckdb.connect()
    con.register("b", base)
    for data in (base, base.to_pandas(), pl.from_arrow(base), con.sql("select * from b")):
        g.insert(data)
    assert g.read().num_rows == 4
    assert isinstance(pd, object)


def test_types_are_normalized_and_enforced(fs):
    g = clicks(fs)
    g.insert(pa.table({"user_id": pa.array([1], pa.uint32()), "ts": pa.array([1000], pa.timestamp("ns")),
                       "n": pa.array(["a"], pa.large_string())}))
    assert g.schema == pa.schema([("user_id", pa.int64()), ("ts", pa.timestamp("us", "UTC")), ("n", pa.string())])
    g.insert(pa.table({"n": ["b"], "user_id": pa.array([2], pa.int8()), "ts": ts(2)}))  # any order, widening
    assert g.read().column("user_id").to_pylist() == [1, 2]


def insert_fails(g, data, exc, match):
    before = g.offline.version()
    with pytest.raises(exc, match=match):
        g.insert(data)
    assert g.offline.version() == before


def test_bad_inserts_write_nothing(fs):
    g = clicks(fs, nan_policy="error")
    g.insert(pa.table({"user_id": [1], "ts": ts(1), "n": [1.0]}))
    insert_fails(g, pa.table({"user_id": [1], "ts": ts(1)}), errors.SchemaError, r"lacks \['n'\].*new version")
    insert_fails(g, pa.table({"user_id": [1], "ts": ts(1), "n": [1.0], "m": [2]}), errors.SchemaError,
                 r"has extra \['m'\]")
    insert_fails(g, pa.table({"user_id": [1], "ts": ts(1), "n": ["x"]}), errors.SchemaError,
                 "'n' is string but the group stores double")
    insert_fails(g, pa.table({"ts": ts(1), "n": [1.0]}), errors.SchemaError, "no column 'user_id'")
    insert_fails(g, pa.table({"user_id": [None, 1], "ts": ts(1, 2), "n": [1.0, 2.0]}), errors.DataError,
                 "'user_id' has 1 null")
    insert_fails(g, pa.table({"user_id": [1], "ts": pa.array([None], pa.timestamp("us")), "n": [1.0]}),
                 errors.DataError, "event_time column 'ts' has 1 null")
    insert_fails(g, pa.table({"user_id": [1], "ts": [5], "n": [1.0]}), errors.ColumnTypeError,
                 "must be a timestamp")
    insert_fails(g, pa.table({"user_id": [1.5], "ts": ts(1), "n": [1.0]}), errors.ColumnTypeError,
                 "keys must be integers or strings")
    insert_fails(g, pa.table({"user_id": [1], "ts": ts(1), "n": [float("nan")]}), errors.DataError,
                 "NaN")
    insert_fails(g, pa.table({"user_id": [1], "ts": pa.array([1], pa.timestamp("ns")), "n": [1.0]}),
                 errors.DataError, "without losing information")
    insert_fails(g, [1, 2], errors.InputTypeError, "must be a table")
    insert_fails(g, pa.table({"user_id": [1], "ts": ts(1), "n": [1.0], "_pitstop_seq": [1]}),
                 errors.SchemaError, "reserved")
    assert g.read().num_rows == 1


def test_nan_policies(fs):
    nan = pa.table({"user_id": [1], "ts": ts(1), "x": [float("nan")]})
    g = fs.create_feature_group("a", primary_key="user_id", event_time="ts")
    g.insert(nan)
    assert g.read().column("x").to_pylist() == [None]
    g = fs.create_feature_group("b", primary_key="user_id", event_time="ts", nan_policy="keep")
    g.insert(nan)
    assert str(g.read().column("x").to_pylist()[0]) == "nan"


@pytest.mark.parametrize("name", ["a/b", "..", "a b", "", "x" * 129, "é", 3])
def test_bad_names(fs, name):
    with pytest.raises(errors.InvalidArgumentError, match="not allowed"):
        fs.create_feature_group(name, primary_key="k", event_time="ts")


def test_registry_errors(fs, tmp_path):
    clicks(fs)
    with pytest.raises(errors.AlreadyExistsError, match="version=2"):
        clicks(fs)
    with pytest.raises(errors.NotFoundError, match=r"no feature group 'nope'; the store has \['clicks'\]"):
        fs.get_feature_group("nope")
    with pytest.raises(KeyError):
        fs.get_feature_group("clicks", 7)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "file.txt").write_text("hello")
    with pytest.raises(errors.StoreError, match="not a pitstop store"):
        ps.FeatureStore(tmp_path / "junk")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "registry.db").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(errors.StoreError, match="not a readable pitstop registry"):
        ps.FeatureStore(bad)
    with pytest.raises(errors.StoreError, match="not a pitstop store"):
        ps.FeatureStore(tmp_path / "absent", create=False)


def make_view(fs):
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", ttl="10s")
    b = fs.create_feature_group("b", primary_key=["user_id", "item"], event_time="ts",
                                created_time="created")
    a.insert(pa.table({"user_id": [1, 1, 2], "ts": ts(1, 5, 2), "x": [1.0, 5.0, 2.0]}))
    b.insert(pa.table({"user_id": [1, 1], "item": ["p", "p"], "ts": ts(3, 3), "created": ts(4, 3),
                       "y": ["late", "early"]}))
    return fs.create_feature_view("v", features=[a.select(["x"]), b.select_all(on={"uid": "user_id",
                                                                                    "item": "item"})],
                                  labels=["label"])


def spine():
    return pa.table({"user_id": [1, 1, 2, 1], "uid": [1, 1, 2, 1], "item": ["p", "p", "p", "q"],
                     "t": ts(4, 20, 3, 9), "label": [0, 1, 0, 1]})


def test_training_data_is_point_in_time(fs):
    v = make_view(fs)
    assert v.features == ["x", "y"]
    out = v.training_data(spine())
    assert out.column("x").to_pylist() == [1.0, None, 2.0, 5.0]  # ttl 10s expires row 2
    assert out.column("y").to_pylist() == ["late", "late", None, None]  # created time breaks the tie
    assert out.column("label").to_pylist() == [0, 1, 0, 1]


def test_snapshot_reproduces_bytes(fs):
    v = make_view(fs)
    first = v.training_data(spine())
    fs.get_feature_group("a").insert(pa.table({"user_id": [1, 2], "ts": ts(3, 3), "x": [3.0, 3.5]}))
    assert v.training_data(spine()).column("x").to_pylist() != first.column("x").to_pylist()
    again = v.training_data(spine(), snapshot=first)
    assert ipc_bytes(again) == ipc_bytes(first)
    again = v.training_data(spine(), snapshot=ps.snapshot_of(first).id)
    assert ipc_bytes(again) == ipc_bytes(first)


def ipc_bytes(t: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    return sink.getvalue().to_pybytes()


def test_train_test_split_never_leaks(fs):
    v = make_view(fs)
    X_tr, X_te, y_tr, y_te = v.train_test_split(spine(), test_start="1970-01-01T00:00:09", spine_time="t")
    assert y_tr.column("label").to_pylist() == [0, 0]
    assert y_te.column("label").to_pylist() == [1, 1]
    assert X_tr.column_names == ["x", "y"] and X_te.num_rows == 2


def test_batch_data_latest_per_key(fs):
    make_view(fs)
    v = fs.create_feature_view("w", features=[fs.get_feature_group("a").select(["x"])])
    out = v.batch_data(now=dt.datetime(1970, 1, 1, 0, 0, 6, tzinfo=UTC)).sort_by("user_id")
    assert out.to_pydict() == {"user_id": [1, 2], "x": [5.0, 2.0]}


def test_view_errors(fs):
    make_view(fs)
    a = fs.get_feature_group("a")
    with pytest.raises(errors.SchemaError, match=r"no feature\(s\) \['zz'\]"):
        a.select(["zz"])
    with pytest.raises(errors.InvalidArgumentError, match="prefix"):
        fs.create_feature_view("dup", features=[a.select(["x"]), a.select(["x"])])
    with pytest.raises(errors.InvalidArgumentError, match="used by feature view"):
        fs.delete_feature_group("a", 1)


@st.composite
def batches(draw):
    n_batches = draw(st.integers(1, 4))
    out = []
    for _ in range(n_batches):
        n = draw(st.integers(0, 8))
        out.append(pa.table({
            "k": pa.array([draw(st.integers(0, 3)) for _ in range(n)], pa.int64()),
            "ts": ts(*[draw(st.integers(0, 6)) for _ in range(n)]),
            "v": pa.array([draw(st.integers(0, 100)) for _ in range(n)], pa.int64()),
        }))
    return out


@settings(max_examples=25)
@given(batches(), st.sampled_from([None, "2s", "5s"]))
def test_training_data_equals_reference(tmp_path_factory, data, ttl):
    store = ps.FeatureStore(tmp_path_factory.mktemp("s") / "store")
    g = store.create_feature_group("g", primary_key="k", event_time="ts", ttl=ttl)
    for b in data:
        g.insert(b)
    v = store.create_feature_view("v", features=[g.select(["v"])])
    sp = pa.table({"k": pa.array([0, 1, 2, 3, 0, 4], pa.int64()), "t": ts(0, 2, 3, 4, 6, 6)})
    got = v.training_data(sp)
    all_rows = pa.concat_tables([b for b in data])
    want = reference.pit_join(sp, [all_rows], spine_keys=["k"], keys=["k"], spine_time="t",
                              feature_times=["ts"], ttls_ns=[ps._inputs.duration_ns(ttl)], created=[None])
    assert got.column("v").to_pylist() == want.column("v").to_pylist()
    store.close()


def _insert_many(path: str, group: str, n: int) -> None:
    store = ps.FeatureStore(path)
    g = store.get_feature_group(group)
    for i in range(n):
        g.insert(pa.table({"k": [i], "ts": ts(i), "v": [float(i)]}))
    store.close()


def _read_many(path: str, n: int) -> None:
    store = ps.FeatureStore(path)
    v = store.get_feature_view("v")
    for _ in range(n):
        out = v.training_data(pa.table({"k": [0, 1], "t": ts(100, 100)}))
        assert out.num_rows == 2
    store.close()


def test_concurrent_processes(tmp_path):
    path = str(tmp_path / "store")
    store = ps.FeatureStore(path)
    for name in ("a", "b"):
        g = store.create_feature_group(name, primary_key="k", event_time="ts")
        g.insert(pa.table({"k": [0], "ts": ts(0), "v": [0.0]}))
    store.create_feature_view("v", features=[store.get_feature_group("a").select(["v"], prefix="a_"),
                                             store.get_feature_group("b").select(["v"], prefix="b_")])
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_insert_many, args=(path, "a", 8)),
             ctx.Process(target=_insert_many, args=(path, "b", 8)),
             ctx.Process(target=_read_many, args=(path, 8))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert store.get_feature_group("a").read().num_rows == 9
    assert store.get_feature_group("b").offline.version() == 8
    store.close()


def run_cli(*args, store):
    return subprocess.run([sys.executable, "-m", "pitstop", "--store", str(store), *args],
                          capture_output=True, text=True)


def test_cli(tmp_path):
    import pyarrow.parquet as pq

    store = tmp_path / "s"
    assert run_cli("init", store=store).returncode == 0
    fs = ps.FeatureStore(store)
    fs.create_feature_group("clicks", primary_key="user_id", event_time="ts")
    pq.write_table(pa.table({"user_id": [1, 2], "ts": ts(1, 2), "n": [3, 4]}), tmp_path / "in.parquet")
    res = run_cli("ingest", "clicks", str(tmp_path / "in.parquet"), store=store)
    assert res.returncode == 0 and "inserted 2 rows" in res.stdout
    fs.create_feature_view("v", features=[fs.get_feature_group("clicks").select(["n"])])
    pq.write_table(pa.table({"user_id": [1, 2], "t": ts(5, 0)}), tmp_path / "spine.parquet")
    res = run_cli("training-data", "v", str(tmp_path / "spine.parquet"), str(tmp_path / "out.parquet"),
                  store=store)
    assert res.returncode == 0, res.stderr
    assert pq.read_table(tmp_path / "out.parquet").column("n").to_pylist() == [3, None]
    res = run_cli("list", store=store)
    assert "group clicks v1" in res.stdout and "view  v v1" in res.stdout
    assert "user_id: int64" in run_cli("describe", "clicks", store=store).stdout
    res = run_cli("describe", "nope", store=store)
    assert res.returncode == 1 and "no feature view 'nope'" in res.stderr
    res = run_cli("ingest", "clicks", str(tmp_path / "missing.parquet"), store=store)
    assert res.returncode == 1 and "no such file" in res.stderr
    assert run_cli("frobnicate", store=store).returncode == 2
    fs.close()
