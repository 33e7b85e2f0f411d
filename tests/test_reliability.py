"""Issue 9's reproductions, one test each: no input, crash or damaged file may brick a
store, lose data, leak future values or escape as anything but a ``PitstopError``.

Crash tests kill real processes (see test_crash_consistency.py for the random-point
kills); file-system failures use real mounts (a full tmpfs, a read-only bind mount),
skipped where the machine does not allow mounting.
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

UTC = dt.timezone.utc


def t(*days, k=(1,), x=None):
    """One row per day offset from 2024-01-01 (or a datetime), keys ``k``."""
    when = [d if isinstance(d, dt.datetime) else dt.datetime(2024, 1, 1) + dt.timedelta(days=d)
            for d in days]
    keys = list(k) * len(when) if len(k) == 1 else list(k)
    xs = x if x is not None else [float(i) for i in range(len(when))]
    return pa.table({"k": keys, "ts": pa.array(when, pa.timestamp("us")), "x": xs})


def group(fs, name="g", **kw):
    kw.setdefault("online", True)
    return fs.create_feature_group(name, primary_key="k", event_time="ts", **kw)


def online_x(fs, keys, table="g.v1"):
    return fs.online.read(table, keys, now=dt.datetime(2100, 1, 1)).column("x").to_pylist()


@contextmanager
def mounted(target: Path, *options: str, source: str = "tmpfs", fstype: str | None = "tmpfs"):
    target.mkdir(parents=True, exist_ok=True)
    cmd = ["mount"] + (["-t", fstype] if fstype else []) + list(options) + [source, str(target)]
    if subprocess.run(cmd, capture_output=True).returncode != 0:
        pytest.skip("this machine does not allow mounting a file system (needs root)")
    try:
        yield target
    finally:
        subprocess.run(["umount", "-l", str(target)], capture_output=True)


# -- 1, 2: validate before the first durable write ------------------------------------


def test_1_out_of_range_time_is_rejected_before_anything_is_written(tmp_path):
    fs = ps.FeatureStore(tmp_path / "r1")
    g = group(fs)
    g.insert(t(0))
    with pytest.raises(errors.DataError, match="ts"):
        g.insert(t(dt.datetime(9999, 1, 1)))
    assert g.offline.version() == 0  # no Delta commit happened
    assert g.read().num_rows == 1
    fs.close()
    fs = ps.FeatureStore("%s" % (tmp_path / "r1"))  # opens, as every later open does
    assert online_x(fs, [1]) == [0.0]
    assert fs.get_feature_group("g").insert(t(1, x=[5.0])) == 1
    assert online_x(fs, [1]) == [5.0]


def test_1_a_commit_written_before_the_check_is_skipped_not_fatal(tmp_path):
    """A store that already holds an unservable commit (written by an older pitstop)
    opens; catch-up serves the commits around it and warns about it."""
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    g.insert(t(0))
    from pitstop import _schema

    bad = _schema.with_seq(_schema.conform(_schema.normalize(t(dt.datetime(9999, 1, 1), k=[2])),
                                           g.offline.schema(), "g"), 1)
    g.offline.append(bad)  # offline only, as the old insert left it
    good = _schema.with_seq(_schema.conform(_schema.normalize(t(3, k=[3], x=[7.0])),
                                            g.offline.schema(), "g"), 2)
    g.offline.append(good)
    fs.close()
    with pytest.warns(errors.OnlineLagWarning, match="version 1 cannot be served"):
        fs = ps.FeatureStore(tmp_path / "s")
    assert online_x(fs, [1, 3]) == [0.0, 7.0]
    assert fs.online.watermark("g.v1") == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ps.FeatureStore(tmp_path / "s").close()  # caught up: no warning any more


def test_2_online_failure_after_the_offline_commit_warns_and_heals(tmp_path):
    """A full disk under online/ fails the online write after the Delta commit: the
    insert returns (a retry would duplicate rows), warns, and the next open replays."""
    store = tmp_path / "store"
    fs = ps.FeatureStore(store)
    g = group(fs)
    fs.close()
    shutil.rmtree(store / "online")
    with mounted(store / "online", "-o", "size=1m"):
        fs = ps.FeatureStore(store)
        g = fs.get_feature_group("g")
        n = 40_000
        big = pa.table({"k": np.arange(n), "ts": pa.array(np.full(n, 1_700_000_000_000_000),
                                                           pa.timestamp("us")),
                        "x": np.random.default_rng(0).random(n),
                        "s": [f"padding-{i:08d}-" * 4 for i in range(n)]})
        with pytest.warns(errors.OnlineLagWarning, match="online write failed"):
            assert g.insert(big) == 0
        assert g.read().num_rows == n  # the offline commit stands
        fs.close()
        subprocess.run(["mount", "-o", "remount,size=256m", str(store / "online")], check=True)
        fs = ps.FeatureStore(store)  # catch-up replays version 0
        assert fs.online.watermark("g.v1") == 0
        got = fs.online.read("g.v1", [0, n - 1], now=dt.datetime(2100, 1, 1))
        assert got.column("x").to_pylist() == [big.column("x")[0].as_py(), big.column("x")[-1].as_py()]
        fs.close()


# -- 5, 6: the watermark lives with the online data; materialize swaps ---------------


def test_5_a_dropped_online_table_is_noticed_and_rebuilt(tmp_path):
    fs = ps.FeatureStore(tmp_path / "r3")
    g = group(fs)
    g.insert(t(0, 1, k=[1, 2]))
    fs.online.drop("g.v1")  # what a kill inside the old materialize left
    fs.close()
    fs = ps.FeatureStore(tmp_path / "r3")
    assert fs.online.tables() == ["g.v1"]
    assert online_x(fs, [1, 2]) == [0.0, 1.0]


def test_5_a_deleted_or_restored_online_dir_is_caught_up(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    g = group(fs)
    g.insert(t(0, k=[1]))
    fs.close()
    shutil.copytree(store / "online", tmp_path / "online-copy")  # a backup at version 0
    fs = ps.FeatureStore(store)
    fs.get_feature_group("g").insert(t(1, k=[1], x=[9.0]))
    fs.close()
    shutil.rmtree(store / "online")
    fs = ps.FeatureStore(store)
    assert online_x(fs, [1]) == [9.0]
    fs.close()
    shutil.rmtree(store / "online")
    shutil.copytree(tmp_path / "online-copy", store / "online")
    fs = ps.FeatureStore(store)
    assert online_x(fs, [1]) == [9.0]
    assert fs.online.watermark("g.v1") == 1


def test_5_a_rebuild_left_by_a_killed_materialize_is_cleared(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    g.insert(t(0, k=[1]))
    fs.online.write("g.v1#rebuild", t(0, k=[1], x=[123.0]), keys="k", event_time="ts")
    fs.close()
    fs = ps.FeatureStore(tmp_path / "s")
    assert fs.online.tables() == ["g.v1"]
    assert online_x(fs, [1]) == [0.0]


def test_6_materialize_swaps_so_readers_never_miss_the_table(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    n = 2_000
    g.insert(pa.table({"k": np.arange(n), "ts": pa.array(np.full(n, 1_700_000_000_000_000),
                                                          pa.timestamp("us")),
                       "x": np.arange(n, dtype=np.float64)}))
    reader = subprocess.Popen(
        [sys.executable, "-c", READER, str(tmp_path / "s"), str(n)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert reader.stdout.readline().strip() == "ready"
        for _ in range(8):
            assert g.materialize() == n
        out, err = reader.communicate(timeout=120)
    finally:
        reader.kill()
    assert reader.returncode == 0, err
    reads, problems = out.split()
    assert int(reads) > 50 and problems == "0", (out, err)


READER = """
import sys, time, numpy as np, pitstop as ps
store, n = sys.argv[1], int(sys.argv[2])
on = ps.OnlineStore(store, readonly=True)
r = on.reader("g.v1", features=["x"])
keys = list(range(0, n, 7))
want = np.array(keys, dtype=np.float32)
print("ready", flush=True)
reads = problems = 0
end = time.monotonic() + 6
while time.monotonic() < end:
    try:
        got = r.matrix(keys, now=4_000_000_000_000_000_000)[:, 0]
        problems += int(not np.array_equal(got, want))
        got = on.read("g.v1", keys[:5], now=4_000_000_000_000_000_000).column("x").to_pylist()
        problems += int(got != [float(k) for k in keys[:5]])
    except Exception as e:
        problems += 1
        print(type(e).__name__, e, file=sys.stderr)
    reads += 1
print(reads, problems)
"""


# -- 8, 9: time never silently changes; a failed first insert changes nothing -------


def test_8_timestamps_into_a_date_group_must_be_midnight(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = fs.create_feature_group("d", primary_key="k", event_time="day", online=True)
    g.insert(pa.table({"k": [1], "day": pa.array([dt.date(2024, 1, 1)]), "x": [1.0]}))
    late = pa.table({"k": [1], "day": pa.array([dt.datetime(2024, 1, 2, 23, 59)], pa.timestamp("us")),
                     "x": [2.0]})
    with pytest.raises(errors.DataError, match="'day'.*time of day"):
        g.insert(late)
    midnight = late.set_column(1, "day", pa.array([dt.datetime(2024, 1, 2)], pa.timestamp("us")))
    assert g.insert(midnight) == 1
    assert g.read().column("day").to_pylist() == [dt.date(2024, 1, 1), dt.date(2024, 1, 2)]
    with pytest.raises(errors.DataError, match="'day'"):  # date64 with a time part
        g.insert(pa.table({"k": [1], "day": pa.array([86_400_000 * 3 + 5], pa.date64()), "x": [3.0]}))


def test_9_a_failed_first_insert_does_not_fix_the_schema(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    dup = pa.Table.from_arrays([pa.array([1]), pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")),
                                pa.array([1.0]), pa.array([2.0])], names=["k", "ts", "x", "x"])
    with pytest.raises(errors.SchemaError, match="duplicate column"):
        g.insert(dup)
    with pytest.raises(errors.DataError):
        g.insert(t(dt.datetime(9999, 1, 1)))  # passes the offline checks, fails online ones
    assert fs.get_feature_group("g").schema is None
    other = pa.table({"k": [1], "ts": pa.array([dt.datetime(2024, 1, 1)], pa.timestamp("us")),
                      "y": ["a"]})
    assert g.insert(other) == 0
    assert g.features == ["y"]


# -- 10: the registry ------------------------------------------------------------------


def test_10_an_empty_registry_is_not_a_new_store(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    group(fs).insert(t(0))
    fs.close()
    for suffix in ("", "-wal", "-shm"):
        Path(f"{store}/registry.db{suffix}").unlink(missing_ok=True)
    (store / "registry.db").write_bytes(b"")
    with pytest.raises(errors.CorruptStoreError, match="0 bytes.*backup"):
        ps.FeatureStore(store)
    # A zero-length registry in a store with no data (creation killed) is just new.
    empty = tmp_path / "new"
    empty.mkdir()
    (empty / "registry.db").write_bytes(b"")
    ps.FeatureStore(empty).close()


def test_10_recreating_a_group_over_an_orphaned_table_is_refused(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    group(fs).insert(t(0))
    with fs.registry.tx() as db:
        db.execute("DELETE FROM feature_groups")  # a registry restored from an old copy
    with pytest.raises(errors.AlreadyExistsError, match="registry does not know"):
        group(fs)
    assert group(fs, version=2).version == 2


# -- 11: every error a caller can cause is a PitstopError -----------------------------


def test_11_bad_arguments_are_pitstop_errors(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    g.insert(t(0))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    bad = [
        lambda: fs.create_feature_group("a", version=2**63, primary_key="k", event_time="ts"),
        lambda: fs.create_feature_group("a", primary_key="k", event_time="ts", ttl="100000000w"),
        lambda: fs.create_feature_group("a", primary_key=None, event_time="ts"),
        lambda: fs.create_feature_group("a", primary_key="k", event_time=None),
        lambda: fs.create_feature_group("a", primary_key=["k", "k"], event_time="ts"),
        lambda: fs.get_feature_group("g", version=2**63),
        lambda: g.read(as_of="yesterday"),
        lambda: g.read(as_of=-1),
        lambda: g.read(columns=["nope"]),
        lambda: fs.online.read("g.v1", [1], now=2**70),
        lambda: fv.get_feature_vectors({"k": [1]}, now=2**70),
        lambda: fs.models.register("m", b"not onnx", feature_view=fv, metrics={"auc": "high"}),
        lambda: fs.models.register("m", b"not onnx", feature_view=None),
        lambda: fs.models.register("m", tmp_path / "missing.onnx", feature_view=fv),
        lambda: fs.models.register("m", b"x", feature_view=fv, training_snapshot=10**6),
    ]
    for i, call in enumerate(bad):
        with pytest.raises(errors.PitstopError):
            call()
        assert fs.feature_groups()[0].name == "g", i  # nothing was created


def test_11_damaged_registry_rows_are_corrupt_store_errors(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs, online=False)
    g.insert(t(0))
    fs.create_feature_view("v", features=[g.select_all()])
    for sql in ("UPDATE feature_groups SET primary_key='{not json'",
                "UPDATE feature_groups SET primary_key='[1, 2]'",
                "UPDATE feature_groups SET schema=x'00ff00ff'",
                "UPDATE feature_views SET spec='[{\"group\": 1}]'"):
        with fs.registry.tx() as db:
            db.execute(sql)
        with pytest.raises(errors.CorruptStoreError, match="registry"):
            fs.get_feature_group("g").schema  # noqa: B018
            fs.get_feature_view("v")
        fs.close()
        shutil.rmtree(tmp_path / "s")
        fs = ps.FeatureStore(tmp_path / "s")
        g = group(fs, online=False)
        g.insert(t(0))
        fs.create_feature_view("v", features=[g.select_all()])


def test_11_the_cli_prints_errors_not_tracebacks(tmp_path):
    fs = ps.FeatureStore(tmp_path / "s")
    fs.close()
    for args in (["describe", "nope"], ["ingest", "nope", str(tmp_path / "missing.parquet")],
                 ["materialize", "nope", "--version", str(2**63)]):
        r = subprocess.run([sys.executable, "-m", "pitstop", "--store", str(tmp_path / "s"), *args],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, (args, r.stderr)
        assert r.stderr.startswith("pitstop: error: ") and "Traceback" not in r.stderr, r.stderr
    (tmp_path / "s" / "registry.db").write_bytes(b"garbage" * 1000)
    r = subprocess.run([sys.executable, "-m", "pitstop", "--store", str(tmp_path / "s"), "list"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" not in r.stderr and "registry" in r.stderr


# -- 12: read-only stores, views used by models, unknown snapshots ---------------------


def test_12_a_read_only_mount_opens_for_reading(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    g = group(fs)
    g.insert(t(0, 1, k=[1, 2]))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    spine = pa.table({"k": [1], "ts": pa.array([dt.datetime(2030, 1, 1)], pa.timestamp("us"))})
    want = fv.training_data(spine).column("x").to_pylist()
    fs.close()
    with mounted(tmp_path / "ro", "--bind", "-o", "ro", source=str(store), fstype=None) as ro:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(ro)], check=True)
        fs = ps.FeatureStore(ro)
        assert fs.readonly
        assert fs.get_feature_view("v").training_data(spine).column("x").to_pylist() == want
        assert fs.get_feature_view("v").get_feature_vectors({"k": [2]}).column("x").to_pylist() == [1.0]
        with pytest.raises(errors.StoreError, match="read-only"):
            fs.get_feature_group("g").insert(t(2))
        fs.close()


def test_12_readonly_flag_never_writes(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    group(fs).insert(t(0))
    fs.close()
    before = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    fs = ps.FeatureStore(store, readonly=True)
    assert fs.get_feature_group("g").read().num_rows == 1
    for call in (lambda: group(fs, name="h"), lambda: fs.get_feature_group("g").materialize(),
                 lambda: fs.repair_online()):
        with pytest.raises(errors.StoreError, match="read-only"):
            call()
    fs.close()
    after = {p: p.stat().st_mtime_ns for p in store.rglob("*") if p.is_file()}
    changed = [p for p in before if after.get(p) != before[p] and p.name != "lock.mdb"]
    assert changed == []


def test_12_a_view_used_by_a_model_cannot_be_deleted(tmp_path):
    from onnx_models import gbdt

    fs = ps.FeatureStore(tmp_path / "s")
    g = group(fs)
    g.insert(t(0))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    with pytest.raises(errors.NotFoundError, match="snapshot"):
        fs.models.register("m", gbdt(1), feature_view=fv, training_snapshot=42)
    fs.models.register("m", gbdt(1), feature_view=fv)
    with pytest.raises(errors.InvalidArgumentError, match="used by model"):
        fs.delete_feature_view("v", 1)
    fs.models.delete("m", 1)
    fs.delete_feature_view("v", 1)


def test_repair_rebuilds_the_online_store_into_a_fresh_environment(tmp_path):
    store = tmp_path / "s"
    fs = ps.FeatureStore(store)
    g = group(fs)
    g.insert(t(0, 1, k=[1, 2]))
    fs.close()
    (store / "online" / "data.mdb").write_bytes(b"\0" * 100)  # truncated: detected on open
    with pytest.warns(errors.StoreOpenWarning, match="repair"):
        fs = ps.FeatureStore(store)
    r = subprocess.run([sys.executable, "-m", "pitstop", "--store", str(store), "repair"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "g.v1 (2 rows)" in r.stdout
    fs = ps.FeatureStore(store)
    assert online_x(fs, [1, 2]) == [0.0, 1.0]
    assert len(list(store.glob("online.damaged-*"))) == 1
