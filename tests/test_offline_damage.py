"""A damaged or half-created Delta table never bricks the store: a log without a commit
(a writer killed inside the first commit) is no table yet and the next insert creates
it; damaged commits and data files raise CorruptStoreError naming the table."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

import fork_workers as W

def _strace() -> str | None:
    """strace, if installed and allowed to trace here (containers may forbid ptrace)."""
    path = shutil.which("strace")
    if path is None:
        return None
    probe = subprocess.run([path, "-f", "-o", os.devnull, "true"], capture_output=True, timeout=60)
    return path if probe.returncode == 0 else None


STRACE = _strace()
NO_STRACE = ("needs strace, installed (apt-get install strace) and allowed to ptrace, to kill a "
             "writer inside its Delta commit")


@pytest.fixture
def fs(tmp_path):
    store = ps.FeatureStore(tmp_path / "store")
    yield store
    store.close()


def users(g) -> list[int]:
    return sorted(g.read().column("user_id").to_pylist())


def table_files(path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*")
                  if p.is_file() and p.name != ".pitstop-create.lock")


def test_a_log_without_a_commit_is_no_table_yet(tmp_path, fs):
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts", online=True)
    log = g.offline.path / "_delta_log"
    log.mkdir(parents=True)
    # What a dead first commit leaves besides: a temporary commit and a data file.
    (log / "00000000000000000000.json#1").write_text('{"commitInfo": {}}\n')
    (g.offline.path / "part-00000-dead-c000.snappy.parquet").write_bytes(b"PAR1 half")
    fs.close()
    fs = ps.FeatureStore(tmp_path / "store")  # opens (catch-up sees no table)
    g = fs.get_feature_group("g")
    assert g.offline.version() == -1 and not g.offline.exists()
    with pytest.raises(errors.NotFoundError, match="has no data yet"):
        g.read()
    assert g.insert(W.rows([1, 2], 1, 0.5)) == 0
    assert g.insert(W.rows([3], 2, 0.5)) == 1
    assert g.read().to_pydict() == pa.concat_tables([W.rows([1, 2], 1, 0.5), W.rows([3], 2, 0.5)]).to_pydict()
    files = table_files(g.offline.path)
    assert "_delta_log/00000000000000000000.json#1" not in files
    assert "part-00000-dead-c000.snappy.parquet" not in files  # the dead attempt's, cleared
    assert len([f for f in files if f.endswith(".parquet")]) == 2
    fs.close()


def strace_insert(path, group: str, batch: int, *, kill_at: int | None) -> subprocess.CompletedProcess:
    """Runs a process that inserts one batch into ``group``; with ``kill_at=n`` strace
    SIGKILLs it at its n-th linkat, the call that publishes a Delta commit file."""
    cmd = [sys.executable, W.__file__, "insert_into_new_group", f'"{path}"', f'"{group}"', str(batch)]
    if kill_at is not None:
        cmd = [STRACE, "-f", "-o", os.devnull, "-e", f"inject=linkat:signal=KILL:when={kill_at}", *cmd]
    env = dict(os.environ, PYTHONPATH=os.path.dirname(W.__file__))
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=180)


@pytest.mark.skipif(STRACE is None, reason=NO_STRACE)
def test_a_writer_killed_inside_the_first_commit(tmp_path):
    path = tmp_path / "store"
    killed = strace_insert(path, "g", 0, kill_at=1)
    assert killed.returncode != 0 and '"inserted"' not in killed.stdout, killed.stderr[-2000:]
    log = path / "offline" / "g" / "v1" / "_delta_log"
    assert log.is_dir() and not (log / "00000000000000000000.json").exists(), (
        "the kill did not land inside the first commit: deltalake no longer publishes commits "
        f"with linkat? (find the call with strace -f -e trace=file); files: {os.listdir(log)}")
    # Another process can open the store and insert; nothing of the dead insert shows.
    ok = strace_insert(path, "g", 1, kill_at=None)
    assert ok.returncode == 0, ok.stderr[-2000:]
    fs = ps.FeatureStore(path)
    g = fs.get_feature_group("g")
    assert g.insert(W.rows([500], 5, 0.5)) == 1
    assert users(g) == list(range(100, 200)) + [500]
    vec = fs.online.read(g.online_table, [0, 100, 500]).column("status").to_pylist()
    assert vec == ["missing", "found", "found"]
    files = table_files(g.offline.path)  # the dead attempt's files were cleared away
    assert len([f for f in files if f.endswith(".parquet")]) == 2 and not any("#" in f for f in files)
    fs.close()


@pytest.mark.skipif(STRACE is None, reason=NO_STRACE)
def test_a_writer_killed_inside_a_later_commit(tmp_path):
    path = tmp_path / "store"
    assert strace_insert(path, "g", 0, kill_at=None).returncode == 0
    killed = strace_insert(path, "g", 1, kill_at=1)
    assert killed.returncode != 0 and '"inserted"' not in killed.stdout, killed.stderr[-2000:]
    fs = ps.FeatureStore(path)
    g = fs.get_feature_group("g")
    assert g.offline.version() == 0 and users(g) == list(range(100))
    assert g.insert(W.rows([500], 5, 0.5)) == 1  # the dead commit's temp file is no obstacle
    assert users(g) == list(range(100)) + [500]
    fs.close()


def damage_commit(g, text: str) -> None:
    (g.offline.path / "_delta_log" / "00000000000000000001.json").write_text(text)


def data_files(g) -> list:
    return sorted(g.offline.path.glob("*.parquet"))


DAMAGE = {
    "garbage commit JSON": lambda g: damage_commit(g, "{garbage"),
    "a commit cut in half": lambda g: damage_commit(
        g, (g.offline.path / "_delta_log" / "00000000000000000001.json").read_text()[:150]),
    "garbage first commit": lambda g: (g.offline.path / "_delta_log" / "00000000000000000000.json")
    .write_text("not json at all"),
    "a deleted data file": lambda g: data_files(g)[0].unlink(),
    "a truncated data file": lambda g: os.truncate(data_files(g)[0], 100),
    "an emptied data file": lambda g: os.truncate(data_files(g)[-1], 0),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_damage_raises_corrupt_store_error(fs, damage):
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts")
    g.insert(W.rows([1, 2], 1, 0.5))
    g.insert(W.rows([3], 2, 0.5))
    fv = fs.create_feature_view("v", features=[g.select(["x"])])
    DAMAGE[damage](g)
    what = str(g.offline.path)
    with pytest.raises(errors.CorruptStoreError, match="is damaged") as e:
        g.read()
    assert what in str(e.value) and "Restore" in str(e.value) and "delete_feature_group" in str(e.value)
    assert "<unknown>" not in str(e.value)  # no Rust backtrace noise
    with pytest.raises(errors.CorruptStoreError):
        fv.training_data(pa.table({"user_id": [1], "t": W.ts(9)}))
    if "data file" not in damage:  # the log itself is damaged: no version, no insert
        with pytest.raises(errors.CorruptStoreError):
            g.offline.version()
        with pytest.raises(errors.CorruptStoreError):
            g.insert(W.rows([4], 3, 0.5))


def test_unknown_columns_are_a_schema_error_not_damage(fs):
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts")
    g.insert(W.rows([1], 1, 0.5))
    with pytest.raises(errors.SchemaError, match=r"no column\(s\) \['nope'\]"):
        g.read(columns=["nope"])
