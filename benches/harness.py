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
import time
from collections.abc import Callable, Sequence
from typing import Any


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


def run_child(module: str, args: Sequence[str], timeout: float | None = None) -> dict[str, Any]:
    """Runs ``python -m module args...`` in a fresh process; its last stdout line must
    be a JSON object, which is returned (with the child's peak RSS added as
    ``peak_rss_mb`` if the child did not report it)."""
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=dict(os.environ),
    )
    if proc.returncode != 0:
        return {"error": (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[-1]}
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
    return json.loads(lines[-1])


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(v: Any) -> str:
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
