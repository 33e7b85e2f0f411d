"""``FeatureStore``: a directory holding everything.

```
<store>/
  registry.db            SQLite: groups, views, snapshots, models (registry.py)
  offline/<group>/v<N>/  one Delta Lake table per group version (offline.py)
  online/                one LMDB environment for every online group (online.py)
  models/<name>/v<N>/    ONNX models
  locks/                 one lock file per group version (inserts serialize on it)
```

Opening a store catches every online group up with its offline table (see
``group.py``), so a crash between an insert's two writes heals itself.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._inputs import duration_ns
from ._names import check_name, check_version
from ._schema import NAN_POLICIES
from .errors import (
    AlreadyExistsError,
    CorruptStoreError,
    InvalidArgumentError,
    NotAStoreError,
    NotFoundError,
    PitstopError,
    StoreError,
    StoreOpenWarning,
)
from .group import FeatureGroup, Selection
from .offline import DeltaGroupTable
from .registry import Registry, dumps, now, registry_row
from .view import FeatureView, Snapshot


class FeatureStore:
    """Creates or opens the store at ``path``.

    ``readonly``: open for reading only (no catch-up, no writes; every write raises
    ``StoreError``). The default, None, opens read-only exactly when the store's files
    cannot be written (a read-only copy or mount), read-write otherwise.

    Opening never fails because of one damaged part: a feature group whose offline
    table or online catch-up fails, or a damaged online store, is reported with a
    :class:`~pitstop.errors.StoreOpenWarning` naming the fix, and the rest opens.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True,
                 readonly: bool | None = None):
        self.path = Path(path)
        exists = (self.path / "registry.db").exists()
        if not exists:
            if self.path.is_file():
                raise NotAStoreError(f"{self.path} is a file; a store is a directory")
            if self.path.exists() and any(self.path.iterdir()):
                raise NotAStoreError(
                    f"{self.path} exists, is not empty and is not a pitstop store (no "
                    "registry.db); choose an empty or new directory"
                )
            if not create or readonly:
                raise NotAStoreError(f"{self.path} is not a pitstop store (no registry.db)")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise NotAStoreError(f"cannot create a store at {self.path} ({e})") from None
        self.readonly = _read_only(self.path) if readonly is None else bool(readonly)
        if not self.readonly:
            for sub in ("offline", "online", "models", "locks"):
                (self.path / sub).mkdir(exist_ok=True)
        self.registry = Registry(self.path / "registry.db", create=not self.readonly,
                                 readonly=self.readonly)
        self._online = None
        if not self.readonly:
            self._catch_up_all()

    def _catch_up_all(self) -> None:
        """Brings every online group up to its offline table (see ``group.py``),
        reporting, not raising, what a damaged part prevents."""
        parts = [g for g in self.feature_groups() if g.online]
        try:
            parts += [a for a in self.aggregations() if a.online]
        except PitstopError as e:
            warnings.warn(StoreOpenWarning(f"aggregations were not caught up: {e}"), stacklevel=3)
        for group in parts:
            try:
                group.catch_up()
            except CorruptStoreError as e:
                warnings.warn(StoreOpenWarning(
                    f"{group!r} was not caught up: {e}"), stacklevel=3)
            except PitstopError as e:
                warnings.warn(StoreOpenWarning(
                    f"{group!r} was not caught up online ({e}); its offline data is intact"),
                    stacklevel=3)

    def _check_writable(self) -> None:
        if self.readonly:
            raise StoreError(
                f"the store at {self.path} is open read-only; open it with readonly=False "
                "(on a writable copy) to change it"
            )

    def repair_online(self) -> dict[str, int]:
        """Rebuilds the online store from the offline tables into a fresh LMDB
        environment (the online store is derived data). The old ``online/`` is kept
        beside it as ``online.damaged-<time>/`` for inspection; delete it when done.
        Returns the rows written per online group."""
        self._check_writable()
        if self._online is not None:
            self._online.close()
            self._online = None
        old = self.path / "online"
        if old.exists():
            stamp = time.strftime("%Y%m%dT%H%M%S")
            aside = self.path / f"online.damaged-{stamp}"
            n = 0
            while aside.exists():
                n += 1
                aside = self.path / f"online.damaged-{stamp}-{n}"
            old.rename(aside)
        old.mkdir()
        done = {}
        for part in [*self.feature_groups(), *self.aggregations()]:
            if part.online:
                done[part.online_table] = part.materialize()
        return done

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r})"

    def close(self) -> None:
        if self._online is not None and hasattr(self._online, "close"):
            self._online.close()
        self.registry.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def online(self):
        """The store's online store (LMDB), opened on first use."""
        if self._online is None:
            from .online import OnlineStore

            self._online = OnlineStore(self.path / "online", readonly=self.readonly)
        return self._online

    @property
    def models(self):
        """The model registry."""
        from .models import ModelRegistry

        return ModelRegistry(self)

    def predictor(self, name: str, version: int | None = None, **options: Any):
        """A :class:`~pitstop.predictor.Predictor` for a registered model (the latest
        version when ``version`` is None); options: threads, missing, defaults, log."""
        from .predictor import Predictor

        return Predictor(self, self.models.get(name, version), **options)

    def serve(self, **options: Any) -> None:
        """Serves features over HTTP until SIGTERM or Ctrl-C (``pitstop serve``): a Rust
        server reading the online store directly; options host, port, token, workers,
        max_batch, max_inflight, timeout (see :mod:`pitstop.serve`)."""
        from .serve import serve

        serve(self, **options)

    def serve_background(self, **options: Any):
        """A context manager running the server beside this process (port 0 by default:
        read ``srv.url``); the same options as :meth:`serve`."""
        from .serve import serve_background

        return serve_background(self, **options)

    # -- feature groups ------------------------------------------------------------

    def create_feature_group(
        self, name: str, *, version: int = 1, primary_key: str | list[str], event_time: str,
        created_time: str | None = None, online: bool = False, ttl: Any = None,
        description: str = "", nan_policy: str = "null",
    ) -> FeatureGroup:
        """Registers a feature group version; its schema comes from the first insert.
        ``nan_policy``: what an insert does with NaN in float features — "null" turns
        them into nulls (missing), "keep" stores them, "error" rejects the insert."""
        self._check_writable()
        check_name(name, "feature group")
        check_version(version, "feature group")
        pk = [primary_key] if isinstance(primary_key, str) else primary_key
        if (not isinstance(pk, list | tuple) or not pk
                or not all(isinstance(k, str) and k for k in pk) or len(set(pk)) != len(pk)):
            raise InvalidArgumentError(
                f"primary_key must name one or more distinct columns (a string or a list of "
                f"strings); got {primary_key!r}")
        pk = list(pk)
        for role, col in (("event_time", event_time), ("created_time", created_time)):
            if col is None and role == "created_time":
                continue
            if not isinstance(col, str) or not col:
                raise InvalidArgumentError(f"{role} must name a column (a string); got {col!r}")
            if col in pk:
                raise InvalidArgumentError(f"{role} '{col}' is also a primary-key column; "
                                           "a column has one role")
        if created_time is not None and created_time == event_time:
            raise InvalidArgumentError("created_time and event_time name the same column; "
                                       "leave created_time out or name another column")
        if not isinstance(description, str):
            raise InvalidArgumentError(f"description must be a string; got {description!r}")
        if nan_policy not in NAN_POLICIES:
            raise InvalidArgumentError(f"nan_policy must be one of {NAN_POLICIES}; got {nan_policy!r}")
        ttl_ns = duration_ns(ttl)
        orphan = self.path / "offline" / name / f"v{version}"
        with self.registry.tx() as db:
            if db.execute("SELECT 1 FROM feature_groups WHERE name=? AND version=?",
                          (name, version)).fetchone():
                raise AlreadyExistsError(
                    f"feature group '{name}' v{version} exists; get it with "
                    f"get_feature_group('{name}', {version}) or create version={version + 1}"
                )
            if DeltaGroupTable(orphan).version() >= 0:
                raise AlreadyExistsError(
                    f"{orphan} holds an offline table the registry does not know (a registry "
                    "restored from an older copy, or a damaged one); restore registry.db, or "
                    f"move that directory away to create feature group '{name}' v{version} anew"
                )
            self.registry.insert(db, "feature_groups", dict(
                name=name, version=version, primary_key=json.dumps(pk), event_time=event_time,
                created_time=created_time, online=int(bool(online)), ttl_ns=ttl_ns,
                nan_policy=nan_policy, description=description, created_at=now()))
        return self.get_feature_group(name, version)

    def get_feature_group(self, name: str, version: int | None = None) -> FeatureGroup:
        """A group version (the latest when ``version`` is None)."""
        return FeatureGroup(self, self._group_row(name, version))

    def feature_groups(self) -> list[FeatureGroup]:
        rows = self.registry.query("SELECT * FROM feature_groups ORDER BY name, version")
        return [FeatureGroup(self, r) for r in rows]

    def delete_feature_group(self, name: str, version: int) -> None:
        """Deletes a group version: registry entry, offline table and online rows.
        Refused while a feature view uses it."""
        group = self.get_feature_group(name, version)
        users = [f"'{v.name}' v{v.version}" for v in self.feature_views()
                 if any((s.group, s.version) == (name, version) for s in v.selections)]
        if users:
            raise InvalidArgumentError(
                f"feature group '{name}' v{version} is used by feature view(s) {', '.join(users)}; "
                "delete those first"
            )
        with self._lock(name, version):
            with self.registry.tx() as db:
                db.execute("DELETE FROM feature_groups WHERE name=? AND version=?", (name, version))
            if group.online:
                self.online.drop(group.online_table)
            shutil.rmtree(group.offline.path, ignore_errors=True)

    def _group_row(self, name: str, version: int | None) -> dict[str, Any]:
        return self._row("feature_groups", "feature group", name, version)

    def _row(self, table: str, what: str, name: str, version: int | None) -> dict[str, Any]:
        """The registry row of ``name`` at ``version`` (the latest when None)."""
        check_name(name, what)
        if version is not None:
            check_version(version, what)
        if version is None:
            row = self.registry.one(
                f"SELECT * FROM {table} WHERE name=? ORDER BY version DESC LIMIT 1", (name,))
        else:
            row = self.registry.one(f"SELECT * FROM {table} WHERE name=? AND version=?", (name, version))
        if row is None:
            known = sorted({r["name"] for r in self.registry.query(f"SELECT name FROM {table}")})
            which = f"'{name}'" + ("" if version is None else f" v{version}")
            raise NotFoundError(f"no {what} {which}; the store has {known}")
        return row

    def _set_schema(self, group: FeatureGroup, blob: bytes) -> None:
        with self.registry.tx() as db:
            self.registry.update(db, "feature_groups", "name=? AND version=? AND schema IS NULL",
                                 (group.name, group.version), {"schema": blob})

    @contextmanager
    def _lock(self, name: str, version: int) -> Iterator[None]:
        """Serializes writers of one group version across processes (released by the OS
        if the holder dies)."""
        self._check_writable()
        with open(self.path / "locks" / f"{name}.v{version}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def stream(self, source: Any, *, into: FeatureGroup, transform: Any = None,
               max_batch: int = 5000, max_delay: Any = "100ms", offline_flush: Any = "10s",
               name: str | None = None):
        """A :class:`~pitstop.streaming.StreamJob` reading ``source`` (e.g.
        ``pitstop.sources.RedisStream(...)``) into feature group ``into``: micro-batches
        of up to ``max_batch`` events or ``max_delay``, online in one LMDB transaction
        with the source positions, offline every ``offline_flush``. ``job.run()``,
        ``job.run_for("30s")``, ``job.stats()``."""
        from .streaming import StreamJob

        return StreamJob(source, into, transform=transform, max_batch=max_batch,
                         max_delay=max_delay, offline_flush=offline_flush, name=name)

    # -- aggregations -------------------------------------------------------------

    def create_aggregation(
        self, name: str, *, source: FeatureGroup, aggregations: list, version: int = 1,
        key: str | list[str] | None = None, closed: str = "left", online: bool = False,
        description: str = "",
    ):
        """Registers window aggregations of ``source``'s events (see ``pitstop.agg``),
        keyed by ``source``'s primary key or by ``key``. With ``online=True`` every
        insert into ``source`` keeps their online state (history is merged in now)."""
        from . import agg as A
        from .aggregation import check_definition

        self._check_writable()
        check_name(name, "aggregation")
        check_version(version, "aggregation")
        if not isinstance(source, FeatureGroup):
            raise InvalidArgumentError(f"source must be a FeatureGroup; got {source!r}")
        source = self.get_feature_group(source.name, source.version)
        if closed not in A.CLOSED:
            raise InvalidArgumentError(f"closed must be one of {A.CLOSED}; got {closed!r}")
        keys = source.primary_key if key is None else [key] if isinstance(key, str) else key
        if (not isinstance(keys, list | tuple) or not keys
                or not all(isinstance(k, str) and k for k in keys)):
            raise InvalidArgumentError(f"key must name one or more columns; got {key!r}")
        aggs = A.flatten(aggregations)
        check_definition(source, aggs, list(keys), bool(online))
        with self.registry.tx() as db:
            if db.execute("SELECT 1 FROM aggregations WHERE name=? AND version=?",
                          (name, version)).fetchone():
                raise AlreadyExistsError(
                    f"aggregation '{name}' v{version} exists; get it with get_aggregation or "
                    f"create version={version + 1}")
            self.registry.insert(db, "aggregations", dict(
                name=name, version=version, source_name=source.name,
                source_version=source.version, key_cols=json.dumps(list(keys)),
                spec=dumps([a.to_json() for a in aggs]), closed=closed, online=int(bool(online)),
                description=description if isinstance(description, str) else str(description),
                created_at=now()))
        made = self.get_aggregation(name, version)
        if made.online and source.offline.version() >= 0:
            made.catch_up()  # the history so far
        return made

    def get_aggregation(self, name: str, version: int | None = None):
        """An aggregation version (the latest when ``version`` is None)."""
        from .aggregation import Aggregation

        return Aggregation(self, self._row("aggregations", "aggregation", name, version))

    def aggregations(self) -> list:
        from .aggregation import Aggregation

        rows = self.registry.query("SELECT * FROM aggregations ORDER BY name, version")
        return [Aggregation(self, r) for r in rows]

    def _online_aggregations(self, group: FeatureGroup) -> list:
        return [a for a in self.aggregations() if a.online
                and (a.source_name, a.source_version) == (group.name, group.version)]

    # -- feature views ------------------------------------------------------------

    def create_feature_view(self, name: str, *, version: int = 1, features: list[Selection],
                            labels: list[str] | tuple[str, ...] = (),
                            on_demand: list[Any] | None = None,
                            transforms: dict[str, Any] | None = None,
                            description: str = "") -> FeatureView:
        """Registers a feature view: the features a model reads (``fg.select(...)``),
        request-time features computed by ``on_demand`` functions, and the
        model-dependent ``transforms`` of features (fitted by ``train_test_split``);
        see :mod:`pitstop.transforms`."""
        check_name(name, "feature view")
        check_version(version, "feature view")
        if not features or not all(isinstance(s, Selection) for s in features):
            raise InvalidArgumentError(
                "features must be a non-empty list of fg.select([...]) / fg.select_all()"
            )
        seen: dict[str, str] = {}
        for s in features:
            if s.kind == "aggregation":
                self.get_aggregation(s.group, s.version)
            else:
                self.get_feature_group(s.group, s.version)
            for n in s.output_names:
                if n in seen:
                    raise InvalidArgumentError(
                        f"feature '{n}' comes from both '{seen[n]}' and '{s.group}'; give one "
                        "selection a prefix (fg.select([...], prefix='...'))"
                    )
                seen[n] = s.group
        extra = _transforms_row(list(seen), on_demand, transforms)
        with self.registry.tx() as db:
            if db.execute("SELECT 1 FROM feature_views WHERE name=? AND version=?",
                          (name, version)).fetchone():
                raise AlreadyExistsError(
                    f"feature view '{name}' v{version} exists; get it with get_feature_view or "
                    f"create version={version + 1}"
                )
            self.registry.insert(db, "feature_views", dict(
                name=name, version=version, spec=dumps([s.to_json() for s in features]),
                labels=dumps(list(labels)), description=description, created_at=now()))
            if extra is not None:
                self.registry.insert(db, "view_transforms", dict(
                    view_name=name, view_version=version, **extra))
        return self.get_feature_view(name, version)

    def get_feature_view(self, name: str, version: int | None = None, *,
                         allow_changed: bool = False) -> FeatureView:
        """A feature view; ``allow_changed=True`` opens one whose on-demand functions'
        source changed since registration (with a warning instead of an error)."""
        return FeatureView(self, self._row("feature_views", "feature view", name, version),
                           allow_changed=allow_changed)

    def _has_table(self, table: str) -> bool:
        """Whether the registry has ``table`` (a read-only registry made by an older
        pitstop may lack the newer ones)."""
        return bool(self.registry.query(
            "SELECT name FROM sqlite_master WHERE type='table' AND name=?", (table,)))

    def _view_transforms(self, name: str, version: int) -> dict | None:
        if not self._has_table("view_transforms"):
            return None
        return self.registry.one(
            "SELECT * FROM view_transforms WHERE view_name=? AND view_version=?", (name, version))

    def _fits(self, snapshot_id: int) -> str | None:
        if not self._has_table("transform_fits"):
            return None
        row = self.registry.one("SELECT fits FROM transform_fits WHERE snapshot_id=?", (snapshot_id,))
        return None if row is None else row["fits"]

    def _latest_fitted(self, name: str, version: int) -> int | None:
        """The newest snapshot of a view with fitted transforms."""
        if not self._has_table("transform_fits"):
            return None
        row = self.registry.one(
            "SELECT f.snapshot_id AS id FROM transform_fits f JOIN snapshots s ON s.id = "
            "f.snapshot_id WHERE s.view_name=? AND s.view_version=? ORDER BY f.snapshot_id DESC "
            "LIMIT 1", (name, version))
        return None if row is None else int(row["id"])

    def _record_fits(self, snapshot_id: int | None, fits: str) -> None:
        if snapshot_id is None or self.readonly:
            return
        with self.registry.tx() as db:
            db.execute("DELETE FROM transform_fits WHERE snapshot_id=?", (snapshot_id,))
            self.registry.insert(db, "transform_fits", dict(snapshot_id=snapshot_id, fits=fits))

    def feature_views(self) -> list[FeatureView]:
        rows = self.registry.query("SELECT * FROM feature_views ORDER BY name, version")
        return [FeatureView(self, r) for r in rows]

    def delete_feature_view(self, name: str, version: int) -> None:
        """Deletes a view version; refused while a registered model reads it."""
        self._check_writable()
        self.get_feature_view(name, version)
        users = self.registry.query(
            "SELECT name, version FROM models WHERE view_name=? AND view_version=? "
            "ORDER BY name, version", (name, version))
        if users:
            which = ", ".join(f"'{u['name']}' v{u['version']}" for u in users)
            raise InvalidArgumentError(
                f"feature view '{name}' v{version} is used by model(s) {which}, which could no "
                "longer be served; delete those model versions first (fs.models.delete)"
            )
        with self.registry.tx() as db:
            db.execute("DELETE FROM feature_views WHERE name=? AND version=?", (name, version))
            db.execute("DELETE FROM view_transforms WHERE view_name=? AND view_version=?",
                       (name, version))

    def statistics(self, source: Any, *, version: int | None = None, as_of: Any = None):
        """Feature statistics (a pyarrow Table, one row per feature) of a feature group
        (by name), a feature view, or any table; see :mod:`pitstop.monitoring.stats`."""
        from .monitoring.stats import statistics

        return statistics(self, source, version=version, as_of=as_of)

    def _record_snapshot(self, view: FeatureView, tables: dict[str, int]) -> Snapshot:
        if self.readonly:  # not recorded: the result still carries the versions it read
            return Snapshot(None, view.name, view.version, tables)
        with self.registry.tx() as db:
            sid = self.registry.insert(db, "snapshots", dict(
                view_name=view.name, view_version=view.version, tables=dumps(tables),
                created_at=now()))
        return Snapshot(sid, view.name, view.version, tables)

    def _snapshot(self, sid: int) -> Snapshot:
        if isinstance(sid, bool) or not isinstance(sid, int) or not 0 <= sid < 2**63:
            raise InvalidArgumentError(f"a training snapshot id is a non-negative integer; got {sid!r}")
        row = self.registry.one("SELECT * FROM snapshots WHERE id=?", (sid,))
        if row is None:
            raise NotFoundError(f"no training snapshot with id {sid}")
        with registry_row(f"training snapshot {sid}"):
            tables = {str(k): int(v) for k, v in json.loads(row["tables"]).items()}
            return Snapshot(sid, row["view_name"], int(row["view_version"]), tables)


def _read_only(path: Path) -> bool:
    """Whether the store's files cannot be written (a read-only mount or copy)."""
    try:
        if os.statvfs(path).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        pass
    registry = path / "registry.db"
    return not os.access(path, os.W_OK) or (registry.exists() and not os.access(registry, os.W_OK))


def _transforms_row(features: list[str], on_demand: Any, transforms: Any) -> dict | None:
    """The ``view_transforms`` row of a new view (None when it has neither), checked:
    on-demand outputs must not clash with features, transforms must name features."""
    from .ondemand import OnDemand
    from .transforms import chains

    if on_demand is None and not transforms:
        return None
    funcs = list(on_demand or [])
    if not all(isinstance(f, OnDemand) for f in funcs):
        raise InvalidArgumentError(
            "on_demand must be a list of functions decorated with @pitstop.on_demand(...)")
    names = list(features)
    for f in funcs:
        clash = [o for o in f.outputs if o in names]
        if clash:
            raise InvalidArgumentError(
                f"on-demand function {f.path} outputs {clash}, which the view already has; "
                "rename the outputs")
        names.extend(f.outputs)
    chained = chains(transforms)
    unknown = [f for f in chained if f not in names]
    if unknown:
        raise InvalidArgumentError(
            f"transforms name {unknown}, which are not features of the view ({names})")
    return dict(on_demand=dumps([f.to_json() for f in funcs]),
                transforms=dumps({k: [t.to_json() for t in v] for k, v in chained.items()}))

