"""``pitstop serve`` over loopback HTTP against a FastAPI + python-lmdb server and
Feast's feature server (``feast serve``, SQLite online store, its own virtualenv).

``python -m benches.serve [--size L] [--feast-python .venv-feast/bin/python]`` (or
``make bench-serve``) builds, on the data of ``benches.online`` (by default 1M
entities x 3 groups x 20 float32 features), a pitstop store with one view over the
three groups, a python-lmdb environment for the FastAPI server and (with
``--feast-python``) a Feast repo materialized into SQLite (``--feast-entities``,
100k by default: Feast materializes row by row). Each server runs in its own process,
with one worker. The load generator is ``wrk`` (Debian), each run bounded by
``--seconds``, every request for a random entity:

- 1 entity, JSON, 1 connection: p50 / p99 latency and requests/s;
- 1 entity, JSON, 16 connections: requests/s on one server worker;
- 100 entities, float32 (pitstop; the peers answer JSON), 1 connection: p50 / p99;
- pitstop: predict (a 50-tree gradient-boosted model over the 60 features), batch 1.

Prints a markdown table with the machine, the date and the load average. "p50"/"p99"
are wrk's, corrected for coordinated omission (wrk adds synthetic samples for the
requests a stalled connection did not send); "raw" are the client's own per-request
latencies at one connection (the time between one request and the next, see
``CYCLE``), with no synthetic samples.

Guest halt polling. On a VM whose idle vCPUs halt at once (the kernel's
``haltpoll.guest_halt_poll_ns`` set to 0; the kernel's default is 200000), every
answer at one connection waits for the client's vCPU to wake from a halt, 40-60 µs
here, which is most of a 1-entity p50. The header prints the setting in force;
``--guest-halt-poll-ns N`` (root) sets it for the run and restores it afterwards, so
both settings can be measured on one machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import pitstop as ps

from . import harness
from .online import TABLES, arrow_table, build_lmdb, features

ROOT = Path(__file__).resolve().parent.parent
HALT_POLL = Path("/sys/module/haltpoll/parameters/guest_halt_poll_ns")
SIZES = {"S": 10_000, "M": 100_000, "L": 1_000_000}

LUA = """
math.randomseed(%(seed)d)
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
%(accept)s
%(cycle)s
request = function()
  stamp()
  local ids = {}
  for i = 1, %(batch)d do ids[i] = math.random(0, %(n)d - 1) end
  local body = %(prefix)s .. table.concat(ids, ",") .. %(suffix)s
  return wrk.format(nil, %(path)s, nil, body)
end
"""

# With one connection, the time from one request to the next is that request's own
# latency plus the few microseconds wrk takes to write the next one: the raw latency of
# each request, as seen by the client. (wrk's own percentiles are corrected for
# coordinated omission: a stall of T adds T / interval synthetic samples, as if requests
# had kept arriving at the mean rate; at c=1 on a 2-vCPU VM a few host stalls of 5-20 ms
# in a 5 s run are enough to move its p99 into milliseconds.) LuaJIT's ffi reads the
# monotonic clock; `done` reads the thread's samples through `thread:get`.
CYCLE = """
local ffi = require("ffi")
ffi.cdef[[ typedef struct { long s; long ns; } pitstop_ts; int clock_gettime(int, pitstop_ts *); ]]
local ts = ffi.new("pitstop_ts")
local last = nil
gaps = {}
stamp = function()
  ffi.C.clock_gettime(1, ts)
  local t = tonumber(ts.s) * 1e6 + tonumber(ts.ns) / 1e3
  if last then gaps[#gaps + 1] = t - last end
  last = t
end
local threads = {}
setup = function(thread) threads[#threads + 1] = thread end
done = function(summary, latency, requests)
  local g = threads[1]:get("gaps")
  table.sort(g)
  local n = #g
  if n > 0 then
    io.write(string.format("RAW %.1f %.1f %.1f %.1f %d\\n", g[math.ceil(n * 0.5)],
                           g[math.ceil(n * 0.99)], g[math.ceil(n * 0.999)], g[n], n))
  end
end
"""
NO_CYCLE = "stamp = function() end"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_store(dir: Path, n: int, f: int) -> None:
    fs = ps.FeatureStore(dir)
    ids = np.random.default_rng(1).permutation(n)
    sels = []
    for j, name in enumerate(TABLES):
        g = fs.create_feature_group(name, primary_key="user_id", event_time="ts", online=True)
        x = features(10 + j, n, f)
        for lo in range(0, n, 250_000):
            part = ids[lo:lo + 250_000]
            g.insert(arrow_table(j, part, x[part], 1_000_000))
        sels.append(g.select([f"{name}_{k}" for k in range(f)]))
    fs.create_feature_view("bench", features=sels)
    fs.close()


def feast_data(dir: Path, n: int, f: int) -> None:
    dir.mkdir(parents=True, exist_ok=True)
    ids = np.arange(n)
    for j in range(len(TABLES)):
        t = arrow_table(j, ids, features(10 + j, n, f)[:n], 1_000_000)
        t = t.set_column(1, "ts", pa.array(np.full(n, 1_600_000_000_000_000), pa.timestamp("us", "UTC")))
        pq.write_table(t, dir / f"features_{j}.parquet")


def wait_up(url: str, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {url}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"server did not come up: {url}")


def wrk(url: str, path: str, body: tuple[str, str], *, n: int, batch: int, conns: int,
        seconds: float, accept: str | None = None) -> dict:
    script = LUA % {"seed": 42, "n": n, "batch": batch, "path": json.dumps(path),
                    "prefix": json.dumps(body[0]), "suffix": json.dumps(body[1]),
                    "accept": f'wrk.headers["Accept"] = "{accept}"' if accept else "",
                    "cycle": CYCLE if conns == 1 else NO_CYCLE}
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write(script)
    try:
        out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{max(1, round(seconds))}s", "--latency",
                              "-s", fh.name, url], capture_output=True, text=True, check=True,
                             timeout=seconds + 60).stdout
    finally:
        os.unlink(fh.name)

    def lat(q: str) -> float:
        m = re.search(rf"^\s+{q}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if not m:
            return float("nan")
        return float(m.group(1)) * {"us": 1, "ms": 1e3, "s": 1e6}[m.group(2)]

    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        raise RuntimeError(f"{non2xx.group(1)} error responses from {url}{path}:\n{out}")
    raw = re.search(r"^RAW ([\d.]+) ([\d.]+) ([\d.]+) ([\d.]+) (\d+)$", out, re.M)
    got = {"p50_us": lat("50"), "p99_us": lat("99"), "rps": rps}
    for i, k in enumerate(("raw_p50_us", "raw_p99_us", "raw_p999_us", "raw_max_us")):
        got[k] = float(raw.group(i + 1)) if raw else float("nan")
    return got


def ensure_model(dir: Path, f: int) -> None:
    """A 50-tree gradient-boosted classifier over the view's features, registered once."""
    from pitstop import demo

    fs = ps.FeatureStore(dir)
    if not fs.models.list("bench"):
        rng = np.random.default_rng(0)
        x = rng.random((5_000, len(TABLES) * f), dtype=np.float32)
        y = (x[:, 0] + x[:, -1] > 1).astype(int)
        onnx_bytes, _ = demo.train_model(x, y, 50)
        fs.models.register("bench", onnx_bytes, feature_view=fs.get_feature_view("bench"))
    fs.close()


def warm_server(url: str, path: str, n: int) -> None:
    """Every entity once, in batches of 1,000 as float32: every page of the store
    mapped into the server process, as the FastAPI peer maps its environment on start."""
    for lo in range(0, n, 1000):
        body = json.dumps({"entities": {"user_id": list(range(lo, min(n, lo + 1000)))}}).encode()
        req = urllib.request.Request(url + path, data=body, headers={"Accept": "application/octet-stream"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()


def run_suite(name: str, url: str, path: str, body: tuple[str, str], n: int, seconds: float,
              matrix_accept: str | None, predict: str | None = None) -> list[list]:
    rows = []
    # Warm up the request path (the pages were mapped before: see warm_server).
    wrk(url, path, body, n=n, batch=100, conns=2, seconds=max(1.0, seconds / 2))
    def row(what: str, m: dict) -> None:
        rows.append([name, what, m["p50_us"], m["p99_us"], m["raw_p50_us"], m["raw_p99_us"],
                     m["raw_p999_us"], m["raw_max_us"], m["rps"], harness.load_average()])

    row("1 entity, JSON, c=1", wrk(url, path, body, n=n, batch=1, conns=1, seconds=seconds))
    row("1 entity, JSON, c=16", wrk(url, path, body, n=n, batch=1, conns=16, seconds=seconds))
    m = wrk(url, path, body, n=n, batch=100, conns=1, seconds=seconds, accept=matrix_accept)
    row(f"100 entities, {'float32' if matrix_accept else 'JSON'}, c=1", m)
    if predict:
        wrk(url, predict, body, n=n, batch=1, conns=2, seconds=max(1.0, seconds / 2))  # warm, as above
        row("predict, batch 1, c=1", wrk(url, predict, body, n=n, batch=1, conns=1, seconds=seconds))
    for r in rows:
        print("  " + " | ".join(str(x) for x in r), flush=True)
    return rows


def serve_process(cmd: list[str], health: str, **kw) -> subprocess.Popen:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **kw)
    wait_up(health, proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stderr:
        proc.stderr.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=SIZES, default="L")
    ap.add_argument("--features", type=int, default=20, help="features per group")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--feast-python", help="the Python of a virtualenv with feast[duckdb]")
    ap.add_argument("--feast-entities", type=int, default=100_000)
    ap.add_argument("--peers", default="pitstop,fastapi,feast")
    ap.add_argument("--dir", help="where to build (reused when it holds a build of this size)")
    ap.add_argument("--spin-us", default="200,0", help="pitstop serve --spin-us values to run "
                    "(comma-separated; 0: workers sleep at once)")
    ap.add_argument("--guest-halt-poll-ns", type=int, help="set the kernel's "
                    "haltpoll.guest_halt_poll_ns for the run (root; restored afterwards)")
    args = ap.parse_args(argv)
    if args.guest_halt_poll_ns is None:
        return run(args)
    try:
        before = HALT_POLL.read_text().strip()
        HALT_POLL.write_text(str(args.guest_halt_poll_ns))
    except OSError as e:
        print(f"--guest-halt-poll-ns needs root and the haltpoll cpuidle governor: {e}", file=sys.stderr)
        return 2
    try:
        return run(args)
    finally:
        HALT_POLL.write_text(before)


def halt_poll() -> str:
    """The guest halt polling in force, for the header."""
    try:
        return f"guest_halt_poll_ns {HALT_POLL.read_text().strip()}"
    except OSError:
        return "no haltpoll governor"


def run(args: argparse.Namespace) -> int:
    if shutil.which("wrk") is None:
        print("benches.serve needs wrk: apt-get install -y wrk", file=sys.stderr)
        return 2
    n, f = SIZES[args.size], args.features
    base = Path(args.dir or Path(tempfile.gettempdir()) / f"pitstop-bench-serve-{args.size}-{f}")
    base.mkdir(parents=True, exist_ok=True)
    peers = args.peers.split(",")
    print(f"# pitstop serve: {n:,} entities x {len(TABLES)} groups x {f} features, wrk "
          f"{args.seconds:g} s per run, one server worker\n{harness.machine()}, {harness.today()}, "
          f"{harness.load_average()}, {halt_poll()}", flush=True)
    rows: list[list] = []
    body = ('{"entities":{"user_id":[', ']}}')
    if "pitstop" in peers:
        if not (base / "store" / ".built").exists():
            shutil.rmtree(base / "store", ignore_errors=True)
            t, _ = harness.timed(lambda: build_store(base / "store", n, f))
            (base / "store" / ".built").write_text(f"{t:.1f} s\n")
        ensure_model(base / "store", f)
        harness_warm(base / "store" / "online")
        for spin in (int(s) for s in args.spin_us.split(",")):
            port = free_port()
            proc = serve_process([sys.executable, "-m", "pitstop", "serve", "--store", str(base / "store"),
                                  "--port", str(port), "--workers", "1", "--max-batch", "1000",
                                  "--spin-us", str(spin)], f"http://127.0.0.1:{port}/healthz")
            try:
                warm_server(f"http://127.0.0.1:{port}", "/v1/features/bench", n)
                rows += run_suite(f"pitstop serve, spin {spin} µs", f"http://127.0.0.1:{port}",
                                  "/v1/features/bench", body, n, args.seconds, "application/octet-stream",
                                  "/v1/predict/bench")
            finally:
                stop(proc)
    if "fastapi" in peers:
        if not (base / "lmdb" / ".built").exists():
            shutil.rmtree(base / "lmdb", ignore_errors=True)
            (base / "lmdb").mkdir()
            build_lmdb(base / "lmdb", n, f)
            (base / "lmdb" / ".built").write_text("ok\n")
        port = free_port()
        proc = serve_process([sys.executable, "-m", "benches.serve_peers", "fastapi", str(base / "lmdb"),
                              str(port), ",".join(TABLES), str(f)], f"http://127.0.0.1:{port}/healthz",
                             cwd=ROOT)
        try:
            rows += run_suite("FastAPI + python-lmdb", f"http://127.0.0.1:{port}", "/v1/features/bench",
                              body, n, args.seconds, None)
        finally:
            stop(proc)
    if "feast" in peers and args.feast_python:
        fn = min(n, args.feast_entities)
        repo = base / f"feast-{fn}"
        if not (repo / ".built").exists():
            shutil.rmtree(repo, ignore_errors=True)
            feast_data(base / f"feast-data-{fn}", fn, f)
            subprocess.run([args.feast_python, "-m", "benches.serve_peers", "feast-setup", str(repo),
                            str(base / f"feast-data-{fn}"), str(len(TABLES))], check=True, cwd=ROOT)
            (repo / ".built").write_text("ok\n")
        harness_warm(repo)
        port = free_port()
        feast_bin = str(Path(args.feast_python).with_name("feast"))
        proc = serve_process([feast_bin, "-c", str(repo), "serve", "-h", "127.0.0.1", "-p", str(port),
                              "--no-access-log", "-w", "1"], f"http://127.0.0.1:{port}/health")
        refs = [f"t{j}:{t}_{k}" for j, t in enumerate(TABLES) for k in range(f)]
        fbody = ('{"features":' + json.dumps(refs) + ',"entities":{"user_id":[', ']}}')
        try:
            rows += run_suite(f"feast serve (SQLite, {fn:,} entities)", f"http://127.0.0.1:{port}",
                              "/get-online-features", fbody, fn, args.seconds, None)
        finally:
            stop(proc)
    print()
    print(harness.markdown_table(["server", "request", "p50 µs", "p99 µs", "raw p50 µs", "raw p99 µs",
                                  "raw p99.9 µs", "raw max µs", "requests/s", "load"], rows))
    return 0


def harness_warm(path: Path) -> None:
    from .online import warm

    warm(path)


if __name__ == "__main__":
    sys.exit(main())
