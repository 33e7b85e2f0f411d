"""Processes for tests/test_online_walk.py (importable by spawned children)."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import pyarrow as pa

import pitstop as ps
from pitstop.errors import PitstopError

TABLES = ["a", "b"]


def x_of(key: int, version: int) -> float:
    return float(np.float32(key * 0.5 + version * 1000))


def blob_of(key: int, version: int, size: int) -> bytes:
    return bytes([(key + version) % 251]) * size


def table(keys: list[int], version: int, size: int) -> pa.Table:
    """Rows for ``keys``: x and a blob of ``size`` bytes (past ~2 KB: overflow pages)."""
    return pa.table({
        "user_id": pa.array(keys, pa.int64()),
        "ts": pa.array([version] * len(keys), pa.timestamp("us")),
        "x": pa.array([x_of(k, version) for k in keys], pa.float32()),
        "blob": pa.array([blob_of(k, version, size) for k in keys], pa.binary()),
    })


def write(path: str, writes: list[tuple[int, list[int], int, int]]) -> None:
    """Applies ``writes`` (table index, keys, version, blob size) in this process."""
    store = ps.OnlineStore(path)
    for j, keys, version, size in writes:
        store.write(TABLES[j], table(keys, version, size), keys="user_id", event_time="ts")
    store.close()


def rows_pages(data: bytes, psize: int = 4096) -> list[int]:
    """The page numbers of the rows database's tree (branch and leaf pages)."""
    def u16(at: int) -> int:
        return struct.unpack_from("<H", data, at)[0]

    def u64(at: int) -> int:
        return struct.unpack_from("<Q", data, at)[0]

    def nodes(pg: int) -> list[int]:
        at = pg * psize
        return [at + u16(at + 16 + 2 * i) for i in range((u16(at + 12) - 16) // 2)]

    meta = max((u64(i * psize + 16 + 128), i) for i in (0, 1))[1] * psize + 16
    main_root = u64(meta + 72 + 40)
    root = next(u64(o + 8 + u16(o + 6) + 40) for o in nodes(main_root)
                if data[o + 8:o + 8 + u16(o + 6)] == b"rows")
    out, stack = [], [root]
    while stack:
        pg = stack.pop()
        out.append(pg)
        if u16(pg * psize + 10) == 1:  # P_BRANCH
            stack.extend(u16(o) | u16(o + 2) << 16 | u16(o + 4) << 32 for o in nodes(pg))
    return out


def damaged_reader(path: str, keys: list[int], conn: Any) -> None:
    """Opens the store, says so, then on every message reads ``keys`` (x of both
    tables, blob of a) and sends back the result or the error's class name."""
    store = ps.OnlineStore(path, readonly=True)
    reader = store.reader(TABLES, features=[("a", "x"), ("b", "x")])
    conn.send("ready")
    while conn.recv():
        try:
            m = reader.matrix(keys)
            blobs = store.read("a", keys, features=["blob"]).column("blob").to_pylist()
            conn.send(("ok", m.tobytes(), blobs))
        except PitstopError as e:
            conn.send(("error", type(e).__name__, str(e)))
