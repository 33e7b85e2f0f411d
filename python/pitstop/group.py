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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from . import _schema
from ._inputs import as_table
from ._progress import Progress
from .offline import DeltaGroupTable
from .registry import schema_from_blob, schema_to_blob
from .errors import InvalidArgumentError, SchemaError

if TYPE_CHECKING:
    from .store import FeatureStore


@dataclass(frozen=True)
class Selection:
    """Some features of one group version, as a feature view uses them. ``on`` maps
    spine column names to the group's primary-key columns."""

    group: str
    version: int
    features: tuple[str, ...]
    on: tuple[tuple[str, str], ...]
    prefix: str | None = None

    @property
    def output_names(self) -> list[str]:
        return [(self.prefix or "") + f for f in self.features]

    def to_json(self) -> dict[str, Any]:
        return {"group": self.group, "version": self.version, "features": list(self.features),
                "on": [list(p) for p in self.on], "prefix": self.prefix}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Selection:
        return cls(d["group"], d["version"], tuple(d["features"]),
                   tuple((a, b) for a, b in d["on"]), d.get("prefix"))


class FeatureGroup:
    """One version of a feature group. Get it from a :class:`FeatureStore`."""

    def __init__(self, store: FeatureStore, row: dict[str, Any]):
        self._store = store
        self.name: str = row["name"]
        self.version: int = row["version"]
        self.primary_key: list[str] = list(json.loads(row["primary_key"]))
        self.event_time: str = row["event_time"]
        self.created_time: str | None = row["created_time"]
        self.online: bool = bool(row["online"])
        self.ttl_ns: int | None = row["ttl_ns"]
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
        the online store. Returns the new offline version. Nothing is written when
        validation fails."""
        progress = Progress(f"insert into {self.name} v{self.version}")
        table = as_table(data, f"data for feature group '{self.name}'")
        rows = table.num_rows
        progress.step("validating", rows)
        table = _schema.validate(_schema.normalize(table), self._columns, self.nan_policy)
        with self._store._lock(self.name, self.version):
            self._refresh()
            schema = schema_from_blob(self._schema_blob)
            if schema is None:
                schema = _schema.with_seq(table.slice(0, 0), 0).schema
                self._store._set_schema(self, schema_to_blob(schema))
                self._schema_blob = schema_to_blob(schema)
            table = _schema.conform(table, schema, self.name)
            table = _schema.with_seq(table, self.offline.version() + 1)
            progress.step("writing offline (Delta)", rows)
            version = self.offline.append(table)
            if self.online:
                progress.step("writing online (LMDB)", rows)
                self._write_online(table)
                self._store._set_watermark(self, version)
        progress.done(rows)
        return version

    def _write_online(self, table: pa.Table) -> None:
        # An empty batch still registers the table, so lookups find it (all missing).
        self._store.online.write(
            self.online_table,
            table.drop_columns([_schema.SEQ]),
            keys=self.primary_key,
            event_time=self.event_time,
            created_time=self.created_time,
        )

    def catch_up(self) -> int:
        """Replays offline commits the online store missed (a crash between the two
        writes of an insert); returns the number of rows replayed."""
        if not self.online or not self.offline.exists():
            return 0
        with self._store._lock(self.name, self.version):
            self._refresh()
            watermark = self._store._watermark(self)
            latest = self.offline.version()
            if watermark >= latest:
                return 0
            _, table = self.offline.read(version=latest, since=watermark)
            self._write_online(table)
            self._store._set_watermark(self, latest)
            return table.num_rows

    def materialize(self) -> int:
        """Rebuilds the online table from the whole offline table; returns rows written."""
        if not self.online:
            raise InvalidArgumentError(
                f"feature group '{self.name}' v{self.version} is offline only; create a version "
                "with online=True to serve it online"
            )
        with self._store._lock(self.name, self.version):
            latest = self.offline.version()
            self._store.online.drop(self.online_table)
            if latest < 0:
                self._store._set_watermark(self, -1)
                return 0
            _, table = self.offline.read(version=latest)
            self._write_online(table)
            self._store._set_watermark(self, latest)
            return table.num_rows

    def _refresh(self) -> None:
        row = self._store._group_row(self.name, self.version)
        self._schema_blob = row["schema"]

    # -- reading -------------------------------------------------------------------

    def read(self, *, as_of: int | dt.datetime | str | None = None,
             columns: list[str] | None = None) -> pa.Table:
        """The offline rows in insertion order: the latest, or as of a past table version
        (int) or time (datetime / ISO string)."""
        version, when = _as_of(as_of)
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
        return as_of, None
    if isinstance(as_of, str):
        as_of = dt.datetime.fromisoformat(as_of)
    if isinstance(as_of, dt.datetime):
        if as_of.tzinfo is None:
            as_of = as_of.replace(tzinfo=dt.timezone.utc)
        return None, as_of
    raise InvalidArgumentError(f"as_of must be a table version (int) or a time; got {as_of!r}")

