"""On-demand feature functions for tests/test_transforms.py (importable by path, as a
registered function must be)."""

import numpy as np

import pitstop as ps


@ps.on_demand(request={"amount": "float64", "hour": "int64"},
              outputs={"amount_ratio": "float64", "night": "float64"})
def txn_features(cols):
    return {"amount_ratio": cols["amount"] / (np.abs(cols["income"]) + 1.0),
            "night": (cols["hour"] < 6).astype(np.float64)}


@ps.on_demand(request={"amount": "float64"}, outputs={"log_amount": "float32"})
def log_amount(cols):
    return {"log_amount": np.log1p(np.abs(cols["amount"]))}


@ps.on_demand(request={"amount": "float64"}, outputs={"x": "float64"})
def wrong_shape(cols):
    return {"x": np.zeros(len(cols["amount"]) + 1)}


@ps.on_demand(request={"amount": "float64"}, outputs={"x": "float64"})
def wrong_keys(cols):
    return {"y": cols["amount"]}


@ps.on_demand(request={"amount": "float64"}, outputs={"x": "float64"})
def wrong_type(cols):
    return {"x": np.array(["a"] * len(cols["amount"]))}
