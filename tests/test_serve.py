"""``pitstop serve``: a real server on 127.0.0.1, talked to over HTTP with the stdlib
client. Values equal ``fv.get_feature_vectors`` for the same keys in every response
form (JSON, Arrow IPC, float32); the Feast-shaped route has Feast's documented shape;
new data and registry changes are served without a restart."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import agg

from serve_client import call, post_json

UTC = dt.timezone.utc
NOW = dt.datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
NOW_TEXT = "2026-11-30T12:00:00Z"
ARROW = "application/vnd.apache.arrow.stream"


def us(t: dt.datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def build(path, n=50, seed=7):
    """Profile (typed columns, no TTL), activity (TTL 1d, some rows expired at NOW),
    a merchant group keyed by another request column, and an aggregation."""
    rng = np.random.default_rng(seed)
    fs = ps.FeatureStore(path)
    users = np.arange(n)
    t0 = us(NOW) - 3_600_000_000
    profile = fs.create_feature_group("profile", primary_key="user_id", event_time="ts", online=True)
    income = rng.normal(3000, 900, n)
    income[::7] = np.nan
    profile.insert(pa.table({
        "user_id": users, "ts": pa.array([t0] * n, pa.timestamp("us", "UTC")),
        "age": pa.array(rng.integers(18, 90, n), pa.int64()),
        "income": pa.array(income, from_pandas=True),
        "country": pa.array([["de", "fr", None][i % 3] for i in range(n)], pa.string()),
        "active": pa.array([i % 2 == 0 for i in range(n)]),
    }))
    activity = fs.create_feature_group("activity", primary_key="user_id", event_time="ts",
                                       online=True, ttl="1d")
    old = us(NOW - dt.timedelta(days=3))
    activity.insert(pa.table({
        "user_id": users[: n - 10],
        "ts": pa.array([old if i % 4 == 0 else t0 for i in range(n - 10)], pa.timestamp("us", "UTC")),
        "sessions": pa.array(rng.random(n - 10) * 10, pa.float32()),
        "minutes": pa.array(rng.integers(0, 500, n - 10), pa.int32()),
    }))
    merchant = fs.create_feature_group("merchant", primary_key="merchant_id", event_time="ts", online=True)
    merchant.insert(pa.table({"merchant_id": ["m0", "m1", "m2"],
                              "ts": pa.array([t0] * 3, pa.timestamp("us", "UTC")),
                              "risk": [0.1, 0.5, 0.9]}))
    purchases = fs.create_feature_group("purchases", primary_key="user_id", event_time="ts")
    spend = fs.create_aggregation("spend", source=purchases, online=True, aggregations=[
        agg.count(windows=["1d"]), agg.sum("amount", windows=["1d"])])
    k = 200
    purchases.insert(pa.table({
        "user_id": rng.integers(0, n // 2, k),
        "ts": pa.array(t0 - rng.integers(0, 48, k) * 3_600_000_000, pa.timestamp("us", "UTC")),
        "amount": rng.normal(50, 20, k)}))
    fs.create_feature_view("churn", features=[
        profile.select(["age", "income", "country", "active"]), activity.select_all(),
        merchant.select(["risk"], on={"merchant": "merchant_id"}), spend.select_all()])
    fs.create_feature_view("numbers", features=[
        profile.select(["age", "income"]), activity.select(["sessions"]), spend.select_all()])
    return fs


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    fs = build(tmp_path_factory.mktemp("serve") / "store")
    with fs.serve_background(port=0, workers=2) as srv:
        yield fs, srv


def keys_of(users):
    return {"user_id": users, "merchant": [f"m{u % 4}" for u in users]}


def same_value(a, b):
    if a is None or b is None:
        return a is None and b is None
    if isinstance(b, float):
        return np.float32(a) == np.float32(b) or (np.isnan(np.float32(a)) and np.isnan(np.float32(b)))
    return a == b


USERS = [0, 1, 4, 5, 12, 45, 46, 49, 999, 3, 3]  # expired, found, missing, a duplicate


def test_json_equals_get_feature_vectors(served):
    fs, srv = served
    fv = fs.get_feature_view("churn")
    status, out = post_json(srv.url, "/v1/features/churn", {"entities": keys_of(USERS), "now": NOW_TEXT})
    assert status == 200, out
    assert out["features"] == fv.features and out["view"] == "churn" and out["version"] == 1
    want = fv.get_feature_vectors(keys_of(USERS), now=NOW)
    for j, name in enumerate(fv.features):
        col = want.column(name).to_pylist()
        for i in range(len(USERS)):
            assert same_value(out["values"][i][j], col[i]), (name, USERS[i], out["values"][i][j], col[i])
    st = {f: [row[j] for row in out["status"]] for j, f in enumerate(out["features"])}
    assert st["age"][USERS.index(999)] == "missing" and st["age"][0] == "found"
    assert st["sessions"][0] == "expired" and st["sessions"][1] == "found"  # user 0: 3 days old
    assert st["sessions"][USERS.index(45)] == "missing"  # no activity row
    assert st["risk"][USERS.index(3)] == "missing" and st["risk"][USERS.index(4)] == "found"  # m3, m0
    assert out["values"][-1] == out["values"][-2]


def test_float32_and_arrow_equal_get_feature_vectors(served):
    fs, srv = served
    fv = fs.get_feature_view("numbers")
    body = {"entities": keys_of(USERS), "now": NOW_TEXT}
    status, headers, raw = call(srv.url, "/v1/features/numbers", body, accept="application/octet-stream")
    assert status == 200, raw
    assert headers["x-pitstop-shape"] == f"{len(USERS)},{len(fv.features)}"
    assert json.loads(headers["x-pitstop-features"]) == fv.features
    got = np.frombuffer(raw, "<f4").reshape(len(USERS), -1)
    want = fv.get_feature_vectors(keys_of(USERS), now=NOW, as_matrix=True)
    assert np.array_equal(got, want, equal_nan=True)
    # A subset, in the asked order.
    body["features"] = ["sessions", "age"]
    status, headers, raw = call(srv.url, "/v1/features/numbers", body, accept="application/octet-stream")
    got = np.frombuffer(raw, "<f4").reshape(len(USERS), 2)
    assert np.array_equal(got, want[:, [2, 0]], equal_nan=True)
    # Arrow: the typed columns of get_feature_vectors, then a status per feature.
    fv = fs.get_feature_view("churn")
    status, headers, raw = call(srv.url, "/v1/features/churn", {"entities": keys_of(USERS), "now": NOW_TEXT},
                                accept=ARROW)
    assert status == 200 and headers["content-type"] == ARROW
    table = pa.ipc.open_stream(raw).read_all()
    want = fv.get_feature_vectors(keys_of(USERS), now=NOW)
    for name in ("age", "income", "country", "active", "sessions", "minutes", "risk"):
        assert table.column(name).type == want.column(name).type, name
        assert table.column(name).to_pylist() == want.column(name).to_pylist(), name
    assert table.column("sessions__status").to_pylist()[0] == "expired"


def test_feast_shape_matches_the_documented_example(served):
    """Feast's docs: POST /get-online-features {"features": ["view:feature", ...],
    "entities": {"driver_id": [1001, 1002, 1003]}} -> {"metadata": {"feature_names":
    ["driver_id", "conv_rate", ...]}, "results": [{"values": [...], "statuses":
    ["PRESENT", ...], "event_timestamps": ["2021-04-12T...Z", ...]}, ...]}."""
    fs, srv = served
    users = [1, 0, 999]
    body = {"features": ["churn:age", "churn:sessions", "churn:income"], "entities": {"user_id": users}}
    status, out = post_json(srv.url, "/get-online-features", body)
    assert status == 200, out
    assert set(out) == {"metadata", "results"}
    assert out["metadata"] == {"feature_names": ["user_id", "age", "sessions", "income"]}
    assert len(out["results"]) == 4
    for r in out["results"]:
        assert set(r) == {"values", "statuses", "event_timestamps"}
        assert len(r["values"]) == len(r["statuses"]) == len(r["event_timestamps"]) == 3
        for t in r["event_timestamps"]:
            assert dt.datetime.strptime(t, "%Y-%m-%dT%H:%M:%SZ")
    assert out["results"][0] == {"values": users, "statuses": ["PRESENT"] * 3,
                                 "event_timestamps": ["1970-01-01T00:00:00Z"] * 3}
    want = fs.get_feature_view("churn").get_feature_vectors({"user_id": users, "merchant": ["m0"] * 3})
    assert out["results"][1]["values"][:2] == want.column("age").to_pylist()[:2]
    assert out["results"][1]["statuses"] == ["PRESENT", "PRESENT", "NOT_FOUND"]
    assert out["results"][2]["statuses"][1] == "OUTSIDE_MAX_AGE"  # user 0's activity is 3 days old
    assert out["results"][1]["values"][2] is None
    status, out = post_json(srv.url, "/get-online-features",
                            {**body, "full_feature_names": True})
    assert out["metadata"]["feature_names"][1:] == ["churn__age", "churn__sessions", "churn__income"]
    status, out = post_json(srv.url, "/get-online-features",
                            {"feature_service": "numbers", "entities": {"user_id": [1]}})
    assert status == 200 and out["metadata"]["feature_names"] == ["user_id", *fs.get_feature_view("numbers").features]


def test_health_ready_metrics_registry(served):
    fs, srv = served
    assert call(srv.url, "/healthz")[0] == 200
    status, _, body = call(srv.url, "/readyz")
    assert status == 200 and json.loads(body) == {"ready": True}
    status, _, body = call(srv.url, "/v1/registry")
    reg = json.loads(body)
    churn = next(v for v in reg["views"] if v["name"] == "churn")
    assert [f["name"] for f in churn["features"]] == fs.get_feature_view("churn").features
    assert {f["name"]: f["type"] for f in churn["features"]}["age"] == "int64"
    post_json(srv.url, "/v1/features/churn", {"entities": keys_of([1, 999])})
    status, headers, body = call(srv.url, "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'pitstop_requests_total{route="features",code="200"}' in text
    assert 'pitstop_lookups_total{view="churn",status="missing"}' in text
    assert "pitstop_request_seconds_bucket{le=\"+Inf\"}" in text


def test_new_data_and_registry_changes_are_served_without_restart(served, tmp_path):
    fs, srv = served
    path = fs.path
    # Another process writes a new age for user 1.
    code = (
        "import pitstop as ps, pyarrow as pa, datetime as dt\n"
        f"fs = ps.FeatureStore({str(path)!r})\n"
        "g = fs.get_feature_group('profile')\n"
        "g.insert(pa.table({'user_id': [1], 'ts': pa.array([dt.datetime(2026, 11, 30, 13, tzinfo=dt.timezone.utc)], "
        "pa.timestamp('us', 'UTC')), 'age': pa.array([123], pa.int64()), 'income': [1.0], "
        "'country': ['it'], 'active': [True]}))\n"
        "fs.create_feature_view('late', features=[g.select(['age'])])\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    status, out = post_json(srv.url, "/v1/features/churn", {"entities": keys_of([1]), "features": ["age", "country"]})
    assert out["values"] == [[123, "it"]]
    # The new view appears once the watcher has seen the registry change.
    for _ in range(100):
        status, out = post_json(srv.url, "/v1/features/late", {"entities": {"user_id": [1]}})
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200 and out["values"] == [[123]], out


def test_a_rebuilt_table_is_noticed(served):
    """materialize() swaps a rebuilt table in (a new table id): prepared matrix reads
    are re-resolved, typed reads see the new rows."""
    fs, srv = served
    fv = fs.get_feature_view("numbers")
    body = {"entities": keys_of(USERS), "now": NOW_TEXT}
    before = call(srv.url, "/v1/features/numbers", body, accept="application/octet-stream")[2]
    fs.get_feature_group("activity").materialize()
    fs.get_feature_group("profile").materialize()
    status, _, after = call(srv.url, "/v1/features/numbers", body, accept="application/octet-stream")
    assert status == 200
    want = fv.get_feature_vectors(keys_of(USERS), now=NOW, as_matrix=True)
    got = np.frombuffer(after, "<f4").reshape(len(USERS), -1)
    assert np.array_equal(got, want, equal_nan=True)
    assert len(before) == len(after)
    status, out = post_json(srv.url, "/v1/features/numbers", {**body, "features": ["age"]})
    assert status == 200 and [r[0] for r in out["values"]] == fv.get_feature_vectors(
        keys_of(USERS), now=NOW).column("age").to_pylist()
