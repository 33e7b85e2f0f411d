"""On-demand features: Python functions over columns, computed from request fields
(known only when a prediction is asked for) and a view's features, the same function
in training (request fields are spine columns) and in serving.

A function is registered by import path (``module:function``) and a hash of its
source, never pickled: opening a view whose function cannot be imported, or whose
source changed since registration, is an error (a warning with ``allow_changed=True``).
Functions must be row-wise (each output row from its own input row): serving calls them
on one request's rows, training on the whole spine. Inputs are numpy arrays: request
fields of their declared types, view features as float64 of the float32 value a model
reads; outputs are checked (names, length, numeric type) and cast to their declared
types. Cost: one call per function per request, plus O(rows) conversions.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import warnings
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ._inputs import keys_table
from .errors import DataError, InvalidArgumentError, NotFoundError, PitstopWarning, SchemaError
from .transforms import as_float32

if TYPE_CHECKING:
    from .view import FeatureView

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
        # (name, numpy dtype) of each output, and their names: checked per call.
        self._checks = [(name, np.dtype(NUMERIC[t])) for name, t in self.outputs.items()]
        self._names = frozenset(self.outputs)

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
        got, shape = self._call(cols), (n,)
        out = {}
        for name, want in self._checks:
            a = got[name]
            # The common case, already what was declared, takes no conversion.
            ok = type(a) is np.ndarray and a.dtype is want and a.shape == shape
            out[name] = a if ok else self._output(name, a, want, n)
        return out

    def compute_into(self, cols: dict[str, np.ndarray], n: int, x: np.ndarray,
                     positions: dict[str, int]) -> None:
        """``compute``, each output written to its column of ``x`` (rounded to
        float32 as ``astype`` would)."""
        got, shape = self._call(cols), (n,)
        for name, want in self._checks:
            a = got[name]
            if not (type(a) is np.ndarray and a.dtype is want and a.shape == shape):
                a = self._output(name, a, want, n)
            if n == 1:  # one element: a scalar store, the same float32 rounding
                x[0, positions[name]] = a[0]
            else:
                x[:, positions[name]] = a

    def _call(self, cols: dict[str, np.ndarray]) -> dict:
        try:
            got = self.fn(cols)
        except Exception as e:  # the user's function: report which one failed
            raise InvalidArgumentError(
                f"on-demand function {self.path} raised {type(e).__name__}: {e}") from e
        if not isinstance(got, dict) or got.keys() != self._names:
            raise SchemaError(
                f"on-demand function {self.path} must return a dict with exactly "
                f"{sorted(self.outputs)}; got {sorted(got) if isinstance(got, dict) else type(got).__name__}")
        return got

    def _output(self, name: str, a: Any, want: np.dtype, n: int) -> np.ndarray:
        """Output ``a`` as ``n`` values of ``want``, or a SchemaError."""
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
                f"{self.outputs[name]}; got shape {a.shape}, dtype {a.dtype}")
        return a if a.dtype == want else a.astype(want)


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


# -- in a view ------------------------------------------------------------------------

def add_on_demand(view: FeatureView, table: pa.Table, where: str) -> pa.Table:
    """``table`` (features and request fields as columns) plus the on-demand columns."""
    if not view.on_demand:
        return table
    fields = view.request_fields
    missing = [r for r in fields if r not in table.column_names]
    if missing:
        raise SchemaError(
            f"{where} lacks the request field(s) {missing} that the on-demand features of "
            f"view '{view.name}' read; give them as columns")
    cols = {r: request_array(table.column(r), r, t) for r, t in fields.items()}
    for f in view.lookup_features:
        c = table.column(f)
        if pa.types.is_integer(c.type) or pa.types.is_floating(c.type) or pa.types.is_boolean(c.type):
            cols[f] = as_float32(c, f).astype(np.float64)
    for od in view.on_demand:
        for name, a in od.compute(cols, table.num_rows).items():
            table = table.append_column(name, pa.array(a))
            cols[name] = a.astype(np.float32).astype(np.float64)
    return table


def with_on_demand(view: FeatureView, x: np.ndarray, request: Any) -> np.ndarray:
    """The lookup matrix ``x`` plus the on-demand columns (float32)."""
    if not view.on_demand:
        return x
    n, done = x.shape
    out = np.empty((n, _layout(view)[2]), np.float32)
    out[:, :done] = x
    fill_on_demand(view, out, done, request)
    return out


def fill_on_demand(view: FeatureView, out: np.ndarray, done: int, request: Any) -> None:
    """Computes the on-demand columns of ``out`` in place (float32, a row per key, the
    view's features at their positions), whose first ``done`` columns hold the
    looked-up features."""
    positions, fields, _ = _layout(view)
    if request is None:
        raise InvalidArgumentError(f"feature view '{view.name}' needs request fields {list(fields)}")
    n = len(out)
    cols = FeatureColumns(out, positions, done)
    cols.update(request_columns(request, fields, n, view.name))
    for od in view.on_demand:
        od.compute_into(cols, n, out, positions)
        cols.ready = done = done + len(od.outputs)


def _layout(view: FeatureView) -> tuple[dict[str, int], dict[str, str], int]:
    """(position of each feature, request fields, width), resolved once per view object."""
    if view._od_names is None:
        names = view.features
        view._od_names = ({f: j for j, f in enumerate(names)}, view.request_fields, len(names))
    return view._od_names


def request_array(col: pa.ChunkedArray | pa.Array, name: str, dtype: str) -> np.ndarray:
    """A request field as numpy of its declared type (the same conversion in training
    and serving): a float field keeps nulls as NaN, other types refuse them."""
    target = {"float64": pa.float64(), "float32": pa.float32(), "int64": pa.int64(),
              "int32": pa.int32(), "bool": pa.bool_()}[dtype]
    try:
        c = pc.cast(col, target)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as e:
        raise SchemaError(f"request field '{name}' must be {dtype}; got {col.type} ({e})") from None
    if c.null_count and not pa.types.is_floating(target):
        raise DataError(f"request field '{name}' ({dtype}) has nulls; give a value for every row")
    return c.to_numpy(zero_copy_only=False).astype(NUMERIC[dtype], copy=False)


class FeatureColumns(dict):
    """The columns an on-demand function reads when serving: request fields as given,
    and each view feature (the first ``ready`` columns of ``x``: looked-up features and
    the outputs of earlier functions) as float64 of its float32 value, converted on
    first use."""

    def __init__(self, x: np.ndarray, positions: dict[str, int], ready: int):
        # Starts empty (dict.__new__ made it so); no super().__init__() on the hot path.
        self._x, self._positions, self.ready = x, positions, ready

    def __missing__(self, name: str) -> np.ndarray:
        j = self._positions.get(name)
        if j is None or j >= self.ready:
            raise KeyError(name)
        value = self._x[:, j].astype(np.float64)
        self[name] = value
        return value


_SAME_KIND = {"float64": "f", "float32": "f", "int64": "iu", "int32": "iu", "bool": "b"}
_DTYPES = {name: np.dtype(t) for name, t in NUMERIC.items()}


def request_columns(request: Any, fields: dict[str, str], n: int, view: str) -> dict[str, np.ndarray]:
    """The request fields as numpy of their declared types. A dict of numeric lists or
    arrays of the declared kind converts directly (what numpy and Arrow convert alike);
    anything else goes through Arrow, as the spine's columns do in training."""
    if isinstance(request, dict):
        out = {}
        rows = n
        for r, dtype in fields.items():
            v = request.get(r)
            if type(v) is list or type(v) is np.ndarray or isinstance(v, list | tuple | np.ndarray):
                a = np.asarray(v)
            else:
                break
            if a.dtype is not _DTYPES[dtype]:  # else exactly the declared type already
                kind = a.dtype.kind
                if kind not in _SAME_KIND[dtype] or (
                        a.dtype.itemsize > 4 and (dtype == "float32" or dtype == "int32" or kind == "u")):
                    break
                a = a.astype(NUMERIC[dtype])
            if a.ndim != 1:
                break
            out[r] = a
            if len(a) != n and rows == n:
                rows = len(a)
        else:
            if rows != n:
                raise InvalidArgumentError(f"request has {rows} rows for {n} keys; give one per key")
            return out
    req = keys_table(request, "request")
    if req.num_rows != n:
        raise InvalidArgumentError(f"request has {req.num_rows} rows for {n} keys; give one per key")
    missing = [r for r in fields if r not in req.column_names]
    if missing:
        raise SchemaError(f"request lacks the field(s) {missing} of view '{view}'")
    return {r: request_array(req.column(r), r, t) for r, t in fields.items()}
