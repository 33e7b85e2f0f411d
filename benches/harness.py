"""Shared pieces of the benchmark harness: timing, peak memory, the machine, tables.

Rules every benchmark here follows: peers run on the same data in the same run; each
measurement is repeated and reported as a median (latencies as p50/p99); ratios are
given against the fastest peer; release builds only. Peak memory is measured per engine
by running it in its own child process and reading that process's max RSS, so no engine
pays for another's allocations.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def machine() -> str:
    """One line naming the machine: CPU model, cores, memory."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB, Linux {platform.release()}"


def today() -> str:
    return dt.date.today().isoformat()


def repeat(fn: Callable[[], Any], *, times: int, warmup: int = 1) -> list[float]:
    """Wall-clock seconds of ``times`` calls of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(times):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def median(xs: Sequence[float]) -> float:
    return statistics.median(xs)


def percentile(xs: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank."""
    s = sorted(xs)
    if not s:
        return float("nan")
    k = max(0, min(len(s) - 1, round(q / 100 * len(s) + 0.5) - 1))
    return s[k]


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(
    module: str,
    args: Sequence[str],
    timeout: float | None = None,
    *,
    env: Mapping[str, str] | None = None,
    rss_limit_mb: float | None = None,
) -> dict[str, Any]:
    """Runs ``python -m module args...`` in a fresh process; its last stdout line must
    be a JSON object, which is returned (with the child's peak RSS added as
    ``peak_rss_mb`` if the child did not report it).

    ``env`` entries are added to this process's environment for the child (e.g. thread
    counts, which must be set before the child imports its libraries). The child's peak
    RSS is the kernel's account of it (``wait4``), so it is that process's own. With
    ``rss_limit_mb`` the child is killed when its resident memory passes the limit
    (polled every 0.1 s): on a shared machine a runaway engine should not wake the OOM
    killer. A failed child gives ``{"error": ..., "returncode": ..., "peak_rss_mb":
    ...}``; a child past ``timeout`` seconds is killed and ``TimeoutExpired`` raised.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    out: list[str] = []
    err: list[str] = []
    readers = [
        threading.Thread(target=lambda: out.append(proc.stdout.read()), daemon=True),  # type: ignore[union-attr]
        threading.Thread(target=lambda: err.append(proc.stderr.read()), daemon=True),  # type: ignore[union-attr]
    ]
    for r in readers:
        r.start()
    start = time.monotonic()
    killed = None
    try:
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if timeout is not None and time.monotonic() - start > timeout and killed is None:
                killed = "timeout"
                proc.kill()
            if rss_limit_mb is not None and killed is None and _rss_mb(proc.pid) > rss_limit_mb:
                killed = "rss"
                proc.kill()
            time.sleep(0.1)
    except BaseException:  # e.g. Ctrl-C: leave no orphan behind
        proc.kill()
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    for r in readers:
        r.join()
    stdout, stderr = "".join(out), "".join(err)
    peak = usage.ru_maxrss / 1024
    if killed == "timeout":
        raise subprocess.TimeoutExpired(proc.args, timeout or 0.0, stdout, stderr)
    if killed == "rss":
        return {
            "error": f"killed: resident memory passed the {rss_limit_mb:,.0f} MiB limit",
            "returncode": proc.returncode,
            "peak_rss_mb": peak,
        }
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]
        if proc.returncode == -9:
            last = "killed by SIGKILL (out of memory?); " + last
        return {"error": last, "returncode": proc.returncode, "peak_rss_mb": peak}
    lines = [ln for ln in stdout.strip().splitlines() if ln.startswith("{")]
    if not lines:
        return {"error": "the child printed no JSON line", "returncode": 0, "peak_rss_mb": peak}
    result = json.loads(lines[-1])
    result.setdefault("peak_rss_mb", peak)
    return result


def _rss_mb(pid: int) -> float:
    """The current resident memory of process ``pid`` in MiB (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def available_memory_mb() -> float:
    """Memory the kernel considers available for new work (``MemAvailable``), MiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20


def load_average() -> str:
    """The 1/5/15-minute load averages, e.g. ``"load 1.02 0.88 0.61"``: other work on
    the machine skews timings, so reports say how busy it was."""
    one, five, fifteen = os.getloadavg()
    return f"load {one:.2f} {five:.2f} {fifteen:.2f}"


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    """Wall-clock seconds of one call of ``fn``, and its result (for benchmarks that
    inspect the output afterwards, outside the timing)."""
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
        if isinstance(v, float) and v != v:
            return "-"  # not measured
        if isinstance(v, float):
            return f"{v:,.3g}" if abs(v) < 100 else f"{v:,.0f}"
        return str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def versions(*modules: str) -> str:
    """``name version`` for each importable module, for the report header."""
    from importlib import metadata

    out = []
    for m in modules:
        try:
            out.append(f"{m} {metadata.version(m)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(out)
