"""The 100-entity matrix read, page walker against cursor path against python-lmdb.

``python -m benches.online_walk`` builds (or, with ``--reuse``, reopens) the stores of
``benches.online`` (pitstop and python-lmdb, same data) and measures, in alternating
rounds so that machine noise hits every engine alike: pitstop reading LMDB's pages
itself (the default), pitstop through LMDB's cursor (``PITSTOP_ONLINE_WALK=0``, the
path before the walker), and the python-lmdb loop of ``benches.online``. Prints the
median per round and the median of the rounds' medians.

Page-cache state matters (a TLB miss per 4 KiB page or per 2 MiB), so it is set, not
left to chance: each store's file is first put in small pages (its cached pages
dropped, then read back 4 KiB at a time with readahead off, as LMDB's own writes leave
it). ``--huge-pages`` adds two engines on a copy of each store loaded on 2 MiB pages:
pitstop opened with ``huge_pages=True``, and python-lmdb on a copy that this script
loads the same way (mmap, ``MADV_HUGEPAGE``, drop, fault in), so the peer gets the
same help. Each engine's 2 MiB-mapped bytes are printed from ``/proc/self/smaps``.
"""

from __future__ import annotations

import argparse
import mmap
import os
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np

from . import online
import pitstop as ps

from .online import ROOT, LmdbReader, latencies, p, pitstop_reader, warm_pitstop


KEEP: list[ps.OnlineStore] = []  # stores opened with huge_pages=True, kept open


def reader(dir: Path, f: int, walk: bool, huge: bool = False):
    if walk:
        os.environ.pop("PITSTOP_ONLINE_WALK", None)
    else:
        os.environ["PITSTOP_ONLINE_WALK"] = "0"
    try:
        if huge:
            # Loaded before the reader's store opens the environment; kept open with it.
            KEEP.append(ps.OnlineStore(dir, readonly=True, huge_pages=True))
        return pitstop_reader(dir, f)
    finally:
        os.environ.pop("PITSTOP_ONLINE_WALK", None)


def small_pages(dir: Path) -> None:
    """Drops the cached pages of ``dir``'s data.mdb and reads it back 4 KiB at a time
    with readahead off: small folios, as LMDB's 4 KiB writes leave a file."""
    fd = os.open(dir / "data.mdb", os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        off, size = 0, os.fstat(fd).st_size
        while off < size:
            off += len(os.pread(fd, 4096, off))
    finally:
        os.close(fd)


def huge_pages(dir: Path) -> None:
    """Loads ``dir``'s data.mdb on 2 MiB pages the way ``huge_pages=True`` does, for
    the python-lmdb peer: mmap, MADV_HUGEPAGE, drop the cached pages, fault in."""
    fd = os.open(dir / "data.mdb", os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with mmap.mmap(fd, size, prot=mmap.PROT_READ) as m:
            m.madvise(mmap.MADV_HUGEPAGE)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for off in range(0, size, 4096):
                m[off]
    finally:
        os.close(fd)


def pmd_mapped() -> dict[str, int]:
    """MiB mapped by 2 MiB entries, per data.mdb this process maps."""
    out: dict[str, int] = {}
    path = None
    with open("/proc/self/smaps") as f:
        for line in f:
            head = line.split()
            if "-" in head[0] and not head[0].endswith(":"):
                path = head[-1] if head[-1].endswith("data.mdb") else None
            elif path and head[0] == "FilePmdMapped:":
                out[path] = out.get(path, 0) + int(head[1]) // 1024
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--entities", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batch-calls", type=int, default=2_000)
    ap.add_argument("--data", default=str(ROOT / "bench-data" / "online-walk"))
    ap.add_argument("--reuse", action="store_true", help="reuse the stores built by an earlier run")
    ap.add_argument("--huge-pages", action="store_true",
                    help="add pitstop and python-lmdb on copies loaded on 2 MiB pages")
    args = ap.parse_args(argv)
    n, f = args.entities, args.features
    data = Path(args.data)
    if not (args.reuse and (data / "pitstop").exists() and (data / "lmdb").exists()):
        shutil.rmtree(data, ignore_errors=True)
        data.mkdir(parents=True)
        print(f"building: {n:,} entities", file=sys.stderr)
        online.build_pitstop(data / "pitstop", n, f)
        online.build_lmdb(data / "lmdb", n, f)
    for name in ("pitstop", "lmdb"):
        if args.huge_pages and not (data / f"{name}-huge").exists():
            shutil.copytree(data / name, data / f"{name}-huge")
            os.sync()  # clean pages, which the huge-page load can drop and read back
        small_pages(data / name / ("online" if name == "pitstop" else ""))
    engines = {}
    if args.huge_pages:
        engines["pitstop, page walker, huge pages"] = reader(data / "pitstop-huge", f, True, huge=True)
    engines["pitstop, page walker"] = reader(data / "pitstop", f, True)
    engines["pitstop, cursor path"] = reader(data / "pitstop", f, False)
    for r in engines.values():
        warm_pitstop(r, n)
    engines["python-lmdb"] = LmdbReader(data / "lmdb", f)
    if args.huge_pages:
        huge_pages(data / "lmdb-huge")
        engines["python-lmdb, huge pages"] = LmdbReader(data / "lmdb-huge", f)
    for path, mib in sorted(pmd_mapped().items()):
        print(f"mapped on 2 MiB pages: {mib:,} MiB of {path}")
    rng = np.random.default_rng(7)
    check = rng.integers(0, n, 100).tolist()
    want = engines["pitstop, cursor path"].matrix(check)
    for name, r in engines.items():
        if name.startswith("pitstop"):
            np.testing.assert_array_equal(r.matrix(check), want)
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
