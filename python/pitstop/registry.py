"""The registry: one SQLite file (``registry.db``) naming everything in a store.

Feature groups, feature views, training snapshots, models and their versions, with the
lineage between them. SQLite in WAL mode with a busy timeout, so several processes can
read while one writes; every change is one transaction. Rows hold JSON for structured
fields and Arrow IPC for schemas, so ``sqlite3 registry.db`` stays readable.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa

from .errors import CorruptStoreError, NotAStoreError, StoreError

FORMAT = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS feature_groups (
    name TEXT NOT NULL, version INTEGER NOT NULL,
    primary_key TEXT NOT NULL, event_time TEXT NOT NULL, created_time TEXT,
    online INTEGER NOT NULL, ttl_ns INTEGER, nan_policy TEXT NOT NULL,
    description TEXT NOT NULL, schema BLOB,
    online_watermark INTEGER NOT NULL DEFAULT -1,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS feature_views (
    name TEXT NOT NULL, version INTEGER NOT NULL,
    spec TEXT NOT NULL, labels TEXT NOT NULL, description TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    view_name TEXT NOT NULL, view_version INTEGER NOT NULL,
    tables TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL,
    view_name TEXT NOT NULL, view_version INTEGER NOT NULL,
    snapshot_id INTEGER, metrics TEXT NOT NULL, inputs TEXT NOT NULL,
    description TEXT NOT NULL, sha256 TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, version));
"""


class Registry:
    def __init__(self, path: Path, *, create: bool):
        self.path = Path(path)
        if not create and not self.path.exists():
            raise NotAStoreError(f"{self.path.parent} is not a pitstop store (no registry.db)")
        try:
            self._db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                       check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA busy_timeout=30000")
            with self.tx() as db:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
                if row is None:
                    db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
                elif int(row[0]) != FORMAT:
                    raise StoreError(
                        f"{self.path} has registry format {row[0]}; this pitstop reads format "
                        f"{FORMAT} (upgrade pitstop)"
                    )
        except sqlite3.DatabaseError as e:
            raise CorruptStoreError(f"{self.path} is not a readable pitstop registry ({e})") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue, readers go on)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            self._db.execute("COMMIT")

    def query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        cur = self._db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        return [dict(zip(cols, row)) for row in cur.fetchall()]

    def one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def schema_to_blob(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def schema_from_blob(blob: bytes | None) -> pa.Schema | None:
    return None if blob is None else pa.ipc.read_schema(pa.py_buffer(blob))
