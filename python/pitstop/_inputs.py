"""Normalizing user inputs: tabular data of any library, and durations.

Tables are accepted by protocol: anything with ``__arrow_c_stream__`` (pyarrow, polars,
DuckDB, arro3, nanoarrow ...) goes to Rust as it is, without a copy. pandas is the one
library converted here, because its index needs a decision (dropped).
"""

from __future__ import annotations

import datetime as dt
import re
import sys
from typing import Any

import pyarrow as pa

from .errors import InputTypeError, InvalidArgumentError

TABULAR = (
    "a table: pyarrow Table/RecordBatch/RecordBatchReader, a polars or pandas "
    "DataFrame, a DuckDB relation, or any object with __arrow_c_stream__"
)


def as_arrow(obj: Any, what: str) -> Any:
    """Returns ``obj`` as something the Rust core can read (``__arrow_c_stream__``)."""
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pa.RecordBatch):
        return pa.Table.from_batches([obj])
    pd = sys.modules.get("pandas")
    if pd is not None and isinstance(obj, pd.DataFrame):
        return pa.Table.from_pandas(obj, preserve_index=False)
    if hasattr(obj, "__arrow_c_stream__"):
        return obj
    if hasattr(obj, "__arrow_c_array__"):
        return pa.Table.from_batches([pa.record_batch(obj)])
    if callable(getattr(obj, "arrow", None)):  # DuckDB relations of older versions
        return as_arrow(obj.arrow(), what)
    raise InputTypeError(f"{what} must be {TABULAR}; got {type(obj).__name__}")


def as_table(obj: Any, what: str) -> pa.Table:
    """Like :func:`as_arrow`, materialized as a ``pyarrow.Table``."""
    obj = as_arrow(obj, what)
    return obj if isinstance(obj, pa.Table) else pa.table(obj)


_UNITS_NS = {
    "w": 7 * 86_400 * 10**9,
    "d": 86_400 * 10**9,
    "h": 3_600 * 10**9,
    "m": 60 * 10**9,
    "min": 60 * 10**9,
    "s": 10**9,
    "ms": 10**6,
    "us": 10**3,
    "ns": 1,
}
MAX_DURATION_NS = 2**63 - 1
_PART = re.compile(r"(\d+)(w|d|h|min|ms|us|ns|m|s)")


def duration_ns(value: Any, what: str = "ttl") -> int | None:
    """A duration as integer nanoseconds: a ``timedelta`` (pandas and numpy ones too)
    or a string like ``"30d"``, ``"12h"``, ``"1d12h"``, ``"90s"``, ``"500ms"``."""
    if value is None:
        return None
    if isinstance(value, dt.timedelta):
        ns = (value.days * 86_400 + value.seconds) * 10**9 + value.microseconds * 1_000
        ns += int(getattr(value, "nanoseconds", 0))  # pandas.Timedelta
    elif type(value).__name__ == "timedelta64":
        ns = int(value.astype("timedelta64[ns]").astype("int64"))
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _PART.findall(text)
        if not parts or "".join(n + u for n, u in parts) != text:
            raise InvalidArgumentError(
                f"{what}={value!r} is not a duration; write it like '30d', '12h', "
                "'1d12h', '90s' or '500ms' (units: w d h m s ms us ns), or pass a timedelta"
            )
        ns = sum(int(n) * _UNITS_NS[u] for n, u in parts)
    else:
        raise InvalidArgumentError(
            f"{what} must be a timedelta or a string like '30d'; got {type(value).__name__} "
            f"{value!r} (a bare number has no unit)"
        )
    if ns < 0:
        raise InvalidArgumentError(f"{what}={value!r} is negative; a {what} must be a positive duration")
    if ns > MAX_DURATION_NS:
        raise InvalidArgumentError(
            f"{what}={value!r} is longer than pitstop's times can span (about 292 years in "
            "nanoseconds); use a shorter duration, or none for no limit")
    return ns


def keys_table(keys: Any, what: str = "keys") -> pa.Table:
    """Entity keys as a table: a dict of columns (or of scalars, for one entity), a
    list of dicts, or any table."""
    if isinstance(keys, dict):
        import numpy as np

        if keys and all(v is None or np.isscalar(v) for v in keys.values()):  # one entity
            keys = {k: [v] for k, v in keys.items()}
        try:
            return pa.table(keys)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
            raise InputTypeError(f"{what}: cannot make columns of {keys!r} ({e})") from None
    if isinstance(keys, list) and all(isinstance(r, dict) for r in keys):
        return pa.Table.from_pylist(keys)
    return as_table(keys, what)
