"""The prepared model input of a feature view: one Rust call (``_core.ModelInput``)
from entity keys to the float32 matrix a model reads — the keys read as given (a dict
of lists or int64 arrays, a list, one entity of scalars), the online lookup, the
missing-value fills and the fitted transforms — for views of numeric features whose
groups are keyed alike. The predictor and ``get_feature_vectors(as_matrix=True)``
prepare it once and call it per request; other views take the general path
(``FeatureView._matrix_lookup``), which gives the same bits. Cost per call: the key
conversion and one LMDB seek per entity in Rust, one bytearray, one numpy view.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from . import _core
from .online import _key_list

if TYPE_CHECKING:
    from .transforms import Fitted
    from .view import FeatureView


def input_plan(view: FeatureView, fitted: Fitted | None, width: int,
               fills: list[tuple[int, float]] = ()) -> Any:
    """The looked-up part of a model input as one prepared call: keys -> the view's
    features at positions ``0..`` of rows ``width`` wide -> ``fills`` ((column, value)
    for NaN) -> the numeric fitted transforms (in the same call when the view has no
    on-demand features; else by ``finish`` once those are filled in). None when the
    view needs the general path: aggregations, categorical encoders, or groups keyed
    by different columns."""
    sels = view.selections
    if not view.lookup_features or view.categorical or any(
            s.kind == "aggregation" for s in sels) or not all(
            sel.on == sels[0].on and all(s == p for s, p in sel.on) for sel in sels):
        return None
    groups = view._groups(sels)
    view._check_online(groups)
    online = view._store.online
    tables = [g.online_table for g in groups]
    names = online.key_columns(tables[0])
    if any(online.key_columns(t) != names for t in tables[1:]):
        return None
    steps = fitted.steps_at({f: j for j, f in enumerate(view.features)}) if fitted else []
    pre = [(j, "fill_null", v, 0.0, []) for j, v in fills]
    if not view.on_demand:
        pre, steps = pre + steps, []
    return _core.ModelInput(
        online._core, tables,
        [(g.online_table, f) for sel, g in zip(sels, groups) for f in sel.features],
        [g.ttl_ns for g in groups], names, width, pre, steps)


def view_plan(view: FeatureView, fitted: Fitted | None) -> Any:
    """``input_plan`` of the view's own features for ``fitted``, made once per fit
    object (None when the view needs the general path)."""
    cached = view._fast_plans
    if cached is not None and cached[0] is fitted:
        return cached[1]
    plan = input_plan(view, fitted, len(view.features))
    view._fast_plans = (fitted, plan)  # holds `fitted`: an identity check is exact
    return plan


def input_matrix(plan: Any, keys: Any, ns: int | None) -> np.ndarray:
    """The float32 matrix ``plan`` makes of ``keys`` at ``ns`` (None: now): keys of the
    common shapes go to Rust as given, others are converted here first (the same
    conversion as the general path, errors included)."""
    raw = plan.matrix(keys, ns)
    if raw is None:
        raw = plan.matrix(_key_list(one_entity(keys), plan.key_names), ns, True)
    return np.frombuffer(raw, np.float32).reshape(-1, plan.width)


def one_entity(keys: Any) -> Any:
    """``{"user_id": 5}`` (one entity) as ``{"user_id": [5]}``; anything else as is."""
    if isinstance(keys, dict) and keys and all(v is None or np.isscalar(v) for v in keys.values()):
        return {k: [v] for k, v in keys.items()}
    return keys
