"""``POST /v1/ingest/{group}`` over HTTP (``pitstop serve --ingest``): rows sent to a
real server on 127.0.0.1 are served by the next lookup on the same server, the
aggregations count them, bad rows are refused whole, and a server without
``--ingest`` (or a read-only store) takes no writes."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import agg
from pitstop.errors import PitstopError

from serve_client import post_json

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 30, 11, 0, tzinfo=UTC)


@pytest.fixture()
def store(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [0], "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
                       "x": [0.5]}))
    a = fs.create_aggregation("a", source=g, online=True,
                              aggregations=[agg.count(windows=["1d"]), agg.sum("x", windows=["1d"])])
    fs.create_feature_view("v", features=[g.select(["x"]), a.select_all()])
    yield fs
    fs.close()


def test_rows_posted_are_served_by_the_next_lookup(store):
    with store.serve_background(ingest=True) as srv:
        rows = [{"k": 1, "ts": "2026-11-30T11:00:01Z", "x": 2.0},
                {"k": 1, "ts": "2026-11-30T11:00:02Z", "x": 3.0},
                {"k": 2, "ts": "2026-11-30T11:00:03Z", "x": "4"}]
        status, reply = post_json(srv.url, "/v1/ingest/e?wait=online", {"rows": rows})
        assert status == 200 and reply["rows"] == 3, reply
        body = {"entities": {"k": [1, 2, 3]}, "now": "2026-11-30T12:00:00Z"}
        status, got = post_json(srv.url, "/v1/features/v", body)
        assert status == 200, got
        by = dict(zip(got["features"], zip(*got["values"])))
        assert list(by["x"]) == [3.0, 4.0, None]
        assert list(by["count_1d"]) == [2, 1, 0] and list(by["sum_x_1d"])[:2] == [5.0, 4.0]
        status, reply = post_json(srv.url, "/v1/ingest/e?wait=offline",
                                  [{"k": 3, "ts": "2026-11-30T11:00:04Z", "x": 1}])
        assert status == 200 and reply["offline"] is True
    assert store.get_feature_group("e").read().num_rows == 5
    # What the server served is what the Python API serves.
    now = dt.datetime(2026, 11, 30, 12, tzinfo=UTC)
    table = store.get_feature_view("v").get_feature_vectors({"k": [1, 2, 3]}, now=now)
    assert table.column("count_1d").to_pylist() == [2, 1, 1]


def test_bad_rows_and_servers_that_take_no_writes(store):
    with store.serve_background(ingest=True) as srv:
        status, reply = post_json(srv.url, "/v1/ingest/e", [{"k": "x", "ts": 1, "x": 1}])
        assert status == 400 and "nothing was written" in reply["error"], reply
        status, reply = post_json(srv.url, "/v1/ingest/nope", [])
        assert status == 404 and "nope" in reply["error"]
    with store.serve_background() as srv:
        status, reply = post_json(srv.url, "/v1/ingest/e", [])
        assert status == 404 and "--ingest" in reply["error"]
    assert store.get_feature_group("e").read().num_rows == 1
    ro = ps.FeatureStore(store.path, readonly=True)
    with pytest.raises(PitstopError, match="read-only"):
        ro.serve_background(ingest=True).__enter__()
    ro.close()
