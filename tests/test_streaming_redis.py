"""Streaming from a real ``redis-server`` (loopback, a free port, a temp dir): ordered
and out-of-order events, several consumers in one group, bad events to the
dead-letter table, and a job process killed (SIGKILL) at random points: after every
kill the online store is the newest row per key of exactly the events whose positions
it stored; at the end, the offline table holds every event exactly once and the
group's aggregation serves what training data computes from it."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import deltalake
import pyarrow as pa
import pytest

import pitstop as ps
import stream_workers as W
from pitstop import agg
from pitstop.errors import PitstopError, SourceError
from pitstop.streaming.sources import redis_id
from redis_server import start_redis

redis = pytest.importorskip("redis")

ROUNDS = int(os.environ.get("PITSTOP_STREAM_CRASH_ROUNDS", "22"))
BASE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
KEYS = 15


@pytest.fixture
def server(tmp_path):
    d = tmp_path / "redis"
    d.mkdir()
    p, url = start_redis(d)
    try:
        yield url
    finally:
        p.kill()
        p.wait()


def make_store(path: Path, *, aggregation: bool = False) -> ps.FeatureStore:
    fs = ps.FeatureStore(path)
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": pa.array([0], pa.int64()),
                       "ts": pa.array([BASE], pa.timestamp("us", tz="UTC")),
                       "eid": pa.array([-1], pa.int64()), "x": [0.0], "tag": ["init"]}))
    if aggregation:
        a = fs.create_aggregation("a", source=g, online=True, aggregations=[
            agg.count(windows=["1d"]), agg.sum("x", windows=["1d"])])
        fs.create_feature_view("v", features=[a.select_all()])
    return fs


def event(rng: random.Random, eid: int) -> tuple[dict[str, str], dict | None]:
    """(Redis fields, the row it means or None for a bad event). Times go back up to
    an hour (out of order) and are unique (eid microseconds), so the newest is clear."""
    k = rng.randrange(KEYS)
    t = BASE + dt.timedelta(hours=2, seconds=eid - rng.randrange(3600), microseconds=eid)
    row = {"k": k, "ts": t, "eid": eid, "x": round(rng.uniform(-5, 5), 3), "tag": f"t{eid % 7}"}
    r = rng.random()
    if r < 0.05:
        return {"k": str(k), "ts": t.isoformat(), "eid": str(eid), "x": "not-a-number",
                "tag": "bad"}, None
    if r < 0.08:
        return {"k": str(k), "eid": str(eid), "x": "1", "tag": "bad"}, None  # no ts
    if r < 0.10:
        return {"json": "{not json"}, None
    if r < 0.5:
        ms = int(t.timestamp() * 1000)
        row["ts"] = dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc)
        return {"json": json.dumps({**row, "ts": ms})}, row  # epoch milliseconds
    return {"k": str(k), "ts": t.isoformat(), "eid": str(eid), "x": repr(row["x"]),
            "tag": row["tag"]}, row


def produce(r, stream: str, rng: random.Random, start: int, n: int, log: list) -> None:
    for eid in range(start, start + n):
        fields, row = event(rng, eid)
        entry = r.xadd(stream, fields)
        log.append((redis_id(entry), row))


def feed(r, stream: str, rng: random.Random, log: list, seconds: float) -> None:
    """XADDs a few events every 10 ms for ``seconds``, so that a worker killed at the end
    is busy reading, writing or flushing (not idle after draining the stream)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        produce(r, stream, rng, len(log), 3, log)
        time.sleep(0.01)


def newest_per_key(rows) -> dict[int, tuple]:
    out: dict[int, tuple] = {0: (BASE, -1)}
    for row in rows:
        if row is not None and (row["k"] not in out or row["ts"] >= out[row["k"]][0]):
            out[row["k"]] = (row["ts"], row["eid"])
    return out


def online_state(fs: ps.FeatureStore) -> dict[int, tuple]:
    got = fs.online.read("e.v1", list(range(KEYS)), features=["eid"])
    out = {}
    for k, eid, st in zip(range(KEYS), got.column("eid").to_pylist(),
                          got.column("status").to_pylist()):
        if st == "found":
            out[k] = eid
    return out


def offline_eids(fs: ps.FeatureStore) -> list[int]:
    return fs.get_feature_group("e").read().column("eid").to_pylist()


def dead_letters(store: Path) -> pa.Table:
    path = store / "deadletter" / "e" / "v1"
    if not (path / "_delta_log").exists():
        return pa.table({"position": pa.array([], pa.string())})
    return deltalake.DeltaTable(str(path)).to_pyarrow_table()


def drain(fs: ps.FeatureStore, url: str, stream: str, consumer: str, total: int) -> dict:
    """Runs a job until every entry of the stream is acknowledged."""
    r = redis.Redis.from_url(url)
    job = fs.stream(ps.sources.RedisStream(url, stream=stream, group="g", consumer=consumer),
                    into=fs.get_feature_group("e"), max_delay="10ms", offline_flush="50ms")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job.run_for(0.3)
        info = r.xinfo_groups(stream)[0]
        if info["pending"] == 0 and info["last-delivered-id"] == r.xinfo_stream(stream)[
                "last-generated-id"] and total:
            return job.stats()
    raise AssertionError(f"the stream was not drained: {r.xinfo_groups(stream)}")


def test_ordered_and_out_of_order_events_reach_online_offline_and_dead_letters(tmp_path, server):
    store = tmp_path / "store"
    fs = make_store(store)
    r = redis.Redis.from_url(server)
    rng, log = random.Random(3), []
    produce(r, "s", rng, 0, 600, log)
    drain(fs, server, "s", "c1", 600)
    good = [row for _, row in log if row is not None]
    want = newest_per_key(good)
    assert online_state(fs) == {k: eid for k, (_, eid) in want.items()}
    eids = offline_eids(fs)
    assert sorted(eids) == sorted([-1] + [row["eid"] for row in good])  # each exactly once
    dead = dead_letters(store)
    bad = [pos.hex() for pos, row in log if row is None]
    assert sorted(dead.column("position").to_pylist()) == sorted(bad)
    assert all(dead.column("reason").to_pylist())
    # A second job on the same stream finds nothing new and changes nothing.
    drain(fs, server, "s", "c1", 600)
    assert sorted(offline_eids(fs)) == sorted(eids)
    fs.close()


def test_several_consumers_in_one_group_share_the_stream(tmp_path, server):
    store = tmp_path / "store"
    make_store(store).close()
    r = redis.Redis.from_url(server)
    rng, log = random.Random(5), []
    stop = threading.Event()

    def consume(name: str) -> None:
        fs = ps.FeatureStore(store)
        job = fs.stream(ps.sources.RedisStream(server, stream="s", group="g", consumer=name),
                        into=fs.get_feature_group("e"), max_batch=50, max_delay="10ms",
                        offline_flush="100ms")
        while not stop.is_set():
            job.run_for(0.2)
        fs.close()

    threads = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for i in range(6):
            produce(r, "s", rng, i * 150, 150, log)
            time.sleep(0.1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            info = r.xinfo_groups("s")[0]
            if info["pending"] == 0 and info["last-delivered-id"] == r.xinfo_stream("s")[
                    "last-generated-id"]:
                break
            time.sleep(0.1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=60)
    consumers = {c["name"]: c for c in r.xinfo_consumers("s", "g")}
    assert len(consumers) == 3
    fs = ps.FeatureStore(store)
    good = [row for _, row in log if row is not None]
    assert online_state(fs) == {k: eid for k, (_, eid) in newest_per_key(good).items()}
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    assert len(dead_letters(store)) == len(log) - len(good)
    fs.close()


def start_worker(store: Path, url: str, consumer: str) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, W.__file__, str(store), url, "s", consumer],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = p.stdout.readline().strip()
    if line != "ready":
        p.kill()
        raise AssertionError(f"worker did not start: {line!r} {p.stderr.read()}")
    return p


def drain_all(fs: ps.FeatureStore, url: str, stream: str, consumers) -> None:
    """Runs one job per consumer, in turns, until every entry is acknowledged (each
    consumer must finish its own pending entries)."""
    r = redis.Redis.from_url(url)
    jobs = [fs.stream(ps.sources.RedisStream(url, stream=stream, group="g", consumer=c),
                      into=fs.get_feature_group("e"), max_delay="10ms", offline_flush="50ms")
            for c in consumers]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        for job in jobs:
            job.run_for(0.2)
        info = r.xinfo_groups(stream)[0]
        if info["pending"] == 0 and info["last-delivered-id"] == r.xinfo_stream(stream)[
                "last-generated-id"]:
            return
    raise AssertionError(f"the stream was not drained: {r.xinfo_groups(stream)}")


@pytest.mark.parametrize("consumers", [("w",), ("w", "v")], ids=["one-consumer", "two-consumers"])
def test_kill_9_at_random_points_loses_and_repeats_nothing(tmp_path, server, consumers):
    store = tmp_path / "store"
    make_store(store, aggregation=True).close()
    r = redis.Redis.from_url(server)
    rng, log = random.Random(7), []
    started = time.monotonic()
    buffered_at_kill = pending_at_kill = 0  # kills between the online write and the flush/ack
    for round_ in range(ROUNDS):
        produce(r, "s", rng, len(log), 120, log)
        workers = [start_worker(store, server, c) for c in consumers]
        for worker in workers:  # each killed at its own random point, while it works
            feed(r, "s", rng, log, rng.uniform(0.02, 0.7 / len(workers)))
            worker.kill()  # SIGKILL
            worker.wait()
            worker.stdout.close()
            worker.stderr.close()
        fs = ps.FeatureStore(store)
        try:
            online = online_state(fs)
            if len(consumers) == 1:  # one consumer receives every entry, in id order
                pos = fs.online.positions("redis:s:g:w/src/").get("redis:s:g:w/src/w")
                done = [row for p, row in log if pos is not None and p <= pos]
                want = {k: eid for k, (_, eid) in newest_per_key(done).items()}
                assert online == want, f"round {round_}"
            else:  # which consumer got which entry is Redis' choice: values are events
                by_eid = {row["eid"]: row for _, row in log if row is not None}
                assert all(e == -1 or by_eid[e]["k"] == k for k, e in online.items())
            eids = offline_eids(fs)
            assert len(eids) == len(set(eids)), f"round {round_}: an event twice offline"
            pending = {redis_id(e["message_id"]) for e in
                       r.xpending_range("s", "g", min="-", max="+", count=100_000)}
            last = redis_id(r.xinfo_groups("s")[0]["last-delivered-id"])
            acked = [row["eid"] for p, row in log
                     if p <= last and p not in pending and row is not None]
            assert set(acked) <= set(eids), f"round {round_}: an acknowledged event is not offline"
            buffered_at_kill += any(fs.online.positions(f"redis:s:g:{c}/buf/") for c in consumers)
            pending_at_kill += bool(pending)
        finally:
            fs.close()
    assert time.monotonic() - started < 240
    assert buffered_at_kill >= 1 and pending_at_kill >= 1, (buffered_at_kill, pending_at_kill)
    print(f"kills with batches online but not offline: {buffered_at_kill}, with entries "
          f"not acknowledged: {pending_at_kill} of {ROUNDS}")
    fs = ps.FeatureStore(store)
    drain_all(fs, server, "s", consumers)
    good = [row for _, row in log if row is not None]
    assert online_state(fs) == {k: eid for k, (_, eid) in newest_per_key(good).items()}
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    dead = dead_letters(store)
    assert sorted(dead.column("position").to_pylist()) == sorted(
        p.hex() for p, row in log if row is None)
    # The aggregation counted each event once: served = training data of the offline table.
    fv = fs.get_feature_view("v")
    at = BASE + dt.timedelta(hours=2, seconds=len(log) + 1)
    spine = pa.table({"k": list(range(KEYS)),
                      "t": pa.array([at] * KEYS, pa.timestamp("us", tz="UTC"))})
    want = fv.training_data(spine, spine_time="t").select(fv.features)
    got = fv.get_feature_vectors({"k": list(range(KEYS))}, now=at)
    for f in fv.features:
        for x, y in zip(want.column(f).to_pylist(), got.column(f).to_pylist()):
            assert x == pytest.approx(y), f
    fs.close()


class ClientAPI:
    """A redis client seen only through its command methods (no connection pool): the
    source then reads through the client's own reply parsing, without reading ahead."""

    def __init__(self, client) -> None:
        self._client = client

    def __getattr__(self, name: str):
        if name == "connection_pool":
            raise AttributeError(name)
        return getattr(self._client, name)


@pytest.mark.parametrize("client", ["resp2", "resp3", "client-api"])
def test_full_batches_are_read_ahead_and_a_stop_writes_what_was_read(tmp_path, server, client):
    store = tmp_path / "store"
    fs = make_store(store)
    r = redis.Redis.from_url(server)
    rng, log = random.Random(11), []
    produce(r, "s", rng, 0, 230, log)
    c = redis.Redis.from_url(server, protocol=3 if client == "resp3" else 2,
                             decode_responses=True)
    src = ps.sources.RedisStream(server, stream="s", group="g", consumer="c",
                                 client=ClientAPI(c) if client == "client-api" else c)
    ahead = client != "client-api"
    job = fs.stream(src, into=fs.get_feature_group("e"), max_batch=50, offline_flush="1h")
    job.start()
    assert len(src.poll(50, 0.01)) == 50 and (src._ahead is not None) == ahead  # full batch
    src.seek({})  # a reply read ahead is dropped: its entries wait in the pending list
    assert r.xinfo_groups("s")[0]["pending"] == (100 if ahead else 50)
    for n in (50, 100, 150):  # the pending ones first (not read ahead), then new ones
        job.step(0.01)
        assert job.stats()["rows"] + job.stats()["dead"] == n
        assert (src._ahead is not None) == (ahead and n == 150)
    job.run_for(0.3)  # stops after a batch; what it read ahead is written too
    assert r.xinfo_groups("s")[0]["pending"] == 0
    good = [row for _, row in log if row is not None]
    assert online_state(fs) == {k: eid for k, (_, eid) in newest_per_key(good).items()}
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    fs.close()


def test_a_lost_reply_is_read_again_from_the_pending_list(tmp_path, server):
    """The reply to a read sent ahead is lost (its connection drops): its entries are
    pending in Redis, unseen by the job, while later entries would move the stored
    position past them. The step fails with a SourceError; the next one starts again
    (flush, ack, seek) and reads them from the pending list: each event once."""
    store = tmp_path / "store"
    fs = make_store(store)
    r = redis.Redis.from_url(server)
    rng, log = random.Random(13), []
    produce(r, "s", rng, 0, 230, log)
    src = ps.sources.RedisStream(server, stream="s", group="g", consumer="c")
    job = fs.stream(src, into=fs.get_feature_group("e"), max_batch=50, offline_flush="1h")
    job.step(0.01)
    assert src._ahead is not None
    deadline = time.monotonic() + 10
    while r.xinfo_groups("s")[0]["pending"] < 100:  # Redis has delivered the next 50
        assert time.monotonic() < deadline
        time.sleep(0.01)
    src._ahead.disconnect()  # ... and their reply is lost
    with pytest.raises(SourceError, match="read new entries"):
        job.step(0.01)
    for _ in range(10):
        job.step(0.01)
    job.run_for(0.2)
    assert r.xinfo_groups("s")[0]["pending"] == 0
    good = [row for _, row in log if row is not None]
    assert online_state(fs) == {k: eid for k, (_, eid) in newest_per_key(good).items()}
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    assert len(dead_letters(store)) == len(log) - len(good)
    fs.close()


def test_unreachable_redis_is_a_clear_pitstop_error():
    port = __import__("redis_server").free_port()
    with pytest.raises(SourceError, match="Redis at redis://127.0.0.1") as e:
        ps.sources.RedisStream(f"redis://127.0.0.1:{port}/0", stream="s")
    assert isinstance(e.value, PitstopError)


def test_cli_streams_from_redis(tmp_path, server, capsys):
    from pitstop.cli import main

    store = tmp_path / "store"
    make_store(store).close()
    r = redis.Redis.from_url(server)
    log: list = []
    produce(r, "s", random.Random(9), 0, 50, log)
    assert main(["--store", str(store), "stream", "e", "--redis", server, "--stream", "s",
                 "--group", "g", "--consumer", "cli", "--seconds", "1.0",
                 "--offline-flush", "100ms"]) == 0
    good = [row for _, row in log if row is not None]
    assert f"streamed {len(good)} rows" in capsys.readouterr().out
    fs = ps.FeatureStore(store)
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    assert r.xinfo_groups("s")[0]["pending"] == 0
    fs.close()


def test_sigterm_stops_after_the_current_batch_and_flushes(tmp_path, server):
    store = tmp_path / "store"
    make_store(store).close()
    r = redis.Redis.from_url(server)
    log: list = []
    produce(r, "s", random.Random(4), 0, 300, log)
    worker = start_worker(store, server, "t")
    deadline = time.monotonic() + 30
    while r.xinfo_groups("s")[0]["last-delivered-id"] != r.xinfo_stream("s")["last-generated-id"]:
        assert time.monotonic() < deadline, "the worker did not read the stream"
        time.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "stopped" in out
    assert r.xinfo_groups("s")[0]["pending"] == 0, "everything read was flushed and acknowledged"
    fs = ps.FeatureStore(store)
    good = [row for _, row in log if row is not None]
    assert sorted(offline_eids(fs)) == sorted([-1] + [row["eid"] for row in good])
    fs.close()
