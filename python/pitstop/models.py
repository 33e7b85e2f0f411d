"""The model registry: ONNX models with their lineage.

A model version is an ONNX file under ``models/<name>/v<N>/model.onnx`` plus a registry
row: the feature view (name, version) it reads, the training snapshot it was trained on,
its metrics, and its input schema (the view's features, then any request-time
features, in the order the model's input matrix expects). Registration checks that
schema against the ONNX graph's input; loading checks the file's SHA-256, so a damaged
file is an error, never a wrong prediction. Only ONNX is ever loaded: nothing is
unpickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import _core
from ._names import check_name
from .errors import InvalidArgumentError, NotFoundError, PitstopError, SchemaError, StoreError
from .registry import dumps, now, registry_row

if TYPE_CHECKING:
    from .store import FeatureStore
    from .view import FeatureView, Snapshot


@dataclass(frozen=True)
class ModelVersion:
    """A registered model version."""

    name: str
    version: int
    view_name: str
    view_version: int
    snapshot_id: int | None
    metrics: dict[str, float]
    inputs: list[str]  # feature names in input order: view features, then request features
    request_features: list[str]
    description: str
    sha256: str
    path: Path

    def read_bytes(self) -> bytes:
        """The ONNX file, checked against the SHA-256 recorded at registration."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            raise StoreError(f"model '{self.name}' v{self.version}: {self.path} is missing") from None
        if hashlib.sha256(data).hexdigest() != self.sha256:
            raise StoreError(
                f"model '{self.name}' v{self.version}: {self.path} is corrupt (its SHA-256 differs "
                "from the one registered); register the model again"
            )
        return data


def _session(model: bytes, threads: int = 1):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise InvalidArgumentError(f"not a loadable ONNX model: {str(e).splitlines()[0]}") from None


def onnxruntime_library() -> str | None:
    """The ONNX Runtime shared library the onnxruntime wheel ships, if installed."""
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime")
    if spec is None or not spec.submodule_search_locations:
        return None
    capi = Path(list(spec.submodule_search_locations)[0]) / "capi"
    libs = sorted(capi.glob("libonnxruntime.so*")) + sorted(capi.glob("libonnxruntime*.dylib")) \
        + sorted(capi.glob("onnxruntime.dll"))
    return str(libs[0]) if libs else None


def rust_model(model: bytes, threads: int = 1) -> Any:
    """The model on ONNX Runtime's C API (``_core.OnnxModel``: the same library and
    session options as :func:`_session`, so the same floats), or None when there is
    none: no library, a build without it, or a model it cannot load (then
    :func:`_session` says why). Only a model whose ``one_per_row`` is true can serve;
    the others keep the onnxruntime session."""
    lib = onnxruntime_library()
    cls = getattr(_core, "OnnxModel", None)
    if lib is None or cls is None:
        return None
    try:
        return cls(lib, model, threads)
    except PitstopError:
        return None


def session_inputs(session: Any) -> list[tuple[str, str, list]]:
    """An onnxruntime session's inputs as ``(name, type, shape)``, as
    ``_core.OnnxModel.inputs`` gives them."""
    return [(i.name, i.type, list(i.shape)) for i in session.get_inputs()]


def check_inputs(graph_inputs: list[tuple[str, str, list]], inputs: list[str], model: str) -> None:
    """The model must take one float32 matrix of ``len(inputs)`` columns
    (``graph_inputs``: its inputs as ``(name, type, shape)``)."""
    if len(graph_inputs) != 1:
        raise SchemaError(
            f"model '{model}' has {len(graph_inputs)} inputs "
            f"({[i[0] for i in graph_inputs]}); pitstop feeds one float32 matrix "
            "(export with a single input, e.g. skl2onnx initial_types=[('input', FloatTensorType([None, d]))])"
        )
    name, kind, shape = graph_inputs[0]
    if kind != "tensor(float)":
        raise SchemaError(f"model '{model}' input '{name}' is {kind}; pitstop feeds tensor(float)")
    width = shape[-1] if len(shape) == 2 else None
    if len(shape) != 2 or (isinstance(width, int) and width != len(inputs)):
        raise SchemaError(
            f"model '{model}' input '{name}' has shape {shape} but the feature view gives "
            f"{len(inputs)} features {inputs}; the model must take [batch, {len(inputs)}]"
        )


class ModelRegistry:
    """``fs.models``: register, find and delete model versions."""

    def __init__(self, store: FeatureStore):
        self._store = store

    def register(
        self, name: str, model: str | os.PathLike[str] | bytes, *, feature_view: FeatureView,
        metrics: dict[str, float] | None = None, description: str = "",
        training_snapshot: Snapshot | int | None = None, request_features: list[str] = (),
    ) -> ModelVersion:
        """Stores an ONNX model as the next version of ``name``."""
        from .view import FeatureView, Snapshot

        self._store._check_writable()
        check_name(name, "model")
        if not isinstance(feature_view, FeatureView):
            raise InvalidArgumentError(
                f"feature_view must be a FeatureView (fs.get_feature_view(...)); got {feature_view!r}")
        self._store.get_feature_view(feature_view.name, feature_view.version)  # still registered
        if isinstance(request_features, str) or not all(isinstance(f, str) for f in request_features):
            raise InvalidArgumentError(
                f"request_features must be a list of names; got {request_features!r}")
        if not isinstance(description, str):
            raise InvalidArgumentError(f"description must be a string; got {description!r}")
        metrics = _metrics(metrics)
        if isinstance(training_snapshot, Snapshot):
            snap_id = training_snapshot.id
        elif training_snapshot is None or (isinstance(training_snapshot, int)
                                           and not isinstance(training_snapshot, bool)):
            snap_id = training_snapshot
        else:
            raise InvalidArgumentError(
                f"training_snapshot must be a Snapshot or its id; got {training_snapshot!r}")
        if snap_id is not None:
            snap = self._store._snapshot(snap_id)  # NotFoundError for an unknown id
            if (snap.view, snap.view_version) != (feature_view.name, feature_view.version):
                raise InvalidArgumentError(
                    f"training snapshot {snap_id} was read from feature view '{snap.view}' "
                    f"v{snap.view_version}, not '{feature_view.name}' v{feature_view.version}")
        if feature_view.transforms:  # the predictor applies the fits of this snapshot
            if snap_id is None:
                raise InvalidArgumentError(
                    f"feature view '{feature_view.name}' has transforms: register the model with "
                    "training_snapshot=fv.last_snapshot (the split its transforms were fitted on)")
            feature_view.fitted_transforms(snap_id)  # NotFoundError when none were fitted
        if isinstance(model, bytes):
            data = model
        elif isinstance(model, str | os.PathLike):
            try:
                data = Path(model).read_bytes()
            except OSError as e:
                raise InvalidArgumentError(f"cannot read the model file {model!s} ({e.strerror})") from None
        else:
            raise InvalidArgumentError(
                f"model must be an ONNX file path or its bytes; got {type(model).__name__}")
        inputs = [*feature_view.features, *request_features]
        check_inputs(session_inputs(_session(data)), inputs, name)
        digest = hashlib.sha256(data).hexdigest()
        with self._store.registry.tx() as db:
            row = db.execute("SELECT MAX(version) FROM models WHERE name=?", (name,)).fetchone()
            version = (row[0] or 0) + 1
            path = self._store.path / "models" / name / f"v{version}" / "model.onnx"
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(data)
            os.replace(tmp, path)
            meta = {"inputs": inputs, "request_features": list(request_features)}
            self._store.registry.insert(db, "models", dict(
                name=name, version=version, view_name=feature_view.name,
                view_version=feature_view.version, snapshot_id=snap_id, metrics=dumps(metrics),
                inputs=dumps(meta), description=description, sha256=digest, created_at=now()))
            (path.parent / "metadata.json").write_text(json.dumps(
                {"name": name, "version": version, "feature_view": [feature_view.name, feature_view.version],
                 "training_snapshot": snap_id, "metrics": metrics, **meta}, indent=2))
        return self.get(name, version)

    def get(self, name: str, version: int | None = None) -> ModelVersion:
        return self._version(self._store._row("models", "model", name, version))

    def list(self, name: str | None = None) -> list[ModelVersion]:
        sql, args = "SELECT * FROM models ORDER BY name, version", ()
        if name is not None:
            sql, args = "SELECT * FROM models WHERE name=? ORDER BY version", (name,)
        return [self._version(r) for r in self._store.registry.query(sql, args)]

    def best(self, name: str, metric: str, direction: str = "max") -> ModelVersion:
        """The version of ``name`` with the best value of ``metric``."""
        if direction not in ("max", "min"):
            raise InvalidArgumentError(f"direction must be 'max' or 'min'; got {direction!r}")
        scored = [m for m in self.list(name) if metric in m.metrics]
        if not scored:
            raise NotFoundError(f"no version of model '{name}' has the metric '{metric}'")
        pick = max if direction == "max" else min
        return pick(scored, key=lambda m: (m.metrics[metric], m.version if direction == "max" else -m.version))

    def delete(self, name: str, version: int) -> None:
        self._store._check_writable()
        m = self.get(name, version)
        with self._store.registry.tx() as db:
            db.execute("DELETE FROM models WHERE name=? AND version=?", (name, version))
        shutil.rmtree(m.path.parent, ignore_errors=True)

    def _version(self, row: dict[str, Any]) -> ModelVersion:
        what = f"model '{row['name']}' v{row['version']}"
        with registry_row(what):
            meta = json.loads(row["inputs"])
            return ModelVersion(
                name=row["name"], version=int(row["version"]), view_name=row["view_name"],
                view_version=int(row["view_version"]), snapshot_id=row["snapshot_id"],
                metrics=dict(json.loads(row["metrics"])), inputs=list(meta["inputs"]),
                request_features=list(meta["request_features"]), description=row["description"],
                sha256=row["sha256"],
                path=self._store.path / "models" / row["name"] / f"v{row['version']}" / "model.onnx",
            )


def _metrics(metrics: Any) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, dict):
        raise InvalidArgumentError(f"metrics must be a dict of name -> number; got {metrics!r}")
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, int | float) and not hasattr(v, "__float__"):
            raise InvalidArgumentError(f"metric {k!r} must be a number; got {v!r}")
        f = float(v)
        if math.isnan(f):
            raise InvalidArgumentError(f"metric {k!r} is NaN; metrics must be numbers")
        out[str(k)] = f
    return out
