"""On-demand functions of ``benches.predict`` (importable by path, as registered ones
must be), and the same pipeline step written by hand for the plain-Python peer."""

import numpy as np


def offer(cols):
    return {"offer": cols["offer_pct"],
            "offer_value": cols["offer_pct"] / 100 * np.abs(cols["bil_mrr_28d"])}


def engagement(cols):
    return {"offer_x_sessions": cols["offer_pct"] * cols["eng_sessions_7d"]}


ON_DEMAND = [(offer, {"offer": "float64", "offer_value": "float64"}),
             (engagement, {"offer_x_sessions": "float64"})]
# The five model-dependent transforms: (feature, transform name).
TRANSFORMS = [("bil_mrr_28d", "standard_scaler"), ("eng_minutes_7d", "min_max_scaler"),
              ("mar_clicks_28d", "robust_scaler"), ("offer_value", "log1p"),
              ("eng_errors_7d", "clip")]


def plain_transform(x, features, request, fitted):
    """By hand: the on-demand columns, then the fitted transforms, on a float32 matrix
    (what a service without pitstop would write)."""
    pos = {f: i for i, f in enumerate(features)}
    pct = np.asarray(request["offer_pct"], np.float64)
    mrr = x[:, pos["bil_mrr_28d"]].astype(np.float64)
    sessions = x[:, pos["eng_sessions_7d"]].astype(np.float64)
    extra = np.column_stack([pct, pct / 100 * np.abs(mrr), pct * sessions]).astype(np.float32)
    x = np.hstack([x, extra])
    for f, steps in fitted.items():
        j = pos[f] if f in pos else len(pos) + ["offer", "offer_value", "offer_x_sessions"].index(f)
        v = x[:, j].astype(np.float64)
        for s in steps:
            if s["step"] == "scale":
                v = (v - s["a"]) / (s["b"] if s["b"] else 1.0)
            elif s["step"] == "log1p":
                v = np.log1p(v)
            elif s["step"] == "clip":
                v = np.clip(v, s["a"], s["b"])
        x[:, j] = v.astype(np.float32)
    return x
