"""Inference pipelines: online features in, predictions out, within a millisecond.

``Predictor.predict(keys)`` looks the view's features up in the online store (Rust
assembles the float32 matrix in the model's input order, no per-row Python), applies
the missing-value policy, computes the on-demand features, applies the fitted
transforms, appends request-time features and runs one model call for the whole
batch, through ONNX Runtime's C API from Rust (the onnxruntime wheel's own library,
same floats as its Python session; :mod:`pitstop.models`). Models whose output is not
one float32 per row keep onnxruntime's Python session. Calls from several threads run
in parallel, each on a session of its own (``rust/serve/onnx.rs``). Logging, when on,
hands the batch to a background thread (a bounded queue: ``predict`` only waits if the
writer falls far behind, and nothing is dropped), which appends to a Delta table under
``logs/``.

The hot path is prepared once per predictor (:mod:`pitstop.model_input`): for a view
of numeric features keyed alike, one Rust call goes from the keys (a dict of lists or
int64 arrays, or a list, read without Python-side conversion) to the float32 model
input, with the lookup, the ``"default"`` fills and the fitted transforms in it; the
on-demand functions, when any, write their columns into that matrix, and a second
call applies the transforms in place. Other views (aggregations, categorical
encoders, groups keyed differently) take the general path, which gives the same bits.
When nothing runs in Python between (no on-demand features, request features, logging
or ``missing="error"``), ``predict`` is one Rust call from the keys to the predictions,
the GIL released for the lookup and the model together. A batch of one costs a few
microseconds besides the model; ONNX Runtime's own ``Run`` is the floor.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import transforms as T
from .errors import DataError, InvalidArgumentError, SchemaError
from .models import ModelVersion, _session, check_inputs, rust_model, session_inputs
from .ondemand import fill_on_demand, with_on_demand
from .online import now_ns
from .model_input import input_matrix, input_plan
from ._inputs import keys_table as normalize_keys

if TYPE_CHECKING:
    from .store import FeatureStore

MISSING_POLICIES = ("nan", "default", "error")


class Predictor:
    """Serves one model version. Get it with ``fs.predictor(name)``."""

    def __init__(self, store: FeatureStore, model: ModelVersion, *, threads: int = 1,
                 missing: str = "nan", defaults: dict[str, float] | None = None,
                 log: bool = False, log_queue: int = 1024):
        self.model = model
        self.view = store.get_feature_view(model.view_name, model.view_version)
        if self.view.features != model.inputs[: len(self.view.features)]:
            raise SchemaError(
                f"model '{model.name}' v{model.version} was registered for features "
                f"{model.inputs} but feature view '{self.view.name}' now gives {self.view.features}"
            )
        if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) \
                or not 0 <= threads <= 1024:
            raise InvalidArgumentError(
                f"threads must be a whole number from 0 to 1024 (0: one per core); got {threads!r}")
        threads = int(threads)
        self._prepare_run(model.read_bytes(), threads)
        if missing not in MISSING_POLICIES:
            raise InvalidArgumentError(f"missing must be one of {MISSING_POLICIES}; got {missing!r}")
        self.missing = missing
        self._defaults = None
        if missing == "default":
            defaults = defaults or {}
            absent = [f for f in self.view.lookup_features if f not in defaults]
            if absent:
                raise InvalidArgumentError(f"missing='default' needs a default for every feature; none for {absent}")
            # An encoded categorical column takes its own default, else its feature's.
            cat = self.view.categorical
            raw = {n: f for f in self.view.lookup_features
                   for n in (T.encoded_names(f, cat[f]) if f in cat else [f])}
            self._defaults = np.array([defaults.get(n, defaults[raw[n]]) for n in raw], np.float32)
        self._fitted = None
        if self.view.transforms:
            if model.snapshot_id is None:
                raise InvalidArgumentError(
                    f"model '{model.name}' v{model.version} reads view '{self.view.name}', which has "
                    "transforms, but was registered without training_snapshot=...; register it "
                    "with the snapshot its transforms were fitted on")
            self._fitted = self.view.fitted_transforms(model.snapshot_id)
        self._lookup = self.view._matrix_lookup(self._fitted)
        fills = [] if self._defaults is None else [
            (j, float(v)) for j, v in enumerate(self._defaults) if not np.isnan(v)]
        self._fast = input_plan(self.view, self._fitted, len(model.inputs), fills)
        self._width = len(model.inputs)
        self._n_lookup = len(self.view.lookup_features)
        self._now: tuple = (None, None)  # the last datetime `now` and its ns
        # One Rust call from keys to predictions when nothing runs in Python between.
        self._direct = (self._onnx is not None and self._fast is not None and missing != "error"
                        and not self.view.on_demand and not model.request_features)
        self._logger = None
        if log:
            from .logs import PredictionLogger

            self._logger = PredictionLogger(store, self, maxsize=log_queue)

    def __repr__(self) -> str:
        return f"Predictor({self.model.name!r}, version={self.model.version})"

    @property
    def inputs(self) -> list[str]:
        return self.model.inputs

    # -- serving -----------------------------------------------------------------

    def features(self, keys: Any, *, request: Any = None, now: dt.datetime | None = None) -> np.ndarray:
        """The model input matrix for ``keys`` (float32, one row per key)."""
        return self._model_input(keys, request, now)

    def _model_input(self, keys: Any, request: Any, now: Any) -> np.ndarray:
        """Lookup, missing-value policy, on-demand features, fitted transforms, raw
        request features: the model input."""
        fast = self._fast
        if fast is not None:
            x = input_matrix(fast, keys, self._ns(now))
            if self.missing == "error":
                self._apply_missing(x[:, :self._n_lookup], keys)
            if self.view.on_demand:
                fill_on_demand(self.view, x, self._n_lookup, request)
                fast.finish(x)
            if request is not None or self.model.request_features:
                extra = self._request_block(request, len(x))
                if extra is not None:
                    x[:, self._width - extra.shape[1]:] = extra
            return x
        return self._general_input(keys, request, now)

    def _ns(self, now: Any) -> int | None:
        if now is None:
            return None
        last = self._now
        if last[0] is now and type(now) is dt.datetime:  # immutable: same value
            return last[1]
        ns = now_ns(now)
        self._now = (now, ns)
        return ns

    def _general_input(self, keys: Any, request: Any, now: Any) -> np.ndarray:
        x = self._apply_missing(self._lookup(keys, now), keys)
        if self.view.on_demand:
            x = with_on_demand(self.view, x, request)
        if self._fitted is not None:
            x = self._fitted.apply_matrix(x)
        return self._with_request(x, request)

    def predict(self, keys: Any, *, request: Any = None, return_features: bool = False,
                now: dt.datetime | None = None):
        """Predictions for ``keys`` (numpy float32; for a classifier, the probability of
        the positive class). With ``return_features=True``, (predictions, input matrix)."""
        if self._direct and request is None and not return_features and self._logger is None:
            y = self._onnx.predict(self._fast, keys, self._ns(now))
            if y is not None:
                return np.frombuffer(y, np.float32)
        x = self._model_input(keys, request, now)
        y = self._run(x)
        if self._logger is not None:
            self._logger.log(normalize_keys(keys), x, y)
        return (y, x) if return_features else y

    def _prepare_run(self, onnx_bytes: bytes, threads: int) -> None:
        """Loads the model and checks it takes the view's rows. It runs on ONNX
        Runtime's C API (``_core.OnnxModel``, the onnxruntime wheel's own library) when
        it gives one float32 per row: then no onnxruntime Python session is built (one
        load, one copy of the model in memory). Other models, or no C API, get the
        Python session's C++ ``run`` when the binding exposes it (the public ``run``
        checks the feed's names on every call), else the public one."""
        self._onnx = rust_model(onnx_bytes, threads)
        if self._onnx is not None and not self._onnx.one_per_row:
            self._onnx = None  # its output is kept as it is: onnxruntime's session runs it
        if self._onnx is not None:
            check_inputs(self._onnx.inputs, self.model.inputs, self.model.name)
            self.session = None
            return
        self.session = session = _session(onnx_bytes, threads)
        graph_inputs = session_inputs(session)
        check_inputs(graph_inputs, self.model.inputs, self.model.name)
        self._input = graph_inputs[0][0]
        outputs = [o.name for o in session.get_outputs()]
        names = ["probabilities" if "probabilities" in outputs else outputs[0]]
        inner = getattr(getattr(session, "_sess", None), "run", None)
        if inner is not None:
            self._raw_run = lambda feed: inner(names, feed, None)[0]
        else:
            self._raw_run = lambda feed: session.run(names, feed)[0]

    def _run(self, x: np.ndarray) -> np.ndarray:
        if self._onnx is not None:
            x = np.ascontiguousarray(x, np.float32)
            return np.frombuffer(self._onnx.run(x, x.shape[-1]), np.float32)
        out = np.asarray(self._raw_run({self._input: x}), dtype=np.float32)
        if out.ndim == 2 and out.shape[1] == 2:  # class probabilities: the positive class
            return np.ascontiguousarray(out[:, 1])
        if out.ndim == 2 and out.shape[1] == 1:
            return out.reshape(len(x))
        return out

    def _apply_missing(self, x: np.ndarray, keys: Any) -> np.ndarray:
        if self.missing == "nan":
            return x
        holes = np.isnan(x)
        if not holes.any():
            return x
        if self.missing == "default":
            return np.where(holes, self._defaults, x).astype(np.float32)
        rows = np.flatnonzero(holes.any(axis=1))[:5]
        table = normalize_keys(keys)
        shown = [{c: table.column(c)[int(i)].as_py() for c in table.column_names} for i in rows]
        cols = [self.view.features[j] for j in np.flatnonzero(holes.any(axis=0))[:5]]
        raise DataError(
            f"model '{self.model.name}': {int(holes.any(axis=1).sum())} key(s) lack online features "
            f"(e.g. {shown}, features {cols}); insert or materialize them, or use missing='nan'/'default'"
        )

    def _with_request(self, x: np.ndarray, request: Any) -> np.ndarray:
        extra = self._request_block(request, len(x))
        if extra is None:
            return x
        return np.ascontiguousarray(np.hstack([x, extra]), dtype=np.float32)

    def _request_block(self, request: Any, n: int) -> np.ndarray | None:
        """The model's raw request features (float32, n rows), None when it takes none."""
        names = self.model.request_features
        if not names:
            if request is not None and not self.view.on_demand:
                raise InvalidArgumentError(f"model '{self.model.name}' takes no request features")
            return None
        if request is None:
            raise InvalidArgumentError(f"model '{self.model.name}' needs request features {names}")
        req = normalize_keys(request)
        missing = [f for f in names if f not in req.column_names]
        if missing or req.num_rows != n:
            raise InvalidArgumentError(
                f"request must give {names} with one value per key ({n}); "
                f"missing {missing}, got {req.num_rows} rows"
            )
        try:  # float32 as the model takes it: beyond its range is an infinity, as in the server
            with np.errstate(over="ignore"):
                return np.column_stack([req.column(f).to_numpy(zero_copy_only=False).astype(np.float32)
                                        for f in names])
        except (TypeError, ValueError) as e:  # strings, nested values, booleans with nulls
            raise InvalidArgumentError(
                f"model '{self.model.name}': request features {names} must be numbers; {e}") from None

    # -- questions ---------------------------------------------------------------

    def what_if(self, key: Any, changes: dict[str, float], *, request: Any = None,
                now: dt.datetime | None = None) -> tuple[float, float]:
        """(prediction now, prediction with ``changes`` applied to the features)."""
        x = self.features(key, request=request, now=now)
        if len(x) != 1:
            raise InvalidArgumentError("what_if takes one key")
        changed = x.copy()
        for name, value in changes.items():
            changed[0, self._column(name)] = value
        y = self._run(np.vstack([x, changed]))
        return float(y[0]), float(y[1])

    def partial_dependence(self, feature: str, grid: Any, keys: Any, *, request: Any = None,
                           now: dt.datetime | None = None) -> np.ndarray:
        """The mean prediction over ``keys`` with ``feature`` set to each grid value (one
        model call for the whole grid)."""
        x = self.features(keys, request=request, now=now)
        grid = np.asarray(grid, dtype=np.float32)
        j = self._column(feature)
        stacked = np.repeat(x[None, :, :], len(grid), axis=0)
        stacked[:, :, j] = grid[:, None]
        y = self._run(stacked.reshape(-1, x.shape[1]))
        return y.reshape(len(grid), len(x)).mean(axis=1)

    def _column(self, name: str) -> int:
        try:
            return self.model.inputs.index(name)
        except ValueError:
            raise SchemaError(f"model '{self.model.name}' has no input feature '{name}'; "
                              f"its inputs are {self.model.inputs}") from None

    # -- logging -----------------------------------------------------------------

    def flush(self) -> None:
        """Waits until every logged prediction is written."""
        if self._logger is not None:
            self._logger.flush()

    def close(self) -> None:
        if self._logger is not None:
            self._logger.close()
            self._logger = None

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read_logs(self) -> pa.Table:
        """The prediction log of this model's feature view."""
        from .logs import read_logs

        return read_logs(self.view._store, self.view)
