"""Window aggregations: declarative time-window features, exact at every label's time.

``agg.sum("amount", windows=["1d", "7d"])`` declares features; :func:`window_agg`
computes them for every row of a spine (training labels), and a feature store's
aggregation (``fs.create_aggregation``) keeps them for serving from the same
definition. The window of a label at time ``t`` is ``[t - W, t)`` by default
(``closed="left"``): an event at exactly ``t`` is not counted (it is usually the event
being scored), one at exactly ``t - W`` is. ``closed="right"`` gives ``(t - W, t]``,
``closed="both"`` ``[t - W, t]``. Windows slide exactly: no hops, no tiles that round.

Ops (nulls in the value column are skipped; an empty window gives count 0 and null
for every other op):

- ``count()`` rows in the window (``count(column)``: non-null values), int64;
- ``sum``, ``mean``, ``std`` (sample, ddof=1; null below two values), float64, over
  numeric columns; sums are exact to double-double precision (prefix sums kept as
  two floats), well within 1e-9 of ``math.fsum``;
- ``min``, ``max`` over numeric columns: int64 for integers, float64 for floats;
- ``last(column)``: the latest non-null value before ``t`` (no window, any type);
- ``last_k(column, k, window)``: the ``k`` latest non-null values in the window, newest
  first, as a list column;
- ``approx_distinct(column, windows)``: distinct non-null values in the window, int64.
  Computed exactly (a sliding count per value), so its error is 0, within any bound
  an approximation would state.

Ties on event time break as in :func:`pitstop.pit_join` (created time, then input
order), which decides ``last`` and ``last_k``; with ``knowledge_time=True`` only
events created at or before ``t`` count. Keys, time units and zones, and bad input
are handled exactly as by ``pit_join``. The work runs in Rust (``rust/agg/``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from . import _core
from ._inputs import as_arrow, duration_ns
from .errors import InvalidArgumentError, SchemaError
from .join import KeySpec, _key_names

CLOSED = ("left", "right", "both")
OPS = ("count", "sum", "mean", "min", "max", "std", "last", "last_k", "approx_distinct")
_LABEL_UNITS = (("d", 86_400 * 10**9), ("h", 3_600 * 10**9), ("m", 60 * 10**9), ("s", 10**9),
                ("ms", 10**6), ("us", 10**3), ("ns", 1))


@dataclass(frozen=True)
class Window:
    """A window length: ``ns`` nanoseconds, written ``label`` in feature names."""

    ns: int
    label: str


def window(value: Any) -> Window:
    """A window from a string like ``"7d"`` or a timedelta; its label is the shortest
    exact spelling in one unit (``"90m"``, ``"36h"``, ``"7d"``)."""
    ns = duration_ns(value, "window")
    if ns is None or ns <= 0:
        raise InvalidArgumentError(f"window {value!r} must be a positive duration (e.g. '7d')")
    unit, size = next((u, s) for u, s in _LABEL_UNITS if ns % s == 0)
    return Window(ns, f"{ns // size}{unit}")


_as_window = window


@dataclass(frozen=True)
class Agg:
    """One op over one column and one window: one output feature. Build with the
    functions of this module (``agg.sum("amount", windows=[...])`` gives one per window)."""

    op: str
    column: str | None
    window: Window | None
    k: int | None = None

    @property
    def name(self) -> str:
        """``{op}_{column}_{window}``; ``count_{window}``, ``last_{column}``,
        ``last{k}_{column}_{window}``."""
        if self.op == "last":
            return f"last_{self.column}"
        op = f"last{self.k}" if self.op == "last_k" else self.op
        parts = [op] + ([self.column] if self.column else []) + [self.window.label]
        return "_".join(parts)

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "column": self.column, "k": self.k,
                "window_ns": None if self.window is None else self.window.ns,
                "window": None if self.window is None else self.window.label}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Agg:
        w = None if d["window_ns"] is None else Window(int(d["window_ns"]), str(d["window"]))
        return cls(str(d["op"]), d["column"], w, d.get("k"))


def _column(column: Any) -> str:
    if not isinstance(column, str) or not column:
        raise InvalidArgumentError(f"column must be a column name; got {column!r}")
    return column


def _windows(windows: Any) -> list[Window]:
    if isinstance(windows, str) or not isinstance(windows, Sequence) or not windows:
        raise InvalidArgumentError(
            f"windows must be a non-empty list of durations (e.g. ['1d', '7d']); got {windows!r}")
    return [window(w) for w in windows]


def count(column: str | None = None, *, windows: Sequence[Any]) -> list[Agg]:
    """Rows in each window (non-null values of ``column`` when given)."""
    col = None if column is None else _column(column)
    return [Agg("count", col, w) for w in _windows(windows)]


def _numeric(op: str):
    def make(column: str, *, windows: Sequence[Any]) -> list[Agg]:
        return [Agg(op, _column(column), w) for w in _windows(windows)]

    make.__name__ = op
    make.__doc__ = f"The {op} of ``column``'s non-null values in each window."
    return make


sum = _numeric("sum")  # noqa: A001 - the op's name
mean = _numeric("mean")
min = _numeric("min")  # noqa: A001
max = _numeric("max")  # noqa: A001
std = _numeric("std")
approx_distinct = _numeric("approx_distinct")


def last(column: str) -> list[Agg]:
    """The latest non-null value of ``column`` before the label's time (no window)."""
    return [Agg("last", _column(column), None)]


def last_k(column: str, *, k: int, window: Any) -> list[Agg]:
    """The ``k`` latest non-null values of ``column`` in the window, newest first."""
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 10_000:
        raise InvalidArgumentError(f"k must be an integer from 1 to 10000; got {k!r}")
    return [Agg("last_k", _column(column), _as_window(window), k)]


def flatten(aggregations: Any) -> list[Agg]:
    """The list of :class:`Agg` of an ``aggregations`` argument (lists of them, as the
    op functions return, are flattened); names must not clash."""
    if isinstance(aggregations, Agg):
        aggregations = [aggregations]
    if isinstance(aggregations, str) or not isinstance(aggregations, Sequence):
        raise InvalidArgumentError(
            "aggregations must be a list of agg.count(...), agg.sum(...), ...; "
            f"got {aggregations!r}")
    out: list[Agg] = []
    for a in aggregations:
        items = a if isinstance(a, list | tuple) else [a]
        for item in items:
            if not isinstance(item, Agg):
                raise InvalidArgumentError(
                    f"{item!r} is not an aggregation; use agg.count(...), agg.sum(...), ...")
            out.append(item)
    if not out:
        raise InvalidArgumentError("aggregations is empty; declare at least one")
    seen: set[str] = set()
    for a in out:
        if a.name in seen:
            raise SchemaError(f"two aggregations are both named '{a.name}'; drop one")
        seen.add(a.name)
    return out


def window_agg(
    spine: Any,
    events: Any,
    *,
    on: KeySpec,
    spine_time: str,
    event_time: str,
    aggregations: Any,
    closed: str = "left",
    created_time: str | None = None,
    knowledge_time: bool = False,
) -> pa.Table:
    """Window aggregates of ``events`` for every row of ``spine``.

    Returns the spine's rows in the spine's order, its columns unchanged, plus one
    column per aggregation (see the module doc for windows and ops). ``on`` is a key
    column, a list (composite key) or a dict mapping spine names to event names.
    """
    if closed not in CLOSED:
        raise InvalidArgumentError(f"closed must be one of {CLOSED}; got {closed!r}")
    specs = flatten(aggregations)
    spine_keys, event_keys = _key_names(on)
    if created_time is not None and not isinstance(created_time, str):
        raise InvalidArgumentError(f"created_time must be a column name; got {created_time!r}")
    if knowledge_time and created_time is None:
        raise InvalidArgumentError("knowledge_time=True needs created_time (the column it reads)")
    return _core.window_agg(
        as_arrow(spine, "spine"), spine_time, as_arrow(events, "events"), spine_keys,
        event_keys, event_time, created_time,
        [(a.op, a.column, None if a.window is None else a.window.ns, a.k, a.name) for a in specs],
        closed, bool(knowledge_time),
    )
