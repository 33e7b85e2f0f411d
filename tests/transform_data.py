"""The store, view and labels the transformation tests share (tests/test_transforms.py,
tests/test_serve_transforms.py): a profile group with nulls and categories, a view
with on-demand features (tests/transform_fns.py) and every kind of transform."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

import pitstop as ps
from pitstop import transforms as T

import transform_fns


def ts(seconds):
    return pa.array([int(s) * 1_000_000 for s in seconds], pa.timestamp("us", "UTC"))


def profiles(n_users, rng, t0, *, nulls=True, countries=("de", "fr", "us", "it")):
    income = rng.lognormal(3, 1, n_users) * rng.choice([-1, 1], n_users)
    age = rng.integers(15, 90, n_users).astype(float)
    country = rng.choice(list(countries), n_users).astype(object)
    plan = rng.integers(0, 4, n_users).astype(object)
    income_null = np.zeros(n_users, bool)
    if nulls:
        income_null = rng.random(n_users) < 0.15  # nulls, and NaN values apart from them
        income[rng.random(n_users) < 0.1] = np.nan
        age[rng.random(n_users) < 0.2] = np.nan
        country[rng.random(n_users) < 0.15] = None
        plan[rng.random(n_users) < 0.15] = None
    return pa.table({"user_id": np.arange(n_users), "ts": ts(t0 + rng.integers(0, 1000, n_users)),
                     "income": pa.array(income, mask=income_null),
                     "age": pa.array(age, from_pandas=True),
                     "country": pa.array(country, pa.string()), "plan": pa.array(plan, pa.int64())})


def profile_store(path, n_users, rng, *, nulls=True):
    fs = ps.FeatureStore(path)
    g = fs.create_feature_group("profile", primary_key="user_id", event_time="ts", online=True)
    g.insert(profiles(n_users, rng, 0, nulls=nulls))
    return fs, g


TRANSFORMS = {"income": [T.fill_null("median"), T.standard_scaler()],
              "country": T.one_hot(top_k=2), "plan": T.label_encoder(),
              "age": T.bucketize([18, 25, 40, 65]),
              "amount_ratio": [T.clip(-50, 50), T.robust_scaler()],
              "night": T.min_max_scaler(), "log_amount": [T.log1p(), T.fill_null(0.0)]}


def make_view(fs, g, transforms=TRANSFORMS):
    return fs.create_feature_view(
        "fraud", features=[g.select(["income", "country", "age", "plan"])], labels=["y"],
        on_demand=[transform_fns.txn_features, transform_fns.log_amount], transforms=transforms)


def spine_of(rng, users, t, amount=None):
    n = len(users)
    return pa.table({"user_id": users, "ts": ts(t),
                     "amount": rng.normal(50, 40, n) if amount is None else amount,
                     "hour": rng.integers(0, 24, n), "y": rng.integers(0, 2, n)})
