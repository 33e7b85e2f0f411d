"""window_agg on every kind of bad input: missing columns, non-numeric values,
non-temporal or null times, mismatched key types, windows that are not positive
durations, bad arguments and clashing output names. Each case asserts the exception
class (a ``PitstopError`` subclass) and the part of its message that says what to fix,
and that the error comes before any work. The kernel against the reference is in
``test_window_agg.py``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from pitstop import agg as A
from pitstop import errors


def tables():
    spine = pa.table({"user_id": [1, 2], "t": pa.array([5, 9], pa.timestamp("us"))})
    events = pa.table({"user_id": [1, 2], "ts": pa.array([1, 7], pa.timestamp("us")),
                       "amount": [1.0, 2.0], "name": ["a", "b"],
                       "made": pa.array([1, 7], pa.timestamp("us"))})
    return spine, events


def agg(spine, events, **kw):
    args = dict(on="user_id", spine_time="t", event_time="ts", aggregations=A.sum("amount", windows=["1d"]))
    args.update(kw)
    return A.window_agg(spine, events, **args)


def raises(cls, match):
    return pytest.raises(cls, match=match)


def test_missing_columns():
    spine, events = tables()
    with raises(errors.SchemaError, "spine has no column 'when'"):
        agg(spine, events, spine_time="when")
    with raises(errors.SchemaError, "no column 'time'"):
        agg(spine, events, event_time="time")
    with raises(errors.SchemaError, "spine has no column 'uid'"):
        agg(spine, events, on="uid")
    with raises(errors.SchemaError, "no column 'uid'"):
        agg(spine, events, on={"user_id": "uid"})
    with raises(errors.SchemaError, "no column 'created'"):
        agg(spine, events, created_time="created")
    for a in (A.sum("price", windows=["1d"]), A.count("price", windows=["1d"]), A.last("price"),
              A.last_k("price", k=2, window="1d"), A.approx_distinct("price", windows=["1d"])):
        with raises(errors.SchemaError, "no column 'price'"):
            agg(spine, events, aggregations=[A.count(windows=["1d"]), a])


def test_non_numeric_columns():
    spine, events = tables()
    for op in ("sum", "mean", "std", "min", "max"):
        with raises(errors.PitstopError, "column 'name' is Utf8.*numeric"):
            agg(spine, events, aggregations=[A.count(windows=["1d"]), getattr(A, op)("name", windows=["1d"])])
    with raises(errors.PitstopError, "column 'made' is Timestamp.*numeric"):  # not a number either
        agg(spine, events, aggregations=A.sum("made", windows=["1d"]))


def test_non_temporal_times():
    spine, events = tables()
    with raises(errors.ColumnTypeError, "column 't' has type Int64"):
        agg(spine.set_column(1, "t", pa.array([5, 9], pa.int64())), events)
    with raises(errors.ColumnTypeError, "column 'ts' has type Utf8"):
        agg(spine, events.set_column(1, "ts", pa.array(["a", "b"])))
    with raises(errors.ColumnTypeError, "column 'name' has type Utf8"):
        agg(spine, events, created_time="name")


def test_key_types():
    spine, events = tables()
    with raises(errors.ColumnTypeError, "key types differ"):
        agg(spine, events.set_column(0, "user_id", pa.array(["1", "2"])))
    with raises(errors.ColumnTypeError, "key column 'user_id' has type Float64"):
        agg(spine.set_column(0, "user_id", pa.array([1.0, 2.0])), events)


def test_null_times():
    spine, events = tables()
    with raises(errors.DataError, "column 'ts' has 1 null value"):
        agg(spine, events.set_column(1, "ts", pa.array([1, None], pa.timestamp("us"))))
    with raises(errors.DataError, "column 'made' has 1 null value"):
        agg(spine, events.set_column(4, "made", pa.array([None, 7], pa.timestamp("us"))), created_time="made")


@pytest.mark.parametrize("bad", ["0s", "-1d", "abc", 5, "", dt.timedelta(0), dt.timedelta(days=-1), None])
def test_windows_must_be_positive_durations(bad):
    with raises(errors.InvalidArgumentError, "window|duration"):
        A.sum("amount", windows=[bad])
    with raises(errors.InvalidArgumentError, "window|duration"):
        A.last_k("amount", k=2, window=bad)


def test_bad_arguments():
    spine, events = tables()
    with raises(errors.InvalidArgumentError, "closed must be one of"):
        agg(spine, events, closed="neither")
    with raises(errors.InvalidArgumentError, "aggregations is empty"):
        agg(spine, events, aggregations=[])
    with raises(errors.InvalidArgumentError, "not an aggregation"):
        agg(spine, events, aggregations=["sum"])
    with raises(errors.InvalidArgumentError, "knowledge_time=True needs created_time"):
        agg(spine, events, knowledge_time=True)
    with raises(errors.InvalidArgumentError, "windows must be a non-empty list"):
        A.sum("amount", windows="1d")
    with raises(errors.InvalidArgumentError, "k must be an integer"):
        A.last_k("amount", k=0, window="1d")
    with raises(errors.InvalidArgumentError, "on=\\[\\] must be"):
        agg(spine, events, on=[])
    with raises(errors.InputTypeError, "spine must be a table"):
        agg([1, 2], events)
    with raises(errors.InputTypeError, "events must be a table"):
        agg(spine, {"a": 1})


def test_output_names():
    spine, events = tables()
    with raises(errors.SchemaError, "both named 'sum_amount_1d'"):
        agg(spine, events, aggregations=[A.sum("amount", windows=["1d"]), A.sum("amount", windows=["24h"])])
    with raises(errors.SchemaError, "'count_1d'"):
        agg(spine.append_column("count_1d", pa.array([0, 0])), events, aggregations=A.count(windows=["1d"]))


def test_errors_come_before_any_work():
    """A bad last aggregation fails as fast on a large input as on a small one."""
    import time

    spine, events = tables()
    big = pa.table({"user_id": np.arange(2_000_000) % 1000, "ts": pa.array(np.arange(2_000_000), pa.timestamp("us")),
                    "amount": np.ones(2_000_000), "name": pa.array(["a"] * 2_000_000)})
    bad = [A.count(windows=["1d"]), A.sum("amount", windows=["1d"]), A.mean("name", windows=["1d"])]
    start = time.perf_counter()
    with raises(errors.PitstopError, "'name'"):
        agg(spine, big, aggregations=bad)
    failed = time.perf_counter() - start
    start = time.perf_counter()
    agg(spine, big, aggregations=bad[:2])
    worked = time.perf_counter() - start
    assert failed < max(0.05, worked / 3), (failed, worked)
