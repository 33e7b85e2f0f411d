"""What a feature group stores: normalizing and validating inserted data.

Offline tables are Delta Lake, whose types are narrower than Arrow's: one timestamp
resolution (microseconds), no unsigned integers, one string type. Every insert is
normalized to those types first (a lossy conversion is an error, never a silent
truncation), then checked against the schema the group took from its first insert.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .errors import ColumnTypeError, DataError, SchemaError

SEQ = "_pitstop_seq"  # insertion order: (Delta version << 32) | row in its insert
NAN_POLICIES = ("null", "keep", "error")


def _target_type(name: str, t: pa.DataType) -> pa.DataType:
    if pa.types.is_dictionary(t):
        return _target_type(name, t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC")
    if pa.types.is_date64(t):
        return pa.date32()
    if pa.types.is_unsigned_integer(t):
        return pa.int64() if t.bit_width >= 32 else {8: pa.int16(), 16: pa.int32()}[t.bit_width]
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_float16(t):
        return pa.float32()
    if (pa.types.is_null(t) or pa.types.is_time(t) or pa.types.is_duration(t)
            or pa.types.is_nested(t) or pa.types.is_interval(t)):
        raise ColumnTypeError(
            f"column '{name}' has type {t}, which a feature group cannot store; use numbers, "
            "booleans, strings, binary, dates or timestamps (cast it or drop it)"
        )
    return t


def normalize(table: pa.Table) -> pa.Table:
    """``table`` in the types the offline store keeps (see the module doc)."""
    names = table.column_names
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise SchemaError(f"the data has duplicate column name(s) {dups}; every column needs "
                          "its own name (rename or drop the duplicates)")
    cols = []
    fields = []
    for field, col in zip(table.schema, table.columns):
        if field.name == SEQ:
            raise SchemaError(f"column name '{SEQ}' is reserved by pitstop; rename the column")
        target = _target_type(field.name, field.type)
        if target != field.type:
            try:
                col = lossless_cast(col, target, field.name)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
                raise DataError(
                    f"column '{field.name}' ({field.type}) does not fit {target} without losing "
                    f"information ({e}); round or cast it before inserting"
                ) from None
        cols.append(col)
        fields.append(pa.field(field.name, target, nullable=True))
    return pa.Table.from_arrays(cols, schema=pa.schema(fields))


@dataclass(frozen=True)
class GroupColumns:
    """The roles of a feature group's columns."""

    name: str
    primary_key: tuple[str, ...]
    event_time: str
    created_time: str | None

    @property
    def special(self) -> set[str]:
        return {*self.primary_key, self.event_time, *([self.created_time] if self.created_time else [])}


def validate(table: pa.Table, g: GroupColumns, nan_policy: str) -> pa.Table:
    """Checks keys and times, applies the NaN policy; returns the (possibly) new table."""
    names = table.column_names
    for role, col in [*(("primary key", k) for k in g.primary_key), ("event_time", g.event_time),
                      *([("created_time", g.created_time)] if g.created_time else [])]:
        if col not in names:
            raise SchemaError(
                f"feature group '{g.name}': the data has no column '{col}' ({role}); "
                f"found: {names}"
            )
    for k in g.primary_key:
        t = table.schema.field(k).type
        if not (pa.types.is_integer(t) or pa.types.is_string(t)):
            raise ColumnTypeError(
                f"feature group '{g.name}': primary key column '{k}' has type {t}; keys must be "
                "integers or strings"
            )
        if (nulls := table.column(k).null_count):
            raise DataError(
                f"feature group '{g.name}': primary key column '{k}' has {nulls} null value(s); "
                "every row needs a key (drop or fill those rows)"
            )
    for role, col in (("event_time", g.event_time), ("created_time", g.created_time)):
        if col is None:
            continue
        t = table.schema.field(col).type
        if not (pa.types.is_timestamp(t) or pa.types.is_date(t)):
            raise ColumnTypeError(
                f"feature group '{g.name}': {role} column '{col}' has type {t}; it must be a "
                "timestamp or date column (e.g. pandas.to_datetime / pyarrow.compute.cast)"
            )
        if (nulls := table.column(col).null_count):
            raise DataError(
                f"feature group '{g.name}': {role} column '{col}' has {nulls} null value(s); "
                "every row needs one (drop or fill those rows)"
            )
    for i, field in enumerate(table.schema):
        if not pa.types.is_floating(field.type) or field.name in g.special:
            continue
        col = table.column(i)
        nans = pc.sum(pc.is_nan(col)).as_py() or 0
        if not nans:
            continue
        if nan_policy == "error":
            raise DataError(
                f"feature group '{g.name}': column '{field.name}' has {nans} NaN value(s) and the "
                "group's nan_policy is 'error'; replace them or use nan_policy='null'"
            )
        if nan_policy == "null":
            table = table.set_column(i, field, pc.if_else(pc.is_nan(col), None, col))
    return table


def conform(table: pa.Table, schema: pa.Schema, group: str) -> pa.Table:
    """``table`` in the group's registered ``schema``: same columns (any order), types
    that convert without loss; anything else is a SchemaError naming the difference."""
    want = [f.name for f in schema if f.name != SEQ]
    have = table.column_names
    missing = [c for c in want if c not in have]
    extra = [c for c in have if c not in want]
    if missing or extra:
        raise SchemaError(
            f"feature group '{group}' has columns {want}; the data "
            + (f"lacks {missing}" if missing else "")
            + (" and " if missing and extra else "")
            + (f"has extra {extra}" if extra else "")
            + ". A different schema needs a new version of the group (create_feature_group(..., version=N+1))"
        )
    cols = []
    for name in want:
        target = schema.field(name).type
        col = table.column(name)
        if col.type != target:
            try:
                col = lossless_cast(col, target, name, group)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise SchemaError(
                    f"feature group '{group}': column '{name}' is {col.type} but the group stores "
                    f"{target}; cast it, or create a new version of the group for the new type"
                ) from None
        cols.append(col)
    return pa.Table.from_arrays(cols, schema=pa.schema([schema.field(n) for n in want]))


def lossless_cast(col: pa.ChunkedArray, target: pa.DataType, name: str,
                  group: str | None = None) -> pa.ChunkedArray:
    """``col`` as ``target``, or DataError when a value would change. Arrow's safe
    casts catch overflow and lost precision, but not a timestamp cast to a date (the
    time of day is dropped) or a date64 with a time part: those are checked by casting
    back, since a silently truncated event time serves a value before it happened."""
    out = pc.cast(col, target, safe=True)
    if pa.types.is_temporal(col.type) and pa.types.is_temporal(target):
        back = pc.cast(out, col.type, safe=False)
        if not pc.all(pc.equal(back, col)).as_py() in (True, None):
            where = f"feature group '{group}': " if group else ""
            raise DataError(
                f"{where}column '{name}' ({col.type}) has values with a time of day or precision "
                f"that {target} does not keep; converting would change them (an event at 23:59 "
                f"would become midnight). Insert {target} values, or create a new group version "
                f"with a {col.type} column")
    return out


def with_seq(table: pa.Table, version: int) -> pa.Table:
    """Appends the insertion-order column for an insert that becomes Delta ``version``."""
    seq = (np.int64(version) << np.int64(32)) + np.arange(table.num_rows, dtype=np.int64)
    return table.append_column(pa.field(SEQ, pa.int64(), nullable=False), pa.array(seq))
