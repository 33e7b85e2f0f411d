"""``POST /v1/ingest/{group}``'s handler (pitstop.streaming.http), called directly: rows
as JSON or Arrow, checked whole before anything is written, online when answered,
offline too with ``?wait=offline``; clear 4xx answers for everything a client gets
wrong. (tests/test_serve*.py send the same requests over HTTP.)"""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import agg
from pitstop.streaming.http import IngestHandler

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, tzinfo=UTC)


@pytest.fixture()
def store(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [0], "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
                       "x": [0.0], "s": ["init"]}))
    a = fs.create_aggregation("a", source=g, online=True,
                              aggregations=[agg.count(windows=["1d"])])
    fs.create_feature_view("v", features=[g.select(["x", "s"]), a.select_all()])
    yield fs
    fs.close()


def post(fs, group, rows, query="", content_type="application/json"):
    body = rows if isinstance(rows, bytes) else json.dumps(rows).encode()
    status, reply = IngestHandler(fs)(group, body, content_type, query)
    return status, json.loads(reply)


def online(fs, keys):
    now = T0 + dt.timedelta(hours=1)
    return fs.get_feature_view("v").get_feature_vectors({"k": keys}, now=now).to_pylist()


def test_rows_are_online_when_answered_and_offline_on_request(store):
    rows = [{"k": 1, "ts": "2026-11-01T00:00:05Z", "x": 1.5, "s": "a"},
            {"k": 2, "ts": int(T0.timestamp() * 1000) + 9, "x": "2", "s": "b"},
            {"k": 1, "ts": "2026-11-01T00:00:07Z", "x": 3.0, "s": "c"}]
    status, reply = post(store, "e", {"rows": rows})
    assert status == 200 and reply == {"group": "e", "version": 1, "rows": 3,
                                       "online": True, "offline": False}
    got = online(store, [1, 2, 3])
    assert [(r["x"], r["s"], r["count_1d"]) for r in got] == [
        (3.0, "c", 2), (2.0, "b", 1), (None, None, 0)]
    offline_rows = store.get_feature_group("e").read().num_rows
    status, reply = post(store, "e/v1", [{"k": 4, "ts": "2026-11-01T00:00:09Z", "x": 4,
                                          "s": "d"}], query="wait=offline")
    assert status == 200 and reply["offline"] is True
    # The flush wrote every buffered row: the first request's three and this one.
    assert store.get_feature_group("e").read().num_rows == offline_rows + 4


def test_arrow_ipc_body(store):
    t = pa.table({"k": [7], "ts": pa.array([T0], pa.timestamp("us", tz="UTC")),
                  "x": [7.0], "s": ["ipc"]})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    status, reply = post(store, "e", sink.getvalue().to_pybytes(),
                         content_type="application/vnd.apache.arrow.stream")
    assert status == 200 and reply["rows"] == 1
    assert online(store, [7])[0]["s"] == "ipc"


@pytest.mark.parametrize("body, why", [
    ([{"k": 1, "ts": "2026-11-01T00:00:01Z", "x": "abc", "s": "a"}], "1 of 1 rows"),
    ([{"k": 1, "ts": "2026-11-01T00:00:01Z", "x": 1, "s": "a"},
      {"k": 2, "x": 1, "s": "b"}], "lacks field"),
    ([{"k": None, "ts": "2026-11-01T00:00:01Z", "x": 1, "s": "a"}], "null value"),
    ([{"k": 1, "ts": "2026-11-01T00:00:01Z", "x": 1, "s": "a", "y": 2}], "unknown field"),
    ({"k": 1}, "array of row objects"),
    (b"{not json", "not JSON"),
    ([1, 2], "array of row objects"),
])
def test_bad_rows_refuse_the_whole_request_and_write_nothing(store, body, why):
    before = store.get_feature_group("e").read().num_rows
    status, reply = post(store, "e", body)
    assert status == 400 and why in json.dumps(reply), reply
    assert online(store, [1, 2])[0]["x"] is None
    assert store.get_feature_group("e").read().num_rows == before


@pytest.mark.parametrize("group, query, status, why", [
    ("nope", "", 404, "nope"),
    ("e/v9", "", 404, "e"),
    ("e/vx", "", 404, "NAME/vN"),
    ("e", "wait=later", 400, "wait=online"),
    ("e", "flush=1", 400, "unknown query"),
])
def test_unknown_groups_and_parameters(store, group, query, status, why):
    got, reply = post(store, group, [], query=query)
    assert got == status and why in reply["error"], reply


def test_bad_arrow_bodies(store):
    status, reply = post(store, "e", b"garbage", content_type="application/vnd.apache.arrow.stream")
    assert status == 400 and "Arrow IPC" in reply["error"]
    t = pa.table({"k": ["not an int"], "ts": pa.array([T0], pa.timestamp("us", tz="UTC"))})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, t.schema) as w:
        w.write_table(t)
    status, reply = post(store, "e", sink.getvalue().to_pybytes(),
                         content_type="application/vnd.apache.arrow.stream")
    assert status == 400, reply
