"""The window aggregation contract (pitstop.agg), spelled out as naively as possible.

For every spine row, scan the events of its key, keep those in the row's window, and
compute each op from the plain list of values. Times are exact Python integers of
nanoseconds since the epoch (via tests/reference.py), keys are tuples of Python values
(ints compare by value whatever their width, strings by value, an int never equals a
string, a null key part matches nothing), sums are exact (fractions), so nothing here
can be subtly wrong in the ways a fast path can. Quadratic on purpose: tests keep it
small.

Conventions (pitstop/agg.py's module doc, and where it is silent, the choice made
here):

- window of a label at ``t``: ``[t - W, t)`` (left), ``(t - W, t]`` (right),
  ``[t - W, t]`` (both); ``last`` has no window: ``e < t`` (left), ``e <= t``
  (right, both);
- ``knowledge_time``: only events created at or before ``t``;
- events ordered by (event time, created time, input position): ``last`` is the
  greatest non-null one, ``last_k`` the ``k`` greatest non-null ones, newest first;
- a spine row with a null key part or a null time has an empty window (so count 0,
  like any empty window; the module doc does not single out null times);
- ``count()`` counts rows (null values too), ``count(c)`` non-null values of ``c``;
  ``approx_distinct`` counts distinct non-null values exactly, 0 when there are none
  (like a count);
- every other op is null when the window holds no non-null value (an empty window, or
  one whose values are all null): sum, mean, min, max, last, last_k (null, not an
  empty list); std is null below two non-null values.
"""

from __future__ import annotations

import math
from fractions import Fraction
from typing import Any

import pyarrow as pa

from pitstop import agg as A
from reference import instants

COUNTS = ("count", "approx_distinct")


def key_names(on: Any) -> tuple[list[str], list[str]]:
    if isinstance(on, str):
        return [on], [on]
    if isinstance(on, dict):
        return list(on), list(on.values())
    return list(on), list(on)


def _keys(table: pa.Table, names: list[str]) -> list[tuple | None]:
    cols = [table.column(n).to_pylist() for n in names]
    rows = list(zip(*cols)) if cols else []
    return [None if any(v is None for v in r) else tuple(r) for r in rows]


def in_window(e: int, t: int, w: int | None, closed: str) -> bool:
    if w is None:  # last: no lower bound
        return e < t if closed == "left" else e <= t
    lo = t - w
    if closed == "left":
        return lo <= e < t
    if closed == "right":
        return lo < e <= t
    return lo <= e <= t


def out_type(a: A.Agg, events: pa.Table) -> pa.DataType:
    if a.op in COUNTS:
        return pa.int64()
    t = events.schema.field(a.column).type
    if a.op in ("sum", "mean", "std"):
        return pa.float64()
    if a.op in ("min", "max"):
        return pa.int64() if pa.types.is_integer(t) else pa.float64()
    if a.op == "last":
        return t
    return pa.list_(t)  # last_k


def compute(a: A.Agg, rows: list[int], values: list[Any] | None) -> Any:
    """One op over the window's rows (already ordered oldest first); ``values`` is the
    op's column (None for count())."""
    if a.op == "count" and values is None:
        return len(rows)
    vals = [values[r] for r in rows if values[r] is not None]
    if a.op == "count":
        return len(vals)
    if a.op == "approx_distinct":
        return len(set(vals))
    if not vals:
        return None
    if a.op == "sum":
        return float(math.fsum(vals)) if any(isinstance(v, float) for v in vals) else float(sum(vals))
    if a.op == "mean":
        return float(sum(Fraction(v) for v in vals) / len(vals))
    if a.op == "std":
        if len(vals) < 2:
            return None
        m = sum(Fraction(v) for v in vals) / len(vals)
        var = sum((Fraction(v) - m) ** 2 for v in vals) / (len(vals) - 1)
        return math.sqrt(var)
    if a.op == "min":
        return min(vals)
    if a.op == "max":
        return max(vals)
    if a.op == "last":
        return vals[-1]
    if a.op == "last_k":
        return vals[::-1][: a.k]
    raise AssertionError(a.op)


def window_agg_ref(
    spine: pa.Table,
    events: pa.Table,
    on: Any,
    spine_time: str,
    event_time: str,
    aggregations: Any,
    closed: str = "left",
    created_time: str | None = None,
    knowledge_time: bool = False,
) -> pa.Table:
    specs = A.flatten(aggregations)
    spine_keys, event_keys = key_names(on)
    s_keys = _keys(spine, spine_keys)
    s_time = instants(spine.column(spine_time))
    e_keys = _keys(events, event_keys)
    e_time = instants(events.column(event_time))
    n = events.num_rows
    e_created = instants(events.column(created_time)) if created_time else [0] * n
    # (event time, created time, input position): the order of ties
    order = sorted(range(n), key=lambda r: (e_time[r], e_created[r], r))
    columns = {a.column: events.column(a.column).to_pylist() for a in specs if a.column}
    results: dict[str, list[Any]] = {a.name: [] for a in specs}
    for k, t in zip(s_keys, s_time):
        if k is None or t is None:
            mine = []
        else:
            mine = [r for r in order if e_keys[r] == k
                    and (not knowledge_time or e_created[r] <= t)]
        in_w: dict[int | None, list[int]] = {}  # the window's rows, oldest first
        for a in specs:
            w = None if a.window is None else a.window.ns
            if w not in in_w:
                in_w[w] = [r for r in mine if in_window(e_time[r], t, w, closed)]
            results[a.name].append(compute(a, in_w[w], columns.get(a.column)))
    out = spine
    for a in specs:
        typ = out_type(a, events)
        out = out.append_column(pa.field(a.name, typ), pa.array(results[a.name], typ))
    return out
