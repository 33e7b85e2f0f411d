"""Streaming ingestion from Redis Streams on loopback: freshness, sustained rate, and
Feast's ``push()`` on the same events.

``python -m benches.stream [--feast-python .venv-feast/bin/python]`` (``make
bench-stream``) starts a throwaway redis-server and a pitstop store with one online
group (``k`` int, ``ts``, ``x`` float, ``sent`` float: the producer's wall clock), then,
bounded in time:

- **freshness** at 1k and 10k events/s: a producer process XADDs events (text fields,
  ``sent`` = its wall clock when it sends them, in chunks every 5 ms) for ``--seconds``;
  a job process streams them (``max_delay=5ms``, ``offline_flush=1s``); this process
  reads every key's ``sent`` from the online store in a loop and records, for each new
  value it sees, now - sent: the time until an event became visible online (p50,
  p99). Producer, job, Redis and reader share the machine's cores.
- **sustained ingest** (``--repeat`` runs, median): ``--backlog`` events are XADDed
  first, then one job streams them into online + offline (``max_batch=5000``, flushes
  every 2 s, the last at the end); rate = events / time until every one is
  acknowledged (so also offline). The job's CPU time (all its threads) and
  redis-server's are measured too: on a shared machine the wall clock says how busy
  the machine was, CPU time per event what the job costs.
- **push**: ``fg.push`` of the same events in frames of 5,000 rows (events/s and
  latency per push) and of single events (latency); Feast 0.x ``push()`` of the same
  events (typed pandas frames, ``PushMode.ONLINE``) into its SQLite online store, in
  its own virtualenv (``benches/stream_feast.py``), when ``--feast-python`` is given.

Results print as markdown with the machine, date and load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
T0_MS = 1_800_000_000_000  # the backlog's first event time (ms)


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


def xadd_backlog(r, stream: str, n: int) -> None:
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        pipe.xadd(stream, {"k": str(i % KEYS), "ts": str(T0_MS + i), "x": str(i * 0.5),
                           "sent": "0"})
        if i % 5000 == 4999:
            pipe.execute()
    pipe.execute()


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sustained(store: Path, server: RedisServer, n: int, stream: str) -> dict:
    r = server.client
    xadd_backlog(r, stream, n)
    fs = ps.FeatureStore(store, create=False)
    src = ps.sources.RedisStream(f"redis://127.0.0.1:{server.port}/0", stream=stream,
                                 group="b", consumer="c")
    job = fs.stream(src, into=fs.get_feature_group("e"), max_delay="5ms", offline_flush="2s")
    job.start()
    redis0, cpu0 = cpu_s(server.proc.pid), time.process_time()
    t0 = time.perf_counter()
    while True:
        job.step(0.005)
        if job.stats()["rows"] >= n:
            break
    job.flush()
    secs = time.perf_counter() - t0
    cpu, redis_cpu = time.process_time() - cpu0, cpu_s(server.proc.pid) - redis0
    assert r.xinfo_groups(stream)[0]["pending"] == 0
    assert fs.get_feature_group("e").read(columns=["k"]).num_rows == KEYS + n
    fs.close()
    return {"events": n, "seconds": secs, "rate": n / secs, "job_cpu_us": cpu / n * 1e6,
            "redis_cpu_us": redis_cpu / n * 1e6, "load": os.getloadavg()[0]}


def frames(start: int, n: int, size: int) -> list[pa.Table]:
    """The benchmark's events ``start .. start + n`` as typed tables of ``size`` rows."""
    out = []
    for a in range(start, start + n, size):
        i = pa.array(range(a, min(start + n, a + size)), pa.int64())
        out.append(pa.table({"k": pa.compute.remainder(i, KEYS),
                             "ts": pa.compute.add(i, T0_MS).cast(pa.timestamp("ms", tz="UTC")),
                             "x": pa.compute.multiply(i.cast(pa.float64()), 0.5),
                             "sent": pa.array([0.0] * len(i))}))
    return out


def push(store: Path, n: int, size: int, singles: int) -> dict:
    """``fg.push`` of the events in frames of ``size`` rows, then ``singles`` pushes of
    one event each (offline every 2 s, as the stream job)."""
    fs = ps.FeatureStore(store, create=False)
    g = fs.get_feature_group("e")
    batches = frames(0, n, size)
    g.push(batches[0], offline_flush="2s")  # warm-up: the same rows again below
    lat = []
    t0 = time.perf_counter()
    for b in batches:
        t1 = time.perf_counter()
        g.push(b, offline_flush="2s")
        lat.append(time.perf_counter() - t1)
    secs = time.perf_counter() - t0
    one = []
    for b in frames(n, singles, 1):
        t1 = time.perf_counter()
        g.push(b, offline_flush="2s")
        one.append(time.perf_counter() - t1)
    fs.close()
    return {"engine": "pitstop", "events": n, "seconds": secs, "rate": n / secs,
            "batch_p50_ms": harness.percentile(lat, 50) * 1e3,
            "batch_p99_ms": harness.percentile(lat, 99) * 1e3,
            "single_p50_ms": harness.percentile(one, 50) * 1e3,
            "single_p99_ms": harness.percentile(one, 99) * 1e3, "load": os.getloadavg()[0]}


def feast_push(python: str, n: int, size: int, singles: int) -> dict:
    proc = subprocess.run([python, "-m", "benches.stream_feast", str(n), str(size),
                           str(singles)], capture_output=True, text=True, timeout=1800,
                          cwd=Path(__file__).resolve().parent.parent)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"engine": "feast", "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return {**json.loads(lines[-1]), "load": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=8.0, help="per freshness run")
    p.add_argument("--backlog", type=int, default=200_000)
    p.add_argument("--repeat", type=int, default=3, help="sustained runs (median)")
    p.add_argument("--singles", type=int, default=500, help="single-event pushes")
    p.add_argument("--feast-python", default=os.environ.get("FEAST_PYTHON"),
                   help="python of a virtualenv with Feast (make bench-store makes one)")
    p.add_argument("--skip-freshness", action="store_true")
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
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
        for rate in () if args.skip_freshness else (1000.0, 10_000.0):
            store = tmp / f"fresh{int(rate)}"
            setup(store)
            f = freshness(store, server, rate, args.seconds)
            rows.append([f"{int(rate):,} events/s", f["samples"], f["p50_ms"], f["p99_ms"],
                         f"{os.getloadavg()[0]:.1f}"])
        runs = []
        for i in range(args.repeat):
            store = tmp / f"backlog{i}"
            setup(store)
            runs.append(sustained(store, server, args.backlog, f"backlog{i}"))
            server.client.delete(f"backlog{i}")
        store = tmp / "push"
        setup(store)
        pushes = [push(store, args.backlog, 5000, args.singles)]
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    if args.feast_python:
        print("running feast ...", flush=True)
        pushes.append(feast_push(args.feast_python, args.backlog, 5000, args.singles))
    print(f"# Streaming (Redis Streams on loopback) — {harness.today()}")
    print(f"machine: {harness.machine()}; {harness.load_average()}")
    print(f"versions: {harness.versions('pitstop', 'redis', 'hiredis', 'deltalake', 'pyarrow')}; "
          f"redis-server {subprocess.run(['redis-server', '--version'], capture_output=True, text=True).stdout.split()[2]}")
    if rows:
        print()
        print(harness.markdown_table(["producer rate", "samples", "freshness p50 (ms)",
                                      "freshness p99 (ms)", "load (1 min)"], rows))
    print()
    print(f"sustained ingest from Redis (online + offline, acknowledged), {args.backlog:,} "
          "events per run:")
    print(harness.markdown_table(
        ["run", "seconds", "events/s", "job CPU µs/event", "redis-server CPU µs/event",
         "load (1 min)"],
        [[i + 1, r["seconds"], r["rate"], r["job_cpu_us"], r["redis_cpu_us"], f"{r['load']:.1f}"]
         for i, r in enumerate(runs)]))
    med = harness.median([r["rate"] for r in runs])
    cpu = harness.median([r["job_cpu_us"] for r in runs])
    print(f"\nmedian {med:,.0f} events/s; the job's CPU per event {cpu:.2f} µs "
          f"(= {1e6 / cpu:,.0f} events per CPU second)")
    print()
    print(f"push of the same events: {args.backlog:,} in frames of 5,000, then "
          f"{args.singles} single events")
    table = []
    for r in pushes:
        if "error" in r:
            table.append([r["engine"], "failed: " + r["error"][:80], "", "", "", "", ""])
            continue
        name = r["engine"] + (f" {r['version']}" if "version" in r else "")
        table.append([name, r["rate"], r["batch_p50_ms"], r["batch_p99_ms"],
                      r["single_p50_ms"], r["single_p99_ms"], f"{r['load']:.1f}"])
    print(harness.markdown_table(["engine", "events/s (frames of 5,000)", "push p50 (ms)",
                                  "push p99 (ms)", "1 event p50 (ms)", "1 event p99 (ms)",
                                  "load (1 min)"], table))
    if len(pushes) > 1 and "error" not in pushes[1]:
        print(f"\npitstop push / Feast push: {pushes[0]['rate'] / pushes[1]['rate']:.1f}x "
              f"events/s; sustained stream from Redis / Feast push: "
              f"{med / pushes[1]['rate']:.1f}x")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    main()
