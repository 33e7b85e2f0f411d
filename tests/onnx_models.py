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
