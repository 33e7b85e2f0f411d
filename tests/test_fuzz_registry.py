"""Fuzzing registry.db: copies of a store whose registry is damaged (bit flips, runs of
random bytes, a whole page, the header) are opened and used in child processes.
Every round must end in one of two ways: the store reads back exactly what was
written, or a ``PitstopError`` says it cannot. Never a signal, never another exception
type, never a wrong answer without an error.

The child runs many rounds and reports each on a line, so one interpreter start serves
many rounds; a child that dies is restarted after the round it died in (and that round
fails the test).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

import pitstop as ps

ROUNDS = int(os.environ.get("PITSTOP_FUZZ_ROUNDS", "300"))

CHILD = r"""
import json, shutil, sys, traceback
from pathlib import Path
import pyarrow as pa
import pitstop as ps
from pitstop.errors import PitstopError

def observe(store):
    fs = ps.FeatureStore(store)
    try:
        out = {"groups": [], "views": [], "models": []}
        for g in fs.feature_groups():
            t = g.read()
            out["groups"].append([g.name, g.version, g.primary_key, g.event_time, g.online,
                                  g.ttl_ns, [str(f) for f in g.schema], t.to_pydict()])
        for v in fs.feature_views():
            spine = pa.table({"k": [1, 2, 3], "ts": pa.array([10**15, 2 * 10**15, 3 * 10**15],
                                                             pa.timestamp("us", "UTC"))})
            td = v.training_data(spine)
            out["views"].append([v.name, v.version, v.features, v.labels,
                                 {c: td.column(c).to_pylist() for c in v.features}])
        for m in fs.models.list():
            out["models"].append([m.name, m.version, m.view_name, m.view_version, m.snapshot_id,
                                  m.metrics, m.inputs, m.sha256, fs._snapshot(m.snapshot_id).tables])
        out["online"] = fs.online.read("g.v1", [1, 2, 3], now=4 * 10**18).column("x").to_pylist()
        return json.loads(json.dumps(out, default=str))
    finally:
        fs.close()

for line in sys.stdin:
    store = line.strip()
    try:
        result = {"ok": observe(store)}
    except PitstopError as e:
        result = {"error": type(e).__name__, "message": str(e)[:200]}
    except BaseException as e:
        result = {"foreign": type(e).__name__, "message": "".join(traceback.format_exception(e))[-2000:]}
    print(json.dumps(result, default=str), flush=True)
    shutil.rmtree(store, ignore_errors=True)
"""


def build(store: Path) -> None:
    from onnx_models import gbdt

    fs = ps.FeatureStore(store)
    g = fs.create_feature_group("g", primary_key="k", event_time="ts", online=True, ttl="3650d")
    g.insert(pa.table({"k": [1, 2, 3], "ts": pa.array([5 * 10**14, 6 * 10**14, 7 * 10**14],
                                                      pa.timestamp("us", "UTC")),
                       "x": [1.5, 2.5, 3.5], "s": ["a", "b", "c"]}))
    h = fs.create_feature_group("h", primary_key="k", event_time="ts")
    h.insert(pa.table({"k": [1, 2], "ts": pa.array([10**14, 2 * 10**14], pa.timestamp("us", "UTC")),
                       "y": [10, 20]}))
    fv = fs.create_feature_view("v", features=[g.select(["x"]), h.select_all()], labels=[])
    spine = pa.table({"k": [1], "ts": pa.array([10**15], pa.timestamp("us", "UTC"))})
    fv.training_data(spine)
    fs.models.register("m", gbdt(2), feature_view=fv, metrics={"auc": 0.75},
                       training_snapshot=fv.last_snapshot)
    fs.close()


def damage(data: bytearray, rng: random.Random) -> str:
    kind = rng.choice(["bits", "run", "page", "header", "cell"])
    n = len(data)
    if kind == "bits":
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif kind == "run":
        at = rng.randrange(n)
        for i in range(at, min(n, at + rng.randint(1, 64))):
            data[i] = rng.randrange(256)
    elif kind == "page":
        page = rng.randrange(n // 4096) * 4096
        data[page:page + 4096] = bytes(rng.randrange(256) for _ in range(4096))
    elif kind == "header":
        at = rng.randrange(100)
        data[at] = rng.randrange(256)
    else:  # a byte inside the last part of a page, where SQLite keeps cell contents
        page = rng.randrange(n // 4096) * 4096
        data[page + rng.randrange(2048, 4096)] ^= 1 << rng.randrange(8)
    return kind


def test_damaged_registry_never_crashes_nor_lies(tmp_path):
    pristine = tmp_path / "pristine"
    build(pristine)
    rng = random.Random(1234)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}

    def child():
        return subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    proc = child()
    (tmp_path / "base").mkdir()
    shutil.copytree(pristine, tmp_path / "base" / "s")
    proc.stdin.write(str(tmp_path / "base" / "s") + "\n")
    proc.stdin.flush()
    expected = json.loads(proc.stdout.readline())
    assert "ok" in expected, expected
    expected = expected["ok"]
    outcomes: dict[str, int] = {}
    failures = []
    registry = (pristine / "registry.db").read_bytes()
    for i in range(ROUNDS):
        store = tmp_path / f"r{i}"
        shutil.copytree(pristine, store)
        data = bytearray(registry)
        kind = damage(data, rng)
        (store / "registry.db").write_bytes(bytes(data))
        proc.stdin.write(f"{store}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            _, err = proc.communicate(timeout=30)
            failures.append((i, kind, f"child died: returncode {proc.returncode}", err[-2000:]))
            proc = child()
            continue
        result = json.loads(line)
        if "ok" in result:
            outcome = "read back intact" if result["ok"] == expected else "WRONG"
            if outcome == "WRONG":
                failures.append((i, kind, "wrong values without an error", result["ok"]))
        elif "error" in result:
            outcome = result["error"]
            if outcome != "CorruptStoreError":
                print(f"round {i} ({kind}): {outcome}: {result['message']}")
        else:
            outcome = "foreign exception"
            failures.append((i, kind, result["foreign"], result["message"]))
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    proc.communicate(timeout=60)
    print(f"registry fuzz, {ROUNDS} rounds: {outcomes}")
    assert not failures, failures[:5]
    assert ROUNDS < 100 or outcomes.get("CorruptStoreError", 0) > ROUNDS // 10
