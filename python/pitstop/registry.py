"""The registry: one SQLite file (``registry.db``) naming everything in a store.

Feature groups, feature views, training snapshots, models and their versions, with the
lineage between them. SQLite in WAL mode with a busy timeout, so several processes can
read while one writes; every change is one transaction. Rows hold JSON for structured
fields and Arrow IPC for schemas, so ``sqlite3 registry.db`` stays readable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
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
CREATE TABLE IF NOT EXISTS aggregations (
    name TEXT NOT NULL, version INTEGER NOT NULL,
    source_name TEXT NOT NULL, source_version INTEGER NOT NULL,
    key_cols TEXT NOT NULL, spec TEXT NOT NULL, closed TEXT NOT NULL,
    online INTEGER NOT NULL, description TEXT NOT NULL, created_at REAL NOT NULL,
    checksum TEXT,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS view_transforms (
    view_name TEXT NOT NULL, view_version INTEGER NOT NULL,
    on_demand TEXT NOT NULL, transforms TEXT NOT NULL, checksum TEXT,
    PRIMARY KEY (view_name, view_version));
CREATE TABLE IF NOT EXISTS transform_fits (
    snapshot_id INTEGER PRIMARY KEY, fits TEXT NOT NULL, checksum TEXT);
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL, version INTEGER NOT NULL,
    view_name TEXT NOT NULL, view_version INTEGER NOT NULL,
    snapshot_id INTEGER, metrics TEXT NOT NULL, inputs TEXT NOT NULL,
    description TEXT NOT NULL, sha256 TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (name, version));
"""


class Registry:
    """The registry file. ``readonly`` opens it without writing anything (for a
    read-only copy: SQLite's ``immutable`` mode when even its WAL index cannot be
    made). A zero-length or foreign file is a ``CorruptStoreError``, except a
    zero-length file in a store with no data at all (a store whose creation was
    killed), which is initialized."""

    def __init__(self, path: Path, *, create: bool, readonly: bool = False):
        self.path = Path(path)
        if not self.path.exists() and (readonly or not create):
            raise NotAStoreError(f"{self.path.parent} is not a pitstop store (no registry.db)")
        if self.path.exists() and self.path.stat().st_size == 0 and _has_data(self.path.parent):
            raise CorruptStoreError(
                f"{self.path} is empty (0 bytes) but the store holds data (offline tables or "
                "models): the registry was lost or truncated. Restore registry.db from a backup; "
                "pitstop will not open it as a new, empty store"
            )
        try:
            self._db = self._connect(readonly)
            self._check_integrity()
            if readonly:
                self._check_format(self._db, readonly=True)
                return
            with self.tx() as db:
                for stmt in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(stmt)
                self._check_format(db)
                self._add_checksums(db)
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise CorruptStoreError(
                f"{self.path} is not a readable pitstop registry ({e}); restore it from a backup"
            ) from None

    def _connect(self, readonly: bool) -> sqlite3.Connection:
        if not readonly:
            db = sqlite3.connect(str(self.path), timeout=30, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=30000")
            return db
        uri = self.path.resolve().as_uri()
        for mode in ("mode=ro", "immutable=1"):
            try:
                db = sqlite3.connect(f"{uri}?{mode}", uri=True, timeout=30, isolation_level=None,
                                     check_same_thread=False)
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return db
            except sqlite3.OperationalError:
                continue
        raise CorruptStoreError(f"{self.path} cannot be opened for reading; check its permissions")

    def _check_integrity(self) -> None:
        """SQLite's own structural check of every table and index (milliseconds for a
        registry: it is small), so a damaged page is found at open, not by a query
        that silently skips the rows behind it."""
        problems = [r[0] for r in self._db.execute("PRAGMA integrity_check(5)").fetchall()]
        if problems != ["ok"]:
            raise CorruptStoreError(
                f"{self.path} is damaged ({'; '.join(map(str, problems))}); restore registry.db "
                "from a backup")

    def _check_format(self, db: sqlite3.Connection, readonly: bool = False) -> None:
        try:
            row = db.execute("SELECT value FROM meta WHERE key='format'").fetchone()
        except sqlite3.OperationalError:
            raise CorruptStoreError(f"{self.path} is not a pitstop registry (no meta table)") from None
        if row is None and readonly:
            raise CorruptStoreError(f"{self.path} is not a pitstop registry (no format marker)")
        if row is None:
            db.execute("INSERT INTO meta VALUES ('format', ?)", (str(FORMAT),))
        elif str(row[0]) != str(FORMAT):
            raise StoreError(
                f"{self.path} has registry format {row[0]!r}; this pitstop reads format "
                f"{FORMAT} (upgrade pitstop, or restore the file if it is damaged)"
            )

    def _add_checksums(self, db: sqlite3.Connection) -> None:
        """Gives a registry made before row checksums its ``checksum`` columns, once."""
        for table in CHECKED:
            cols = [r[1] for r in db.execute(f"PRAGMA table_info({table})")]
            if "checksum" in cols:
                continue
            db.execute(f"ALTER TABLE {table} ADD COLUMN checksum TEXT")
            cur = db.execute(f"SELECT rowid, * FROM {table}")
            names = [c[0] for c in cur.description]
            for values in cur.fetchall():
                row = dict(zip(names, values))
                rowid = row.pop("rowid")
                db.execute(f"UPDATE {table} SET checksum=? WHERE rowid=?",
                           (row_checksum(table, row), rowid))

    def insert(self, db: sqlite3.Connection, table: str, row: dict[str, Any]) -> int:
        """Inserts ``row`` with its checksum (inside a :meth:`tx`); returns its rowid."""
        cols = list(row)
        cur = db.execute(f"INSERT INTO {table} ({', '.join(cols)}, checksum) VALUES "
                         f"({', '.join('?' * len(cols))}, '')", [row[c] for c in cols])
        rowid = int(cur.lastrowid or 0)
        self._reseal(db, table, rowid)
        return rowid

    def update(self, db: sqlite3.Connection, table: str, where: str, args: tuple,
               changes: dict[str, Any]) -> int:
        """Sets ``changes`` on the rows matching ``where`` and reseals their checksums;
        returns how many rows changed."""
        sets = ", ".join(f"{c}=?" for c in changes)
        rowids = [r[0] for r in db.execute(f"SELECT rowid FROM {table} WHERE {where}", args)]
        for rowid in rowids:
            db.execute(f"UPDATE {table} SET {sets} WHERE rowid=?", [*changes.values(), rowid])
            self._reseal(db, table, rowid)
        return len(rowids)

    def _reseal(self, db: sqlite3.Connection, table: str, rowid: int) -> None:
        cur = db.execute(f"SELECT * FROM {table} WHERE rowid=?", (rowid,))
        row = dict(zip([c[0] for c in cur.description], cur.fetchone()))
        row.pop("checksum", None)
        db.execute(f"UPDATE {table} SET checksum=? WHERE rowid=?",
                   (row_checksum(table, row), rowid))

    def close(self) -> None:
        self._db.close()

    def changes(self) -> tuple[int, int]:
        """A value that differs after any commit to the file, by this connection
        (``total_changes``) or any other (``PRAGMA data_version``): what a cached read
        checks instead of querying again."""
        try:
            return self._db.execute("PRAGMA data_version").fetchone()[0], self._db.total_changes
        except sqlite3.DatabaseError as e:
            raise _db_error(self.path, e) from None

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (BEGIN IMMEDIATE: writers queue, readers go on)."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise _db_error(self.path, e) from None
        try:
            yield self._db
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            self._db.execute("ROLLBACK")
            raise _db_error(self.path, e) from None
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        else:
            try:
                self._db.execute("COMMIT")
            except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
                raise _db_error(self.path, e) from None

    def query(self, sql: str, args: tuple = ()) -> list[dict[str, Any]]:
        try:
            cur = self._db.execute(sql, args)
            cols = [c[0] for c in cur.description]
            rows = [dict(zip(cols, row)) for row in cur.fetchall()]
        except (sqlite3.DatabaseError, UnicodeDecodeError) as e:
            raise _db_error(self.path, e) from None
        table = _table_of(sql)
        if table in CHECKED and "checksum" in cols:
            for row in rows:
                values = {k: v for k, v in row.items() if k != "checksum"}
                if row["checksum"] != row_checksum(table, values):
                    raise CorruptStoreError(
                        f"{self.path}: a row of {table} does not match its checksum (the file "
                        "was damaged or edited by hand); restore registry.db from a backup"
                    )
        return rows

    def one(self, sql: str, args: tuple = ()) -> dict[str, Any] | None:
        rows = self.query(sql, args)
        return rows[0] if rows else None


CHECKED = ("feature_groups", "feature_views", "snapshots", "models", "aggregations",
           "view_transforms", "transform_fits")
_FROM = re.compile(r"\bFROM\s+(\w+)", re.IGNORECASE)


def _table_of(sql: str) -> str | None:
    m = _FROM.search(sql)
    return m.group(1) if m else None


def row_checksum(table: str, row: dict[str, Any]) -> str:
    """A checksum of a registry row (every column but ``checksum``): SQLite checks its
    pages' structure, not their contents, so a flipped byte in a name or a JSON field
    would otherwise read back as a different, valid-looking definition."""
    canon = json.dumps([table, sorted((k, v.hex() if isinstance(v, bytes) else v)
                                      for k, v in row.items())], separators=(",", ":"))
    return hashlib.blake2b(canon.encode(), digest_size=12).hexdigest()


def _has_data(store: Path) -> bool:
    return any(any(p.iterdir()) for p in (store / "offline", store / "models") if p.is_dir())


def _db_error(path: Path, e: Exception) -> StoreError:
    if isinstance(e, sqlite3.OperationalError) and "locked" in str(e):
        return StoreError(f"{path} is locked by another writer for too long ({e}); try again")
    if isinstance(e, sqlite3.OperationalError) and "readonly" in str(e).replace("-", ""):
        if os.access(path, os.W_OK) and os.access(path.parent, os.W_OK):
            return CorruptStoreError(
                f"{path} refuses writes although its file is writable ({e}): its header is "
                "damaged; restore registry.db from a backup")
        return StoreError(f"{path} cannot be written ({e}); open the store read-only or fix "
                          "its permissions")
    return CorruptStoreError(f"{path} is damaged ({e}); restore registry.db from a backup")


@contextmanager
def registry_row(what: str) -> Iterator[None]:
    """Turns a malformed registry row (bad JSON, wrong types) into CorruptStoreError."""
    try:
        yield
    except (ValueError, TypeError, KeyError, AttributeError, pa.ArrowException) as e:
        raise CorruptStoreError(
            f"the registry entry of {what} is damaged ({type(e).__name__}: {e}); restore "
            "registry.db from a backup, or delete and re-create that entry"
        ) from None


def now() -> float:
    return time.time()


def dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def schema_to_blob(schema: pa.Schema) -> bytes:
    return schema.serialize().to_pybytes()


def schema_from_blob(blob: bytes | None) -> pa.Schema | None:
    if blob is None:
        return None
    with registry_row("a feature group's schema"):
        if not isinstance(blob, bytes):
            raise TypeError(f"the schema is {type(blob).__name__}, not bytes")
        return pa.ipc.read_schema(pa.py_buffer(blob))
