"""Window aggregations on Spark: :func:`window_agg`, the contract of
:func:`pitstop.agg.window_agg` on DataFrames, for backfills that outgrow one machine.

The same bucketed cogroup as the Spark point-in-time join (``pitstop.spark``): labels
and events are hash-bucketed on the keys, so every event of a key meets every label of
that key in one bucket, and each bucket goes through the Rust kernel once. Everything
that makes the join exact there holds here: keys hash alike on both sides, null keys
land in a bucket (their labels get count 0 and nulls), and the events' input order —
which breaks ties on (event time, created time) for ``last`` and ``last_k`` — survives
the shuffle as a row id (or the ``order`` column a feature view passes). Bad input
fails on the driver, before any job, with the local errors (the kernel validates empty
tables of the schemas the executors will see).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from . import agg as A
from .errors import InputTypeError, InvalidArgumentError, SchemaError
from .join import KeySpec, _key_names
from .spark import (
    BUCKET,
    ROW_ID,
    _conf,
    _empty,
    _join_one,
    _limit_threads,
    _utc,
    default_buckets,
)

if TYPE_CHECKING:
    from pyspark.sql import DataFrame


@dataclass(frozen=True)
class _AggStep:
    """One window aggregation, as shipped to the executors (small and picklable)."""

    spine_time: str
    spine_keys: tuple[str, ...]
    feature_keys: tuple[str, ...]
    event_time: str
    created: str | None
    specs: tuple[tuple, ...]
    closed: str
    knowledge_time: bool


def window_agg(
    spine_df: DataFrame,
    events_df: DataFrame,
    *,
    on: KeySpec,
    spine_time: str,
    event_time: str,
    aggregations: Any,
    closed: str = "left",
    created_time: str | None = None,
    knowledge_time: bool = False,
    buckets: int | None = None,
    order: str | None = None,
) -> DataFrame:
    """Window aggregates of ``events_df`` for every row of ``spine_df``, on Spark.

    Arguments as :func:`pitstop.agg.window_agg`, plus ``buckets`` (hash buckets, one
    kernel call each; a default from the inputs' size) and ``order`` (a column of the
    events giving their input order, left out of the output). Returns a lazy DataFrame
    with every spine row once, its columns plus one per aggregation, in no order.
    """
    from pyspark.sql import DataFrame
    from pyspark.sql.pandas.types import from_arrow_schema

    for name, df in (("spine_df", spine_df), ("events_df", events_df)):
        if not isinstance(df, DataFrame):
            raise InputTypeError(f"{name} must be a Spark DataFrame; got {type(df).__name__}")
    if closed not in A.CLOSED:
        raise InvalidArgumentError(f"closed must be one of {A.CLOSED}; got {closed!r}")
    aggs = A.flatten(aggregations)
    spine_keys, event_keys = _key_names(on)
    if order is not None:
        events_df = events_df.withColumnRenamed(order, ROW_ID)
    for name, df, own in (("spine", spine_df, [BUCKET]),
                          ("events", events_df, [BUCKET] + ([] if order else [ROW_ID]))):
        for col in own:
            if col in df.columns:
                raise SchemaError(f"{name} has a column named {col!r}, which pitstop.spark uses; "
                                  "rename it")
    step = _AggStep(spine_time, tuple(spine_keys), tuple(event_keys), event_time, created_time,
                    tuple((a.op, a.column, None if a.window is None else a.window.ns, a.k, a.name)
                          for a in aggs), closed, bool(knowledge_time))
    large = _conf(spine_df.sparkSession, "spark.sql.execution.arrow.useLargeVarTypes", "false") == "true"
    values = events_df.drop(ROW_ID) if ROW_ID in events_df.columns else events_df
    probe = _run(step, _empty(spine_df.schema, large), _empty(values.schema, large))
    schema = from_arrow_schema(probe.schema)
    if buckets is None:
        buckets = default_buckets(spine_df.sparkSession, [spine_df, events_df])
    elif isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise InvalidArgumentError(f"buckets={buckets!r} must be a positive integer (or None)")
    return _join_one(spine_df, events_df, step, buckets, _agg_bucket, schema)


def _run(step: _AggStep, spine: pa.Table, events: pa.Table) -> pa.Table:
    return _core.window_agg(spine, step.spine_time, events, list(step.spine_keys),
                            list(step.feature_keys), step.event_time, step.created,
                            [tuple(s) for s in step.specs], step.closed, step.knowledge_time)


def _agg_bucket(step: _AggStep, spine: pa.Table, events: pa.Table) -> pa.Table:
    """Runs on an executor, once per bucket: the kernel on the bucket's rows, events in
    their input order."""
    _limit_threads()
    ids = events.column(ROW_ID)
    events = events.drop_columns([ROW_ID])
    if events.num_rows > 1:
        ids = ids.combine_chunks()
        if not pc.all(pc.greater(ids[1:], ids[:-1])).as_py():
            events = events.take(pc.sort_indices(ids))
    return _utc(_run(step, spine, events))


__all__ = ["window_agg"]
