"""The write path of a stream (and of ``FeatureGroup.push``): micro-batches into the
online store now, into the offline table at each flush, each event exactly once.

State, all in the online store's LMDB ``meta`` under ``pos/`` (checksummed), written
in the same transaction as the rows it describes:

- ``<job>/src/<partition>``: the last source position whose event is online;
- ``<job>/buf/<n>``: micro-batch ``n`` (16 hex digits, increasing): its rows, with
  their insertion sequence numbers, its dead letters and the source's ack tokens;
  kept until the rows are in the offline table;
- ``<job>/next``: the next micro-batch number;
- ``_seq/<group>.v<version>``: the next streamed insertion sequence number.

One micro-batch (under the group's lock): parse and validate; give each row a
sequence number ``(V << 32) | (2**31 + c)``, where V is the offline table's next version
and ``c`` counts streamed rows of that V (insert rows use ``(V << 32) | row`` with row
< 2**31, so the two never collide, and a streamed row sorts just after the insert that
made version V-1); prepare the group's online upsert and every online aggregation's
state merge; then **one LMDB transaction** writes all of them, the new positions, the
buffered batch and the counters. A kill before it leaves nothing; after it, the
events are online exactly once and the source resumes after them.

A flush (every ``offline_flush``, at start, at stop): read every buffered batch, append
their rows to the group's Delta table (and dead letters to the dead-letter table) in
one commit each carrying the Delta *application transaction* ``(job, n_max)``;
``append_txn`` skips a commit whose ``n_max`` the table already records, so a flush
repeated after a kill is a no-op. Then one LMDB transaction deletes the flushed
batches and advances the watermarks (or the online tables catch up), and only then is
the source acknowledged. The rows reach Delta with the sequence numbers they had
online, so a catch-up or rebuild of an aggregation from the offline table merges each
event once (its merge skips sequence numbers it holds).

Known limits: rebuilding a group's online table (``materialize``) while a job has
unflushed batches serves those events again only after their flush and a rebuild; two
rows of one key with the same event (and created) time are resolved by arrival order,
which a catch-up replay may see differently.
"""

from __future__ import annotations

import io
import json
import os
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from .. import _schema
from ..errors import DataError, InvalidArgumentError, SchemaError
from ..offline import DeltaGroupTable

if TYPE_CHECKING:
    from ..group import FeatureGroup

_STREAM_BIT = 1 << 31
_VERSIONS: dict[str, tuple[tuple[int, int], int]] = {}  # Writer._offline_version's memory

DEAD_SCHEMA = pa.schema([
    ("job", pa.string()), ("partition", pa.string()), ("position", pa.string()),
    ("payload", pa.string()), ("reason", pa.string()),
    ("received_at", pa.timestamp("us", tz="UTC")),
])


def encode_batch(table: pa.Table, header: dict[str, Any]) -> bytes:
    h = json.dumps(header).encode()
    sink = io.BytesIO()
    sink.write(len(h).to_bytes(4, "big") + h)
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue()


def decode_batch(blob: bytes) -> tuple[pa.Table, dict[str, Any]]:
    n = int.from_bytes(blob[:4], "big")
    header = json.loads(blob[4:4 + n])
    return pa.ipc.open_stream(blob[4 + n:]).read_all(), header


class Writer:
    """Writes micro-batches of one feature group for one job (see the module doc)."""

    def __init__(self, group: FeatureGroup, job: str) -> None:
        if not job or job.startswith("_") or "\0" in job:
            raise InvalidArgumentError(f"job name {job!r}: give a non-empty name not starting "
                                       "with '_'")
        self.group, self.job = group, job.replace("/", "%2F")
        self.store = group._store
        self.dead = DeltaGroupTable(self.store.path / "deadletter" / group.name
                                    / f"v{group.version}")
        self.buffered_rows = 0
        self.oldest = None  # monotonic time of the oldest unflushed batch
        self._known_schema: pa.Schema | None = None

    # -- state -----------------------------------------------------------------

    def _online_tables(self) -> list:
        tables = [self.group] if self.group.online else []
        return tables + list(self.store._online_aggregations(self.group))

    def positions(self) -> dict[str, bytes]:
        """partition -> the last position whose event is online."""
        prefix = f"{self.job}/src/"
        return {k[len(prefix):]: v for k, v in self.store.online.positions(prefix).items()}

    def _schema(self) -> pa.Schema:
        """The group's registered schema: read from the registry until it exists, then
        remembered (a group version's schema is registered once and never changes)."""
        if self._known_schema is not None:
            return self._known_schema
        g = self.group
        g._refresh()
        schema = self._known_schema = g._stored_schema()
        if schema is None:
            raise SchemaError(
                f"feature group '{g.name}' v{g.version} has no schema yet; a stream parses "
                "messages with it: insert a first batch (or create the group with its schema)")
        return schema

    def columns(self) -> pa.Schema:
        """The group's columns (no sequence number), as messages carry them."""
        return pa.schema([f for f in self._schema() if f.name != _schema.SEQ])

    def start(self) -> list[Any]:
        """Catches the online tables up, registers them, and flushes what a previous
        run left buffered (idempotent, see the module doc); returns the ack tokens to
        acknowledge now. Call before reading."""
        with self.store._lock(self.group.name, self.group.version):
            self._schema()
            self._prepare_tables()
            return self._flush_locked()[1]

    def _prepare_tables(self) -> None:
        online = self.store.online
        have = set(online.tables())
        empty = self._schema().empty_table()
        for t in self._online_tables():
            if t is not self.group:
                t._check(empty.schema)
            t._catch_up_locked()
            if t.online_table not in have:  # register it alone (a multi-write cannot)
                t._prepare_online(t.online_table, empty).commit()

    def _offline_version(self) -> int:
        """The offline table's version, opened (its log read: milliseconds) only when
        its ``_delta_log`` directory changed since the last call (of any writer in this
        process: ``push`` makes one per call). A commit adds a file
        there, which moves the directory's mtime; the remembered version is trusted only
        if that mtime was already 50 ms old when it was read (3 s on a file system that
        keeps whole seconds), so that a commit in the same clock tick cannot hide behind
        an unchanged mtime."""
        log = str(self.group.offline.path / "_delta_log")
        try:
            st = os.stat(log)
        except OSError:
            return self.group.offline.version()
        stamp = (st.st_ino, st.st_mtime_ns)
        known = _VERSIONS.get(log)
        if known is not None and known[0] == stamp:
            return known[1]
        now = time.time_ns()
        v = self.group.offline.version()
        coarse = st.st_mtime_ns % 1_000_000_000 == 0  # a file system keeping whole seconds
        if now - st.st_mtime_ns > (3_000_000_000 if coarse else 50_000_000):
            _VERSIONS[log] = (stamp, v)
        return v

    # -- writing ---------------------------------------------------------------

    def write(self, table: pa.Table, *, positions: dict[str, bytes] | None = None,
              dead: list[dict[str, Any]] | None = None, acks: list[Any] | None = None) -> int:
        """One micro-batch: ``table`` (the group's columns, parsed), the new source
        positions, dead letters and ack tokens; one LMDB transaction. Returns the
        batch number. Raises DataError etc. when the rows cannot be written (nothing
        is then)."""
        g = self.group
        table = _schema.validate(_schema.normalize(table), g._columns, g.nan_policy)
        with self.store._lock(g.name, g.version):
            self.store._check_writable()
            table = _schema.conform(table, self._schema(), g.name)
            online = self.store.online
            seq_key = f"_seq/{g.online_table}"
            base = self._offline_version() + 1
            stored = online.positions(seq_key).get(seq_key)
            nxt = _STREAM_BIT
            if stored is not None and int.from_bytes(stored[:8], "big") == base:
                nxt = int.from_bytes(stored[8:], "big")
            if nxt + table.num_rows >= 1 << 32:
                raise DataError(f"feature group '{g.name}': more than 2**31 streamed rows "
                                "between two offline flushes; flush more often")
            seq = (np.int64(base) << np.int64(32)) + nxt + np.arange(table.num_rows,
                                                                     dtype=np.int64)
            table = table.append_column(pa.field(_schema.SEQ, pa.int64(), nullable=False),
                                        pa.array(seq))
            tables = self._online_tables()
            have = set(online.tables())
            if any(t.online_table not in have for t in tables):
                self._prepare_tables()
            prepared = [t._prepare_online(t.online_table, table) for t in tables]
            counters = {**online.positions(f"{self.job}/next"),
                        **online.positions(f"{self.job}/first")}  # the buffer's age
            n = int.from_bytes(counters.get(f"{self.job}/next", b"\0" * 8), "big")
            header = {"dead": dead or [], "acks": acks or [], "rows": table.num_rows}
            pos: dict[str, bytes | None] = {
                f"{self.job}/buf/{n:016x}": encode_batch(table, header),
                f"{self.job}/next": (n + 1).to_bytes(8, "big"),
                seq_key: base.to_bytes(8, "big") + (nxt + table.num_rows).to_bytes(8, "big"),
            }
            if f"{self.job}/first" not in counters:
                pos[f"{self.job}/first"] = int(time.time() * 1000).to_bytes(8, "big")
            for part, p in (positions or {}).items():
                pos[f"{self.job}/src/{part}"] = p
            online.commit_all(prepared, positions=pos)
        self.buffered_rows += table.num_rows + len(dead or [])
        if self.oldest is None:
            self.oldest = time.monotonic()
        return n

    def flush(self, source: Any = None) -> int:
        """Moves every buffered batch to the offline tables (see the module doc), then
        acknowledges them at ``source``; returns the rows appended."""
        with self.store._lock(self.group.name, self.group.version):
            rows, acks = self._flush_locked()
        if source is not None and acks:
            source.ack(acks)
        return rows

    def _flush_locked(self) -> tuple[int, list[Any]]:
        g, online = self.group, self.store.online
        prefix = f"{self.job}/buf/"
        blobs = online.positions(prefix)
        self.buffered_rows, self.oldest = 0, None
        if not blobs:
            return 0, []
        names = sorted(blobs)
        last = int(names[-1][len(prefix):], 16)
        tables, dead, acks = [], [], []
        for name in names:
            t, h = decode_batch(blobs[name])
            tables.append(t)
            dead += h["dead"]
            acks += h["acks"]
        table = pa.concat_tables(tables)
        app_id = f"pitstop-stream:{self.job}"
        if dead:
            rows = {c: [d[c] for d in dead] for c in DEAD_SCHEMA.names if c != "received_at"}
            rows["received_at"] = [d["received_at"] * 1000 for d in dead]
            t = pa.table({c: pa.array(rows[c], pa.int64() if c == "received_at" else pa.string())
                          for c in DEAD_SCHEMA.names})
            self.dead.append_txn(t.cast(DEAD_SCHEMA), app_id, last)
        before = g.offline.version()
        after = before
        if table.num_rows:
            after = g.offline.append_txn(table, app_id, last)
        prepared, behind = [], []
        for t in self._online_tables():
            mark = online.watermark(t.online_table)
            if after == before + 1 and (mark == before or (mark is None and before < 0)):
                prepared.append(t._prepare_online(t.online_table, table.slice(0, 0)))
            else:
                behind.append(t)
        delete: dict[str, bytes | None] = {name: None for name in names}
        delete[f"{self.job}/first"] = None
        if prepared:
            online.commit_all(prepared, watermark=after, positions=delete)
        else:
            online.commit_all([], positions=delete)
        for t in behind:
            t._catch_up_locked()  # replays the flush too: a no-op for rows held online
        return table.num_rows, acks


def dead_letter(m: Any, reason: str, job: str) -> dict[str, Any]:
    """A dead letter for message ``m`` (a :class:`~.sources.Message`)."""
    try:
        payload = json.dumps(m.fields, default=str)
    except (TypeError, ValueError):
        payload = repr(m.fields)
    return {"job": job, "partition": m.partition, "position": m.position.hex(),
            "payload": payload, "reason": reason, "received_at": int(time.time() * 1000)}


def push(group: FeatureGroup, data: Any, *, job: str = "push",
         offline_flush: float = 10.0) -> int:
    """``FeatureGroup.push``: ``data`` online now (one transaction with its buffered
    copy), offline at the first push ``offline_flush`` seconds or more after the
    oldest unflushed one (or at ``Writer(group, job).flush()``). Returns the rows."""
    from .._inputs import as_table

    table = as_table(data, f"data for feature group '{group.name}'")
    writer = Writer(group, job)
    writer.write(table)
    key = f"{writer.job}/first"
    first = writer.store.online.positions(key).get(key)
    if first is not None and time.time() - int.from_bytes(first, "big") / 1000 >= offline_flush:
        writer.flush()
    return table.num_rows
