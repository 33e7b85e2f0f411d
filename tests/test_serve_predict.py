"""``POST /v1/predict/{model}``: the features and the ONNX model in one hop, in Rust
(ONNX Runtime loaded from the onnxruntime wheel). Predictions equal
``fs.predictor(model).predict`` on the same keys, transforms fitted on the model's
snapshot included; raw request features as the predictor appends them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitstop as ps
from pitstop import transforms as T
from pitstop.view import snapshot_of

from onnx_models import gbdt, identity
from serve_client import post_json


def build(path):
    fs = ps.FeatureStore(path)
    rng = np.random.default_rng(3)
    n = 60
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", online=True)
    b = fs.create_feature_group("b", primary_key="user_id", event_time="ts", online=True, ttl="1d")
    ts = pa.array([1_000_000] * n, pa.timestamp("us"))
    x = rng.random(n).astype(np.float32)
    x[::9] = np.nan
    a.insert(pa.table({"user_id": np.arange(n), "ts": ts, "x": pa.array(x, from_pandas=True),
                       "y": rng.random(n).astype(np.float32)}))
    b.insert(pa.table({"user_id": np.arange(0, n, 2), "ts": pa.array([2_000_000] * (n // 2), pa.timestamp("us")),
                       "z": rng.random(n // 2).astype(np.float32)}))
    fv = fs.create_feature_view("v", features=[a.select(["x", "y"]), b.select(["z"])], labels=["label"],
                                transforms={"x": [T.fill_null("median"), T.standard_scaler()]})
    spine = pa.table({"user_id": np.arange(n), "ts": pa.array([3_000_000] * n, pa.timestamp("us")),
                      "label": rng.integers(0, 2, n)})
    X_tr, X_te, y_tr, y_te = fv.train_test_split(spine, test_start=pa.scalar(2_900_000, pa.timestamp("us")).as_py())
    snap = snapshot_of(X_tr)
    fs.models.register("m", gbdt(3), feature_view=fv, training_snapshot=snap)
    plain = fs.create_feature_view("plain", features=[a.select(["x", "y"]), b.select(["z"])])
    fs.models.register("p", gbdt(3, seed=1), feature_view=plain)
    return fs


def test_predictions_equal_the_python_predictor(tmp_path):
    fs = build(tmp_path / "s")
    users = [0, 1, 2, 9, 18, 59, 1000]
    with fs.serve_background() as srv:
        for model in ("m", "p"):
            status, out = post_json(srv.url, f"/v1/predict/{model}", {"entities": {"user_id": users}})
            assert status == 200, out
            want = fs.predictor(model).predict({"user_id": users})
            assert out["model"] == model and out["version"] == 1
            got = np.array([np.nan if v is None else v for v in out["predictions"]], np.float32)
            assert np.array_equal(got, want, equal_nan=True), (model, got, want)
        status, out = post_json(srv.url, "/v1/predict/m/v1", {"entities": {"user_id": [1]}})
        assert status == 200 and len(out["predictions"]) == 1
        status, out = post_json(srv.url, "/v1/predict/nope", {"entities": {"user_id": [1]}})
        assert status == 404 and "'nope'" in out["error"] and "m v1" in out["error"]
        status, out = post_json(srv.url, "/v1/predict/m", {"entities": {"user_id": ["a"]}})
        assert status == 400 and "user_id" in out["error"]
        status, out = post_json(srv.url, "/v1/predict/m", {"entities": {"user_id": []}})
        assert status == 200 and out["predictions"] == []


def test_logged_server_predictions_land_in_the_predictor_s_log(tmp_path):
    """``log_predictions=True``: every /v1/predict call is in the Delta log the Python
    predictor writes (same columns), written by the time the server has stopped."""
    fs = build(tmp_path / "s")
    with fs.serve_background(log_predictions=True) as srv:
        for users in ([0, 1, 2], [9], [59, 1000]):
            status, out = post_json(srv.url, "/v1/predict/m", {"entities": {"user_id": users}})
            assert status == 200, out
    p = fs.predictor("m")
    logs = p.read_logs().sort_by([("user_id", "ascending")])
    assert logs.column("user_id").to_pylist() == [0, 1, 2, 9, 59, 1000]
    want = p.predict({"user_id": [0, 1, 2, 9, 59, 1000]})
    got = logs.column("prediction").to_numpy(zero_copy_only=False)
    assert np.array_equal(got, want, equal_nan=True)
    assert set(logs.column("model").to_pylist()) == {"m"}
    assert set(fs.get_feature_view("v").features) <= set(logs.column_names)


# A request column as JSON values: integers alone, floats (with integers and nulls),
# booleans (with nulls); one value per entity.
_VALUE = st.one_of(st.integers(-2**40, 2**40), st.floats(allow_nan=False, allow_infinity=False, width=64),
                   st.none())


def _column(n: int):
    return st.one_of(st.lists(st.integers(-2**62, 2**62), min_size=n, max_size=n),
                     st.lists(_VALUE, min_size=n, max_size=n),
                     st.lists(st.one_of(st.booleans(), st.none()), min_size=n, max_size=n))


def test_request_features_reach_the_model_as_the_predictor_feeds_them(tmp_path):
    """A model with raw ``request_features``: the server appends the body's request
    fields to the view's features as the Python predictor does, to the bit (an identity
    model hands back the whole input matrix); bad fields are 400s naming them."""
    fs = build(tmp_path / "s")
    fs.models.register("r", identity(5), feature_view=fs.get_feature_view("plain"),
                       request_features=["p", "q"])
    pred = fs.predictor("r")
    with fs.serve_background() as srv:
        @settings(max_examples=40, deadline=None)
        @given(st.integers(0, 4).flatmap(lambda n: st.tuples(
            st.lists(st.integers(0, 70), min_size=n, max_size=n), _column(n), _column(n))))
        def same(case):
            users, p, q = case
            request = {"p": p, "q": q}
            status, out = post_json(srv.url, "/v1/predict/r", {"entities": {"user_id": users}, "request": request})
            assert status == 200, out
            want = np.asarray(pred.predict({"user_id": users}, request=request), np.float32).reshape(-1)
            finite = np.isfinite(want)  # JSON carries NaN and infinities as null
            assert [v is None for v in out["predictions"]] == (~finite).tolist(), (case, out, want)
            got = np.array([v for v in out["predictions"] if v is not None], np.float32)
            assert got.tobytes() == want[finite].tobytes(), (case, got, want)

        same()
        one = {"entities": {"user_id": [3]}, "request": {"p": 1.5, "q": 2}}
        status, out = post_json(srv.url, "/v1/predict/r", one)
        want = pred.predict({"user_id": [3]}, request={"p": [1.5], "q": [2]})
        assert status == 200 and np.array_equal(np.array(out["predictions"], np.float32), want.reshape(-1),
                                                equal_nan=True)
        ents = {"user_id": [1, 2]}
        for body, words in (
                ({"entities": ents}, ["needs request features", "'p'"]),
                ({"entities": ents, "request": {"p": [1, 2]}}, ["lacks 'q'"]),
                ({"entities": ents, "request": {"p": [1, 2], "q": ["a", "b"]}}, ["'q'", "numbers"]),
                ({"entities": ents, "request": {"p": [1, 2], "q": [True, 2]}}, ["'q'", "numbers"]),
                ({"entities": ents, "request": {"p": [1], "q": [1, 2]}}, ["'p'", "1 values for 2"]),
                ({"entities": ents, "request": {"p": 1, "q": 2}}, ["'p'"])):
            status, out = post_json(srv.url, "/v1/predict/r", body)
            assert status == 400 and all(w in out["error"] for w in words), (body, out)
        status, out = post_json(srv.url, "/v1/predict/p", {"entities": ents, "request": {"p": [1, 2]}})
        assert status == 400 and "takes no request features" in out["error"]
    with pytest.raises(ps.errors.InvalidArgumentError, match="must be numbers"):
        pred.predict({"user_id": [1, 2]}, request={"p": [1, 2], "q": ["a", "b"]})
    fs.close()
