"""The 100-entity matrix read, page walker against cursor path against python-lmdb.

``python -m benches.online_walk`` builds (or, with ``--reuse``, reopens) the stores of
``benches.online`` (pitstop and python-lmdb, same data) and measures, in alternating
rounds so that machine noise hits every engine alike: pitstop reading LMDB's pages
itself (the default), pitstop through LMDB's cursor (``PITSTOP_ONLINE_WALK=0``, the
path before the walker), and the python-lmdb loop of ``benches.online``. Prints the
median per round and the median of the rounds' medians.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

from . import online
from .online import ROOT, LmdbReader, latencies, p, pitstop_reader, warm, warm_pitstop


def reader(dir: Path, f: int, walk: bool):
    if walk:
        os.environ.pop("PITSTOP_ONLINE_WALK", None)
    else:
        os.environ["PITSTOP_ONLINE_WALK"] = "0"
    try:
        return pitstop_reader(dir, f)
    finally:
        os.environ.pop("PITSTOP_ONLINE_WALK", None)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-calls", type=int, default=2_000)
    ap.add_argument("--data", default=str(ROOT / "bench-data" / "online-walk"))
    ap.add_argument("--reuse", action="store_true", help="reuse the stores built by an earlier run")
    args = ap.parse_args(argv)
    n, f = args.entities, args.features
    data = Path(args.data)
    if not (args.reuse and (data / "pitstop").exists() and (data / "lmdb").exists()):
        import shutil

        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        print(f"building: {n:,} entities", file=sys.stderr)
        online.build_pitstop(data / "pitstop", n, f)
        online.build_lmdb(data / "lmdb", n, f)
    warm(data / "pitstop")
    warm(data / "lmdb")
    engines = {
        "pitstop, page walker": reader(data / "pitstop", f, True),
        "pitstop, cursor path": reader(data / "pitstop", f, False),
    }
    for r in engines.values():
        warm_pitstop(r, n)
    lm = LmdbReader(data / "lmdb", f)
    engines["python-lmdb"] = lm
    rng = np.random.default_rng(7)
    check = rng.integers(0, n, 100).tolist()
    a, b = engines["pitstop, page walker"].matrix(check), engines["pitstop, cursor path"].matrix(check)
    np.testing.assert_array_equal(a, b)
    med: dict[str, list[float]] = {e: [] for e in engines}
    print(f"load at start: {open('/proc/loadavg').read().strip()}")
    for k in range(args.rounds):
        batches = [rng.integers(0, n, 100).tolist() for _ in range(args.batch_calls)]
        line = []
        for name, r in engines.items():
            med[name].append(p(latencies(r.matrix, batches), 50))
            line.append(f"{name} {med[name][-1]:.1f}")
        print(f"round {k}: " + ", ".join(line) + " µs")
    print(f"load at end: {open('/proc/loadavg').read().strip()}")
    base = statistics.median(med["python-lmdb"])
    for name in engines:
        m = statistics.median(med[name])
        print(f"{name}: median of round p50s {m:.1f} µs, {base / m:.2f}x python-lmdb")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
