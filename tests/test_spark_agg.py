"""pitstop.spark.window_agg against pitstop.window_agg on the same data, on local
Spark (the local kernel is the oracle: it is checked against tests/agg_reference.py)."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import agg, errors
from pitstop import spark as pspark

from test_spark import spark  # noqa: F401 - the session fixture

pytestmark = pytest.mark.filterwarnings(
    "ignore:PySpark does not yet fully support pandas:FutureWarning"
)

AGGS = [agg.count(windows=["1h", "1d"]), agg.sum("amount", windows=["1d"]),
        agg.mean("amount", windows=["1d"]), agg.max("amount", windows=["1h"]),
        agg.std("amount", windows=["1d"]), agg.last("merchant"),
        agg.last_k("merchant", k=2, window="1d"), agg.approx_distinct("merchant", windows=["1d"])]
HOUR = 3_600 * 10**6


def data(seed: int, keys_are_strings: bool):
    rng = np.random.default_rng(seed)
    n, q = 3_000, 500
    key = lambda m: (pa.array([f"u{k}" for k in rng.integers(0, 40, m)]) if keys_are_strings
                     else pa.array(rng.integers(0, 40, m)))
    amount = rng.normal(10, 3, n)
    amount[rng.random(n) < 0.1] = np.nan
    events = pa.table({
        "user": key(n),
        "ts": pa.array(rng.integers(0, 72, n) * HOUR // 2, pa.timestamp("us", "UTC")),
        "amount": pa.array(amount, from_pandas=True),
        "merchant": pa.array([f"m{i}" for i in rng.integers(0, 5, n)]),
    })
    spine = pa.table({
        "label": pa.array(np.arange(q)),
        "user": key(q),
        "t": pa.array(rng.integers(0, 72, q) * HOUR // 2, pa.timestamp("us", "UTC")),
    })
    return spine, events


@pytest.mark.parametrize("seed,strings,closed", [(0, False, "left"), (1, True, "right"),
                                                  (2, False, "both")])
def test_spark_equals_local(spark, seed, strings, closed):  # noqa: F811
    spine, events = data(seed, strings)
    local = ps.window_agg(spine, events, on="user", spine_time="t", event_time="ts",
                          aggregations=AGGS, closed=closed).sort_by("label")
    df = pspark.window_agg(spark.createDataFrame(spine), spark.createDataFrame(events),
                           on="user", spine_time="t", event_time="ts", aggregations=AGGS,
                           closed=closed, buckets=7)
    remote = df.toArrow().sort_by("label")
    assert remote.num_rows == local.num_rows
    assert remote.column("label").to_pylist() == local.column("label").to_pylist()
    for name in local.column_names[3:]:
        for a, b in zip(local.column(name).to_pylist(), remote.column(name).to_pylist()):
            if isinstance(a, float) and b is not None:
                assert math.isclose(a, b, rel_tol=1e-9) or (math.isnan(a) and math.isnan(b)), \
                    (name, a, b)
            else:
                assert a == b, (name, a, b)


def test_bad_input_fails_on_the_driver(spark):  # noqa: F811
    spine, events = data(0, False)
    with pytest.raises(errors.PitstopError):
        pspark.window_agg(spark.createDataFrame(spine), spark.createDataFrame(events), on="user",
                          spine_time="t", event_time="ts",
                          aggregations=[agg.sum("merchant", windows=["1d"])])
