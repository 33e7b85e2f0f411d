"""Point-in-time joins on Spark: :func:`pit_join`, the same contract as
:func:`pitstop.pit_join`, for training sets that outgrow one machine.

Spark has no usable as-of join of its own, so both sides are hash-bucketed on the keys
and each bucket goes through the Rust kernel (``pitstop.pit_join``) in a Python worker:

    spine    --xxhash64(keys) % buckets--\\
                                          cogroup(bucket) -> applyInArrow(kernel per bucket)
    features --xxhash64(keys) % buckets--/

Every row of a key lands in the same bucket on both sides, so a bucket holds everything
its spine rows can match, and the per-bucket results together are the whole join. What
makes that exact:

- **Keys hash alike on both sides.** Spark's ``xxhash64`` of an int 1 and a bigint 1
  differ, so integer keys are cast to bigint (and strings to plain ``string``) inside
  the bucket expression only; the columns reach the kernel with their own types.
- **Null keys are never dropped.** Spark's hashes skip nulls, so a row with a null key
  still lands in a bucket, and the kernel gives its spine row nulls, as it does locally.
- **Input order survives the shuffle.** Ties on (event time, created time) go to the
  row that came last in input order. A shuffle delivers a bucket's rows in no
  particular order, so each feature row gets ``monotonically_increasing_id()`` before
  the shuffle and the bucket is sorted by it before the kernel sees it. On Spark,
  "input order" is therefore the DataFrame's own order: partition by partition, row by
  row within a partition (the order ``collect()`` returns). It is as stable as the
  DataFrame's partitioning: deterministic for files and for anything sorted.
- **Instants, not wall clocks.** Spark hands timestamps to Arrow as UTC microseconds
  labelled with the session time zone; the kernel compares instants, so the session
  zone changes nothing. ``timestamp_ntz`` columns are naive and, as everywhere in
  pitstop, mean UTC. The output is relabelled UTC, which Spark expects back.
- **Every spine row exactly once.** A spine row sits in exactly one bucket and the
  kernel returns each of its spine rows once; a bucket with feature rows only returns
  no rows, one with spine rows only returns them with nulls.

Several feature tables are joined one after another: the first join's output is the
spine of the second, and so on (one shuffle of the growing spine per table, each table
shuffled once). The output has the spine's columns, then each table's value columns, as
locally; like any Spark join it has no row order, so sort it if you need one.

Bad input fails on the driver before any job runs, with the same errors as
:func:`pitstop.pit_join` (the kernel validates empty tables of the same schemas); only
data errors (null event times) surface from inside the job.

pyspark is an optional extra (``pip install 'pitstop[spark]'``), imported only here; the
executors need pitstop installed too, since each one runs the kernel.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import InputTypeError, InvalidArgumentError, SchemaError
from .join import KeySpec, _key_names, _per_table, _table_options

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession
    from pyspark.sql.types import StructType

# The feature rows' input order, carried through the shuffle (dropped before the kernel).
ROW_ID = "__pitstop_row"
# Each row's hash bucket, on both sides (dropped before the kernel).
BUCKET = "__pitstop_bucket"
# Bytes of input (Spark's own size estimate) one bucket should hold, by default.
BUCKET_BYTES = 64 * 2**20
# Buckets per shuffle partition at least, by default: a bucket goes to a partition by
# another hash, so a few per partition keep the partitions even.
BUCKETS_PER_PARTITION = 4


def pit_join(
    spine_df: DataFrame,
    features_dfs: DataFrame | Sequence[DataFrame],
    *,
    on: KeySpec,
    spine_time: str,
    feature_time: str | Sequence[str],
    ttl: Any = None,
    created_time: str | Sequence[str | None] | None = None,
    allow_exact_matches: bool = True,
    knowledge_time: bool = False,
    buckets: int | None = None,
    prefix: str | Sequence[str | None] | None = None,
    order: str | Sequence[str | None] | None = None,
) -> DataFrame:
    """Joins each feature DataFrame to the spine DataFrame as of the spine's times, on
    Spark, with the contract of :func:`pitstop.pit_join`.

    Args:
        spine_df: the rows to produce (keys + time + anything else, e.g. labels).
        features_dfs: one feature DataFrame or a list of them (joined one after another).
        on: the key column, a list of them (composite key), or a dict mapping spine
            column names to feature column names.
        spine_time: the spine's time column (timestamp, timestamp_ntz or date).
        feature_time: each feature DataFrame's event-time column (one, or one per table).
        ttl: ignore feature rows older than ``t - ttl`` (``"30d"``, a timedelta; one, or
            one per table).
        created_time: the column that breaks ties between equal event times and that
            ``knowledge_time`` reads (one, or one per table).
        allow_exact_matches: whether a feature row at exactly the spine's time counts.
        knowledge_time: only count feature rows created at or before the spine's time.
        buckets: how many hash buckets the keys are spread over (one kernel call each);
            by default from the inputs' estimated size: one per ~64 MiB, at least four
            per shuffle partition. All rows of one key share a bucket, whatever this is.
        prefix: prepended to each feature table's output columns (one, or one per table).
        order: a column of each feature table that gives its input order (ascending),
            used for the last tie-break instead of the DataFrame's own order and left out
            of the output; feature views pass their insertion sequence here.

    Returns:
        A Spark ``DataFrame`` (lazy): every spine row once, with the spine's columns
        plus the feature columns, null where nothing qualifies; in no particular order.
    """
    from pyspark.sql import DataFrame

    if not isinstance(spine_df, DataFrame):
        raise InputTypeError(f"spine_df must be a Spark DataFrame; got {type(spine_df).__name__}")
    tables = list(features_dfs) if isinstance(features_dfs, (list, tuple)) else [features_dfs]
    if not tables:
        raise InvalidArgumentError("features_dfs is empty; give at least one feature DataFrame")
    for i, t in enumerate(tables):
        if not isinstance(t, DataFrame):
            raise InputTypeError(f"features_dfs[{i}] must be a Spark DataFrame; got {type(t).__name__}")
    n = len(tables)
    spine_keys, feature_keys = _key_names(on)
    names, times, created, ttls, prefixes = _table_options(n, feature_time, created_time, ttl, prefix)
    orders = _per_table(order, n, "order")
    tables = [t if o is None else t.withColumnRenamed(o, ROW_ID) for t, o in zip(tables, orders)]
    spark = spine_df.sparkSession
    reserved = [("spine", spine_df, [BUCKET]),
                *((name, t, [BUCKET] + ([] if o else [ROW_ID])) for name, t, o in zip(names, tables, orders))]
    for name, df, own in reserved:
        for col in own:
            if col in df.columns:
                raise SchemaError(f"{name} has a column named {col!r}, which pitstop.spark uses; rename it")

    # Validate on the driver, before any job: the kernel itself checks empty tables of
    # the same Arrow schemas the executors will see, so the errors are the local ones.
    large = _conf(spark, "spark.sql.execution.arrow.useLargeVarTypes", "false") == "true"
    _core.pit_join(
        _empty(spine_df.schema, large),
        spine_time,
        [
            (_empty(_without_order(t).schema, large), name, spine_keys, feature_keys, time, c, ttl_ns, p)
            for t, name, time, c, ttl_ns, p in zip(tables, names, times, created, ttls, prefixes)
        ],
        allow_exact_matches=bool(allow_exact_matches),
        knowledge_time=bool(knowledge_time),
    )
    if buckets is None:
        buckets = default_buckets(spark, [spine_df, *tables])
    elif isinstance(buckets, bool) or not isinstance(buckets, int) or buckets < 1:
        raise InvalidArgumentError(f"buckets={buckets!r} must be a positive integer (or None for a default)")

    out = spine_df
    for t, name, time, c, ttl_ns, p in zip(tables, names, times, created, ttls, prefixes):
        step = _Step(
            label=name,
            spine_time=spine_time,
            spine_keys=tuple(spine_keys),
            feature_keys=tuple(feature_keys),
            time=time,
            created=c,
            ttl_ns=ttl_ns,
            prefix=p,
            allow_exact_matches=bool(allow_exact_matches),
            knowledge_time=bool(knowledge_time),
        )
        out = _join_one(out, t, step, buckets)
    return out


def default_buckets(spark: SparkSession, dfs: Sequence[DataFrame]) -> int:
    """The default bucket count: one per ``BUCKET_BYTES`` of the inputs' estimated size
    (Spark's optimizer statistics), at least ``BUCKETS_PER_PARTITION`` per shuffle
    partition. Without an estimate (Spark Connect, sources without statistics) the
    lower bound alone."""
    value = _conf(spark, "spark.sql.shuffle.partitions", "200")
    partitions = int(value) if value.isdigit() else 200  # e.g. "auto" on some platforms
    floor = BUCKETS_PER_PARTITION * max(1, partitions)
    size = 0
    for df in dfs:
        est = _estimated_bytes(df)
        if est is None:
            return floor
        size += est
    return max(floor, math.ceil(size / BUCKET_BYTES))


@dataclass(frozen=True)
class _Step:
    """One feature table's join, as shipped to the executors (small and picklable)."""

    label: str
    spine_time: str
    spine_keys: tuple[str, ...]
    feature_keys: tuple[str, ...]
    time: str
    created: str | None
    ttl_ns: int | None
    prefix: str | None
    allow_exact_matches: bool
    knowledge_time: bool


def _join_one(
    spine: DataFrame, feats: DataFrame, step: Any, buckets: int, bucket_fn: Any = None,
    schema: StructType | None = None,
) -> DataFrame:
    """One feature table's cogroup. ``bucket_fn(step, spine, feats)`` is the per-bucket
    join (default: the kernel); benches/spark.py swaps in pandas ``merge_asof``;
    ``pitstop.spark_agg`` runs window aggregations through it with its own ``schema``."""
    from pyspark.sql import functions as F

    casts = [_hash_type(spine, s, feats, f) for s, f in zip(step.spine_keys, step.feature_keys)]
    # The input order: a column the caller named (renamed ROW_ID), or the DataFrame's own.
    row_id = _ref(ROW_ID) if ROW_ID in feats.columns else F.monotonically_increasing_id()
    values = [c for c in feats.columns if c != ROW_ID]
    # Through the cogroup, columns travel under plain positional names (c0, c1, ...),
    # renamed back in the worker. Two pyspark/Spark 4 traps make this necessary: when
    # the spine is drawn from the feature table (same lineage, shared attributes) the
    # cogroup drops the shared key columns from the right side's Arrow table, and
    # applyInArrow resolves its inputs by name, reading a dot in a name as a field access.
    left = spine.select(
        *[_ref(c).alias(f"c{i}") for i, c in enumerate(spine.columns)],
        _bucket(step.spine_keys, casts, buckets),
    )
    right = feats.select(
        *[_ref(c).alias(f"c{i}") for i, c in enumerate(values)],
        row_id.alias(ROW_ID),
        _bucket(step.feature_keys, casts, buckets),
    )
    fn = partial(_renamed, bucket_fn or _join_bucket, step, tuple(spine.columns), tuple(values))
    grouped = left.groupBy(BUCKET).cogroup(right.groupBy(BUCKET))
    return grouped.applyInArrow(fn, schema or _output_schema(spine, _without_order(feats), step))


def _without_order(df: DataFrame) -> DataFrame:
    return df.drop(ROW_ID) if ROW_ID in df.columns else df


def _renamed(
    bucket_fn: Any,
    step: _Step,
    spine_names: tuple[str, ...],
    feature_names: tuple[str, ...],
    spine: pa.Table,
    feats: pa.Table,
) -> pa.Table:
    """The bucket's tables under their own column names, without the bucket column."""
    spine = spine.drop_columns([BUCKET]).rename_columns(list(spine_names))
    feats = feats.drop_columns([BUCKET]).rename_columns([*feature_names, ROW_ID])
    return bucket_fn(step, spine, feats)


def _join_bucket(step: _Step, spine: pa.Table, feats: pa.Table) -> pa.Table:
    """Runs on an executor, once per bucket: the kernel on the bucket's rows."""
    _limit_threads()
    ids = feats.column(ROW_ID)
    feats = feats.drop_columns([ROW_ID])
    if feats.num_rows > 1:
        ids = ids.combine_chunks()
        if not pc.all(pc.greater(ids[1:], ids[:-1])).as_py():
            feats = feats.take(pc.sort_indices(ids))
    out = _core.pit_join(
        spine,
        step.spine_time,
        [(feats, step.label, list(step.spine_keys), list(step.feature_keys), step.time,
          step.created, step.ttl_ns, step.prefix)],
        allow_exact_matches=step.allow_exact_matches,
        knowledge_time=step.knowledge_time,
    )
    return _utc(out)


def _limit_threads() -> None:
    """The kernel's thread pool gets the task's cores (``spark.task.cpus``), as Spark
    does for OpenMP: an executor runs a task per core, and each task's kernel should not
    spread over its neighbours' cores too. An explicit ``RAYON_NUM_THREADS`` (e.g. via
    ``spark.executorEnv.RAYON_NUM_THREADS``) wins. Read by rayon once per worker."""
    if "RAYON_NUM_THREADS" in os.environ:
        return
    from pyspark import TaskContext

    ctx = TaskContext.get()
    if ctx is not None:  # else not in a Spark task (a direct call): leave it alone
        os.environ["RAYON_NUM_THREADS"] = str(max(1, ctx.cpus()))


def _utc(table: pa.Table) -> pa.Table:
    """Relabels zoned timestamps as UTC (the same instants), the zone Spark expects back."""
    schema = pa.schema([f.with_type(_utc_type(f.type)) for f in table.schema], metadata=table.schema.metadata)
    return table if schema.equals(table.schema) else table.cast(schema)


def _utc_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_timestamp(t):
        return t if t.tz is None else pa.timestamp(t.unit, "UTC")
    if pa.types.is_struct(t):
        return pa.struct([t.field(i).with_type(_utc_type(t.field(i).type)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(t.key_field.with_type(_utc_type(t.key_type)),
                       t.item_field.with_type(_utc_type(t.item_type)), t.keys_sorted)
    if pa.types.is_list(t):
        return pa.list_(t.value_field.with_type(_utc_type(t.value_type)))
    if pa.types.is_large_list(t):
        return pa.large_list(t.value_field.with_type(_utc_type(t.value_type)))
    return t


def _output_schema(spine: DataFrame, feats: DataFrame, step: _Step) -> StructType:
    from pyspark.sql.types import StructField, StructType

    skip = {*step.feature_keys, step.time, *([step.created] if step.created else [])}
    values = [
        StructField((step.prefix or "") + f.name, f.dataType, nullable=True, metadata=f.metadata)
        for f in feats.schema.fields
        if f.name not in skip
    ]
    return StructType([*spine.schema.fields, *values])


_INTEGRAL = ("ByteType", "ShortType", "IntegerType", "LongType")


def _hash_type(spine: DataFrame, s: str, feats: DataFrame, f: str) -> str | None:
    """The type both sides' key columns are cast to before hashing (None: as they are)."""
    ts, tf = type(spine.schema[s].dataType).__name__, type(feats.schema[f].dataType).__name__
    if ts in _INTEGRAL and tf in _INTEGRAL:
        return "bigint"
    if ts == tf == "StringType":
        return "string"  # one plain string type; the hash and the kernel see the bytes
    return None


def _bucket(keys: Sequence[str], casts: Sequence[str | None], buckets: int) -> Column:
    from pyspark.sql import functions as F

    cols = [_ref(k) if c is None else _ref(k).cast(c) for k, c in zip(keys, casts)]
    return F.pmod(F.xxhash64(*cols), F.lit(buckets)).alias(BUCKET)


def _ref(name: str) -> Column:
    """The column ``name``, quoted: a dot in a name is part of it, not a field access."""
    from pyspark.sql import functions as F

    return F.col("`" + name.replace("`", "``") + "`")


def _empty(schema: StructType, large_types: bool) -> pa.Table:
    """An empty Arrow table of the schema Spark hands a Python worker for ``schema``."""
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(schema, timezone="UTC", prefers_large_types=large_types).empty_table()


def _conf(spark: SparkSession, key: str, default: str) -> str:
    value = spark.conf.get(key, default)
    return default if value is None else str(value)


def _estimated_bytes(df: DataFrame) -> int | None:
    """Spark's optimizer estimate of ``df``'s size, or None where there is none."""
    try:
        jdf = df._jdf  # classic Spark only; Spark Connect has no JVM handle here
        size = int(str(jdf.queryExecution().optimizedPlan().stats().sizeInBytes()))
    except Exception:  # noqa: BLE001 - any failure just means "no estimate"
        return None
    # Sources without statistics report spark.sql.defaultSizeInBytes (Long.MaxValue).
    return None if size >= 2**62 else size


def window_agg(*args: Any, **kwargs: Any) -> DataFrame:
    """:func:`pitstop.agg.window_agg` on Spark DataFrames (see ``pitstop.spark_agg``)."""
    from .spark_agg import window_agg as run

    return run(*args, **kwargs)


__all__ = ["pit_join", "default_buckets", "window_agg"]
