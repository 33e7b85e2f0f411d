"""hypothesis strategies for adversarial point-in-time join inputs.

Small domains on purpose: few keys and few distinct instants make ties, equal
(key, time) rows and duplicate spine rows the common case, not the rare one. Times are
drawn as instants and then written in a random unit and zone, so the same instant
meets itself across units; nanosecond and millisecond columns get off-by-one offsets
next to whole seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
from hypothesis import strategies as st

UNITS = ["s", "ms", "us", "ns"]
ZONES = [None, "UTC", "America/New_York", "+05:30", "Asia/Kolkata"]
_NS = {"s": 10**9, "ms": 10**6, "us": 10**3, "ns": 1}
INT_TYPES = [pa.int8(), pa.int16(), pa.int32(), pa.int64(), pa.uint8(), pa.uint32(), pa.uint64()]
STR_TYPES = [pa.string(), pa.large_string(), pa.string_view()]
BASE = 1_700_000_000  # seconds; some day in 2023


@st.composite
def time_type(draw, allow_date: bool = True) -> pa.DataType:
    if allow_date and draw(st.integers(0, 9)) == 0:
        return pa.date32()
    return pa.timestamp(draw(st.sampled_from(UNITS)), tz=draw(st.sampled_from(ZONES)))


def write_times(instants_ns: list[int | None], t: pa.DataType) -> pa.Array:
    """Instants (ns) as a column of type ``t``, rounded down to its unit."""
    if pa.types.is_date32(t):
        day = 86_400 * 10**9
        return pa.array([None if v is None else v // day for v in instants_ns], pa.int32()).cast(t)
    unit = _NS[t.unit]
    return pa.array([None if v is None else v // unit for v in instants_ns], pa.int64()).cast(t)


@st.composite
def instant(draw, days: bool = False) -> int:
    """A few distinct instants: whole seconds, some with a sub-second offset."""
    if days:
        return (BASE // 86_400 + draw(st.integers(0, 4))) * 86_400 * 10**9
    s = BASE + draw(st.integers(0, 8))
    frac = draw(st.sampled_from([0, 0, 0, 1, 1_000, 1_000_000, 999_999_999]))
    return s * 10**9 + frac


@dataclass
class KeySpace:
    kind: str  # "int" or "str"
    width: int  # number of key columns
    names: list[str] = field(default_factory=list)
    scale: int = 1  # spreads integer keys apart: 1 is a dense range, 10**9 is sparse


@st.composite
def key_space(draw) -> KeySpace:
    kind = draw(st.sampled_from(["int", "str"]))
    width = draw(st.integers(1, 2))
    scale = draw(st.sampled_from([1, 1, 10**9]))  # dense and hashed integer key paths
    return KeySpace(kind, width, [f"k{i}" for i in range(width)], scale)


@st.composite
def key_value(draw, ks: KeySpace, null_rate: int = 12):
    if draw(st.integers(0, null_rate)) == 0:
        return None
    if ks.kind == "int":
        # includes values that collide if composite keys were concatenated: 1,23 / 12,3
        v = draw(st.sampled_from([0, 1, 3, 12, 23, -1, 127] if ks.width > 1 else [0, 1, 2, -5, 127]))
        return v * ks.scale
    return draw(st.sampled_from(["", "a", "b", "ab", "a\x00", "é"]))


def key_type(draw, ks: KeySpace, values: list) -> pa.DataType:
    if ks.kind == "str":
        return draw(st.sampled_from(STR_TYPES))
    lo = min((v for v in values if v is not None), default=0)
    hi = max((abs(v) for v in values if v is not None), default=0)
    types = [t for t in INT_TYPES if not (pa.types.is_unsigned_integer(t) and lo < 0)
             and (hi < 2**(t.bit_width - 1) or t.bit_width == 64)]
    return draw(st.sampled_from(types))


def chunked(draw, table: pa.Table) -> pa.Table:
    """The same table split into random record batches (some empty)."""
    n = table.num_rows
    if n == 0 or draw(st.booleans()):
        return table
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=3)))
    bounds = [0, *cuts, n]
    batches = [b for lo, hi in zip(bounds, bounds[1:]) for b in table.slice(lo, hi - lo).to_batches()]
    return pa.Table.from_batches(batches, schema=table.schema) if batches else table


@st.composite
def feature_table(draw, ks: KeySpace, j: int, with_created: bool, max_rows: int = 14) -> pa.Table:
    n = draw(st.integers(0, max_rows))
    t_type = draw(time_type())
    rows = []
    for _ in range(n):
        keys = [draw(key_value(ks, null_rate=30)) for _ in range(ks.width)]
        rows.append((keys, draw(instant(days=pa.types.is_date32(t_type)))))
    cols = {}
    for i, name in enumerate(ks.names):
        values = [r[0][i] for r in rows]
        cols[name] = pa.array(values, key_type(draw, ks, values))
    cols["ts"] = write_times([r[1] for r in rows], t_type)
    if with_created:
        c_type = draw(time_type(allow_date=False))
        cols["created"] = write_times([draw(instant()) for _ in range(n)], c_type)
    cols[f"row{j}"] = pa.array(range(n), pa.int64())  # which row won
    cols[f"s{j}"] = pa.array([draw(st.sampled_from([None, "x", "yy"])) for _ in range(n)], pa.string())
    return chunked(draw, pa.table(cols))


@st.composite
def spine_table(draw, ks: KeySpace, max_rows: int = 12) -> pa.Table:
    n = draw(st.integers(0, max_rows))
    t_type = draw(time_type())
    rows = [
        ([draw(key_value(ks)) for _ in range(ks.width)],
         None if draw(st.integers(0, 15)) == 0 else draw(instant(days=pa.types.is_date32(t_type))))
        for _ in range(n)
    ]
    if rows and draw(st.booleans()):  # duplicate spine rows stay duplicates
        rows += draw(st.lists(st.sampled_from(rows), max_size=3))
    cols = {}
    for i, name in enumerate(ks.names):
        values = [r[0][i] for r in rows]
        cols[name] = pa.array(values, key_type(draw, ks, values))
    cols["t"] = write_times([r[1] for r in rows], t_type)
    cols["label"] = pa.array(range(len(rows)), pa.int32())
    return chunked(draw, pa.table(cols))


@st.composite
def ttl(draw):
    return draw(st.sampled_from([None, None, "0s", "1s", "2s", "1500ms", "3s", "1d"]))
