"""Messages to rows: a micro-batch of :class:`~.sources.Message` s parsed with the
feature group's schema into an Arrow table, and the messages that do not parse, each
with the reason (they go to the dead-letter table; nothing is dropped silently).

A message's fields are the group's columns, values as text (Redis) or JSON values
(a ``json`` field holding an object, or a JSON-lines file). Text is parsed by Arrow's
casts with the column's type; times are ISO 8601 (a naive time means UTC) or epoch
milliseconds. A missing column, an unknown field, a value of the wrong type, a null
key or event time are each a bad message. The fast path casts whole columns; only a
batch with a bad value is parsed again one message at a time, to find which.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Sequence
from itertools import chain
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .sources import Message, RedisBatch

_EPOCH_MS = re.compile(r"-?\d+")


def fields_of(m: Message) -> tuple[dict[str, Any] | None, str | None]:
    """The message's column values, or (None, reason)."""
    f = m.fields
    if "_error" in f:
        return None, str(f["_error"])
    if set(f) == {"json"}:
        raw = f["json"]
        try:
            obj = json.loads(raw) if isinstance(raw, (str, bytes)) else raw
        except ValueError as e:
            return None, f"field 'json' is not JSON: {e}"
        if not isinstance(obj, dict):
            return None, "field 'json' does not hold a JSON object"
        return obj, None
    return f, None


def _column(values: list[Any], field: pa.Field) -> pa.Array:
    """``values`` (text or JSON values) as ``field.type``; raises on any bad value."""
    t = field.type
    kinds = {type(v) for v in values}
    if kinds == {str}:  # text: the common case
        return _text(pa.array(values, pa.string()), t)
    if dict in kinds or list in kinds:
        raise ValueError("a nested JSON value")
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        return _times(values, t)
    if pa.types.is_string(t):
        if any(v is not None and not isinstance(v, str) for v in values):
            raise ValueError("a non-text value")
        return pa.array(values, pa.string())
    if pa.types.is_binary(t):
        if any(v is not None and not isinstance(v, (str, bytes)) for v in values):
            raise ValueError("not bytes")
        return pa.array([None if v is None else v.encode() if isinstance(v, str) else v
                         for v in values], pa.binary())
    if any(isinstance(v, str) for v in values):  # text, maybe mixed with JSON scalars
        values = [v if v is None or isinstance(v, str) else
                  ("true" if v else "false") if isinstance(v, bool) else repr(v)
                  for v in values]
        return _text(pa.array(values, pa.string()), t)
    if pa.types.is_boolean(t) and any(v is not None and not isinstance(v, bool) for v in values):
        raise ValueError("not a boolean")
    if (pa.types.is_integer(t) or pa.types.is_floating(t)) and any(
            isinstance(v, bool) or (v is not None and not isinstance(v, (int, float, str)))
            for v in values):
        raise ValueError("not a number")
    return pa.array(values, t)


def _text(text: pa.Array, t: pa.DataType) -> pa.Array:
    """A text column (Arrow strings, nulls allowed) as ``t``; raises on a bad value."""
    if pa.types.is_timestamp(t) or pa.types.is_date(t):
        us = pa.timestamp("us", tz="UTC")
        try:  # vectorized when it can be
            if pc.all(pc.match_substring_regex(text, r"^-?\d+$")).as_py() and not text.null_count:
                arr = pc.multiply_checked(pc.cast(text, pa.int64()), 1000).cast(us)
            else:
                arr = pc.cast(text, us)  # ISO 8601 with a zone offset or Z
            return arr if t == us else pc.cast(arr, t, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _times(text.to_pylist(), t)  # naive times, or a bad one: value by value
    if pa.types.is_boolean(t):
        low = pc.utf8_lower(text)
        ok = pc.is_in(low, pa.array(["true", "false", "1", "0"]))
        if not pc.all(pc.or_kleene(ok, pc.is_null(low))).as_py() in (True, None):
            raise ValueError("not a boolean")
        return pc.if_else(pc.is_null(low), pa.scalar(None, pa.bool_()),
                          pc.is_in(low, pa.array(["true", "1"])))
    return pc.cast(text, t, safe=True)  # numbers, text, bytes (UTF-8)


def _times(values: list[Any], t: pa.DataType) -> pa.Array:
    us = pa.timestamp("us", tz="UTC")
    out: list[Any] = []
    for v in values:
        if v is None:
            out.append(None)
        elif isinstance(v, bool):
            raise ValueError("a boolean is not a time")
        elif isinstance(v, dt.datetime):  # from an Arrow source
            out.append(_us(v if v.tzinfo else v.replace(tzinfo=dt.timezone.utc)))
        elif isinstance(v, dt.date):
            out.append(_us(dt.datetime(v.year, v.month, v.day, tzinfo=dt.timezone.utc)))
        elif isinstance(v, (int, float)):
            out.append(int(v * 1000))
        elif isinstance(v, str) and _EPOCH_MS.fullmatch(v.strip()):
            out.append(int(v.strip()) * 1000)
        elif isinstance(v, str):
            out.append(_iso(v))
        else:
            raise ValueError("not a time")
    arr = pa.array(out, pa.int64()).cast(us)
    return arr if t == us else pc.cast(arr, t, safe=True)


def _iso(v: str) -> int:
    s = v.strip()
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    d = dt.datetime.fromisoformat(s)
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return _us(d)


def _us(d: dt.datetime) -> int:
    delta = d - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse(messages: Sequence[Message], schema: pa.Schema, required: set[str]
          ) -> tuple[pa.Table, Sequence[Message], list[tuple[Message, str]]]:
    """(rows, the messages they came from, bad messages with reasons). ``schema`` is
    the group's columns; ``required`` the columns that may not be null."""
    if isinstance(messages, RedisBatch) and len(messages):
        try:
            table = _flat_table(messages.entries, schema, required)
        except (ValueError, TypeError, OverflowError, pa.ArrowException):
            table = None  # some value does not parse: find which below
        if table is not None:
            return table, messages, []
    names = schema.names
    want = set(names)
    must = sorted(required)
    rows: list[dict[str, Any]] = []
    good: list[Message] = []
    bad: list[tuple[Message, str]] = []
    for m in messages:
        f = m.fields
        if f.keys() == want and all(f[n] for n in must):  # the common case, fast
            rows.append(f)
            good.append(m)
            continue
        f, why = fields_of(m)
        if f is None:
            bad.append((m, why or "unparsable"))
            continue
        missing = [n for n in names if n not in f]
        extra = [k for k in f if k not in schema.names]
        if missing or extra:
            bad.append((m, "the message " + (f"lacks field(s) {missing}" if missing else "")
                        + (" and " if missing and extra else "")
                        + (f"has unknown field(s) {extra}" if extra else "")
                        + f"; the group's columns are {names}"))
            continue
        nulls = [n for n in required if f[n] is None or f[n] == ""]
        if nulls:
            bad.append((m, f"null value(s) in {sorted(nulls)}, which every row needs"))
            continue
        rows.append(f)
        good.append(m)
    try:
        return _table(rows, schema), good, bad
    except (ValueError, TypeError, OverflowError, pa.ArrowException):
        pass  # some value does not parse: find which, one message at a time
    ok_rows, ok_msgs = [], []
    for r, m in zip(rows, good):
        try:
            _table([r], schema)
        except (ValueError, TypeError, OverflowError, pa.ArrowException) as e:
            bad.append((m, str(e).splitlines()[0][:300] if str(e) else type(e).__name__))
            continue
        ok_rows.append(r)
        ok_msgs.append(m)
    return _table(ok_rows, schema), ok_msgs, bad


def _table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    cols = []
    for field in schema:
        try:
            cols.append(_column([r[field.name] for r in rows], field))
        except (ValueError, TypeError, OverflowError, pa.ArrowException) as e:
            raise ValueError(f"column '{field.name}' ({field.type}): {e}") from None
    return pa.Table.from_arrays(cols, schema=schema)


def _flat_table(entries: list[list[Any]], schema: pa.Schema, required: set[str]
                ) -> pa.Table | None:
    """The rows of Redis entries ``[[id, [field, value, ...]], ...]`` (bytes or text)
    read column by column: the batch's fields are chained into one list, a strided
    slice of it is a column (C loops, no object made per value), checked (field names
    by ``list.count``), made an Arrow array, checked as UTF-8 and cast as a whole.
    Returns None unless every entry has exactly the group's columns, in the first
    entry's order, with no empty required value (then the batch is parsed message by
    message, which names the bad ones); raises when a value does not parse."""
    width = 2 * len(schema)
    first = entries[0][1]
    raw_names = first[0::2]
    kind = pa.binary() if isinstance(raw_names[0], bytes) else pa.string()
    order = [x.decode() if isinstance(x, bytes) else x for x in raw_names]
    if len(first) != width or sorted(order) != sorted(schema.names):
        return None
    fields = [e[1] for e in entries]
    if set(map(len, fields)) != {width}:
        return None
    flat = list(chain.from_iterable(fields))
    n = len(fields)
    for j, name in enumerate(raw_names):
        if flat[2 * j::width].count(name) != n:
            return None
    cols = []
    for field in schema:
        text = pa.array(flat[2 * order.index(field.name) + 1::width], kind)
        if kind == pa.binary():
            text = text.cast(pa.string())  # checks UTF-8
        if field.name in required and pc.any(pc.equal(text, "")).as_py():
            return None
        cols.append(_text(text, field.type))
    return pa.Table.from_arrays(cols, schema=schema)
