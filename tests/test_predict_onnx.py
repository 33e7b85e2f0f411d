"""The model call of inference through ONNX Runtime's C API from Rust
(``_core.OnnxModel``) against the onnxruntime Python session on the same input, bit for
bit; ``Predictor.predict``'s one-call path (keys -> predictions) against features then
onnxruntime; the fallback for other outputs; errors; concurrent callers."""

from __future__ import annotations

import threading

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitstop as ps
from pitstop import _core, errors
from pitstop.models import _session, onnxruntime_library, rust_model

from onnx_models import gbdt, identity

LIB = onnxruntime_library()


def regressor(n_features: int, seed: int) -> bytes:
    """A linear regression as ONNX: output 'variable' [None, 1]."""
    from sklearn.linear_model import LinearRegression
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    rng = np.random.default_rng(seed)
    x = rng.random((50, n_features)).astype(np.float32)
    model = LinearRegression().fit(x, x @ rng.normal(size=n_features))
    return to_onnx(model, initial_types=[("input", FloatTensorType([None, n_features]))],
                   target_opset=17).SerializeToString()


def onnxruntime_predictions(model: bytes, x: np.ndarray, threads: int = 1) -> np.ndarray:
    """What the Python session gives, reduced as the predictor reduces it."""
    s = _session(model, threads)
    names = [o.name for o in s.get_outputs()]
    out = s.run(["probabilities" if "probabilities" in names else names[0]], {"input": x})[0]
    out = np.asarray(out, np.float32)
    return np.ascontiguousarray(out[:, 1]) if out.shape[1] == 2 else out.reshape(len(x))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**16), rows=st.integers(0, 40), width=st.integers(1, 6),
       kind=st.sampled_from(["gbdt", "regressor"]), holes=st.sampled_from([0.0, 0.3]))
def test_rust_model_gives_onnxruntimes_floats(seed, rows, width, kind, holes):
    model = gbdt(width, seed=seed % 7) if kind == "gbdt" else regressor(width, seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 2, (rows, width)).astype(np.float32)
    x[rng.random(x.shape) < holes] = np.nan
    if x.size:
        x.flat[rng.integers(0, x.size)] = np.inf
    m = rust_model(model)
    assert m is not None and m.one_per_row
    got = np.frombuffer(m.run(x, width), np.float32)
    assert got.tobytes() == onnxruntime_predictions(model, x).tobytes()


def test_other_outputs_keep_the_onnxruntime_session(tmp_path):
    m = rust_model(identity(3))
    assert m is not None and not m.one_per_row  # [n, 3]: not one prediction per row
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts", online=True)
    g.insert(pa.table({"user_id": [1, 2], "ts": pa.array([1, 2], pa.timestamp("s", "UTC")),
                       "a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]}))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    fs.models.register("id", identity(3), feature_view=fv)
    pred = fs.predictor("id")
    assert pred._onnx is None and pred.session is not None
    assert pred.predict([1, 2]).tolist() == [[1.0, 3.0, 5.0], [2.0, 4.0, 6.0]]
    fs.close()


def graph(inputs: list[tuple[str, int, list]]) -> bytes:
    """A model of ``inputs`` (name, ONNX element type, shape), each returned as is."""
    import onnx
    from onnx import helper

    ins = [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs]
    outs = [helper.make_tensor_value_info(f"out{k}", t, s) for k, (_, t, s) in enumerate(inputs)]
    nodes = [helper.make_node("Identity", [n], [f"out{k}"]) for k, (n, _, _) in enumerate(inputs)]
    model = helper.make_model(helper.make_graph(nodes, "g", ins, outs),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_rust_inputs_read_as_onnxruntimes():
    """The predictor checks a model's inputs from the Rust session alone: it must see
    what onnxruntime's Python session sees (names, types, fixed, named and free dims)."""
    from onnx import TensorProto as T

    from pitstop.models import session_inputs

    models = [gbdt(3), regressor(2, 0), identity(4),
              graph([("x", T.FLOAT, ["N", 5])]), graph([("x", T.FLOAT, [7, 2])]),
              graph([("x", T.DOUBLE, [None, 3])]), graph([("x", T.INT64, [None])]),
              graph([("a", T.FLOAT, [None, 2]), ("b", T.STRING, [None, 1])]),
              graph([("x", T.FLOAT, [None, 2, 3])])]
    for model in models:
        m = rust_model(model)
        assert m is not None
        assert m.inputs == session_inputs(_session(model))


def test_predictor_checks_inputs_without_a_python_session(tmp_path, monkeypatch):
    """A served model is loaded once, by Rust; a model file swapped for one of another
    width after registration is caught at start-up by the Rust-side check."""
    import pitstop.predictor as P

    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts", online=True)
    g.insert(pa.table({"user_id": [1, 2], "ts": pa.array([1, 2], pa.timestamp("s", "UTC")),
                       "a": [1.0, 2.0], "b": [3.0, 4.0], "c": [5.0, 6.0]}))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    mv = fs.models.register("m", gbdt(3), feature_view=fv)
    built = []
    monkeypatch.setattr(P, "_session", lambda *a: built.append(a) or _session(*a))
    pred = fs.predictor("m")
    assert pred._onnx is not None and pred.session is None and not built
    assert pred.predict([1, 2]).shape == (2,)
    monkeypatch.setattr(type(mv), "read_bytes", lambda self: gbdt(4))
    with pytest.raises(errors.SchemaError, match=r"has shape \[None, 4\] but the feature view gives 3"):
        P.Predictor(fs, mv)
    fs.close()


def test_bad_models_and_inputs_raise_pitstop_errors():
    with pytest.raises(errors.InvalidArgumentError, match="not a loadable ONNX model"):
        _core.OnnxModel(LIB, b"not onnx", 1)
    m = _core.OnnxModel(LIB, gbdt(3), 1)
    for x, width in ((np.zeros((2, 3), np.float64), 3), (np.zeros((2, 4), np.float32), 3),
                     (np.zeros((3, 2), np.float32).T, 3), ("abc", 3), (np.zeros((2, 3), np.float32), 0)):
        with pytest.raises(errors.InputTypeError, match="C-contiguous float32 matrix"):
            m.run(x, width)
    with pytest.raises(errors.InvalidArgumentError, match="the model failed to run"):
        m.run(np.zeros((2, 4), np.float32), 4)  # the graph takes 3 columns


@pytest.fixture
def served(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(3)
    g = fs.create_feature_group("g", primary_key="user_id", event_time="ts", online=True, ttl="80s")
    n = 60
    g.insert(pa.table({"user_id": np.arange(n) % 20, "ts": pa.array(rng.integers(0, 100, n) * 10**6,
                                                                 pa.timestamp("us", "UTC")),
                       "x": rng.normal(size=n), "y": rng.normal(size=n), "z": rng.normal(size=n)}))
    fv = fs.create_feature_view("v", features=[g.select_all()])
    model = gbdt(3, seed=2)
    fs.models.register("m", model, feature_view=fv)
    yield fs, model
    fs.close()


def test_one_call_predict_equals_features_then_onnxruntime(served):
    fs, model = served
    pred = fs.predictor("m", missing="default", defaults={"x": 0.5, "y": -1.0, "z": 2.0})
    assert pred._direct
    now = 10**11  # ns: some rows expired by the TTL, filled with the defaults
    for keys in ([3], {"user_id": np.array([0, 5, 19, 40], np.int64)}, {"user_id": [7, 7, 99]}, [],
                 {"user_id": 4}):
        x = pred.features(keys, now=now)
        y = pred.predict(keys, now=now)
        assert y.dtype == np.float32 and y.tobytes() == onnxruntime_predictions(model, x).tobytes()
        y2, x2 = pred.predict(keys, now=now, return_features=True)
        assert y2.tobytes() == y.tobytes() and x2.tobytes() == x.tobytes()
    pred.close()


def test_thread_counts(served):
    fs, model = served
    x = np.random.default_rng(0).random((5, 3), np.float32)
    for threads in (0, np.int64(2)):
        pred = fs.predictor("m", threads=threads)
        assert pred._onnx is not None
        assert pred._run(x).tobytes() == onnxruntime_predictions(model, x, int(threads)).tobytes()
    for bad in (-1, 1.5, "2", True, 2**31):
        with pytest.raises(errors.InvalidArgumentError, match="threads must be a whole number"):
            fs.predictor("m", threads=bad)


def test_concurrent_predicts_take_turns_on_one_session(served):
    fs, model = served
    pred = fs.predictor("m")
    batches = [np.random.default_rng(i).integers(0, 25, 1 + i % 30) for i in range(40)]
    want = [pred.predict({"user_id": b}, now=10**11).tobytes() for b in batches]
    got: list = [None] * len(batches)

    def work(k):
        for i in range(k, len(batches), 4):
            for _ in range(20):
                got[i] = pred.predict({"user_id": batches[i]}, now=10**11).tobytes()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == want
    pred.close()
