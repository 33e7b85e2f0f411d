"""The prepared hot path of inference (``_core.ModelInput``: keys -> features ->
missing-value fills -> fitted transforms in one Rust call) against the general path
it replaces, bit for bit, for every key shape, missing-value policy, TTL, on-demand
features and transforms; and the cached fits of ``get_feature_vectors``."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pitstop as ps
from pitstop import errors
from pitstop import ondemand as OD
from pitstop import transforms as T

import transform_fns
from onnx_models import gbdt

UTC = dt.timezone.utc
NOW = dt.datetime.fromtimestamp(1_000, UTC)


def ts(seconds):
    return pa.array([int(s) * 1_000_000 for s in seconds], pa.timestamp("us", "UTC"))


def values(rng, n):
    v = rng.normal(0, 3, n)
    v[rng.random(n) < 0.2] = np.nan
    return pa.array(v, from_pandas=True)  # NaN -> null


def store(path, rng, n_users):
    fs = ps.FeatureStore(path)
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", online=True)
    b = fs.create_feature_group("b", primary_key="user_id", event_time="ts", online=True, ttl="400s")
    for g, cols in ((a, ("income", "age")), (b, ("spend",))):
        n = 2 * n_users
        g.insert(pa.table({"user_id": rng.integers(0, n_users, n), "ts": ts(rng.integers(0, 1000, n)),
                           **{c: values(rng, n) for c in cols}}))
    return fs, a, b


def key_shapes(users: list[int]) -> list:
    """The same entities in every shape the API takes."""
    out = [{"user_id": users}, {"user_id": np.array(users, np.int64)},
           {"user_id": np.array(users, np.int32)}, {"user_id": tuple(users)}, users,
           np.array(users, np.int64), pa.table({"user_id": pa.array(users, pa.int64())}),
           [{"user_id": u} for u in users]]
    if len(users) == 1:
        out += [{"user_id": users[0]}, {"user_id": np.int64(users[0])}]
    return out


def same(fast, general) -> None:
    assert fast.dtype == general.dtype == np.float32 and fast.shape == general.shape
    assert fast.tobytes() == general.tobytes()


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 12), batch=st.integers(0, 6),
       missing=st.sampled_from(["nan", "default", "error"]), kind=st.sampled_from(["plain", "transforms", "on_demand"]))
def test_fast_path_equals_the_general_path(tmp_path_factory, seed, n_users, batch, missing, kind):
    rng = np.random.default_rng(seed)
    fs, a, b = store(tmp_path_factory.mktemp("s") / "store", rng, n_users)
    feats = [a.select(["income", "age"]), b.select(["spend"])]
    if kind == "plain":
        fv = fs.create_feature_view("v", features=feats, labels=["y"])
    else:
        chains = {"income": [T.fill_null("median"), T.standard_scaler()], "age": T.bucketize([-1, 0, 2]),
                  "spend": [T.clip(-2, 2), T.min_max_scaler()]}
        od = []
        if kind == "on_demand":
            od = [transform_fns.txn_features, transform_fns.log_amount]
            chains |= {"amount_ratio": [T.clip(-50, 50), T.robust_scaler()], "log_amount": T.log1p()}
        fv = fs.create_feature_view("v", features=feats, labels=["y"], on_demand=od, transforms=chains)
        spine = pa.table({"user_id": rng.integers(0, n_users, 30), "ts": ts(rng.integers(0, 2000, 30)),
                          "amount": rng.normal(50, 40, 30), "hour": rng.integers(0, 24, 30),
                          "y": rng.integers(0, 2, 30)})
        fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(1500, UTC))
    fs.models.register("m", gbdt(len(fv.features), seed=seed % 50), feature_view=fv,
                       training_snapshot=fv.last_snapshot if kind != "plain" else None)
    defaults = {"income": float(rng.normal()), "age": np.nan, "spend": -1.0} if missing == "default" else None
    pred = fs.predictor("m", missing=missing, defaults=defaults)
    assert pred._fast is not None
    users = rng.integers(0, n_users + 3, batch).tolist()  # some unknown, some repeated
    request = None
    if kind == "on_demand":
        request = {"amount": rng.normal(50, 40, batch).tolist(), "hour": rng.integers(0, 24, batch).tolist()}
    for keys in key_shapes(users):
        try:
            want = pred._general_input(keys, request, NOW)
        except errors.PitstopError as e:
            with pytest.raises(type(e)):
                pred.features(keys, request=request, now=NOW)
            continue
        got = pred.features(keys, request=request, now=NOW)
        same(got, want)
        y_fast = pred.predict(keys, request=request, now=NOW)
        assert y_fast.tobytes() == pred._run(want).tobytes()
        # The view's own matrix: the fast path against lookup -> on-demand -> transforms.
        if missing == "nan":
            fitted = fv.fitted_transforms() if fv.transforms else None
            x = fv._matrix_lookup(fitted)(keys, NOW)
            x = OD.with_on_demand(fv, x, request)
            same(fv.get_feature_vectors(keys, as_matrix=True, now=NOW, request=request),
                 x if fitted is None else fitted.apply_matrix(x))
    fs.close()


def test_fast_path_key_errors_and_now(tmp_path):
    rng = np.random.default_rng(0)
    fs, a, b = store(tmp_path / "store", rng, 5)
    fv = fs.create_feature_view("v", features=[a.select(["income"]), b.select(["spend"])])
    fs.models.register("m", gbdt(2), feature_view=fv)
    pred = fs.predictor("m")
    raised = 0
    for keys in ({"user_id": ["x"]}, {"user_id": [True]}, {"uid": [1]}, "1", {"user_id": [1.5]},
                 {"user_id": np.array(["x"])}, {"user_id": [1, None]}, {"user_id": None}, {}, 3,
                 {"user_id": [2**64]}, {"user_id": np.array([2**63], np.uint64)}, [(1, 2)]):
        try:
            want = pred._general_input(keys, None, NOW)
        except errors.PitstopError as e:
            raised += 1
            with pytest.raises(type(e)) as fast:
                pred.predict(keys, now=NOW)
            assert str(fast.value) == str(e)
        else:
            same(pred.features(keys, now=NOW), want)
    assert raised >= 6
    # `now` in every form, and the remembered datetime, give the general path's bits.
    for now in (NOW, 1_000 * 10**9, np.datetime64(1_000, "s"), NOW, dt.datetime(1970, 1, 1, 0, 16, 40)):
        same(pred.features({"user_id": [0, 1, 2]}, now=now), pred._general_input([0, 1, 2], None, now))
    assert pred.features([0], now=None).shape == (1, 2)
    with pytest.raises(errors.InvalidArgumentError, match="takes no request"):
        pred.predict([0], request={"a": [1.0]}, now=NOW)
    # Raw request features after the view's: the same columns as the general path.
    fs.models.register("r", gbdt(4), feature_view=fv, request_features=["p", "q"])
    req = fs.predictor("r", missing="default", defaults={"income": 7.0, "spend": -1.0})
    assert req._fast is not None
    request = {"p": [1.5, -2.0, 3.0], "q": np.array([4, 5, 6])}
    got = req.features({"user_id": [0, 9, 3]}, request=request, now=NOW)
    same(got, req._general_input({"user_id": [0, 9, 3]}, request, NOW))
    assert got[:, 2:].tolist() == [[1.5, 4], [-2, 5], [3, 6]] and not np.isnan(got).any()
    for bad in (None, {"p": [1.0]}, {"q": [1, 2, 3]}):
        with pytest.raises(errors.InvalidArgumentError, match="request"):
            req.features({"user_id": [0, 9, 3]}, request=bad, now=NOW)
    fs.close()


def test_composite_and_string_keys(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key=["org", "user"], event_time="ts", online=True)
    g.insert(pa.table({"org": ["a", "a", "b"], "user": [1, 2, 1], "ts": ts([1, 2, 3]), "v": [1.0, 2.0, 3.0]}))
    fv = fs.create_feature_view("v", features=[g.select(["v"])])
    fs.models.register("m", gbdt(1), feature_view=fv)
    pred = fs.predictor("m")
    assert pred._fast is not None
    want = np.array([[2.0], [np.nan], [3.0]], np.float32)
    for keys in ({"org": ["a", "c", "b"], "user": [2, 1, 1]},
                 {"user": np.array([2, 1, 1]), "org": ["a", "c", "b"]},
                 [("a", 2), ("c", 1), ("b", 1)], [{"org": "a", "user": 2}, {"org": "c", "user": 1},
                                                  {"org": "b", "user": 1}]):
        same(pred.features(keys, now=NOW), want)
    same(pred.features({"org": "b", "user": 1}, now=NOW), want[2:])
    with pytest.raises(ValueError):  # columns of different lengths (as before)
        pred.features({"org": ["a"], "user": [1, 2]}, now=NOW)
    fs.close()


def test_cached_fits_follow_the_registry(tmp_path):
    rng = np.random.default_rng(1)
    fs, a, _ = store(tmp_path / "store", rng, 6)
    fv = fs.create_feature_view("v", features=[a.select(["income"])], labels=["y"],
                                transforms={"income": T.standard_scaler()})
    spine = pa.table({"user_id": np.arange(6), "ts": ts([900] * 6), "y": [0, 1] * 3})
    fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(1500, UTC))
    other = ps.FeatureStore(tmp_path / "store")  # another registry connection
    reader = other.get_feature_view("v")
    first = reader.fitted_transforms()
    x = reader.get_feature_vectors({"user_id": [1]}, as_matrix=True, now=NOW)  # plans made
    statements: list[str] = []
    other.registry._db.set_trace_callback(statements.append)
    assert reader.fitted_transforms() is first
    same(reader.get_feature_vectors({"user_id": [1]}, as_matrix=True, now=NOW), x)
    assert statements and all(s.startswith("PRAGMA data_version") for s in statements)
    # A new fit committed by the first connection is seen by the second.
    fv.train_test_split(spine.slice(0, 3), test_start=dt.datetime.fromtimestamp(1500, UTC))
    assert reader.fitted_transforms().steps == fv.last_fitted.steps != first.steps
    other.close()
    fs.close()
