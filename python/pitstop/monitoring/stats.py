"""Feature statistics: one row per feature of a table, a feature group or a view.

The numbers come from ``_core.stats_profile`` (``rust/stats/``), one column per task in
parallel: counts, nulls, NaN, mean and population std (``ddof=0``) over the values that
are neither null nor NaN, min, max, exact quantiles p01 … p99 as ``numpy.quantile``
computes them (its default ``'linear'`` method, bit for bit), a 20-bin equal-width
histogram over the finite range (as ``numpy.histogram``), an approximate distinct count
(HyperLogLog, about 1.6% error; exact for categorical columns) and, for categorical
columns (strings, dictionaries, booleans), the top 20 values with their counts.
This module only picks the columns and their kind, and shapes the result.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .. import _core
from .._inputs import as_table
from ..errors import ColumnTypeError, InvalidArgumentError, NotFoundError, SchemaError

if TYPE_CHECKING:
    from ..store import FeatureStore

QUANTILES = ("p01", "p05", "p25", "p50", "p75", "p95", "p99")
BINS = 20
TOP_K = 20

SCHEMA = pa.schema([
    ("feature", pa.string()), ("type", pa.string()), ("kind", pa.string()),
    ("rows", pa.int64()), ("count", pa.int64()), ("nulls", pa.int64()), ("nan", pa.int64()),
    ("mean", pa.float64()), ("std", pa.float64()), ("min", pa.float64()), ("max", pa.float64()),
    *[(q, pa.float64()) for q in QUANTILES],
    ("distinct", pa.float64()),
    ("top_k", pa.list_(pa.struct([("value", pa.string()), ("count", pa.int64())]))),
    ("histogram", pa.struct([("edges", pa.list_(pa.float64())), ("counts", pa.list_(pa.int64()))])),
])


def value_type(t: pa.DataType) -> pa.DataType:
    return t.value_type if pa.types.is_dictionary(t) else t


def kind_of(t: pa.DataType) -> str | None:
    """'numeric', 'categorical', or None for types statistics skip (times, lists,
    binary)."""
    t = value_type(t)
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) \
            or pa.types.is_boolean(t):
        return "categorical"
    if pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "numeric"
    return None


def _nan_to_none(x: float) -> float | None:
    return None if isinstance(x, float) and math.isnan(x) else x


def profile_table(data: Any, features: list[str] | None = None) -> pa.Table:
    """Statistics of ``features`` (default: every column of a supported type) of any
    table."""
    table = as_table(data, "data")
    if features is None:
        features = [f.name for f in table.schema if kind_of(f.type) is not None]
    else:
        missing = [f for f in features if f not in table.column_names]
        if missing:
            raise SchemaError(f"the data has no column(s) {missing}; its columns are {table.column_names}")
    cols = []
    for name in features:
        kind = kind_of(table.schema.field(name).type)
        if kind is None:
            raise ColumnTypeError(
                f"column '{name}' has type {table.schema.field(name).type}; statistics take numbers, "
                "strings, booleans and dictionaries (cast it, or leave it out of features=...)")
        cols.append((name, kind))
    rows = _core.stats_profile(table, cols, bins=BINS, top_k=TOP_K) if cols else []
    out = []
    for r in rows:
        q = [_nan_to_none(v) for v in r["quantiles"]]
        out.append({
            "feature": r["feature"], "type": str(table.schema.field(r["feature"]).type),
            "kind": r["kind"], "rows": r["rows"], "count": r["count"], "nulls": r["nulls"],
            "nan": r["nan"], "mean": _nan_to_none(r["mean"]), "std": _nan_to_none(r["std"]),
            "min": _nan_to_none(r["min"]), "max": _nan_to_none(r["max"]),
            **dict(zip(QUANTILES, q)), "distinct": r["distinct"],
            "top_k": [{"value": v, "count": c} for v, c in r["top"]],
            "histogram": {"edges": r["hist_edges"], "counts": r["hist_counts"]},
        })
    return pa.Table.from_pylist(out, schema=SCHEMA)


def statistics(store: FeatureStore, source: Any, *, version: int | None = None,
               as_of: Any = None) -> pa.Table:
    """``fs.statistics``: ``source`` is a feature group name, a :class:`FeatureView`
    (its features, read from their groups' offline tables) or a table."""
    from ..view import FeatureView

    if isinstance(source, FeatureView):
        return profile_view(source, as_of=as_of)
    if isinstance(source, str):
        try:
            group = store.get_feature_group(source, version)
        except NotFoundError:
            try:
                view = store.get_feature_view(source, version)
            except NotFoundError:
                raise NotFoundError(
                    f"no feature group or feature view named '{source}'"
                    + (f" with version {version}" if version is not None else "")
                    + "; `pitstop list` shows what the store holds") from None
            return profile_view(view, as_of=as_of)
        if group.schema is None:
            return SCHEMA.empty_table()
        return profile_table(group.read(as_of=as_of, columns=group.features), group.features)
    if version is not None or as_of is not None:
        raise InvalidArgumentError("version= and as_of= apply to a feature group or view, not to a table")
    return profile_table(source)


def view_offline(view: Any, *, as_of: Any = None, tables: dict[str, int] | None = None) -> list[pa.Table]:
    """A view's features as stored in its groups' offline tables: one table per
    selection (every row of that group, as of ``as_of`` or at the Delta versions in
    ``tables``), columns named as the view names them. Groups hold different rows, so
    they stay separate tables. Aggregations have no stored rows and are left out."""
    out = []
    for sel, group in zip(view.selections, view._groups()):
        if sel.kind == "aggregation" or group.schema is None:
            continue
        if tables is not None:
            want = tables.get(group.online_table)
            if want is None:
                raise NotFoundError(f"the training snapshot has no version of {group.online_table}")
            t = group.read(as_of=want, columns=list(sel.features))
        else:
            t = group.read(as_of=as_of, columns=list(sel.features))
        out.append(pa.table({name: t.column(f) for f, name in zip(sel.features, sel.output_names)}))
    return out


def profile_view(view: Any, *, as_of: Any = None) -> pa.Table:
    parts = [profile_table(t) for t in view_offline(view, as_of=as_of)]
    return pa.concat_tables(parts) if parts else SCHEMA.empty_table()
