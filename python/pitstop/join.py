"""Point-in-time joins: :func:`pit_join`.

For every spine row (keys, t) and every feature table, the feature row with the same
keys whose event time e satisfies ``e <= t`` (``e < t`` with
``allow_exact_matches=False``) and, with a TTL, ``e >= t - ttl``; the greatest e wins,
then the greatest created time, then the row that came last in input order. The output
has exactly the spine's rows in the spine's order, the spine's columns unchanged, plus
each feature table's value columns (all but its keys, event time and created time),
null where nothing qualifies. The work runs in Rust (``pitstop._core``) on all cores
with the GIL released; see ``rust/join/`` for the algorithm and its cost.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from . import _core
from ._inputs import as_arrow, duration_ns
from .errors import InvalidArgumentError

KeySpec = str | Sequence[str] | Mapping[str, str]


def _key_names(on: KeySpec) -> tuple[list[str], list[str]]:
    """(spine names, feature names) of an ``on`` argument."""
    if isinstance(on, str):
        return [on], [on]
    if isinstance(on, Mapping):
        return [str(k) for k in on.keys()], [str(v) for v in on.values()]
    if isinstance(on, Sequence) and on and all(isinstance(k, str) for k in on):
        return list(on), list(on)
    raise InvalidArgumentError(
        f"on={on!r} must be a column name, a non-empty list of names (composite key), "
        "or a dict mapping spine names to feature names"
    )


def _per_table(value: Any, n: int, name: str) -> list[Any]:
    """Broadcasts a per-table option, or checks that a list has one entry per table."""
    if isinstance(value, (list, tuple)):
        if len(value) != n:
            raise InvalidArgumentError(
                f"{name} has {len(value)} entries but there are {n} feature tables; "
                "give one value, or one per feature table"
            )
        return list(value)
    return [value] * n


def _table_options(n: int, feature_time: Any, created_time: Any, ttl: Any, prefix: Any):
    """Per-table labels and options: (names, event times, created times, TTLs in ns,
    prefixes), each broadcast or checked to have one entry per feature table."""
    names = [f"feature table {i}" if n > 1 else "feature table" for i in range(n)]
    times = _per_table(feature_time, n, "feature_time")
    created = _per_table(created_time, n, "created_time")
    ttls = [duration_ns(t) for t in _per_table(ttl, n, "ttl")]
    prefixes = _per_table(prefix, n, "prefix")
    return names, times, created, ttls, prefixes


def pit_join(
    spine: Any,
    features: Any,
    *,
    on: KeySpec,
    spine_time: str,
    feature_time: str | Sequence[str],
    ttl: Any = None,
    created_time: str | Sequence[str | None] | None = None,
    allow_exact_matches: bool = True,
    knowledge_time: bool = False,
    prefix: str | Sequence[str | None] | None = None,
) -> pa.Table:
    """Joins each feature table to the spine as of the spine's times.

    Args:
        spine: the rows to produce (keys + time + anything else, e.g. labels); any
            Arrow-exportable table or a pandas DataFrame.
        features: one feature table or a list of them, joined in one call.
        on: the key column, a list of them (composite key), or a dict mapping spine
            column names to feature column names.
        spine_time: the spine's time column.
        feature_time: each feature table's event-time column (one name, or one per table).
        ttl: ignore feature rows older than ``t - ttl`` (``"30d"``, a timedelta; one, or
            one per table).
        created_time: the column that breaks ties between equal event times and that
            ``knowledge_time`` reads (one, or one per table).
        allow_exact_matches: whether a feature row at exactly the spine's time counts.
        knowledge_time: only count feature rows created at or before the spine's time.
        prefix: prepended to each feature table's output columns (one, or one per table).

    Returns:
        A ``pyarrow.Table``: the spine's rows and columns plus the feature columns.
    """
    tables = list(features) if isinstance(features, (list, tuple)) else [features]
    n = len(tables)
    spine_keys, feature_keys = _key_names(on)
    names, times, created, ttls, prefixes = _table_options(n, feature_time, created_time, ttl, prefix)
    args = [
        (as_arrow(t, name), name, spine_keys, feature_keys, time, c, ttl_ns, p)
        for t, name, time, c, ttl_ns, p in zip(tables, names, times, created, ttls, prefixes)
    ]
    return _core.pit_join(
        as_arrow(spine, "spine"),
        spine_time,
        args,
        allow_exact_matches=bool(allow_exact_matches),
        knowledge_time=bool(knowledge_time),
    )
