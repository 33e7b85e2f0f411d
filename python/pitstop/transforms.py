"""Transformations, one definition for training and serving.

On-demand (request-time) features live in :mod:`pitstop.ondemand`
(``pitstop.on_demand``).

**Model-dependent transforms** (``standard_scaler``, ``min_max_scaler``,
``robust_scaler``, ``log1p``, ``clip``, ``bucketize``, ``fill_null``, and the
categorical ``one_hot`` and ``label_encoder``) are fitted on
the training split by ``FeatureView.train_test_split``, stored with the training
snapshot, and applied by one Rust function (``rust/transform``) to the float32 rows a
model reads, in training and in serving alike: each value is widened to f64,
transformed and rounded once, so both give the same bits. A feature may take a chain
(``[T.fill_null("median"), T.standard_scaler()]``): each step is fitted on the output
of the ones before it.

Fitting reads the float32 values a model sees (nulls and NaN are missing): the
standard scaler centers on their mean and divides by their population std, min-max
by ``max - min``, robust by the interquartile range (numpy's linear percentiles),
``fill_null("mean" | "median")`` fills with that statistic; a zero scale divides by 1.
Categorical encoders keep the training split's categories (most frequent first, ties
by value; ``one_hot`` its ``top_k``) and map a value through Arrow's ``index_in``:
an unseen category is "other", a missing one is all zeros (NaN for ``label_encoder``).
They are applied by :func:`encode` (Arrow, not the Rust step list: categories are not
float32) to training columns and to served values read as Arrow alike.
Cost: fitting is one numpy pass per step over the training rows (a value count for an
encoder); applying is one pass over the transformed columns.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import InvalidArgumentError, SchemaError

# -- model-dependent transforms ---------------------------------------------------

KINDS = ("standard_scaler", "min_max_scaler", "robust_scaler", "log1p", "clip", "bucketize",
         "fill_null", "label_encoder", "one_hot")
#: Encoders of categories (strings, integers, booleans): fitted to the training split's
#: categories, each alone on its feature.
CATEGORICAL = ("label_encoder", "one_hot")


@dataclass(frozen=True)
class Transform:
    """An unfitted transform of one feature (make one with the functions below)."""

    kind: str
    params: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, **self.params}

    @classmethod
    def from_json(cls, d: dict) -> Transform:
        d = dict(d)
        return cls(d.pop("kind"), d)

    def fit(self, x: np.ndarray) -> dict:
        """The fitted step of values ``x`` (float64 of float32 values, NaN missing):
        a dict with the Rust step (``step``, ``a``, ``b``, ``edges``) and the statistics."""
        valid = x[~np.isnan(x)]

        def stat(fn) -> float:
            return float(fn(valid)) if valid.size else 0.0

        k, p = self.kind, self.params
        if k == "standard_scaler":
            mean, std = stat(np.mean), stat(np.std)
            return _step("scale", mean, std, mean=mean, std=std, n=int(valid.size))
        if k == "min_max_scaler":
            lo, hi = stat(np.min), stat(np.max)
            return _step("scale", lo, hi - lo, min=lo, max=hi, n=int(valid.size))
        if k == "robust_scaler":
            med = stat(np.median)
            q1, q3 = (float(np.percentile(valid, q)) if valid.size else 0.0 for q in (25, 75))
            return _step("scale", med, q3 - q1, median=med, q1=q1, q3=q3, n=int(valid.size))
        if k == "log1p":
            return _step("log1p")
        if k == "clip":
            lo = -math.inf if p.get("lower") is None else float(p["lower"])
            hi = math.inf if p.get("upper") is None else float(p["upper"])
            return _step("clip", lo, hi)
        if k == "bucketize":
            return _step("bucketize", edges=[float(e) for e in p["edges"]])
        if k in CATEGORICAL:
            raise InvalidArgumentError(f"{k} is fitted on categories (fit_categories)")
        if k == "fill_null":
            v = p["value"]
            value = stat(np.mean) if v == "mean" else stat(np.median) if v == "median" else float(v)
            return _step("fill_null", value, value=value)
        raise InvalidArgumentError(f"unknown transform {k!r}; choose from {', '.join(KINDS)}")


def _step(step: str, a: float = 0.0, b: float = 0.0, edges: list[float] | None = None,
          **stats: Any) -> dict:
    return {"step": step, "a": a, "b": b, "edges": edges or [], "stats": stats}


def standard_scaler() -> Transform:
    """``(x - mean) / std`` with the training split's mean and population std."""
    return Transform("standard_scaler")


def min_max_scaler() -> Transform:
    """``(x - min) / (max - min)`` with the training split's range."""
    return Transform("min_max_scaler")


def robust_scaler() -> Transform:
    """``(x - median) / IQR`` with the training split's median and interquartile range."""
    return Transform("robust_scaler")


def log1p() -> Transform:
    """``ln(1 + x)`` (NaN below -1)."""
    return Transform("log1p")


def clip(lower: float | None = None, upper: float | None = None) -> Transform:
    """``x`` limited to ``[lower, upper]`` (None: unbounded)."""
    for name, v in (("lower", lower), ("upper", upper)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(v)):
            raise InvalidArgumentError(f"clip: {name} must be a number or None; got {v!r}")
    if lower is not None and upper is not None and lower > upper:
        raise InvalidArgumentError(f"clip: lower ({lower}) is above upper ({upper})")
    return Transform("clip", {"lower": lower, "upper": upper})


def bucketize(edges: list[float]) -> Transform:
    """The bucket index of ``x``: the number of ``edges`` at or below it."""
    try:
        e = [float(x) for x in edges]
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"bucketize: edges must be numbers; got {edges!r}") from None
    if not e or any(math.isnan(x) for x in e) or any(a >= b for a, b in zip(e, e[1:])):
        raise InvalidArgumentError(f"bucketize: edges must be strictly increasing numbers; got {edges!r}")
    return Transform("bucketize", {"edges": e})


def fill_null(value: float | str) -> Transform:
    """Missing values (null, NaN) as ``value``, or the training split's ``"mean"`` or
    ``"median"``."""
    if value not in ("mean", "median") and (
            isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)):
        raise InvalidArgumentError(f"fill_null: value must be a number, 'mean' or 'median'; got {value!r}")
    return Transform("fill_null", {"value": value})


def label_encoder() -> Transform:
    """A category as its index among the training split's categories (most frequent
    first, ties by value); unseen categories are one "other" index (the number of
    categories), a missing value stays missing (NaN)."""
    return Transform("label_encoder")


def one_hot(top_k: int = 20) -> Transform:
    """A category as ``top_k + 1`` indicator columns, ``{feature}=0`` .. ``{feature}={k-1}``
    for the training split's ``top_k`` most frequent categories and ``{feature}=other``
    for any other; a missing value sets none of them."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 10_000:
        raise InvalidArgumentError(f"one_hot: top_k must be an integer from 1 to 10,000; got {top_k!r}")
    return Transform("one_hot", {"top_k": top_k})


def encoded_names(feature: str, t: Transform) -> list[str]:
    """The model input columns of categorical ``feature`` under encoder ``t``."""
    if t.kind == "one_hot":
        return [f"{feature}={j}" for j in range(t.params["top_k"])] + [f"{feature}=other"]
    return [feature]


def _categories(column: pa.ChunkedArray | pa.Array, name: str) -> pa.ChunkedArray:
    """A categorical column as strings, int64 or bool (the types categories are kept in)."""
    t = column.type
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t) or \
            pa.types.is_dictionary(t):
        return pc.cast(column, pa.string())
    if pa.types.is_integer(t):
        return pc.cast(column, pa.int64())
    if pa.types.is_boolean(t):
        return column
    raise SchemaError(f"feature '{name}' is {t}; label_encoder and one_hot take strings, "
                      "integers or booleans")


def fit_categories(t: Transform, column: pa.ChunkedArray, name: str) -> dict:
    """The fitted encoder of ``column`` (its training values)."""
    values = _categories(column, name)
    counts = pc.value_counts(values.drop_null()) if len(values) else pa.array([], pa.struct(
        [("values", values.type), ("counts", pa.int64())]))
    pairs = sorted(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist()),
                   key=lambda p: (-p[1], p[0]))
    limit = t.params["top_k"] if t.kind == "one_hot" else len(pairs)
    cats = [v for v, _ in pairs[:limit]]
    return {"transform": t.kind, "step": "categories", "categories": cats,
            "type": str(values.type), "width": len(encoded_names(name, t)),
            "stats": {"categories": len(cats), "seen": len(pairs)}}


def encode(fit: dict, column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """``column`` encoded as ``fit`` says: rows x width float32. The encoding runs in
    Rust (``rust/transform/categories.rs``), the function training rows, the predictor
    and the HTTP server all go through."""
    values = _categories(column, name)
    raw = _core.encode_categories(fit["transform"], fit["type"], fit["categories"],
                                  fit["width"], pa.table({name: values}), name)
    return np.frombuffer(raw, np.float32).reshape(len(values), fit["width"])


def chains(transforms: dict[str, Any] | None) -> dict[str, list[Transform]]:
    """A view's ``transforms=`` argument as feature -> list of transforms (checked)."""
    out: dict[str, list[Transform]] = {}
    for feature, t in (transforms or {}).items():
        chain = list(t) if isinstance(t, list | tuple) else [t]
        if not chain or not all(isinstance(x, Transform) for x in chain):
            raise InvalidArgumentError(
                f"transforms[{feature!r}] must be a transform (pitstop.transforms.standard_scaler() "
                f"...) or a list of them; got {t!r}")
        if len(chain) > 1 and any(x.kind in CATEGORICAL for x in chain):
            raise InvalidArgumentError(
                f"transforms[{feature!r}]: label_encoder and one_hot stand alone on a feature")
        out[str(feature)] = chain
    return out


def as_float32(column: pa.ChunkedArray | pa.Array, name: str) -> np.ndarray:
    """A numeric column as float32 (null -> NaN), as a model reads it."""
    t = column.type
    if not (pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
            or pa.types.is_decimal(t)):
        raise SchemaError(f"feature '{name}' is {t}, not a number; its transform needs a number")
    return pc.cast(column, pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


@dataclass
class Fitted:
    """Fitted transforms of a model input: per feature its fitted steps, and the plan
    that applies them (the model input's columns in ``features`` order)."""

    steps: dict[str, list[dict]]
    features: list[str]
    _plan: Any = None

    def to_json(self) -> str:
        return json.dumps(self.steps, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, features: list[str]) -> Fitted:
        return cls(json.loads(text), features)

    @classmethod
    def fit(cls, chains_: dict[str, list[Transform]], train: pa.Table, features: list[str]) -> Fitted:
        steps: dict[str, list[dict]] = {}
        for f, chain in chains_.items():
            if chain[0].kind in CATEGORICAL:
                steps[f] = [fit_categories(chain[0], train.column(f), f)]
                continue
            x = as_float32(train.column(f), f).astype(np.float64)
            fitted = []
            for t in chain:
                s = t.fit(x)
                fitted.append({"transform": t.kind, **s})
                one = _core.TransformPlan(1, [(0, s["step"], s["a"], s["b"], s["edges"])])
                x = np.frombuffer(one.apply(x.astype(np.float32)), np.float32).astype(np.float64)
            steps[f] = fitted
        return cls(steps, features)

    @property
    def numeric(self) -> dict[str, list[dict]]:
        return {f: c for f, c in self.steps.items() if c[0]["step"] != "categories"}

    @property
    def categorical(self) -> dict[str, dict]:
        return {f: c[0] for f, c in self.steps.items() if c[0]["step"] == "categories"}

    @property
    def plan(self) -> Any:
        if self._plan is None:
            pos = {f: i for i, f in enumerate(self.features)}
            self._plan = _core.TransformPlan(len(self.features), self.steps_at(pos))
        return self._plan

    def steps_at(self, positions: dict[str, int]) -> list[tuple]:
        """The numeric steps as the Rust plans take them: (column, step, a, b, edges),
        each feature's column from ``positions``, in the order they apply."""
        missing = [f for f in self.numeric if f not in positions]
        if missing:
            raise SchemaError(f"fitted transforms name features {missing} that the input lacks")
        return [(positions[f], s["step"], s["a"], s["b"], s["edges"])
                for f, chain in self.numeric.items() for s in chain]

    def apply_matrix(self, x: np.ndarray) -> np.ndarray:
        """The transformed copy of a float32 model input (rows x features), whose
        categorical features are encoded already (see :func:`encode`)."""
        if not self.numeric:
            return x
        raw = self.plan.apply(np.ascontiguousarray(x, dtype=np.float32))
        return np.frombuffer(raw, np.float32).reshape(x.shape)

    def apply_table(self, table: pa.Table) -> pa.Table:
        """``table`` with each transformed feature replaced by its float32 transform and
        each categorical one by its encoded columns."""
        names = list(self.numeric)
        if names:
            x = np.column_stack([as_float32(table.column(f), f) for f in names])
            y = Fitted(self.numeric, names).apply_matrix(x)
            for j, f in enumerate(names):
                table = table.set_column(table.column_names.index(f), f, pa.array(y[:, j], pa.float32()))
        for f, fit in self.categorical.items():
            block = encode(fit, table.column(f), f)
            at = table.column_names.index(f)
            table = table.remove_column(at)
            t = Transform(fit["transform"], {"top_k": fit["width"] - 1})
            for j, name in enumerate(encoded_names(f, t)):
                table = table.add_column(at + j, name, pa.array(block[:, j], pa.float32()))
        return table

    def statistics(self) -> pa.Table:
        rows = []
        for f, chain in self.steps.items():
            for i, s in enumerate(chain):
                stats = {**s["stats"], "categories": s["categories"]} if "categories" in s else s["stats"]
                rows.append({"feature": f, "step": i, "transform": s["transform"],
                             "parameters": json.dumps(stats or {
                                 k: v for k, v in (("a", s["a"]), ("b", s["b"]), ("edges", s["edges"]))
                                 if s["step"] in ("clip", "bucketize")}, sort_keys=True)})
        return pa.Table.from_pylist(rows, schema=pa.schema([
            ("feature", pa.string()), ("step", pa.int32()), ("transform", pa.string()),
            ("parameters", pa.string())]))
