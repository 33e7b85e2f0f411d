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
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._inputs import duration_ns
from ._names import check_name, check_version
from ._schema import NAN_POLICIES
from .errors import AlreadyExistsError, InvalidArgumentError, NotAStoreError, NotFoundError
from .group import FeatureGroup, Selection
from .registry import Registry, dumps, now
from .view import FeatureView, Snapshot


class FeatureStore:
    """Creates or opens the store at ``path``."""

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True):
        self.path = Path(path)
        exists = (self.path / "registry.db").exists()
        if not exists:
            if self.path.exists() and any(self.path.iterdir()):
                raise NotAStoreError(
                    f"{self.path} exists, is not empty and is not a pitstop store (no "
                    "registry.db); choose an empty or new directory"
                )
            if not create:
                raise NotAStoreError(f"{self.path} is not a pitstop store (no registry.db)")
            self.path.mkdir(parents=True, exist_ok=True)
        for sub in ("offline", "online", "models", "locks"):
            (self.path / sub).mkdir(exist_ok=True)
        self.registry = Registry(self.path / "registry.db", create=True)
        self._online = None
        for group in self.feature_groups():
            if group.online:
                group.catch_up()

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

            self._online = OnlineStore(self.path / "online")
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

    # -- feature groups ------------------------------------------------------------

    def create_feature_group(
        self, name: str, *, version: int = 1, primary_key: str | list[str], event_time: str,
        created_time: str | None = None, online: bool = False, ttl: Any = None,
        description: str = "", nan_policy: str = "null",
    ) -> FeatureGroup:
        """Registers a feature group version; its schema comes from the first insert.
        ``nan_policy``: what an insert does with NaN in float features — "null" turns
        them into nulls (missing), "keep" stores them, "error" rejects the insert."""
        check_name(name, "feature group")
        check_version(version, "feature group")
        pk = [primary_key] if isinstance(primary_key, str) else list(primary_key)
        if not pk or not all(isinstance(k, str) for k in pk):
            raise InvalidArgumentError(f"primary_key must name one or more columns; got {primary_key!r}")
        if nan_policy not in NAN_POLICIES:
            raise InvalidArgumentError(f"nan_policy must be one of {NAN_POLICIES}; got {nan_policy!r}")
        ttl_ns = duration_ns(ttl)
        with self.registry.tx() as db:
            if db.execute("SELECT 1 FROM feature_groups WHERE name=? AND version=?",
                          (name, version)).fetchone():
                raise AlreadyExistsError(
                    f"feature group '{name}' v{version} exists; get it with "
                    f"get_feature_group('{name}', {version}) or create version={version + 1}"
                )
            db.execute(
                "INSERT INTO feature_groups (name, version, primary_key, event_time, created_time,"
                " online, ttl_ns, nan_policy, description, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (name, version, json.dumps(pk), event_time, created_time, int(bool(online)),
                 ttl_ns, nan_policy, description, now()),
            )
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
            db.execute("UPDATE feature_groups SET schema=? WHERE name=? AND version=? AND schema IS NULL",
                       (blob, group.name, group.version))

    def _watermark(self, group: FeatureGroup) -> int:
        return int(self._group_row(group.name, group.version)["online_watermark"])

    def _set_watermark(self, group: FeatureGroup, version: int) -> None:
        with self.registry.tx() as db:
            db.execute("UPDATE feature_groups SET online_watermark=? WHERE name=? AND version=?",
                       (version, group.name, group.version))

    @contextmanager
    def _lock(self, name: str, version: int) -> Iterator[None]:
        """Serializes writers of one group version across processes (released by the OS
        if the holder dies)."""
        with open(self.path / "locks" / f"{name}.v{version}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # -- feature views ------------------------------------------------------------

    def create_feature_view(self, name: str, *, version: int = 1, features: list[Selection],
                            labels: list[str] | tuple[str, ...] = (),
                            description: str = "") -> FeatureView:
        """Registers a feature view: the features a model reads (``fg.select(...)``)."""
        check_name(name, "feature view")
        check_version(version, "feature view")
        if not features or not all(isinstance(s, Selection) for s in features):
            raise InvalidArgumentError(
                "features must be a non-empty list of fg.select([...]) / fg.select_all()"
            )
        seen: dict[str, str] = {}
        for s in features:
            self.get_feature_group(s.group, s.version)
            for n in s.output_names:
                if n in seen:
                    raise InvalidArgumentError(
                        f"feature '{n}' comes from both '{seen[n]}' and '{s.group}'; give one "
                        "selection a prefix (fg.select([...], prefix='...'))"
                    )
                seen[n] = s.group
        with self.registry.tx() as db:
            if db.execute("SELECT 1 FROM feature_views WHERE name=? AND version=?",
                          (name, version)).fetchone():
                raise AlreadyExistsError(
                    f"feature view '{name}' v{version} exists; get it with get_feature_view or "
                    f"create version={version + 1}"
                )
            db.execute(
                "INSERT INTO feature_views VALUES (?,?,?,?,?,?)",
                (name, version, dumps([s.to_json() for s in features]), dumps(list(labels)),
                 description, now()),
            )
        return self.get_feature_view(name, version)

    def get_feature_view(self, name: str, version: int | None = None) -> FeatureView:
        return FeatureView(self, self._row("feature_views", "feature view", name, version))

    def feature_views(self) -> list[FeatureView]:
        rows = self.registry.query("SELECT * FROM feature_views ORDER BY name, version")
        return [FeatureView(self, r) for r in rows]

    def delete_feature_view(self, name: str, version: int) -> None:
        self.get_feature_view(name, version)
        with self.registry.tx() as db:
            db.execute("DELETE FROM feature_views WHERE name=? AND version=?", (name, version))

    def _record_snapshot(self, view: FeatureView, tables: dict[str, int]) -> Snapshot:
        with self.registry.tx() as db:
            cur = db.execute(
                "INSERT INTO snapshots (view_name, view_version, tables, created_at) VALUES (?,?,?,?)",
                (view.name, view.version, dumps(tables), now()))
            sid = int(cur.lastrowid or 0)
        return Snapshot(sid, view.name, view.version, tables)

    def _snapshot(self, sid: int) -> Snapshot:
        row = self.registry.one("SELECT * FROM snapshots WHERE id=?", (sid,))
        if row is None:
            raise NotFoundError(f"no training snapshot with id {sid}")
        return Snapshot(sid, row["view_name"], row["view_version"], json.loads(row["tables"]))
