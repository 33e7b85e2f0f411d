"""Streaming ingestion from Redis Streams on loopback: freshness and sustained rate.

``python -m benches.stream`` (``make bench-stream``) starts a throwaway redis-server
and a pitstop store with one online group (``k`` int, ``ts``, ``x`` float, ``sent``
float: the producer's wall clock), then, bounded in time:

- **freshness** at 1k and 10k events/s: a producer process XADDs events (text fields,
  ``sent`` = its wall clock when it sends them, in chunks every 5 ms) for ``--seconds``;
  a job process streams them (``max_delay=5ms``, ``offline_flush=1s``); this process
  reads every key's ``sent`` from the online store in a loop and records, for each new
  value it sees, now - sent: the time until an event became visible online (p50,
  p99). Producer, job, Redis and reader share the machine's cores.
- **sustained ingest**: ``--backlog`` events are XADDed first, then one job streams
  them into online + offline (``max_batch=5000``, flushes every 2 s, the last at the
  end); rate = events / time until every one is acknowledged (so also offline).

Feast's ``push()`` is not measured here (its venv is ``make bench-store``'s; left for
later). Results print as markdown with the machine and date.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

import pitstop as ps

from . import harness
from .online import RedisServer

KEYS = 1000


def setup(store: Path) -> None:
    fs = ps.FeatureStore(store)
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": pa.array(range(KEYS), pa.int64()),
                       "ts": pa.array([0] * KEYS, pa.timestamp("ms", tz="UTC")),
                       "x": [0.0] * KEYS, "sent": [0.0] * KEYS}))
    fs.close()


def produce(port: int, stream: str, rate: float, seconds: float) -> None:
    import redis

    r = redis.Redis(port=port)
    tick, n, start = 0.005, 0, time.time()
    while time.time() - start < seconds:
        due = int((time.time() - start) * rate)
        pipe = r.pipeline(transaction=False)
        now = time.time()
        for i in range(n, due):
            pipe.xadd(stream, {"k": str(i % KEYS), "ts": str(int(now * 1000) + i),
                               "x": str(i * 0.5), "sent": repr(now)})
        pipe.execute()
        n = due
        time.sleep(tick)


def run_job(store: str, port: int, stream: str, seconds: float, max_delay: str,
            flush: str) -> None:
    fs = ps.FeatureStore(store)
    src = ps.sources.RedisStream(f"redis://127.0.0.1:{port}/0", stream=stream, group="b",
                                 consumer="c")
    job = fs.stream(src, into=fs.get_feature_group("e"), max_delay=max_delay,
                    offline_flush=flush)
    print("ready", flush=True)
    stats = job.run_for(seconds)
    print(f"stats {stats}", flush=True)


def child(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "benches.stream", "--child", *args],
                            cwd=Path(__file__).resolve().parent.parent,
                            stdout=subprocess.PIPE, text=True)


def freshness(store: Path, server: RedisServer, rate: float, seconds: float) -> dict:
    stream = f"fresh{int(rate)}"
    job = child("job", str(store), str(server.port), stream, str(seconds + 3), "5ms", "1s")
    assert job.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    prod = child("produce", str(server.port), stream, str(rate), str(seconds))
    fs = ps.FeatureStore(store, create=False)
    keys = list(range(KEYS))
    seen = fs.online.read("e.v1", keys, features=["sent"]).column("sent").to_pylist()
    lat: list[float] = []
    end = time.time() + seconds + 1
    while time.time() < end:
        got = fs.online.read("e.v1", keys, features=["sent"]).column("sent").to_pylist()
        now = time.time()
        for i, (a, b) in enumerate(zip(seen, got)):
            if b != a and b:
                lat.append(now - b)
        seen = got
        time.sleep(0.001)
    prod.wait()
    job.wait()
    fs.close()
    return {"rate": rate, "samples": len(lat), "p50_ms": harness.percentile(lat, 50) * 1e3,
            "p99_ms": harness.percentile(lat, 99) * 1e3}


def sustained(store: Path, server: RedisServer, n: int) -> dict:
    stream = "backlog"
    r = server.client
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"k": str(i % KEYS), "ts": str(1_800_000_000_000 + i),
                           "x": str(i * 0.5), "sent": "0"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()
    fs = ps.FeatureStore(store, create=False)
    src = ps.sources.RedisStream(f"redis://127.0.0.1:{server.port}/0", stream=stream,
                                 group="b", consumer="c")
    job = fs.stream(src, into=fs.get_feature_group("e"), max_delay="5ms", offline_flush="2s")
    job.start()
    t0 = time.perf_counter()
    while True:
        job.step(0.005)
        if job.stats()["rows"] >= n:
            break
    job.flush()
    secs = time.perf_counter() - t0
    assert r.xinfo_groups(stream)[0]["pending"] == 0
    fs.close()
    return {"events": n, "seconds": secs, "rate": n / secs}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per freshness run")
    p.add_argument("--backlog", type=int, default=200_000)
    p.add_argument("--child", nargs="+")
    args = p.parse_args(argv)
    if args.child:
        kind, *rest = args.child
        if kind == "produce":
            produce(int(rest[0]), rest[1], float(rest[2]), float(rest[3]))
        else:
            run_job(rest[0], int(rest[1]), rest[2], float(rest[3]), rest[4], rest[5])
        return
    server = RedisServer()
    tmp = Path(tempfile.mkdtemp(prefix="pitstop-bench-stream-"))
    try:
        rows = []
        for rate in (1000.0, 10_000.0):
            store = tmp / f"fresh{int(rate)}"
            setup(store)
            f = freshness(store, server, rate, args.seconds)
            rows.append([f"{int(rate):,} events/s", f["samples"], f["p50_ms"], f["p99_ms"]])
        store = tmp / "backlog"
        setup(store)
        s = sustained(store, server, args.backlog)
    finally:
        server.close()
    print(f"# Streaming (Redis Streams on loopback) — {harness.today()}")
    print(f"machine: {harness.machine()}; {harness.load_average()}")
    print(f"versions: {harness.versions('pitstop', 'redis', 'deltalake', 'pyarrow')}; "
          f"redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    print()
    print(harness.markdown_table(["producer rate", "samples", "freshness p50 (ms)",
                                  "freshness p99 (ms)"], rows))
    print()
    print(f"sustained ingest (online + offline, acknowledged): {s['events']:,} events in "
          f"{s['seconds']:.1f} s = {s['rate']:,.0f} events/s")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
