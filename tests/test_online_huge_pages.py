"""``OnlineStore(path, huge_pages=True)`` (rust/online/hugepages.rs): the store's
file loaded into the page cache on 2 MiB pages before LMDB opens it. Reads must be
the same as without it, in this process and others, before and after writes; where
the system can map a file on 2 MiB pages (checked here independently, with Python's
mmap), pitstop's load must get it too."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps

# Page-cache control (madvise, posix_fadvise, /proc/self/smaps) is Linux's.
pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="huge pages are loaded on Linux only")

N = 40_000  # 40k entities x 2 tables x 16 float32: ~14 MB of pages, several 2 MiB pages
F = 16


def build(path) -> None:
    store = ps.OnlineStore(path)
    rng = np.random.default_rng(3)
    for t in ("a", "b"):
        cols = {"id": pa.array(rng.permutation(N), pa.int64()),
                "event_time": pa.array(np.full(N, 1_000, "datetime64[ns]"))}
        for k in range(F):
            cols[f"f{k}"] = pa.array(rng.random(N, dtype=np.float32))
        store.write(t, pa.table(cols), keys=["id"], event_time="event_time")
    store.close()


FEATURES = [(t, f"f{k}") for t in ("a", "b") for k in range(F)]

CHILD = textwrap.dedent(
    """
    import sys, numpy as np, pitstop as ps
    path, huge, out = sys.argv[1], sys.argv[2] == "1", sys.argv[3]
    store = ps.OnlineStore(path, readonly=True, huge_pages=huge)
    r = store.reader(["a", "b"], features=[(t, f"f{k}") for t in ("a", "b") for k in range(16)])
    keys = list(range(-5, 40_005))
    np.save(out, r.matrix(keys))
    print(store.huge_page_bytes)
    """
)


def child(path, huge: bool, out) -> int:
    res = subprocess.run([sys.executable, "-c", CHILD, str(path), "1" if huge else "0", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return int(res.stdout.strip())


def system_maps_huge(path) -> bool:
    """Whether this system maps a file of this filesystem on 2 MiB pages: the same steps
    as pitstop's load, in Python, on a scratch file (synced, so that its pages can be
    dropped), read back from the scratch file's own entry in /proc/self/smaps."""
    scratch = path / "scratch"
    with open(scratch, "wb") as f:
        f.write(os.urandom(8 << 20))
        f.flush()
        os.fsync(f.fileno())
    fd = os.open(scratch, os.O_RDONLY)
    try:
        with mmap.mmap(fd, 8 << 20, prot=mmap.PROT_READ) as m:
            m.madvise(mmap.MADV_HUGEPAGE)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            for off in range(0, 8 << 20, 4096):
                m[off]
            mine, total = False, 0
            with open("/proc/self/smaps") as f:
                for line in f:
                    head = line.split()
                    if "-" in head[0] and not head[0].endswith(":"):
                        mine = head[-1] == str(scratch)
                    elif mine and head[0] == "FilePmdMapped:":
                        total += int(head[1])
            return total > 0
    finally:
        os.close(fd)
        scratch.unlink()


def test_huge_pages_reads_the_same_and_loads_where_the_system_can(tmp_path):
    store_dir = tmp_path / "store"
    build(store_dir)
    plain = child(store_dir, False, tmp_path / "plain.npy")
    huge = child(store_dir, True, tmp_path / "huge.npy")
    a, b = np.load(tmp_path / "plain.npy"), np.load(tmp_path / "huge.npy")
    np.testing.assert_array_equal(a, b)
    assert np.isnan(a[:5]).all() and not np.isnan(a[5:-5]).any()
    assert plain == 0
    size = (store_dir / "online" / "data.mdb").stat().st_size
    assert 0 <= huge <= size
    if system_maps_huge(tmp_path):
        assert huge >= 2 << 20, f"{huge} bytes on 2 MiB pages out of {size}"


def test_huge_pages_with_a_writer_and_an_open_store(tmp_path):
    store_dir = tmp_path / "store"
    build(store_dir)
    # Read-write, loaded on huge pages: writes and reads stay right, in this process
    # and in another one.
    store = ps.OnlineStore(store_dir, huge_pages=True)
    r = store.reader(["a", "b"], features=FEATURES)
    before = r.matrix(list(range(N)))
    new = {"id": pa.array(np.arange(0, N, 7), pa.int64()),
           "event_time": pa.array(np.full(len(range(0, N, 7)), 2_000, "datetime64[ns]"))}
    for k in range(F):
        new[f"f{k}"] = pa.array(np.full(len(range(0, N, 7)), 0.5 + k, np.float32))
    store.write("a", pa.table(new), keys=["id"], event_time="event_time")
    after = r.matrix(list(range(N)))
    expect = before.copy()
    expect[::7, :F] = 0.5 + np.arange(F, dtype=np.float32)
    np.testing.assert_array_equal(after, expect)
    child(store_dir, True, tmp_path / "other.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "other.npy")[5:-5], expect)
    # Already open in this process: nothing is loaded, the store works as before.
    again = ps.OnlineStore(store_dir, huge_pages=True)
    assert again.huge_page_bytes == 0
    np.testing.assert_array_equal(again.reader(["a", "b"], features=FEATURES).matrix(list(range(N))), expect)


def test_huge_pages_on_a_missing_store_is_the_usual_error(tmp_path):
    with pytest.raises(ps.errors.NotAStoreError):
        ps.OnlineStore(tmp_path / "nothing", readonly=True, huge_pages=True)
    # A new store (no data.mdb yet): created as usual, nothing to load.
    store = ps.OnlineStore(tmp_path / "new", huge_pages=True)
    assert store.huge_page_bytes == 0
