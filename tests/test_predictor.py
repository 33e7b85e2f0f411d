"""The inference pipeline: predictions from online features agree with the model run on
the offline training rows; missing-value policies; prediction logs; the demo."""

from __future__ import annotations

import datetime as dt

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

from onnx_models import gbdt

UTC = dt.timezone.utc
NOW = dt.datetime.fromtimestamp(100, UTC)


def ts(*s):
    return pa.array([int(x) * 1_000_000 for x in s], pa.timestamp("us", "UTC"))


@pytest.fixture
def served(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", online=True)
    b = fs.create_feature_group("b", primary_key="user_id", event_time="ts", online=True, ttl="50s")
    n = 40
    a.insert(pa.table({"user_id": np.arange(n) % 10, "ts": ts(*rng.integers(0, 90, n)),
                       "x": rng.random(n), "y": rng.random(n)}))
    b.insert(pa.table({"user_id": np.arange(n) % 12, "ts": ts(*rng.integers(0, 90, n)),
                       "z": rng.random(n).astype(np.float32)}))
    fv = fs.create_feature_view("v", features=[a.select(["x", "y"]), b.select(["z"])])
    model = gbdt(3)
    fs.models.register("m", model, feature_view=fv)
    yield fs, fv, model
    fs.close()


def test_online_predictions_equal_offline_rows(served):
    fs, fv, model = served
    keys = list(range(14))
    pred = fs.predictor("m")
    y, x = pred.predict({"user_id": keys}, return_features=True, now=NOW)
    train = fv.training_data(pa.table({"user_id": keys, "t": ts(*[100] * len(keys))}))
    x_off = np.column_stack([np.array(train.column(f).to_pylist(), dtype=np.float64) for f in fv.features])
    np.testing.assert_array_equal(x, x_off.astype(np.float32))  # NaN where missing or expired
    sess = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    want = sess.run(["probabilities"], {"input": x_off.astype(np.float32)})[0][:, 1]
    np.testing.assert_allclose(y, want, rtol=0, atol=1e-6)
    one = pred.predict({"user_id": 3}, now=NOW)
    assert one.shape == (1,) and one[0] == pytest.approx(y[3], abs=1e-6)


def test_missing_policies(served):
    fs, fv, _ = served
    keys = {"user_id": [1, 11, 99]}  # 11: only in b; 99: nowhere
    x = fs.predictor("m").features(keys, now=NOW)
    assert np.isnan(x[2]).all() and np.isnan(x[1, :2]).all()
    filled = fs.predictor("m", missing="default", defaults={"x": 0.5, "y": 0.25, "z": -1.0}).features(keys, now=NOW)
    assert filled[2].tolist() == [0.5, 0.25, -1.0]
    assert not np.isnan(filled).any()
    strict = fs.predictor("m", missing="error")
    with pytest.raises(errors.DataError, match=r"lack online features \(e.g. \[\{'user_id': 11\}"):
        strict.predict(keys, now=NOW)
    with pytest.raises(errors.InvalidArgumentError, match="a default for every feature"):
        fs.predictor("m", missing="default", defaults={"x": 0.0})


def test_what_if_and_partial_dependence(served):
    fs, _, _ = served
    pred = fs.predictor("m")
    before, after = pred.what_if({"user_id": 2}, {"x": 0.99}, now=NOW)
    assert before == pytest.approx(float(pred.predict({"user_id": [2]}, now=NOW)[0]), abs=1e-6)
    x = pred.features({"user_id": [2]}, now=NOW)
    x[0, 0] = 0.99
    assert after == pytest.approx(float(pred._run(x)[0]), abs=1e-6)
    curve = pred.partial_dependence("x", [0.0, 1.0], {"user_id": list(range(10))}, now=NOW)
    assert curve.shape == (2,)
    with pytest.raises(errors.SchemaError, match="no input feature 'nope'"):
        pred.what_if({"user_id": 2}, {"nope": 1.0})


def test_prediction_log_has_exactly_what_was_served(served):
    fs, _, _ = served
    served_rows = []
    with fs.predictor("m", log=True) as pred:
        for batch in ([1, 2], [3], list(range(10))):
            y, x = pred.predict({"user_id": batch}, return_features=True, now=NOW)
            served_rows += [(k, *map(float, xi), float(yi)) for k, xi, yi in zip(batch, x, y)]
        pred.flush()
        assert pred.read_logs().num_rows == len(served_rows)
    log = fs.predictor("m").read_logs()
    got = [(r["user_id"], r["x"], r["y"], r["z"], r["prediction"]) for r in log.to_pylist()]
    norm = lambda rows: sorted(tuple("nan" if isinstance(v, float) and np.isnan(v) else round(v, 5) for v in r)
                               for r in rows)
    assert norm(got) == norm(served_rows)
    assert set(log.column("model").to_pylist()) == {"m"} and set(log.column("model_version").to_pylist()) == {1}


def test_demo_runs_small(tmp_path, capsys):
    from pitstop import demo

    assert demo.run(directory=str(tmp_path / "demo"), users=300, weeks=8, n_trees=10,
                    requests=400, max_train=500) == 0
    out = capsys.readouterr().out
    assert "3. inference pipeline" in out and "test AUC" in out
    fs = ps.FeatureStore(tmp_path / "demo")
    assert fs.models.get("churn").metrics["auc"] > 0.5
    fs.close()
