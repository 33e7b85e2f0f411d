"""pitstop.spark.pit_join against pitstop.pit_join on the same data, on local Spark.

The local join is the oracle (it is itself checked against tests/reference.py). Each
case is first made representable in Spark (Spark has microsecond timestamps, no
unsigned integers, one string type), then both joins run on that same data and their
results are compared row by row, keyed by the spine's unique ``label`` column, since a
Spark result has no order. Each Spark job costs ~0.5 s here, so the property tests run
few examples; the adversarial density comes from tests/strategies.py (few keys, few
instants: ties, duplicates and null keys are the common case).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import sys
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings, strategies as st

import pitstop as ps
from pitstop import errors

import strategies as S

# pyspark warns on every Arrow UDF that it does not fully support pandas 3; the Arrow
# path used here involves no pandas. Nothing else is filtered.
pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)


def _unavailable(reason: str) -> None:
    # In CI, .ci/run installs Java and the extra: a missing one is a failure there.
    if os.environ.get("CI"):
        pytest.fail(f"Spark tests cannot run in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """A small local Spark: 2 cores, 2 shuffle partitions, no UI, loopback only, UTC."""
    try:
        import pyspark  # noqa: F401
    except ImportError:
        _unavailable("pyspark is not installed (pip install 'pitstop[spark]')")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        _unavailable("no Java runtime (Spark needs Java 17+, e.g. openjdk-17-jre-headless)")
    os.environ["PYSPARK_PYTHON"] = sys.executable
    os.environ["PYSPARK_DRIVER_PYTHON"] = sys.executable
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("pitstop-tests")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.host", "127.0.0.1")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.driver.memory", "1g")
        .config("spark.driver.extraJavaOptions", "-XX:+UseSerialGC -XX:TieredStopAtLevel=1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


# --- making data Spark can hold, and comparing results ----------------------------


def sparkable(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """``table`` in types Spark round-trips: timestamps in microseconds (zoned ones
    labelled UTC: the same instants), unsigned integers widened, one string type.
    Returns it with the names of its naive timestamp columns (timestamp_ntz in Spark)."""
    cols, naive = [], []
    for f in table.schema:
        c, t = table.column(f.name), f.type
        if pa.types.is_timestamp(t):
            if t.tz is None:
                naive.append(f.name)
            c = pc.cast(c, pa.timestamp("us", None if t.tz is None else "UTC"), safe=False)
        elif pa.types.is_unsigned_integer(t):
            c = c.cast(pa.int16() if t.bit_width == 8 else pa.int64())
        elif pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
            c = c.cast(pa.string())
        cols.append(c)
    return pa.table(cols, names=table.column_names), naive


def to_spark(spark, table: pa.Table):
    """A Spark DataFrame of ``table`` (already sparkable) in the table's row order."""
    from pyspark.sql import functions as F

    table, naive = sparkable(table)
    df = spark.createDataFrame(table)
    for name in naive:
        df = df.withColumn(name, F.col(name).cast("timestamp_ntz"))
    return df


def assert_same(got: pa.Table, want: pa.Table, by: str = "label") -> None:
    """Equal as sets of rows, joined on the spine's unique ``by`` column; same columns
    and types (nullability aside: Spark makes every output column nullable)."""
    assert got.column_names == want.column_names
    assert [f.type for f in got.schema] == [f.type for f in want.schema]
    assert got.num_rows == want.num_rows
    got, want = got.sort_by(by), want.sort_by(by)
    assert got.column(by).to_pylist() == want.column(by).to_pylist()  # each row once
    for name in got.column_names:
        assert got.column(name).to_pylist() == want.column(name).to_pylist(), name


def both(spark, spine: pa.Table, tables: list[pa.Table], **kw) -> tuple[pa.Table, pa.Table]:
    """(Spark result, local result) of the same join on the same (sparkable) data."""
    from pitstop import spark as pss

    buckets = kw.pop("buckets", None)
    local = ps.pit_join(sparkable(spine)[0], [sparkable(t)[0] for t in tables], **kw)
    df = pss.pit_join(to_spark(spark, spine), [to_spark(spark, t) for t in tables], buckets=buckets, **kw)
    return df.toArrow(), local


# --- properties on adversarial data ------------------------------------------------


@st.composite
def join_case(draw, max_tables: int = 2):
    ks = draw(S.key_space())
    n_tables = draw(st.integers(1, max_tables))
    with_created = draw(st.booleans())
    tables = [draw(S.feature_table(ks, j, with_created)) for j in range(n_tables)]
    return dict(
        spine=draw(S.spine_table(ks)),
        tables=tables,
        on=ks.names,
        spine_time="t",
        feature_time="ts",
        ttl=[draw(S.ttl()) for _ in range(n_tables)],
        created_time="created" if with_created else None,
        allow_exact_matches=draw(st.booleans()),
        knowledge_time=with_created and draw(st.booleans()),
        # fewer buckets than keys (several keys share one), and more (most are empty)
        buckets=draw(st.sampled_from([None, 1, 2, 3, 16])),
    )


@settings(max_examples=20)
@given(join_case(max_tables=3))
def test_matches_local(spark, case):
    got, want = both(spark, case.pop("spine"), case.pop("tables"), **case)
    assert_same(got, want)


# --- the pitfalls, one by one -------------------------------------------------------


def test_int_and_long_keys_meet_in_one_bucket(spark):
    """Spark hashes int 1 and bigint 1 differently; keys are cast before hashing."""
    spine = pa.table({"k": pa.array(range(50), pa.int32()), "t": pa.array([100] * 50, pa.timestamp("s")),
                      "label": range(50)})
    feats = pa.table({"k": pa.array(range(50), pa.int64()), "ts": pa.array([1] * 50, pa.timestamp("s")),
                      "v": pa.array(range(50), pa.int64())})
    got, want = both(spark, spine, [feats], on="k", spine_time="t", feature_time="ts", buckets=7)
    assert got.sort_by("label").column("v").to_pylist() == list(range(50))
    assert_same(got, want)


def test_null_keys_come_out_with_nulls(spark):
    spine = pa.table({"a": [1, None, 1, None], "b": ["x", "x", None, None],
                      "t": pa.array([9] * 4, pa.timestamp("s")), "label": range(4)})
    feats = pa.table({"a": [1, None, 1], "b": ["x", "x", None],
                      "ts": pa.array([1] * 3, pa.timestamp("s")), "v": [10, 20, 30]})
    got, want = both(spark, spine, [feats], on=["a", "b"], spine_time="t", feature_time="ts", buckets=3)
    assert got.sort_by("label").column("v").to_pylist() == [10, None, None, None]
    assert_same(got, want)


def test_input_order_breaks_ties_across_partitions(spark):
    """All feature rows tie on (key, event time): the last in the DataFrame's order wins,
    although the shuffle delivers them in any order."""
    from pyspark.sql import functions as F

    from pitstop import spark as pss

    feats = spark.range(0, 20_000, numPartitions=8).select(
        F.lit(1).alias("k"), F.lit(dt.datetime(2026, 1, 1)).alias("ts"), F.col("id").alias("v")
    )
    spine = spark.createDataFrame([(1, dt.datetime(2026, 1, 2))], "k int, t timestamp")
    out = pss.pit_join(spine, feats, on="k", spine_time="t", feature_time="ts", buckets=2)
    assert [r.v for r in out.collect()] == [19_999]


def test_a_bucket_is_put_back_in_input_order():
    """What the previous test cannot force on one machine: a bucket whose rows the
    shuffle delivered out of order (as remote fetches on a cluster do). The bucket
    function sorts by the row ids attached before the shuffle, so the kernel sees the
    input order. Runs the bucket function directly, without Spark."""
    pytest.importorskip("pyspark")
    from pitstop import spark as pss

    n = 1_000
    ids = np.random.default_rng(1).permutation(n) * 3 + (1 << 33)  # ids from a later partition
    feats = pa.table({"k": [1] * n, "ts": pa.array([5] * n, pa.timestamp("us", "UTC")),
                      "v": pa.array(ids), pss.ROW_ID: pa.array(ids)})
    spine = pa.table({"k": [1, 2], "t": pa.array([9, 9], pa.timestamp("us", "America/New_York"))})
    step = pss._Step(label="feature table", spine_time="t", spine_keys=("k",), feature_keys=("k",),
                     time="ts", created=None, ttl_ns=None, prefix=None, allow_exact_matches=True,
                     knowledge_time=False)
    out = pss._join_bucket(step, spine, feats)
    assert out.column("v").to_pylist() == [int(ids.max()), None]
    assert out.column("t").type == pa.timestamp("us", "UTC")  # relabelled for Spark
    assert out.column("t").to_pylist() == spine.column("t").to_pylist()  # same instants


def test_session_time_zone_changes_nothing(spark):
    """Timestamps reach the kernel as instants whatever the session's zone."""
    instant = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone.utc)
    spine = pa.table({"k": [1, 1, 1], "t": pa.array([instant, instant - dt.timedelta(microseconds=1),
                                                      instant + dt.timedelta(hours=5)],
                                                     pa.timestamp("us", "UTC")), "label": [0, 1, 2]})
    feats = pa.table({"k": [1, 1], "ts": pa.array([instant, instant + dt.timedelta(hours=4)],
                                                  pa.timestamp("us", "UTC")), "v": [7, 8],
                      "seen": pa.array([{"at": instant}, {"at": instant}],  # zoned times inside, too
                                       pa.struct([("at", pa.timestamp("us", "UTC"))]))})
    before = spark.conf.get("spark.sql.session.timeZone")
    spark.conf.set("spark.sql.session.timeZone", "America/New_York")
    try:
        got, want = both(spark, spine, [feats], on="k", spine_time="t", feature_time="ts", buckets=2)
    finally:
        spark.conf.set("spark.sql.session.timeZone", before)
    assert got.sort_by("label").column("v").to_pylist() == [7, None, 8]
    assert got.column("t").type == pa.timestamp("us", "UTC")  # read back in the UTC session
    assert_same(got, want)


def test_dates_and_naive_timestamps(spark):
    spine = pa.table({"k": ["a", "a"], "d": pa.array([dt.date(2026, 1, 2), dt.date(2026, 1, 1)]),
                      "label": [0, 1]})
    feats = pa.table({"k": ["a"], "ts": pa.array([dt.datetime(2026, 1, 1, 23, 59)], pa.timestamp("us")),
                      "v": [7]})
    got, want = both(spark, spine, [feats], on="k", spine_time="d", feature_time="ts")
    assert got.sort_by("label").column("v").to_pylist() == [7, None]
    assert_same(got, want)


def test_several_tables_keys_named_differently_prefixes(spark):
    spine = pa.table({"user": [1, 2, 3], "t": pa.array([10, 10, 10], pa.timestamp("s")), "label": [0, 1, 2]})
    f1 = pa.table({"uid": [1, 2], "ts": pa.array([5, 11], pa.timestamp("s")), "x": [1.5, 2.5]})
    f2 = pa.table({"uid": [3, 1], "ts": pa.array([1, 1], pa.timestamp("s")), "x": [3.5, 4.5]})
    got, want = both(spark, spine, [f1, f2], on={"user": "uid"}, spine_time="t", feature_time="ts",
                     prefix=["a_", "b_"], buckets=5)
    assert got.column_names == ["user", "t", "label", "a_x", "b_x"]
    assert_same(got, want)


def test_spine_drawn_from_the_feature_table(spark):
    """The same lineage on both sides (a spine selected from the events themselves),
    odd column names included: each side keeps all its columns through the cogroup."""
    from pyspark.sql import functions as F

    from pitstop import spark as pss

    events = pa.table({"user.id": [1, 1, 2, 2], "ts": pa.array([1, 2, 3, 3], pa.timestamp("s", "UTC")),
                       "x`y": [1.0, 2.0, 3.0, 4.0]})
    ev = to_spark(spark, events)
    spine = ev.select("`user.id`", F.col("ts").alias("t"), F.col("`x``y`").alias("label"))
    out = pss.pit_join(spine, ev, on="user.id", spine_time="t", feature_time="ts",
                       allow_exact_matches=False, prefix="prev_", buckets=3)
    want = ps.pit_join(spine.toArrow(), events, on="user.id", spine_time="t", feature_time="ts",
                       allow_exact_matches=False, prefix="prev_")
    assert want.column("prev_x`y").to_pylist() == [None, 1.0, None, None]
    assert_same(out.toArrow(), want)


def test_100k_rows(spark):
    """A bigger case: 100k spine rows x 100k feature rows in two tables, composite
    string/int keys with nulls, many ties, TTL and created times; every row compared."""
    rng = np.random.default_rng(6)
    n, keys = 100_000, 3_000
    base = np.datetime64("2026-01-01T00:00:00", "us").astype(np.int64)

    def table(rows: int, time: str, extra: dict) -> pa.Table:
        k = rng.integers(0, keys, rows)
        a = pa.array([f"u{v % 700}" for v in k], pa.string())
        b = pa.array(k // 700, pa.int32())
        null = rng.random(rows) < 0.01
        a = pc.if_else(pa.array(null), pa.scalar(None, pa.string()), a)
        # whole minutes within 10 days: equal event times within a key are common
        ts = pa.array(base + rng.integers(0, 14_400, rows) * 60_000_000, pa.timestamp("us", "UTC"))
        return pa.table({"a": a, "b": b, time: ts, **extra})

    spine = table(n, "t", {"label": pa.array(np.arange(n))})
    f1 = table(60_000, "ts", {"created": pa.array(base + rng.integers(0, 3, 60_000), pa.timestamp("us", "UTC")),
                              "v": pa.array(np.arange(60_000))})
    f2 = table(40_000, "ts", {"created": pa.array(base + rng.integers(0, 3, 40_000), pa.timestamp("us", "UTC")),
                              "w": pa.array(rng.random(40_000))})
    got, want = both(spark, spine, [f1, f2], on=["a", "b"], spine_time="t", feature_time="ts",
                     ttl=["2d", None], created_time="created", buckets=None)
    assert want.column("v").null_count < n  # it matched something
    assert_same(got, want)


# --- arguments and errors -----------------------------------------------------------


def test_bad_input_fails_on_the_driver_with_the_local_errors(spark):
    from pitstop import spark as pss

    spine = spark.createDataFrame([(1, dt.datetime(2026, 1, 2))], "user_id int, t timestamp")
    feats = spark.createDataFrame([(1, dt.datetime(2026, 1, 1), 1.0)], "user_id long, ts timestamp, x double")
    join = dict(on="user_id", spine_time="t", feature_time="ts")
    with pytest.raises(errors.SchemaError, match=r"spine has no column 'when'.*found: \['user_id', 't'\]"):
        pss.pit_join(spine, feats, **{**join, "spine_time": "when"})
    with pytest.raises(errors.ColumnTypeError, match="key types differ"):
        pss.pit_join(spine, feats.withColumn("user_id", feats.user_id.cast("string")), **join)
    with pytest.raises(errors.ColumnTypeError, match="spine_time must be a timestamp"):
        pss.pit_join(spine.withColumn("t", spine.user_id), feats, **join)
    with pytest.raises(errors.SchemaError, match="output column 'x' would appear twice"):
        pss.pit_join(spine, [feats, feats], **join)
    with pytest.raises(errors.InvalidArgumentError, match="buckets=0 must be a positive integer"):
        pss.pit_join(spine, feats, **join, buckets=0)
    with pytest.raises(errors.InputTypeError, match="spine_df must be a Spark DataFrame"):
        pss.pit_join(pa.table({"user_id": [1]}), feats, **join)


def test_null_event_times_fail_the_job(spark):
    from pitstop import spark as pss

    spine = spark.createDataFrame([(1, dt.datetime(2026, 1, 2))], "user_id int, t timestamp")
    feats = spark.createDataFrame([(1, None, 1.0)], "user_id int, ts timestamp, x double")
    out = pss.pit_join(spine, feats, on="user_id", spine_time="t", feature_time="ts")
    with pytest.raises(Exception, match="column 'ts' has 1 null value"):
        out.collect()


def test_default_buckets(spark):
    from pitstop import spark as pss

    small = spark.range(10)
    assert pss.default_buckets(spark, [small]) == pss.BUCKETS_PER_PARTITION * 2
    big = spark.range(10**9)  # 8 GB by Spark's estimate: one bucket per 64 MiB
    assert pss.default_buckets(spark, [big, small]) == -(-(8 * 10**9 + 80) // pss.BUCKET_BYTES)


# --- a feature view's training data on Spark -----------------------------------------


def test_feature_view_training_data_on_spark(spark, tmp_path):
    """The view's Delta tables read by Spark give the same rows as the local join,
    including full ties across inserts (broken by insertion order), TTL and created time,
    and a snapshot reproduces the rows after more inserts."""
    import datetime as dt

    import pitstop as ps

    def ts(*s):
        return pa.array([x * 1_000_000 for x in s], pa.timestamp("us", "UTC"))

    fs = ps.FeatureStore(tmp_path / "store")
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", ttl=dt.timedelta(seconds=10))
    b = fs.create_feature_group("b", primary_key=["user_id", "item"], event_time="ts", created_time="c")
    a.insert(pa.table({"user_id": [1, 1, 2], "ts": ts(1, 5, 2), "x": [1.0, 5.0, 2.0]}))
    a.insert(pa.table({"user_id": [1], "ts": ts(5), "x": [50.0]}))  # full tie: the later insert wins
    b.insert(pa.table({"user_id": [1, 1], "item": ["p", "p"], "ts": ts(3, 3), "c": ts(4, 3), "y": ["late", "early"]}))
    fv = fs.create_feature_view("v", features=[a.select(["x"]), b.select_all(on={"uid": "user_id", "item": "item"})])
    spine = pa.table({"user_id": [1, 1, 2, 1], "uid": [1, 1, 2, 1], "item": ["p", "p", "p", "q"],
                      "t": ts(4, 20, 3, 9), "row": [0, 1, 2, 3]})
    local = fv.training_data(spine, spine_time="t")
    got = fv.training_data(spine, spine_time="t", engine="spark", spark=spark)
    snap = fv.last_snapshot
    rows = sorted(got.select("row", "x", "y").collect())
    assert [(r["x"], r["y"]) for r in rows] == list(zip(local.column("x").to_pylist(), local.column("y").to_pylist()))
    assert rows[3]["x"] == 50.0
    a.insert(pa.table({"user_id": [2], "ts": ts(2), "x": [99.0]}))
    again = fv.training_data(spine, spine_time="t", engine="spark", spark=spark, snapshot=snap)
    assert sorted(again.select("row", "x", "y").collect()) == rows
    fs.close()
