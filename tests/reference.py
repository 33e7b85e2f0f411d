"""The point-in-time join contract, spelled out as naively as possible.

For every spine row and feature table, scan every feature row. Times are exact Python
integers of nanoseconds since the epoch (no unit, no overflow), keys are tuples of
Python values, so nothing here can be subtly wrong in the ways a fast path can.
Quadratic on purpose: the tests keep it small.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}


def instants(col: pa.ChunkedArray | pa.Array) -> list[int | None]:
    """Nanoseconds since the epoch (UTC) of a timestamp or date column."""
    t = col.type
    if pa.types.is_timestamp(t):
        raw = pc.cast(col, pa.int64()).to_pylist()
        return [None if v is None else v * _NS[t.unit] for v in raw]
    if pa.types.is_date32(t):
        return [None if v is None else v * 86_400 * 10**9 for v in pc.cast(col, pa.int32()).to_pylist()]
    if pa.types.is_date64(t):
        return [None if v is None else v * 10**6 for v in pc.cast(col, pa.int64()).to_pylist()]
    raise TypeError(f"not temporal: {t}")


def _keys(table: pa.Table, names: list[str]) -> list[tuple | None]:
    cols = [table.column(n).to_pylist() for n in names]
    rows = list(zip(*cols)) if cols else []
    return [None if any(v is None for v in r) else tuple(r) for r in rows]


def pit_join(
    spine: pa.Table,
    tables: list[pa.Table],
    *,
    spine_keys: list[str],
    keys: list[str],
    spine_time: str,
    feature_times: list[str],
    ttls_ns: list[int | None],
    created: list[str | None],
    allow_exact_matches: bool = True,
    knowledge_time: bool = False,
    prefixes: list[str | None] | None = None,
) -> pa.Table:
    prefixes = prefixes or [None] * len(tables)
    out = spine
    s_keys = _keys(spine, spine_keys)
    s_time = instants(spine.column(spine_time))
    for table, time, ttl, c_name, prefix in zip(tables, feature_times, ttls_ns, created, prefixes):
        f_keys = _keys(table, keys)
        f_time = instants(table.column(time))
        f_created = instants(table.column(c_name)) if c_name else [0] * table.num_rows
        picks: list[int | None] = []
        for k, t in zip(s_keys, s_time):
            best: tuple[Any, ...] | None = None
            if k is not None and t is not None:
                for r in range(table.num_rows):
                    e, c = f_time[r], f_created[r]
                    if f_keys[r] != k:
                        continue
                    if not (e <= t if allow_exact_matches else e < t):
                        continue
                    if ttl is not None and e < t - ttl:
                        continue
                    if knowledge_time and c > t:
                        continue
                    if best is None or (e, c, r) > best:
                        best = (e, c, r)
            picks.append(None if best is None else best[2])
        skip = set(keys) | {time} | ({c_name} if c_name else set())
        idx = pa.array(picks, type=pa.int64())
        for field in table.schema:
            if field.name in skip:
                continue
            values = table.column(field.name).take(idx)
            out = out.append_column(
                pa.field((prefix or "") + field.name, field.type, nullable=True), values
            )
    return out
