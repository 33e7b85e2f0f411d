"""Transformations: on-demand features and model-dependent transforms give a model
the same bits in training and in serving; fits see the training split only; bad input
gets clear errors and serves nothing."""

from __future__ import annotations

import datetime as dt
import warnings

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pitstop as ps
from pitstop import errors
from pitstop import transforms as T

import transform_fns
from onnx_models import gbdt
from transform_data import make_view, profile_store, profiles, spine_of, ts

UTC = dt.timezone.utc


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), n_users=st.integers(1, 40), batch=st.integers(0, 7))
def test_served_input_equals_the_training_row_to_the_bit(tmp_path_factory, seed, n_users, batch):
    rng = np.random.default_rng(seed)
    fs, g = profile_store(tmp_path_factory.mktemp("s") / "store", n_users, rng)
    fv = make_view(fs, g)
    users = rng.integers(0, n_users, 60)
    t = rng.integers(0, 2000, 60)
    spine = spine_of(rng, users, t)
    fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(1500, UTC))
    snap = fv.last_snapshot
    model = fs.models.register("m", gbdt(len(fv.features), seed=seed % 100), feature_view=fv,
                               training_snapshot=snap)
    predictor = fs.predictor("m")
    # Newer rows, some with categories the fit never saw.
    g.insert(profiles(n_users, rng, 2000, countries=("de", "jp", "br")))
    # Requests at a time after every event: the training row of a label then.
    now = dt.datetime.fromtimestamp(5000, UTC)
    keys = rng.integers(0, n_users, batch)
    req = spine_of(rng, keys, [5000] * batch)
    want = fv.transform(fv.training_data(req), snapshot=snap).select(fv.features)
    want = np.column_stack([want.column(f).to_numpy(zero_copy_only=False).astype(np.float32)
                            for f in fv.features]).reshape(batch, len(fv.features))
    request = {"amount": req.column("amount").to_pylist(), "hour": req.column("hour").to_pylist()}
    served = fv.get_feature_vectors({"user_id": keys.tolist()}, as_matrix=True, now=now,
                                    request=request, snapshot=snap)
    from_predictor = predictor.features({"user_id": keys.tolist()}, request=request, now=now)
    assert served.tobytes() == want.tobytes()
    assert from_predictor.tobytes() == want.tobytes()
    table = fv.get_feature_vectors({"user_id": keys.tolist()}, now=now, request=request,
                                   snapshot=snap)
    got = np.column_stack([table.column(f).to_numpy(zero_copy_only=False).astype(np.float32)
                           for f in fv.features]).reshape(batch, len(fv.features))
    assert got.tobytes() == want.tobytes()
    assert predictor.predict({"user_id": keys.tolist()}, request=request, now=now).shape == (batch,)
    assert model.snapshot_id == snap.id


def test_fits_see_the_training_split_only(tmp_path):
    rng = np.random.default_rng(1)
    fs, g = profile_store(tmp_path / "store", 20, rng, nulls=False)
    fv = make_view(fs, g, transforms={"amount_ratio": T.standard_scaler(),
                                      "income": T.fill_null("mean")})
    t = np.r_[np.full(30, 1000), np.full(10, 3000)]
    amount = np.r_[rng.normal(10, 1, 30), np.full(10, 1e9)]  # planted in the test split
    spine = spine_of(rng, rng.integers(0, 20, 40), t, amount=amount)
    x_tr, x_te, _, _ = fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(2000, UTC))
    snap = fv.last_snapshot
    stats = fv.transform_statistics()
    row = [r for r in stats.to_pylist() if r["feature"] == "amount_ratio"][0]
    import json

    fitted = json.loads(row["parameters"])
    train = fv.training_data(spine).filter(pa.compute.less(spine.column("ts"), ts([2000])[0]))
    ratio = train.column("amount_ratio").to_numpy().astype(np.float32).astype(np.float64)
    assert fitted["mean"] == float(np.mean(ratio)) and fitted["std"] == float(np.std(ratio))
    assert abs(fitted["mean"]) < 1e3  # the test split's 1e9 did not move it
    assert x_tr.column("amount_ratio").type == pa.float32()
    assert x_te.column("amount_ratio").to_numpy().min() > 1e3
    # Stored with the snapshot: a fresh view object reads the same fit.
    again = fs.get_feature_view("fraud").transform_statistics(snap)
    assert again.equals(stats)


def test_bad_input_names_the_feature_and_serves_nothing(tmp_path):
    rng = np.random.default_rng(2)
    fs, g = profile_store(tmp_path / "store", 5, rng)
    fv = make_view(fs, g)
    spine = spine_of(rng, np.arange(5), [100] * 5)
    fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(50, UTC))
    keys = {"user_id": [0, 1]}
    now = dt.datetime.fromtimestamp(5000, UTC)
    with pytest.raises(errors.InvalidArgumentError, match="request fields"):
        fv.get_feature_vectors(keys, as_matrix=True, now=now)
    with pytest.raises(errors.SchemaError, match="hour"):
        fv.get_feature_vectors(keys, as_matrix=True, now=now, request={"amount": [1.0, 2.0]})
    with pytest.raises(errors.SchemaError, match="amount"):
        fv.get_feature_vectors(keys, as_matrix=True, now=now,
                               request={"amount": ["a", "b"], "hour": [1, 2]})
    with pytest.raises(errors.DataError, match="hour"):
        fv.get_feature_vectors(keys, as_matrix=True, now=now,
                               request={"amount": [1.0, 2.0], "hour": [1, None]})
    with pytest.raises(errors.InvalidArgumentError, match="rows"):
        fv.get_feature_vectors(keys, as_matrix=True, now=now, request={"amount": [1.0], "hour": [1]})
    for i, fn in enumerate([transform_fns.wrong_shape, transform_fns.wrong_keys, transform_fns.wrong_type]):
        bad = fs.create_feature_view(f"bad{i}", features=[g.select(["income"])], on_demand=[fn])
        with pytest.raises(errors.SchemaError, match="wrong_|'x'"):
            bad.get_feature_vectors(keys, as_matrix=True, now=now, request={"amount": [1.0, 2.0]})
        with pytest.raises(errors.SchemaError):
            bad.training_data(spine)
    # A transform of a string feature: named at fit time.
    sv = fs.create_feature_view("s", features=[g.select(["country"])], labels=["y"],
                                transforms={"country": T.standard_scaler()})
    with pytest.raises(errors.SchemaError, match="country"):
        sv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(50, UTC))
    # Definitions checked at creation.
    with pytest.raises(errors.InvalidArgumentError, match="not features"):
        fs.create_feature_view("v2", features=[g.select(["income"])], transforms={"nope": T.log1p()})
    with pytest.raises(errors.InvalidArgumentError, match="already has"):
        fs.create_feature_view("v3", features=[g.select(["income"])],
                               on_demand=[transform_fns.txn_features, transform_fns.txn_features])
    for bad_t in (lambda: T.bucketize([3, 1]), lambda: T.clip(5, 1), lambda: T.fill_null("mode")):
        with pytest.raises(errors.InvalidArgumentError):
            bad_t()
    with pytest.raises(errors.InvalidArgumentError, match="importable"):
        ps.on_demand(request={"a": "float64"}, outputs={"b": "float64"})(lambda c: c)
    # A model of a view with transforms names the snapshot they were fitted on.
    onnx = gbdt(len(fv.features))
    with pytest.raises(errors.InvalidArgumentError, match="training_snapshot"):
        fs.models.register("m", onnx, feature_view=fv)
    other = fv.training_data(spine)  # a snapshot without a split: nothing fitted on it
    with pytest.raises(errors.NotFoundError, match="no fitted transforms"):
        fs.models.register("m", onnx, feature_view=fv, training_snapshot=ps.snapshot_of(other))
    # Empty batches.
    empty = fv.get_feature_vectors({"user_id": []}, as_matrix=True, now=now,
                                   request={"amount": [], "hour": []})
    assert empty.shape == (0, len(fv.features))


def test_registration_by_path_and_source_hash(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    fs, g = profile_store(tmp_path / "store", 3, rng)
    make_view(fs, g)
    with fs.registry.tx() as db:  # as if the function's source had changed since
        row = fs.registry.one("SELECT * FROM view_transforms")
        import json

        specs = json.loads(row["on_demand"])
        specs[0]["hash"] = "0" * 24
        fs.registry.update(db, "view_transforms", "view_name=?", ("fraud",),
                           {"on_demand": json.dumps(specs)})
    with pytest.raises(errors.SchemaError, match="changed since"):
        fs.get_feature_view("fraud")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        fv = fs.get_feature_view("fraud", allow_changed=True)
    assert fv.on_demand and any("changed since" in str(w.message) for w in caught)
    monkeypatch.delattr(transform_fns, "log_amount")
    with pytest.raises(errors.NotFoundError, match="cannot be imported"), warnings.catch_warnings():
        warnings.simplefilter("ignore", errors.PitstopWarning)
        fs.get_feature_view("fraud", allow_changed=True)


def test_categorical_encoders_unseen_and_missing():
    col = pa.chunked_array([["b", "a", "b", None, "c", "b", "a"]])
    t = T.one_hot(top_k=2)
    fit = T.fit_categories(t, col, "c")
    assert fit["categories"] == ["b", "a"]  # by frequency, then value
    served = T.encode(fit, pa.array(["a", "zz", None, "b"]), "c")
    assert served.tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 0], [1, 0, 0]]
    lab = T.fit_categories(T.label_encoder(), col, "c")
    got = T.encode(lab, pa.array(["c", "zz", None]), "c")[:, 0]
    assert got[0] == 2 and got[1] == 3 and np.isnan(got[2])  # unseen: "other" = 3
    ints = T.fit_categories(T.label_encoder(), pa.chunked_array([[5, 5, 7]]), "p")
    assert T.encode(ints, pa.array([7, 9], pa.int32()), "p")[:, 0].tolist() == [1, 2]
    with pytest.raises(errors.SchemaError, match="'x'"):
        T.fit_categories(t, pa.chunked_array([[1.5]]), "x")
    with pytest.raises(errors.InvalidArgumentError, match="alone"):
        T.chains({"c": [T.fill_null(0), T.one_hot()]})
    assert T.encoded_names("country", T.one_hot(top_k=2)) == ["country=0", "country=1", "country=other"]


def test_a_category_only_in_the_test_split_is_other(tmp_path):
    rng = np.random.default_rng(4)
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("p", primary_key="user_id", event_time="ts", online=True)
    g.insert(pa.table({"user_id": [0, 1, 2], "ts": ts([0, 0, 2500]), "country": ["de", "fr", "jp"]}))
    fv = fs.create_feature_view("v", features=[g.select(["country"])], labels=["y"],
                                transforms={"country": T.one_hot(top_k=3)})
    spine = spine_of(rng, np.array([0, 1, 2]), [100, 100, 3000])
    x_tr, x_te, _, _ = fv.train_test_split(spine, test_start=dt.datetime.fromtimestamp(2000, UTC))
    assert fv.features == ["country=0", "country=1", "country=2", "country=other"]
    assert x_te.to_pylist() == [{"country=0": 0.0, "country=1": 0.0, "country=2": 0.0, "country=other": 1.0}]
    got = fv.get_feature_vectors({"user_id": [2, 0]}, as_matrix=True,
                                 now=dt.datetime.fromtimestamp(5000, UTC))
    assert got.tolist() == [[0, 0, 0, 1], [1, 0, 0, 0]]


def _encode_reference(fit, column):
    """The encoders as pyarrow computes them (the implementation before Rust took over)."""
    t = column.type
    if pa.types.is_dictionary(t) or pa.types.is_string(t) or pa.types.is_large_string(t):
        values = column.cast(pa.string())
    elif pa.types.is_integer(t):
        values = column.cast(pa.int64())
    else:
        values = column
    value_set = pa.array(fit["categories"], pa.type_for_alias(fit["type"]))
    idx = pa.compute.fill_null(pa.compute.index_in(values, value_set=value_set), -1).to_numpy(
        zero_copy_only=False)
    null = pa.compute.is_null(values).to_numpy(zero_copy_only=False)
    n, k = len(idx), len(fit["categories"])
    if fit["transform"] == "label_encoder":
        out = np.where(idx >= 0, idx, k).astype(np.float32)
        out[null] = np.nan
        return out.reshape(n, 1)
    out = np.zeros((n, fit["width"]), np.float32)
    rows = np.arange(n)
    out[rows[idx >= 0], idx[idx >= 0]] = 1.0
    out[(idx < 0) & ~null, fit["width"] - 1] = 1.0
    return out


_CATEGORY_VALUES = {
    "string": st.one_of(st.none(), st.sampled_from(["", "a", "b", "é", "a\x00", "zz"]), st.text(max_size=3)),
    "int64": st.one_of(st.none(), st.integers(-3, 3), st.integers(-2**63, 2**63 - 1)),
    "bool": st.one_of(st.none(), st.booleans()),
}


@settings(max_examples=150, deadline=None)
@given(data=st.data(), type_=st.sampled_from(sorted(_CATEGORY_VALUES)),
       kind=st.sampled_from(["label_encoder", "one_hot"]), top_k=st.integers(1, 4),
       form=st.sampled_from(["plain", "chunked", "narrow"]))
def test_encoders_equal_the_pyarrow_reference(data, type_, kind, top_k, form):
    """The Rust encoders against pyarrow's ``index_in`` on random columns: nulls,
    unseen values, empty columns, chunks, dictionary and narrow integer columns."""
    values = data.draw(st.lists(_CATEGORY_VALUES[type_], max_size=30))
    served = data.draw(st.lists(_CATEGORY_VALUES[type_], max_size=30))
    typ = pa.type_for_alias(type_)
    t = T.one_hot(top_k=top_k) if kind == "one_hot" else T.label_encoder()
    fit = T.fit_categories(t, pa.chunked_array([pa.array(values, typ)]), "f")
    col = pa.array(served, typ)
    if form == "narrow" and type_ == "string":
        col = col.dictionary_encode()
    elif form == "narrow" and type_ == "int64" and all(v is None or -128 <= v < 128 for v in served):
        col = col.cast(pa.int8())
    if form == "chunked":
        col = pa.chunked_array([col[:len(col) // 2], col[len(col) // 2:]], col.type)
    got = T.encode(fit, col, "f")
    want = _encode_reference(fit, col.combine_chunks() if form == "chunked" else col)
    assert got.shape == want.shape
    assert got.tobytes() == want.tobytes()
