"""Small real ONNX models for tests, built with skl2onnx (no files shipped)."""

from __future__ import annotations

import numpy as np


def gbdt(n_features: int, *, seed: int = 0, n_estimators: int = 10) -> bytes:
    """A gradient-boosted classifier over ``n_features`` float inputs, as ONNX bytes
    (one input 'input' [None, n_features], outputs 'label' and 'probabilities')."""
    from sklearn.ensemble import GradientBoostingClassifier
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    rng = np.random.default_rng(seed)
    x = rng.random((300, n_features)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, -1] > 0.8).astype(int)
    model = GradientBoostingClassifier(n_estimators=n_estimators, max_depth=2, random_state=seed).fit(x, y)
    onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, n_features]))],
                  options={id(model): {"zipmap": False}}, target_opset=17)
    return onx.SerializeToString()


def identity(n_features: int) -> bytes:
    """A model that returns its input ([None, n_features] float32 -> the same): what a
    predictor or server feeds it comes back, bit for bit."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, n_features])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, n_features])
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "identity", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()
