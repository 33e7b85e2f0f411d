"""Every bad input to pit_join: a pitstop error that names the problem, no result."""

from __future__ import annotations

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors


def tables():
    spine = pa.table({"user_id": [1, 2], "t": pa.array([5, 9], pa.timestamp("us"))})
    feats = pa.table({"user_id": [1, 2], "ts": pa.array([1, 7], pa.timestamp("us")), "x": [1.0, 2.0]})
    return spine, feats


def join(spine, feats, **kw):
    args = dict(on="user_id", spine_time="t", feature_time="ts")
    args.update(kw)
    return ps.pit_join(spine, feats, **args)


def test_missing_columns():
    spine, feats = tables()
    with pytest.raises(errors.SchemaError, match=r"spine has no column 'when'.*found: \['user_id', 't'\]"):
        join(spine, feats, spine_time="when")
    with pytest.raises(errors.SchemaError, match="feature table has no column 'time'"):
        join(spine, feats, feature_time="time")
    with pytest.raises(errors.SchemaError, match="spine has no column 'uid'"):
        join(spine, feats, on="uid")
    with pytest.raises(errors.SchemaError, match="no column 'made'"):
        join(spine, feats, created_time="made")
    with pytest.raises(ValueError):  # also a builtin ValueError
        join(spine, feats, on="uid")


def test_non_temporal_times():
    spine, feats = tables()
    bad = spine.set_column(1, "t", pa.array([5, 9], pa.int64()))
    with pytest.raises(errors.ColumnTypeError, match="spine column 't' has type Int64; spine_time must be a timestamp"):
        join(bad, feats)
    bad = feats.set_column(1, "ts", pa.array(["a", "b"]))
    with pytest.raises(errors.ColumnTypeError, match="column 'ts' has type Utf8; feature_time"):
        join(spine, bad)
    with pytest.raises(TypeError):
        join(spine, bad)


def test_key_types_differ():
    spine, feats = tables()
    bad = feats.set_column(0, "user_id", pa.array(["1", "2"]))
    with pytest.raises(errors.ColumnTypeError, match="key types differ: spine column 'user_id' is Int64 .* is Utf8"):
        join(spine, bad)


def test_unsupported_key_type():
    spine, feats = tables()
    bad_s = spine.set_column(0, "user_id", pa.array([1.0, 2.0]))
    with pytest.raises(errors.ColumnTypeError, match="key column 'user_id' has type Float64"):
        join(bad_s, feats)


def test_null_event_times():
    spine, feats = tables()
    bad = feats.set_column(1, "ts", pa.array([1, None], pa.timestamp("us")))
    with pytest.raises(errors.DataError, match="column 'ts' has 1 null value.*event time"):
        join(spine, bad)


def test_null_created_times():
    spine, feats = tables()
    bad = feats.append_column("c", pa.array([1, None], pa.timestamp("us")))
    with pytest.raises(errors.DataError, match="column 'c' has 1 null value"):
        join(spine, bad, created_time="c")


def test_output_name_collisions():
    spine, feats = tables()
    with pytest.raises(errors.SchemaError, match="output column 'x' would appear twice .*prefix"):
        join(spine, [feats, feats])
    out = join(spine, [feats, feats], prefix=["a_", "b_"])
    assert out.column_names == ["user_id", "t", "a_x", "b_x"]
    clash = spine.append_column("x", pa.array([0.0, 0.0]))
    with pytest.raises(errors.SchemaError, match="'x' would appear twice \\(the spine and feature table\\)"):
        join(clash, feats)


def test_non_tabular_input():
    spine, feats = tables()
    with pytest.raises(errors.InputTypeError, match="spine must be a table.*got list"):
        join([1, 2], feats)
    with pytest.raises(errors.InputTypeError, match="feature table must be a table.*got dict"):
        join(spine, {"a": 1})
    with pytest.raises(TypeError):
        join(spine, 3)


def test_bad_arguments():
    spine, feats = tables()
    with pytest.raises(errors.InvalidArgumentError, match="ttl='30 days' is not a duration"):
        join(spine, feats, ttl="30 days")
    with pytest.raises(errors.InvalidArgumentError, match="bare number has no unit"):
        join(spine, feats, ttl=30)
    with pytest.raises(errors.InvalidArgumentError, match="negative"):
        import datetime as dt

        join(spine, feats, ttl=-dt.timedelta(days=1))
    with pytest.raises(errors.InvalidArgumentError, match="knowledge_time=True needs a created_time"):
        join(spine, feats, knowledge_time=True)
    with pytest.raises(errors.InvalidArgumentError, match="feature_time has 2 entries but there are 1"):
        join(spine, feats, feature_time=["ts", "ts"])
    with pytest.raises(errors.InvalidArgumentError, match="on=\\[\\] must be"):
        join(spine, feats, on=[])


def test_time_out_of_range():
    spine = pa.table({"user_id": [1], "t": pa.array([10**17], pa.timestamp("s"))})
    feats = pa.table({"user_id": [1], "ts": pa.array([1], pa.timestamp("ns")), "x": [1.0]})
    with pytest.raises(errors.DataError, match="does not fit in 64 bits at ns"):
        join(spine, feats)


def test_every_error_is_a_pitstop_error():
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.PitstopError) or issubclass(cls, errors.PitstopWarning)
