"""The online store: the latest feature values per entity, looked up in microseconds.

One LMDB environment per store (``<store>/online/``) holds every table (a feature group
version). ``write`` upserts a batch in one transaction, where for each key the row
with the greatest (event time, created time) wins whatever the arrival order;
``read`` returns a ``pyarrow.Table`` of features plus a ``status`` column (``found``,
``missing``, ``expired``); ``read_matrix`` and :class:`Reader` return float32 model
inputs across several tables. Lookups run in Rust with the GIL released; see
``rust/online/`` for the layout, the concurrency rules (many reader processes, one
writer, safe across ``fork``) and the durability mode.

Keys can be given as a list of ids (``[1, 2, 3]``, or tuples for composite keys), a
dict of key columns (``{"user_id": [1, 2, 3]}``), a list of dicts, or any table
(pyarrow, polars, pandas, anything with ``__arrow_c_stream__``).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa

from . import _core
from ._inputs import as_arrow, duration_ns
from .errors import InvalidArgumentError, SchemaError

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)

FeatureSpec = str | tuple[str, str]


class WriteResult(NamedTuple):
    """What a write did: ``rows`` in the batch, ``written`` (stored), ``unchanged``
    (superseded in the batch, older than the stored row, or identical to it)."""

    rows: int
    written: int
    unchanged: int


def now_ns(now: Any) -> int | None:
    """A point in time as ns since the epoch: an int (ns), a datetime (naive = UTC),
    a numpy datetime64 or a pandas Timestamp; None stays None (the current time)."""
    ns = _now_ns(now)
    if ns is not None and not -(2**63) <= ns < 2**63:
        raise InvalidArgumentError(
            f"now={now!r} is outside the times pitstop serves (years 1677 to 2262 as "
            "nanoseconds since the epoch)")
    return ns


def _now_ns(now: Any) -> int | None:
    if now is None:
        return None
    if isinstance(now, bool):
        raise InvalidArgumentError(f"now={now!r} is not a time")
    if isinstance(now, int):
        return now
    value = getattr(now, "value", None)  # pandas.Timestamp: ns since the epoch
    if isinstance(now, dt.datetime) and isinstance(value, int):
        return value
    if isinstance(now, dt.datetime):
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.timezone.utc)
        d = now - _EPOCH
        return (d.days * 86_400 + d.seconds) * 10**9 + d.microseconds * 1_000
    if isinstance(now, np.datetime64):
        return int(now.astype("datetime64[ns]").astype(np.int64))
    raise InvalidArgumentError(
        f"now must be a datetime, numpy.datetime64, pandas.Timestamp or int ns; got "
        f"{type(now).__name__} {now!r}"
    )


def _key_list(keys: Any, names: list[str] | None) -> Any:
    """Keys as a list of ids/tuples in ``names`` order, or an Arrow-readable table
    (always a table when ``names`` is None: tables with different key columns)."""
    if isinstance(keys, (str, bytes)):
        raise InvalidArgumentError(
            f"keys={keys!r} is a single value; pass a list of keys (e.g. [{keys!r}])"
        )
    if isinstance(keys, np.ndarray) and keys.ndim == 1:
        keys = keys.tolist()
    if isinstance(keys, list | tuple):
        if keys and isinstance(keys[0], Mapping):
            if names is None:
                return pa.Table.from_pylist(list(keys))
            return [_entity(d, names, i) for i, d in enumerate(keys)]
        return keys if isinstance(keys, list) else list(keys)
    if isinstance(keys, Mapping):
        if names is None:
            return pa.table(dict(keys))
        missing = [n for n in names if n not in keys]
        if missing:
            raise SchemaError(
                f"keys have no column {missing[0]!r}; keys must contain the key columns "
                f"{names} (found: {list(keys)})"
            )
        cols = [keys[n].tolist() if isinstance(keys[n], np.ndarray) and keys[n].ndim == 1
                and keys[n].dtype.kind in "iu" else keys[n] for n in names]
        if all(isinstance(c, list | tuple) for c in cols):
            if len(cols) == 1:
                return list(cols[0])
            return list(zip(*cols, strict=True))
        return pa.table({n: c for n, c in keys.items()})
    return as_arrow(keys, "keys")


def _entity(d: Mapping[str, Any], names: list[str], i: int) -> Any:
    try:
        values = tuple(d[n] for n in names)
    except KeyError as e:
        raise SchemaError(
            f"keys entry {i} has no {e.args[0]!r}; every entry must give the key columns "
            f"{names} (found: {list(d)})"
        ) from None
    return values[0] if len(values) == 1 else values


def ttl_ns(value: Any) -> int | None:
    """A TTL as ns: a timedelta, a string like ``"30d"``, or an int of nanoseconds
    (what a feature group stores)."""
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 0:
            raise InvalidArgumentError(f"ttl={value!r} is negative; a TTL must be positive")
        return value
    return duration_ns(value)


def _per_table(value: Any, n: int) -> list[int | None]:
    if isinstance(value, list | tuple):
        if len(value) != n:
            raise InvalidArgumentError(
                f"ttl has {len(value)} entries for {n} tables; give one, or one per table"
            )
        return [ttl_ns(v) for v in value]
    return [ttl_ns(value)] * n


def _features(features: Sequence[FeatureSpec]) -> list[tuple[str | None, str]]:
    if isinstance(features, str):
        features = [features]
    out: list[tuple[str | None, str]] = []
    for f in features:
        if isinstance(f, str):
            out.append((None, f))
        elif isinstance(f, tuple) and len(f) == 2 and all(isinstance(x, str) for x in f):
            out.append((f[0], f[1]))
        else:
            raise InvalidArgumentError(
                f"feature {f!r} must be a name or a (table, name) pair"
            )
    return out


class Reader:
    """A prepared read of several tables into float32 model inputs.

    Tables, feature positions and TTLs are resolved once; each call only converts the
    keys and looks them up, so one entity across three tables costs a few
    microseconds. Get one from :meth:`OnlineStore.reader`.
    """

    __slots__ = ("_raw", "_names", "width")

    def __init__(self, raw: _core.Reader, key_names: list[str] | None) -> None:
        self._raw = raw
        self._names = key_names
        self.width: int = raw.width

    @property
    def tables(self) -> list[str]:
        return self._raw.tables

    @property
    def features(self) -> list[tuple[str | None, str]]:
        return self._raw.features

    def vector(self, key: Any, *, now: Any = None) -> np.ndarray:
        """The features of one entity (an id, or a tuple for a composite key): a
        float32 array of shape ``(width,)``, NaN where missing, expired or null."""
        raw = self._raw.vector(key) if now is None else self._raw.vector(key, now_ns(now))
        return np.frombuffer(raw, dtype=np.float32)

    def matrix(self, keys: Any, *, now: Any = None) -> np.ndarray:
        """The features of many entities: float32, shape ``(len(keys), width)``."""
        if type(keys) is not list or (keys and isinstance(keys[0], Mapping)) or self._names is None:
            keys = _key_list(keys, self._names)
        raw = self._raw.matrix(keys) if now is None else self._raw.matrix(keys, now_ns(now))
        return np.frombuffer(raw, dtype=np.float32).reshape(-1, self.width)

    def __repr__(self) -> str:
        return f"Reader(tables={self.tables!r}, width={self.width})"


class PreparedWrite:
    """A validated, encoded write (:meth:`OnlineStore.prepare_write`), applied once by
    :meth:`commit`."""

    __slots__ = ("_raw",)

    def __init__(self, raw: _core.PreparedWrite) -> None:
        self._raw = raw

    def commit(self, watermark: int | None = None,
               positions: Mapping[str, bytes | None] | None = None) -> WriteResult:
        """Applies the write (once). ``watermark`` and ``positions`` (name -> bytes,
        stored under ``pos/<name>`` with a checksum; None deletes) are written in the
        same LMDB transaction as the rows."""
        pos = None if positions is None else _positions(positions)
        return WriteResult(*self._raw.commit(watermark, pos))


def _positions(positions: Mapping[str, bytes | None]) -> list[tuple[str, bytes | None]]:
    return [(str(k), None if v is None else bytes(v)) for k, v in positions.items()]


class OnlineStore:
    """The online store of a pitstop store directory.

    Args:
        path: the store's root directory (the LMDB environment lives in
            ``<path>/online/``, created on first use) or that ``online/`` directory.
            A non-empty directory that is not a pitstop store is refused.
        map_size: the initial LMDB map size in bytes (default 1 GiB); it is an upper
            bound on the file, grown automatically when a write needs more.
        readonly: open without write access (the store must exist).
        huge_pages: first load ``data.mdb`` into the page cache on 2 MiB pages, so
            that lookups in a large store miss the TLB once per 2 MiB instead of per
            4 KiB page (100-entity reads about a tenth faster on a 500 MB store).
            The file is read once more from disk (skipped if it is larger than the
            memory available); pages that other processes map, or a writer dirtied,
            stay as they are. Meant for read replicas (Linux with
            transparent huge pages; elsewhere it changes nothing, see
            :attr:`huge_page_bytes`).

    Safe to share between threads and across ``fork``: each process opens its own
    LMDB handle on first use (gunicorn workers may inherit a store from the master).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        map_size: int | None = None,
        readonly: bool = False,
        huge_pages: bool = False,
    ) -> None:
        self._core = _core.OnlineStore(
            os.fspath(path), map_size=map_size, readonly=readonly, huge_pages=huge_pages
        )
        self._keys: dict[str, list[str]] = {}

    @property
    def path(self) -> str:
        """The LMDB environment's directory."""
        return os.fspath(self._core.path)

    @property
    def readonly(self) -> bool:
        return self._core.readonly

    @property
    def huge_page_bytes(self) -> int:
        """Bytes of ``data.mdb`` that ``huge_pages=True`` found cached in 2 MiB pages
        when it loaded the file at open (0 if not asked, if this process had the store
        open already, if the file is larger than the memory available, or where the
        system gives none: THP off, a kernel before 5.14, a filesystem without large
        folios)."""
        return self._core.huge_page_bytes

    def copy(self, path: str | os.PathLike[str], *, compact: bool = True) -> int:
        """A consistent copy of this online store in ``path`` (a new or empty directory),
        taken from one LMDB snapshot while writers keep running (LMDB's
        ``mdb_env_copy2``; ``compact`` drops free pages). ``OnlineStore(path)`` opens
        it. This is how a fleet of serving replicas is fed: copy on the writer, ship
        the directory, serve it (``pitstop snapshot``). Returns its size in bytes."""
        return self._core.copy(os.fspath(path), compact)

    def tables(self) -> list[str]:
        """Every table's name, sorted."""
        return self._core.tables()

    def drop(self, table: str) -> bool:
        """Removes ``table``, its rows and its schema, in one transaction; False if
        there was no such table. Scans the whole store: for maintenance (rebuilding a
        table, deleting a feature group), not for serving paths. Readers in every
        process notice on their next read (a re-created table is picked up)."""
        self._keys.pop(table, None)
        return self._core.drop(table)

    def close(self) -> None:
        """Releases this handle; the LMDB environment closes with the last handle of
        the process (readers made from this store keep working until released)."""
        self._core.close()

    def __enter__(self) -> OnlineStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def schema(self, table: str) -> pa.Schema:
        """The feature columns of ``table`` (keys and times are not features)."""
        return self._core.table_info(table)[1]

    def key_columns(self, table: str) -> list[str]:
        """The entity key columns of ``table``, in key order."""
        names = self._keys.get(table)
        if names is None:
            names = self._keys[table] = self._core.table_info(table)[0]
        return names

    def write(
        self,
        table: str,
        data: Any,
        *,
        keys: str | Sequence[str],
        event_time: str,
        created_time: str | None = None,
    ) -> WriteResult:
        """Upserts ``data`` into ``table`` in one transaction.

        For each key, the row with the greatest (event time, created time) wins, here
        and across writes, whatever the order rows arrive in (an exact tie goes to the
        later row); replaying a batch changes nothing. The first write registers the
        table's schema: every column but the keys and times is a feature. Later writes
        must carry the same features (integer widths, int to float, and string or
        timestamp variants convert; values that do not fit are an error). On any error
        the store is unchanged.

        Args:
            table: the table (feature group version) name.
            data: any table (pyarrow, polars, pandas, ``__arrow_c_stream__``).
            keys: the entity key column(s); integers or strings, no nulls.
            event_time: the event-time column (timestamp or date, no nulls).
            created_time: an optional column that breaks ties between equal event times.
        """
        key_list = [keys] if isinstance(keys, str) else list(keys)
        rows, written, unchanged = self._core.write(
            table, as_arrow(data, "data"), key_list, event_time, created_time
        )
        return WriteResult(rows, written, unchanged)

    def prepare_write(
        self,
        table: str,
        data: Any,
        *,
        keys: str | Sequence[str],
        event_time: str,
        created_time: str | None = None,
    ) -> PreparedWrite:
        """Runs every check and encoding of :meth:`write` now and returns the write to
        apply later with ``.commit(watermark=...)``: a feature group validates its
        online write before its offline commit, so that nothing durable happens
        unless both can. ``watermark`` (the offline version the rows come from) is
        stored in the same transaction as the rows."""
        key_list = [keys] if isinstance(keys, str) else list(keys)
        raw = self._core.prepare_write(
            table, as_arrow(data, "data"), key_list, event_time, created_time
        )
        return PreparedWrite(raw)

    def commit_all(self, prepared: Sequence[PreparedWrite], *, watermark: int | None = None,
                   positions: Mapping[str, bytes | None] | None = None) -> WriteResult:
        """Applies several prepared writes and ``positions`` in one LMDB transaction
        (all or nothing): a stream's micro-batch, its aggregation states and its source
        positions. At most one of the writes may create a table."""
        raws = [p._raw for p in prepared]
        if len({id(r) for r in raws}) != len(raws):
            raise InvalidArgumentError("the same prepared write is given twice")
        return WriteResult(*self._core.commit_all(raws, watermark, _positions(positions or {})))

    def positions(self, prefix: str) -> dict[str, bytes]:
        """The positions stored under ``pos/<prefix>`` (names without ``pos/``)."""
        return dict(self._core.positions(prefix))

    def watermark(self, table: str) -> int | None:
        """The last offline version ``table`` holds (stored with its rows), or None."""
        return self._core.watermark(table)

    def replace(self, table: str, source: str) -> None:
        """Swaps ``source`` in as ``table`` in one transaction: its rows, schema and
        watermark become ``table``'s, the old rows go and ``source`` disappears.
        Readers in every process see the old table or the new one, never neither."""
        self._keys.pop(table, None)
        self._keys.pop(source, None)
        self._core.replace(table, source)

    def read(
        self,
        table: str,
        keys: Any,
        *,
        features: Sequence[str] | None = None,
        ttl: Any = None,
        now: Any = None,
    ) -> pa.Table:
        """The latest features of each entity in ``keys``, in the order given.

        Returns the requested features (all by default) plus ``status``: ``found``,
        ``missing`` (no row), or ``expired`` (the row's event time is older than
        ``now - ttl``); features are null unless found. ``ttl`` is a timedelta, a
        string like ``"30d"`` or an int of nanoseconds; ``now`` defaults to the current
        time.
        """
        keys = _key_list(keys, self.key_columns(table))
        feats = None if features is None else [features] if isinstance(features, str) else list(features)
        return self._core.read(table, keys, feats, ttl_ns(ttl), now_ns(now))

    def reader(
        self,
        tables: str | Sequence[str],
        *,
        features: Sequence[FeatureSpec],
        ttl: Any = None,
        threads: int | None = None,
    ) -> Reader:
        """A prepared :meth:`read_matrix` for repeated lookups (the fast path).

        ``features`` are names (each in exactly one of the tables) or ``(table,
        name)`` pairs, in output order; ``ttl`` is one duration or one per table.
        ``threads`` sets how many threads look keys up; by default one below 4096
        entities (best for throughput when several processes serve), every core
        above. ``threads=2`` can cut the latency of a ~100-entity read by a quarter
        when a core is idle, and gains nothing (with a worse p99) when it is not.
        """
        names = [tables] if isinstance(tables, str) else list(tables)
        if threads is not None and (not isinstance(threads, int) or threads < 1):
            raise InvalidArgumentError(f"threads={threads!r} must be a positive integer or None")
        raw = self._core.reader(names, _features(features), _per_table(ttl, len(names)), threads)
        key_names: list[str] | None = self.key_columns(names[0])
        if any(self.key_columns(t) != key_names for t in names[1:]):
            key_names = None  # keys must then name their columns (dict or table)
        return Reader(raw, key_names)

    def read_matrix(
        self,
        tables: str | Sequence[str],
        keys: Any,
        *,
        features: Sequence[FeatureSpec],
        ttl: Any = None,
        now: Any = None,
        threads: int | None = None,
    ) -> np.ndarray:
        """Model inputs: float32 of shape ``(len(keys), len(features))``, features in
        the given order across ``tables``, NaN where missing, expired or null
        (``threads``: see :meth:`reader`)."""
        return self.reader(tables, features=features, ttl=ttl, threads=threads).matrix(keys, now=now)

    def __repr__(self) -> str:
        return f"OnlineStore({self.path!r}{', readonly=True' if self.readonly else ''})"
