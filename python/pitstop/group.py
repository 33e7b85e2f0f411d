"""Feature groups: the tables feature pipelines write.

A group version has a primary key, an event-time column, optionally a created-time
column, a TTL, and a schema fixed by its first insert. ``insert`` validates, appends to
the group's Delta table in one commit and, for an online group, upserts the online store
and then advances the group's *watermark* (the last offline version the online store
holds). A crash between the two leaves the watermark behind; the next
``FeatureStore(...)`` open (or ``catch_up``) replays the missing commits — the online
upsert is idempotent, so replaying is always safe.
"""

from __future__ import annotations

import datetime as dt
import json
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.compute as pc

from . import _schema
from ._inputs import as_table
from ._progress import Progress
from .offline import DeltaGroupTable
from .registry import registry_row, schema_from_blob, schema_to_blob
from .errors import (
    ColumnTypeError,
    DataError,
    InvalidArgumentError,
    OnlineLagWarning,
    PitstopError,
    SchemaError,
)

if TYPE_CHECKING:
    from .store import FeatureStore


@dataclass(frozen=True)
class Selection:
    """Some features of one group (or aggregation: ``kind="aggregation"``) version, as
    a feature view uses them. ``on`` maps spine column names to its key columns."""

    group: str
    version: int
    features: tuple[str, ...]
    on: tuple[tuple[str, str], ...]
    prefix: str | None = None
    kind: str = "group"

    @property
    def output_names(self) -> list[str]:
        return [(self.prefix or "") + f for f in self.features]

    def to_json(self) -> dict[str, Any]:
        d = {"group": self.group, "version": self.version, "features": list(self.features),
             "on": [list(p) for p in self.on], "prefix": self.prefix}
        if self.kind != "group":
            d["kind"] = self.kind
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Selection:
        kind = d.get("kind", "group")
        if kind not in ("group", "aggregation"):
            raise ValueError(f"selection kind {kind!r}")
        return cls(d["group"], d["version"], tuple(d["features"]),
                   tuple((a, b) for a, b in d["on"]), d.get("prefix"), kind)


class OnlineTable:
    """What every online table of a store shares — a group's rows, an aggregation's
    states: it is derived from one Delta table (``_offline_table()``), holds that
    table's version as its watermark (written with its rows), is caught up by replaying
    the commits past the watermark, and is rebuilt beside the live table and swapped
    in. Subclasses give ``online_table``, ``_label`` and ``_prepare_online(target,
    table)`` (the validated, encoded write of ``table`` into ``target``)."""

    _store: FeatureStore
    online_table: str
    _label: str

    def _offline_table(self) -> DeltaGroupTable:
        raise NotImplementedError

    def _prepare_online(self, target: str, table: pa.Table):
        raise NotImplementedError

    @property
    def _rebuild_name(self) -> str:
        return f"{self.online_table}#rebuild"

    def _catch_up_locked(self) -> int:
        online, offline = self._store.online, self._offline_table()
        rebuild = self._rebuild_name
        if rebuild in online.tables():
            online.drop(rebuild)  # left by a rebuild that was killed before its swap
        latest = offline.version()
        mark = online.watermark(self.online_table)
        mark = -1 if mark is None else mark
        if mark == latest:
            return 0
        if mark > latest:  # the offline table is older than what is served: rebuild
            return self._materialize_locked()
        _, table = offline.read(version=latest, since=mark)
        try:
            self._prepare_online(self.online_table, table).commit(watermark=latest)
            return table.num_rows
        except (DataError, SchemaError, ColumnTypeError):
            pass  # some commit cannot be served (written before it was checked): one by one
        replayed = 0
        for v in range(mark + 1, latest + 1):
            part = table.filter(pc.equal(pc.shift_right(table.column(_schema.SEQ), 32), v))
            try:
                self._prepare_online(self.online_table, part).commit(watermark=v)
                replayed += part.num_rows
            except (DataError, SchemaError, ColumnTypeError) as e:
                warnings.warn(OnlineLagWarning(
                    f"{self._label}: offline version {v} cannot be served online ({e}); "
                    "skipped (its rows stay offline)"), stacklevel=3)
                self._prepare_online(self.online_table, part.slice(0, 0)).commit(watermark=v)
        return replayed

    def _materialize_locked(self) -> int:
        online, offline = self._store.online, self._offline_table()
        latest = offline.version()
        online.drop(self._rebuild_name)
        if latest < 0:
            online.drop(self.online_table)
            return 0
        _, table = offline.read(version=latest)
        self._prepare_online(self._rebuild_name, table).commit(watermark=latest)
        online.replace(self.online_table, self._rebuild_name)
        return table.num_rows


class FeatureGroup(OnlineTable):
    """One version of a feature group. Get it from a :class:`FeatureStore`."""

    def __init__(self, store: FeatureStore, row: dict[str, Any]):
        self._store = store
        self.name: str = row["name"]
        self.version: int = row["version"]
        with registry_row(f"feature group '{self.name}' v{self.version}"):
            self.primary_key: list[str] = list(json.loads(row["primary_key"]))
            if not self.primary_key or not all(isinstance(k, str) for k in self.primary_key):
                raise ValueError(f"primary key {self.primary_key!r}")
            self.event_time: str = row["event_time"]
            self.created_time: str | None = row["created_time"]
            self.online: bool = bool(row["online"])
            self.ttl_ns: int | None = None if row["ttl_ns"] is None else int(row["ttl_ns"])
            self.nan_policy: str = row["nan_policy"]
            self.description: str = row["description"]
            self._schema_blob = row["schema"]
        self.offline = DeltaGroupTable(store.path / "offline" / self.name / f"v{self.version}")

    def __repr__(self) -> str:
        return f"FeatureGroup({self.name!r}, version={self.version}, primary_key={self.primary_key})"

    @property
    def ttl(self) -> dt.timedelta | None:
        return None if self.ttl_ns is None else dt.timedelta(microseconds=self.ttl_ns / 1000)

    @property
    def online_table(self) -> str:
        """The group version's table name in the online store."""
        return f"{self.name}.v{self.version}"

    @property
    def _label(self) -> str:
        return f"feature group '{self.name}' v{self.version}"

    def _offline_table(self) -> DeltaGroupTable:
        return self.offline

    @property
    def schema(self) -> pa.Schema | None:
        """The stored columns (None until the first insert)."""
        s = schema_from_blob(self._schema_blob)
        return None if s is None else pa.schema([f for f in s if f.name != _schema.SEQ])

    @property
    def features(self) -> list[str]:
        """The value columns: everything but keys, event time and created time."""
        s = self.schema
        if s is None:
            return []
        return [f.name for f in s if f.name not in self._columns.special]

    @property
    def _columns(self) -> _schema.GroupColumns:
        return _schema.GroupColumns(self.name, tuple(self.primary_key), self.event_time,
                                    self.created_time)

    # -- writing -------------------------------------------------------------------

    def insert(self, data: Any) -> int:
        """Validates ``data`` (pandas / polars / pyarrow / DuckDB / any Arrow stream),
        appends it to the offline table in one commit and, for an online group, upserts
        the online store. Returns the new offline version.

        Everything that can reject the data runs first, the online write's checks and
        encoding included; only then is anything made durable: the Delta commit, then
        the online rows together with the group's watermark in one LMDB transaction.
        So a failed insert leaves the store as it was, and once the offline commit has
        happened the insert succeeds: should the online write then fail (a full disk,
        a damaged online store) the rows are not lost, a ``OnlineLagWarning`` says so,
        and the next insert or ``FeatureStore(...)`` open replays them."""
        progress = Progress(f"insert into {self.name} v{self.version}")
        table = as_table(data, f"data for feature group '{self.name}'")
        rows = table.num_rows
        progress.step("validating", rows)
        table = _schema.validate(_schema.normalize(table), self._columns, self.nan_policy)
        with self._store._lock(self.name, self.version):
            self._store._check_writable()
            self._refresh()
            schema = self._stored_schema()
            first = schema is None
            if first:
                schema = _schema.with_seq(table.slice(0, 0), 0).schema
            table = _schema.conform(table, schema, self.name)
            table = _schema.with_seq(table, self.offline.version() + 1)
            prepared = []
            if self.online:
                self._catch_up_locked()
                prepared.append(self._prepare_online(self.online_table, table))
            for a in self._store._online_aggregations(self):
                a._check(table.schema)
                a._catch_up_locked()
                prepared.append(a._prepare_online(a.online_table, table))
            progress.step("writing offline (Delta)", rows)
            version = self.offline.append(table)
            if first:
                self._store._set_schema(self, schema_to_blob(schema))
                self._schema_blob = schema_to_blob(schema)
            if prepared:
                progress.step("writing online (LMDB)", rows)
            for p in prepared:
                try:
                    p.commit(watermark=version)
                except PitstopError as e:
                    warnings.warn(OnlineLagWarning(
                        f"feature group '{self.name}' v{self.version}: offline version {version} "
                        f"is committed but an online write failed ({e}); the next insert or "
                        "FeatureStore open replays it"), stacklevel=2)
        progress.done(rows)
        return version

    def push(self, data: Any, *, offline_flush: Any = "10s") -> int:
        """Low-latency write from a service, with a stream batch's rules: ``data`` is
        online when this returns (rows and a buffered copy in one LMDB transaction;
        newest event time per key wins; the group's aggregations count each row once)
        and reaches the offline table at the first push ``offline_flush`` after the
        oldest unflushed one (``pitstop.streaming.writer``). Returns the rows."""
        from ._inputs import duration_ns
        from .streaming.writer import push

        return push(self, data, offline_flush=(duration_ns(offline_flush, "offline_flush") or 0) / 1e9)

    def _prepare_online(self, name: str, table: pa.Table):
        # An empty batch still registers the table, so lookups find it (all missing).
        return self._store.online.prepare_write(
            name,
            table.drop_columns([_schema.SEQ]),
            keys=self.primary_key,
            event_time=self.event_time,
            created_time=self.created_time,
        )

    def _stored_schema(self) -> pa.Schema | None:
        """The registered schema; for a group whose first commit landed but whose
        schema registration did not (a crash between the two), the Delta table's."""
        schema = schema_from_blob(self._schema_blob)
        if schema is None and self.offline.version() >= 0:
            schema = self.offline.schema()
            self._store._set_schema(self, schema_to_blob(schema))
            self._schema_blob = schema_to_blob(schema)
        return schema

    def catch_up(self) -> int:
        """Replays offline commits the online table lacks (its watermark, stored with
        its rows, is behind the offline table: a crash or failure between an insert's
        two writes, an ``online/`` deleted or restored from a copy); returns the rows
        replayed. Commits that cannot be replayed are skipped with a warning."""
        if not self.online:
            return 0
        with self._store._lock(self.name, self.version):
            return self._catch_up_locked()

    def materialize(self) -> int:
        """Rebuilds the online table from the whole offline table; returns rows written.
        The new table is built beside the live one and swapped in with one
        transaction: readers in every process see the old rows or the new ones, never
        a missing table, and a kill at any point leaves the old table serving."""
        if not self.online:
            raise InvalidArgumentError(
                f"feature group '{self.name}' v{self.version} is offline only; create a version "
                "with online=True to serve it online"
            )
        with self._store._lock(self.name, self.version):
            self._store._check_writable()
            return self._materialize_locked()

    def _refresh(self) -> None:
        row = self._store._group_row(self.name, self.version)
        self._schema_blob = row["schema"]

    # -- reading -------------------------------------------------------------------

    def read(self, *, as_of: int | dt.datetime | str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """The offline rows in insertion order: the latest, or as of a past table version
        (int) or time (datetime / ISO string)."""
        version, when = _as_of(as_of)
        if columns is not None:
            if isinstance(columns, str) or not all(isinstance(c, str) for c in columns):
                raise InvalidArgumentError(f"columns must be a list of column names; got {columns!r}")
            known = [] if self.schema is None else self.schema.names
            unknown = [c for c in columns if c not in known]
            if unknown:
                raise SchemaError(
                    f"feature group '{self.name}' v{self.version} has no column(s) {unknown}; "
                    f"its columns are {known}")
        _, table = self.offline.read(version=version, as_of=when, columns=columns)
        return table.drop_columns([_schema.SEQ])

    def select(self, features: list[str], *, on: dict[str, str] | None = None,
               prefix: str | None = None) -> Selection:
        """Features of this group for a feature view. ``on`` maps spine column names to
        this group's primary-key columns when they are named differently."""
        if isinstance(features, str):
            features = [features]
        known = self.features
        if self.schema is None:
            raise SchemaError(
                f"feature group '{self.name}' v{self.version} has no data yet, so no features to "
                "select; insert first"
            )
        unknown = [f for f in features if f not in known]
        if unknown or not features:
            raise SchemaError(
                f"feature group '{self.name}' v{self.version} has no feature(s) {unknown}; "
                f"its features are {known}"
            )
        mapping = on or {k: k for k in self.primary_key}
        if sorted(mapping.values()) != sorted(self.primary_key):
            raise InvalidArgumentError(
                f"on={on!r} must map a spine column to each primary-key column of "
                f"'{self.name}' ({self.primary_key})"
            )
        ordered = tuple(next((s, p) for s, p in mapping.items() if p == k) for k in self.primary_key)
        return Selection(self.name, self.version, tuple(features), ordered, prefix)

    def select_all(self, *, on: dict[str, str] | None = None, prefix: str | None = None) -> Selection:
        return self.select(self.features, on=on, prefix=prefix)


def _as_of(as_of: int | dt.datetime | str | None) -> tuple[int | None, dt.datetime | None]:
    if as_of is None:
        return None, None
    if isinstance(as_of, bool):
        raise InvalidArgumentError("as_of must be a table version (int) or a time")
    if isinstance(as_of, int):
        if not 0 <= as_of < 2**63:
            raise InvalidArgumentError(f"as_of={as_of} is not a table version (0 or more)")
        return as_of, None
    if isinstance(as_of, str):
        try:
            as_of = dt.datetime.fromisoformat(as_of)
        except ValueError:
            raise InvalidArgumentError(
                f"as_of={as_of!r} is not an ISO 8601 time (e.g. '2026-11-29' or "
                "'2026-11-29T12:00:00+00:00'); pass a datetime or a table version") from None
    if isinstance(as_of, dt.datetime):
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.timezone.utc)
        return None, as_of
    raise InvalidArgumentError(f"as_of must be a table version (int) or a time; got {as_of!r}")

