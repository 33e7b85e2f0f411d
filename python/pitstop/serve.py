"""``pitstop serve``: features and predictions over HTTP from a Rust server.

The server (``rust/serve/``) answers from the store's LMDB environment with no Python
on the request path. Python does what it does once per registry change: it resolves
the registry into a *serving plan* (views -> online tables, key columns, TTLs, fitted
numeric transforms, aggregation specs; models) and hands it to Rust as JSON. A
watcher thread compares the registry file's (and its WAL's) size and mtime every
``watch_s`` seconds and hands over a new plan when they change. Data needs no plan:
every request reads the newest LMDB snapshot, so rows written by other processes are
served at once.

Derived features are served too. Categorical encoders (``label_encoder``,
``one_hot``) run in Rust, the same function training rows go through. On-demand
features are Python functions: the server looks up their inputs in Rust and calls
:class:`OnDemandHandler` (this process's Python, on a blocking thread, holding the GIL)
with them and the request's ``"request"`` fields; only views with on-demand features
ever call Python. A model's raw ``request_features`` come from the same
``"request"`` object and are appended to its input as float32, as the Python predictor
appends them. Not served: non-numeric aggregations, which answer 501.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

import pyarrow as pa

from . import _core
from . import transforms as T
from .errors import InvalidArgumentError, PitstopError
from .models import onnxruntime_library

if TYPE_CHECKING:
    from .store import FeatureStore

DEFAULT_PORT = 6566
MAX_BODY = 1 << 20
#: How long a server worker keeps polling for the next request before it sleeps
#: (``rust/serve/spin.rs``): a request within it skips the CPU's wake-up.
DEFAULT_SPIN_US = 200


def _finite(x: Any) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _steps(chain: list[dict]) -> list[list]:
    """Fitted numeric steps as [kind, a, b, edges] (non-finite bounds as null)."""
    return [[s["step"], _finite(s.get("a")), _finite(s.get("b")),
             [float(e) for e in (s.get("edges") or [])]] for s in chain]


def _view_plan(fs: FeatureStore, view: Any, fitted: Any = None) -> dict:
    """The plan of one view; ``fitted`` (a model's fit) replaces the newest fit."""
    groups = view._groups()
    view._check_online(groups)
    selections, types, python_only = [], {}, {}
    for sel, g in zip(view.selections, groups):
        on = [[spine, key] for spine, key in sel.on]
        if sel.kind == "aggregation":
            selections.append({
                "kind": "aggregation", "table": g.online_table, "on": on,
                "outputs": list(sel.output_names), "closed": g.definition.closed,
                "specs": [list(s[:4]) for s in g._online_specs(sel)]})
            schema, by_name = g.source.schema, g.definition.by_name
            for f, o in zip(sel.features, sel.output_names):
                a = by_name[f]
                t = None if a.column is None or schema is None else schema.field(a.column).type
                numeric = a.op != "last_k" and not (a.op == "last" and t is not None and not (
                    pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)))
                types[o] = "float" if numeric else str(t)
                if not numeric:
                    python_only[o] = f"a non-numeric aggregation ({a.op} of {a.column})"
            continue
        selections.append({
            "kind": "group", "table": g.online_table, "on": on, "columns": list(sel.features),
            "outputs": list(sel.output_names), "ttl_ns": g.ttl_ns})
        schema = g.schema
        for f, o in zip(sel.features, sel.output_names):
            types[o] = None if schema is None or f not in schema.names else str(schema.field(f).type)
    on_demand = None
    outputs = [o for od in view.on_demand for o in od.outputs]
    for od in view.on_demand:
        for o in od.outputs:
            types[o] = str(od.outputs[o])
    if outputs and view.features[len(view.features) - len(outputs):] == outputs:
        on_demand = {"outputs": outputs, "request": list(view.request_fields)}
    else:
        python_only.update({o: "on-demand outputs are not the view's last features" for o in outputs})
    encoders: list[dict] = []
    for f, t in view.categorical.items():
        for n in T.encoded_names(f, t):
            types[n] = "float"
    transforms: dict[str, list] = {}
    if view.transforms:
        try:
            fitted = fitted or view.fitted_transforms()
        except PitstopError as e:
            for f in view.transforms:
                for n in T.encoded_names(f, view.categorical[f]) if f in view.categorical else [f]:
                    python_only[n] = f"its transforms are not fitted ({e})"
        else:
            for f, chain in fitted.numeric.items():
                transforms[f] = _steps(chain)
                types[f] = "float"
            grouped = {o for s in selections if s["kind"] == "group" for o in s["outputs"]}
            for f, fit in fitted.categorical.items():
                names = T.encoded_names(f, T.Transform(fit["transform"], {"top_k": fit["width"] - 1}))
                if f not in grouped:
                    python_only.update({n: "it encodes an aggregation" for n in names})
                    continue
                encoders.append({"feature": f, "kind": fit["transform"], "type": fit["type"],
                                 "categories": fit["categories"], "width": fit["width"],
                                 "names": names})
    return {"name": view.name, "version": view.version, "keys": view.keys,
            "features": view.features, "types": types, "selections": selections,
            "python_only": python_only, "transforms": transforms, "encoders": encoders,
            "on_demand": on_demand}


def plan_json(fs: FeatureStore) -> str:
    """The serving plan of every feature view and model in ``fs`` (see the module doc);
    a view that cannot be resolved is listed under ``broken`` with the reason."""
    views, broken = [], {}
    for row in fs.registry.query("SELECT name, version FROM feature_views ORDER BY name, version"):
        try:
            views.append(_view_plan(fs, fs.get_feature_view(row["name"], row["version"])))
        except PitstopError as e:
            broken[row["name"]] = str(e)
    models = []
    for m in fs.models.list():
        try:
            plan, why = _model_plan(fs, m)
        except PitstopError as e:
            plan, why = None, str(e)
        if plan is not None:
            views.append(plan)
        models.append({"name": m.name, "version": m.version, "view": m.view_name,
                       "view_version": m.view_version, "path": str(m.path), "sha256": m.sha256,
                       "inputs": m.inputs, "input_view": f"model:{m.name}:v{m.version}",
                       "request_features": list(m.request_features), "unservable": why})
    return json.dumps({"views": views, "models": models, "broken": broken,
                       "onnxruntime": onnxruntime_library()})


def _model_plan(fs: FeatureStore, m: Any) -> tuple[dict | None, str | None]:
    """A model's input plan (a hidden view: its view's features, the transforms fitted
    on its training snapshot), or why the server cannot run it."""
    view = fs.get_feature_view(m.view_name, m.view_version)
    if [*view.features, *m.request_features] != m.inputs:
        return None, f"it was registered for {m.inputs} but its view now gives {view.features}"
    fitted = None
    if view.transforms:
        if m.snapshot_id is None:
            return None, "its view has transforms but it was registered without training_snapshot"
        fitted = view.fitted_transforms(m.snapshot_id)
    plan = _view_plan(fs, view, fitted)
    if plan["python_only"]:
        return None, f"features {sorted(plan['python_only'])} are computed in Python"
    plan["name"] = f"model:{m.name}:v{m.version}"
    return plan, None


def _registry_stamp(fs: FeatureStore) -> tuple:
    out = []
    for suffix in ("", "-wal"):
        try:
            st = os.stat(f"{fs.path / 'registry.db'}{suffix}")
            out.append((st.st_size, st.st_mtime_ns))
        except FileNotFoundError:
            out.append(None)
    return tuple(out)


class Server:
    """A running ``pitstop serve`` (see :meth:`FeatureStore.serve_background`)."""

    def __init__(self, fs: FeatureStore, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT,
                 token: str | None = None, workers: int | None = None, max_batch: int = 10_000,
                 max_body: int = MAX_BODY, max_inflight: int = 256, timeout: float = 10.0,
                 watch_s: float = 1.0, ingest: bool = False, log_predictions: bool = False,
                 spin_us: int = DEFAULT_SPIN_US):
        for name, v in (("max_batch", max_batch), ("max_body", max_body),
                        ("max_inflight", max_inflight)):
            if not isinstance(v, int) or v < 1:
                raise InvalidArgumentError(f"{name} must be a positive integer; got {v!r}")
        if not isinstance(port, int) or not 0 <= port <= 65535:
            raise InvalidArgumentError(f"port must be an integer in 0..65535; got {port!r}")
        if token is not None and (not isinstance(token, str) or not token.strip()):
            raise InvalidArgumentError("token must be a non-empty string (or None for no auth)")
        if isinstance(spin_us, bool) or not isinstance(spin_us, int) or not 0 <= spin_us <= 1_000_000:
            raise InvalidArgumentError(f"spin_us must be an integer from 0 to 1,000,000; got {spin_us!r}")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise InvalidArgumentError(f"timeout must be a positive number of seconds; got {timeout!r}")
        workers = workers or min(os.cpu_count() or 1, 4)
        if not isinstance(workers, int) or workers < 1:
            raise InvalidArgumentError(f"workers must be a positive integer; got {workers!r}")
        handler = None
        if ingest:
            # POST /v1/ingest/{group}: rows written through FeatureGroup.push.
            from .streaming.http import IngestHandler

            fs._check_writable()
            handler = IngestHandler(fs)
        self._logs = None
        if log_predictions:
            fs._check_writable()
            self._logs = _PredictionLogs(fs)
        self._fs = fs
        self._stamp = _registry_stamp(fs)
        self._on_demand = OnDemandHandler(fs)
        self._core = _core.Server(
            fs.online._core, plan_json(fs), host=host, port=port,
            token=None if token is None else token.strip(), workers=workers,
            max_batch=max_batch, max_body=max_body, max_inflight=max_inflight,
            timeout_s=float(timeout), spin_us=spin_us, ingest=handler, log=self._logs, on_demand=self._on_demand)
        self.host, self.port = host, self._core.port
        self._stop = threading.Event()
        self._watch_s = watch_s
        self._watcher = threading.Thread(target=self._watch, name="pitstop-serve-registry",
                                         daemon=True)
        self._watcher.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def reload(self) -> None:
        """Resolves the registry again and hands the plan to the server."""
        self._stamp = _registry_stamp(self._fs)
        self._core.set_plan(plan_json(self._fs))
        self._on_demand.clear()

    def _watch(self) -> None:
        while not self._stop.wait(self._watch_s):
            if _registry_stamp(self._fs) != self._stamp:
                try:
                    self.reload()
                except Exception:  # a registry mid-change: the next tick retries
                    pass

    def metrics(self) -> str:
        return self._core.metrics()

    def stop(self, drain: float = 10.0) -> None:
        """Stops accepting; in-flight requests get up to ``drain`` seconds to finish."""
        self._stop.set()
        self._core.stop(float(drain))  # answers every request and hands over its log
        if self._logs is not None:
            self._logs.close()
        if self._watcher.is_alive() and self._watcher is not threading.current_thread():
            self._watcher.join()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self) -> None:
        """Blocks until SIGTERM or SIGINT (Ctrl-C), then drains and stops."""
        got = threading.Event()
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                old[sig] = signal.signal(sig, lambda *_: got.set())
        try:
            while not got.is_set() and not self._core.finished():
                got.wait(0.2)
        finally:
            self.stop()
            for sig, h in old.items():
                signal.signal(sig, h)


class OnDemandHandler:
    """What the Rust server calls for a view with on-demand features:
    ``(view key "name@version", x, rows, cols, request JSON)`` -> a pyarrow RecordBatch
    of the on-demand outputs in their declared types, or ``(status, message)`` for a
    request it refuses. ``x`` holds the view's looked-up features (float32, row-major,
    before transforms); the functions read them and the request fields exactly as
    ``get_feature_vectors`` does (:class:`pitstop.ondemand.FeatureColumns`,
    :func:`pitstop.ondemand.request_columns`), so the server's values are the bits a
    model sees in training."""

    def __init__(self, fs: FeatureStore):
        self._fs = fs
        self._views: dict[str, Any] = {}

    def clear(self) -> None:
        """Forgets resolved views (the registry changed)."""
        self._views = {}

    def _view(self, key: str) -> Any:
        view = self._views.get(key)
        if view is None:
            name, _, version = key.rpartition("@")
            model = re.fullmatch(r"model:(.*):v(\d+)", name)
            if model:
                m = self._fs.models.get(model.group(1), int(model.group(2)))
                view = self._fs.get_feature_view(m.view_name, m.view_version)
            else:
                view = self._fs.get_feature_view(name, int(version))
            self._views[key] = view
        return view

    def __call__(self, key: str, x: bytes, n: int, width: int, request: str) -> Any:
        import numpy as np

        from . import ondemand as OD

        try:
            view = self._view(key)
            req = json.loads(request)
            if n == 1 and isinstance(req, dict) and not any(isinstance(v, list) for v in req.values()):
                req = {k: [v] for k, v in req.items()}  # one entity's fields as scalars
            cols = OD.FeatureColumns(np.frombuffer(x, np.float32).reshape(n, width),
                                     OD._layout(view)[0], width)
            cols.update(OD.request_columns(req, view.request_fields, n, view.name))
            names, arrays = [], []
            for od in view.on_demand:
                out = od.compute(cols, n)
                for name in od.outputs:
                    names.append(name)
                    arrays.append(pa.array(out[name]))
                    cols[name] = out[name].astype(np.float32).astype(np.float64)
            return pa.RecordBatch.from_arrays(arrays, names=names)
        except PitstopError as e:
            return 400, str(e)


class _PredictionLogs:
    """The server's prediction log (``log_predictions=True``): each logged call goes to
    the log of a ``fs.predictor(model, version, log=True)``, the Delta table the Python
    predictor writes (``logs/<view>/v<N>/``), with the same columns."""

    def __init__(self, fs: FeatureStore):
        self._fs = fs
        self._predictors: dict[tuple[str, int], Any] = {}

    def __call__(self, model: str, version: int, entities: str, x: bytes, n: int, d: int,
                 y: bytes) -> None:
        import numpy as np

        p = self._predictors.get((model, version))
        if p is None:
            p = self._predictors[(model, version)] = self._fs.predictor(model, version, log=True)
        keys = pa.table(json.loads(entities))
        p._logger.log(keys, np.frombuffer(x, np.float32).reshape(n, d),
                      np.frombuffer(y, np.float32))

    def close(self) -> None:
        for p in self._predictors.values():
            p.close()
        self._predictors.clear()


def serve(fs: FeatureStore, **options: Any) -> None:
    """Runs the server until SIGTERM or Ctrl-C (see :class:`Server` for options)."""
    Server(fs, **options).wait()


@contextmanager
def serve_background(fs: FeatureStore, **options: Any) -> Iterator[Server]:
    """The server running beside this process's Python, stopped on exit; for tests
    and notebooks (``port=0`` picks a free port: read ``srv.url``)."""
    options.setdefault("port", 0)
    srv = Server(fs, **options)
    try:
        yield srv
    finally:
        srv.stop()


def wait_ready(url: str, timeout: float = 10.0) -> None:
    """Polls ``/healthz`` until the server answers (for scripts that start one)."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=1) as r:
                if r.status == 200:
                    return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def _cmd_serve(args: Any) -> int:
    from .store import FeatureStore

    token = None
    if args.token_file:
        try:
            with open(args.token_file, encoding="utf-8") as f:
                token = f.read().strip()
        except OSError as e:
            raise InvalidArgumentError(f"cannot read --token-file {args.token_file}: {e}") from None
        if not token:
            raise InvalidArgumentError(f"--token-file {args.token_file} is empty")
    # Read-only unless it takes writes: a feature server never writes (and a snapshot
    # has no offline tables to catch up from).
    writes = args.ingest or args.log_predictions
    huge = None
    if args.huge_pages and (Path(args.store) / "online" / "data.mdb").is_file():
        from .online import OnlineStore

        # Loaded before the store opens it (OnlineStore docs); kept open for the server.
        huge = OnlineStore(Path(args.store) / "online", readonly=not writes, huge_pages=True)
    fs = FeatureStore(args.store, create=False, readonly=not writes)
    srv = Server(fs, host=args.host, port=args.port, token=token, workers=args.workers,
                 max_batch=args.max_batch, max_inflight=args.max_inflight, timeout=args.timeout,
                 ingest=args.ingest, log_predictions=args.log_predictions, spin_us=args.spin_us)
    pages = "" if huge is None else f"; {huge.huge_page_bytes / 2**20:,.0f} MiB on 2 MiB pages"
    print(f"pitstop: serving {fs.path} on {srv.url} (auth: {'bearer token' if token else 'none'}"
          f"{pages}); SIGTERM or Ctrl-C stops", flush=True)
    srv.wait()
    print("pitstop: stopped", flush=True)
    return 0


def snapshot(store: str | os.PathLike[str], out: str | os.PathLike[str], *,
             compact: bool = True) -> int:
    """A servable copy of ``store`` in ``out`` (new or empty): the online store from one
    LMDB snapshot (writers keep running), the registry through SQLite's backup API and
    the model files; no offline tables. Returns the online copy's size in bytes."""
    import shutil
    import sqlite3
    from pathlib import Path

    from .online import OnlineStore

    src, dst = Path(store), Path(out)
    if not (src / "registry.db").is_file():
        raise InvalidArgumentError(f"{src} is not a pitstop store (no registry.db)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise InvalidArgumentError(f"{dst} exists and is not an empty directory; pick a new path")
    size = OnlineStore(src / "online", readonly=True).copy(dst / "online", compact=compact)
    with sqlite3.connect(f"file:{src / 'registry.db'}?mode=ro", uri=True) as a, \
            sqlite3.connect(dst / "registry.db") as b:
        a.backup(b)
    a.close()
    b.close()
    if (src / "models").is_dir():
        shutil.copytree(src / "models", dst / "models")
    return size


def _cmd_snapshot(args: Any) -> int:
    size = snapshot(args.store, args.out, compact=not args.no_compact)
    print(f"pitstop: wrote a servable snapshot of {args.store} to {args.out} "
          f"(online store {size:,} bytes)")
    return 0


def add_commands(sub: Any) -> None:
    """``pitstop serve`` and ``pitstop snapshot``."""
    import argparse

    s = sub.add_parser("serve", help="serve features over HTTP (a Rust server, no Python per request)")
    s.add_argument("--store", default=argparse.SUPPRESS, help="the store directory")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this "
                   "machine only; 0.0.0.0 exposes it, use --token-file then)")
    s.add_argument("--port", type=int, default=DEFAULT_PORT)
    s.add_argument("--token-file", help="a file holding the bearer token every route but "
                   "/healthz requires")
    s.add_argument("--workers", type=int, help="server threads (default: cores, at most 4)")
    s.add_argument("--max-batch", type=int, default=10_000, help="most entities per request")
    s.add_argument("--max-inflight", type=int, default=256,
                   help="requests handled at once; more get 503")
    s.add_argument("--timeout", type=float, default=10.0,
                   help="seconds a client has to send a request's headers and body")
    s.add_argument("--spin-us", type=int, default=DEFAULT_SPIN_US,
                   help="microseconds a worker keeps polling for the next request before it "
                   "sleeps (saves the CPU wake-up on a quiet machine; 0: sleep at once)")
    s.add_argument("--huge-pages", action="store_true", help="load the online store into "
                   "memory on 2 MiB pages first (faster lookups in a large store; see "
                   "OnlineStore(huge_pages=True))")
    s.add_argument("--ingest", action="store_true", help="also take rows on POST "
                   "/v1/ingest/{group} (opens the store writable; see pitstop.streaming.http)")
    s.add_argument("--log-predictions", action="store_true", help="log /v1/predict calls to "
                   "the prediction log the Python predictor writes (opens the store writable)")
    s.set_defaults(fn=_cmd_serve)
    s = sub.add_parser("snapshot", help="a consistent, compacted copy of the online store "
                       "(taken while writers run) to ship to serving replicas")
    s.add_argument("out", help="the new store directory to write (must not exist or be empty)")
    s.add_argument("--store", default=argparse.SUPPRESS, help="the store directory")
    s.add_argument("--no-compact", action="store_true", help="copy pages as they are")
    s.set_defaults(fn=_cmd_snapshot)
