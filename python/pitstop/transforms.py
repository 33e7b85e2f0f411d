"""Transformations, one definition for training and serving.

**On-demand features** (:func:`on_demand`) are Python functions over columns, computed
from request fields (known only when a prediction is asked for) and the view's
features. They are registered by import path (``module:function``) and a hash of their
source, never pickled: opening a view whose function cannot be imported, or whose
source changed since registration, is an error (a warning with ``allow_changed=True``).
In training the request fields are columns of the spine.

**Model-dependent transforms** (``standard_scaler``, ``min_max_scaler``,
``robust_scaler``, ``log1p``, ``clip``, ``bucketize``, ``fill_null``) are fitted on
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
Cost: fitting is one numpy pass per step over the training rows; applying is one pass
over the transformed columns in Rust.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import math
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from .errors import InvalidArgumentError, NotFoundError, PitstopWarning, SchemaError

# -- model-dependent transforms ---------------------------------------------------

KINDS = ("standard_scaler", "min_max_scaler", "robust_scaler", "log1p", "clip", "bucketize",
         "fill_null")


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


def chains(transforms: dict[str, Any] | None) -> dict[str, list[Transform]]:
    """A view's ``transforms=`` argument as feature -> list of transforms (checked)."""
    out: dict[str, list[Transform]] = {}
    for feature, t in (transforms or {}).items():
        chain = list(t) if isinstance(t, list | tuple) else [t]
        if not chain or not all(isinstance(x, Transform) for x in chain):
            raise InvalidArgumentError(
                f"transforms[{feature!r}] must be a transform (pitstop.transforms.standard_scaler() "
                f"...) or a list of them; got {t!r}")
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
    def plan(self) -> Any:
        if self._plan is None:
            pos = {f: i for i, f in enumerate(self.features)}
            missing = [f for f in self.steps if f not in pos]
            if missing:
                raise SchemaError(f"fitted transforms name features {missing} that the input lacks")
            self._plan = _core.TransformPlan(len(self.features), [
                (pos[f], s["step"], s["a"], s["b"], s["edges"])
                for f, chain in self.steps.items() for s in chain])
        return self._plan

    def apply_matrix(self, x: np.ndarray) -> np.ndarray:
        """The transformed copy of a float32 model input (rows x features)."""
        if not self.steps:
            return x
        raw = self.plan.apply(np.ascontiguousarray(x, dtype=np.float32))
        return np.frombuffer(raw, np.float32).reshape(x.shape)

    def apply_table(self, table: pa.Table) -> pa.Table:
        """``table`` with each transformed feature replaced by its float32 transform."""
        if not self.steps:
            return table
        names = list(self.steps)
        x = np.column_stack([as_float32(table.column(f), f) for f in names])
        sub = Fitted(self.steps, names)
        y = sub.apply_matrix(x)
        for j, f in enumerate(names):
            table = table.set_column(table.column_names.index(f), f, pa.array(y[:, j], pa.float32()))
        return table

    def statistics(self) -> pa.Table:
        rows = []
        for f, chain in self.steps.items():
            for i, s in enumerate(chain):
                rows.append({"feature": f, "step": i, "transform": s["transform"],
                             "parameters": json.dumps(s["stats"] or {
                                 k: v for k, v in (("a", s["a"]), ("b", s["b"]), ("edges", s["edges"]))
                                 if s["step"] in ("clip", "bucketize")}, sort_keys=True)})
        return pa.Table.from_pylist(rows, schema=pa.schema([
            ("feature", pa.string()), ("step", pa.int32()), ("transform", pa.string()),
            ("parameters", pa.string())]))


# -- on-demand features ---------------------------------------------------------------

NUMERIC = {"float64": np.float64, "float32": np.float32, "int64": np.int64,
           "int32": np.int32, "bool": np.bool_}


def _types(what: str, d: Any) -> dict[str, str]:
    if not isinstance(d, dict) or not d:
        raise InvalidArgumentError(f"on_demand: {what} must be a non-empty dict of name -> type")
    for k, v in d.items():
        if not isinstance(k, str) or v not in NUMERIC:
            raise InvalidArgumentError(
                f"on_demand: {what}[{k!r}] is {v!r}; types are {', '.join(NUMERIC)}")
    return dict(d)


def _source_hash(fn: Callable) -> str:
    try:
        src = inspect.getsource(fn)
    except (OSError, TypeError):
        raise InvalidArgumentError(
            f"on_demand: the source of {fn!r} cannot be read; define it in a module file") from None
    return hashlib.sha256(src.encode()).hexdigest()[:24]


class OnDemand:
    """A registered request-time feature function (made by :func:`on_demand`)."""

    def __init__(self, fn: Callable, request: dict[str, str], outputs: dict[str, str]):
        self.fn = fn
        self.request = _types("request", request)
        self.outputs = _types("outputs", outputs)
        self.path = f"{fn.__module__}:{fn.__qualname__}"
        if "<locals>" in self.path or fn.__module__ == "__main__":
            raise InvalidArgumentError(
                f"on_demand: {self.path} cannot be imported by path; define it at the top level "
                "of an importable module")
        self.source_hash = _source_hash(fn)

    def __call__(self, cols: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.fn(cols)

    def __repr__(self) -> str:
        return f"OnDemand({self.path!r}, outputs={list(self.outputs)})"

    def to_json(self) -> dict:
        return {"path": self.path, "hash": self.source_hash, "request": self.request,
                "outputs": self.outputs}

    def compute(self, cols: dict[str, np.ndarray], n: int) -> dict[str, np.ndarray]:
        """The outputs for ``n`` rows, checked: exactly the declared names, each ``n``
        numbers, cast to the declared type."""
        try:
            got = self.fn(cols)
        except Exception as e:  # the user's function: report which one failed
            raise InvalidArgumentError(
                f"on-demand function {self.path} raised {type(e).__name__}: {e}") from e
        if not isinstance(got, dict) or set(got) != set(self.outputs):
            raise SchemaError(
                f"on-demand function {self.path} must return a dict with exactly "
                f"{sorted(self.outputs)}; got {sorted(got) if isinstance(got, dict) else type(got).__name__}")
        out = {}
        for name, dtype in self.outputs.items():
            a = got[name]
            if type(a) is not np.ndarray:
                try:
                    a = np.asarray(a)
                except (TypeError, ValueError) as e:
                    raise SchemaError(f"on-demand feature '{name}' ({self.path}): {e}") from None
            if a.ndim == 0:
                a = np.broadcast_to(a, (n,))
            if a.shape != (n,) or a.dtype.kind not in "biuf":
                raise SchemaError(
                    f"on-demand feature '{name}' ({self.path}) must be {n} numbers of type "
                    f"{dtype}; got shape {a.shape}, dtype {a.dtype}")
            want = NUMERIC[dtype]
            out[name] = a if a.dtype == want else a.astype(want)
        return out


def on_demand(*, request: dict[str, str], outputs: dict[str, str]) -> Callable[[Callable], OnDemand]:
    """Declares a request-time feature function: ``fn(cols) -> {output: array}`` where
    ``cols`` maps each request field and each feature of the view to a numpy array."""
    def wrap(fn: Callable) -> OnDemand:
        return OnDemand(fn, request, outputs)
    return wrap


def load_on_demand(spec: dict, *, allow_changed: bool = False) -> OnDemand:
    """The registered function ``spec`` (import path + source hash), imported."""
    module, _, qual = spec["path"].partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in qual.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as e:
        raise NotFoundError(
            f"on-demand function {spec['path']} cannot be imported ({e}); install or import "
            "the module that defines it") from None
    fn = obj.fn if isinstance(obj, OnDemand) else obj
    od = OnDemand(fn, spec["request"], spec["outputs"])
    if od.source_hash != spec["hash"]:
        msg = (f"on-demand function {spec['path']} changed since the view was registered "
               "(its source hash differs): training data and served features could disagree")
        if not allow_changed:
            raise SchemaError(msg + "; register a new view version, or open it with allow_changed=True")
        warnings.warn(msg, PitstopWarning, stacklevel=3)
    return od
