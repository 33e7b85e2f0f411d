"""hypothesis strategies for adversarial window aggregation inputs.

Built on tests/strategies.py (key spaces, units, zones, chunking). The events' times
are drawn mostly from the instants where windows have their edges: every label time
``t`` and every ``t - W`` for the declared windows (and one nanosecond either side), so
ties at both ends of a window are the common case. Created times tie with each other
and with label times (knowledge_time's edge). Value columns have nulls, and sometimes
are all null.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa
from hypothesis import strategies as st

from pitstop import agg as A
from reference import instants

import strategies as S

# windows: sub-second, a whole second, spans of several of the strategies' instants,
# one nanosecond, and a day (the date32 spines' scale)
WINDOWS = ["1ns", "1s", "2s", "1500ms", "3s", "999999999ns", "1d"]
FLOATS = [0.1, -0.1, 0.5, 1 / 3, 3.0, -2.5, 1e15, -1e15, 1e-3, 0.0, -0.0, 2.0**-30, 7.25]
INTS = [0, 1, -1, 2, 5, -7, 100, 127, -128]
TAGS = ["", "a", "b", "ab", "é"]
CLOSED = ["left", "right", "both"]


@dataclass
class Case:
    spine: pa.Table
    events: pa.Table
    ks: S.KeySpace
    aggregations: list
    closed: str
    created: str | None
    knowledge: bool

    def kwargs(self) -> dict:
        return dict(on=self.ks.names, spine_time="t", event_time="ts",
                    aggregations=self.aggregations, closed=self.closed,
                    created_time=self.created, knowledge_time=self.knowledge)


def aggregations(windows: list[str], k: int) -> list:
    """Every op over every column it applies to, for every window."""
    return [
        A.count(windows=windows),
        A.count("vf", windows=windows),
        A.count("tag", windows=windows),
        *[getattr(A, op)(col, windows=windows)
          for op in ("sum", "mean", "std", "min", "max") for col in ("vi", "vf")],
        A.last("vi"), A.last("vf"), A.last("tag"), A.last("row"),
        *[A.last_k(col, k=k, window=w) for col in ("row", "tag") for w in windows],
        A.approx_distinct("vi", windows=windows),
        A.approx_distinct("tag", windows=windows),
    ]


def _nullable(draw, values: list, null_rate: int) -> list:
    return [None if draw(st.integers(0, null_rate)) == 0 else v for v in values]


@st.composite
def events_table(draw, ks: S.KeySpace, label_ns: list[int], windows_ns: list[int],
                 with_created: bool, max_rows: int = 16) -> pa.Table:
    n = draw(st.integers(0, max_rows))
    t_type = draw(S.time_type())
    is_date = pa.types.is_date32(t_type)
    edges = sorted({t - d for t in label_ns for w in windows_ns for d in (0, w)}
                   | {t + d for t in label_ns for d in (-1, 1)}
                   | {t - w + d for t in label_ns for w in windows_ns for d in (-1, 1)})
    if is_date or not edges:
        pick = S.instant(days=is_date)
    else:
        pick = st.one_of(st.sampled_from(edges), st.sampled_from(edges), S.instant())
    rows = [([draw(S.key_value(ks, null_rate=30)) for _ in range(ks.width)], draw(pick))
            for _ in range(n)]
    cols = {}
    for i, name in enumerate(ks.names):
        values = [r[0][i] for r in rows]
        cols[name] = pa.array(values, S.key_type(draw, ks, values))
    cols["ts"] = S.write_times([r[1] for r in rows], t_type)
    if with_created:
        c_type = draw(S.time_type(allow_date=False))
        pool = st.one_of(S.instant(), st.sampled_from(label_ns)) if label_ns else S.instant()
        cols["created"] = S.write_times([draw(pool) for _ in range(n)], c_type)
    all_null = draw(st.integers(0, 5)) == 0
    i_type = draw(st.sampled_from([pa.int8(), pa.int16(), pa.int32(), pa.int64()]))
    f_type = draw(st.sampled_from([pa.float64(), pa.float64(), pa.float32()]))
    vi = _nullable(draw, [draw(st.sampled_from(INTS)) for _ in range(n)], 4)
    vf = _nullable(draw, [draw(st.sampled_from(FLOATS)) for _ in range(n)], 4)
    cols["vi"] = pa.array([None] * n if all_null else vi, i_type)
    cols["vf"] = pa.array([None] * n if all_null and draw(st.booleans()) else vf, f_type)
    cols["tag"] = pa.array(_nullable(draw, [draw(st.sampled_from(TAGS)) for _ in range(n)], 3),
                           draw(st.sampled_from([pa.string(), pa.large_string()])))
    cols["row"] = pa.array(range(n), pa.int64())  # which row: ties must order by it
    return S.chunked(draw, pa.table(cols))


@st.composite
def agg_case(draw, max_spine: int = 10, max_events: int = 16) -> Case:
    ks = draw(S.key_space())
    windows = draw(st.lists(st.sampled_from(WINDOWS), min_size=1, max_size=3, unique=True))
    windows_ns = [A.window(w).ns for w in windows]
    spine = draw(S.spine_table(ks, max_rows=max_spine))
    label_ns = sorted({v for v in instants(spine.column("t")) if v is not None})
    with_created = draw(st.booleans())
    events = draw(events_table(ks, label_ns, windows_ns, with_created, max_rows=max_events))
    specs = A.flatten(aggregations(windows, draw(st.integers(1, 4))))
    if draw(st.booleans()):  # a few ops alone: no sharing of work between them
        specs = draw(st.lists(st.sampled_from(specs), min_size=1, max_size=3, unique_by=lambda a: a.name))
    return Case(
        spine=spine,
        events=events,
        ks=ks,
        aggregations=specs,
        closed=draw(st.sampled_from(CLOSED)),
        created="created" if with_created else None,
        knowledge=with_created and draw(st.booleans()),
    )
