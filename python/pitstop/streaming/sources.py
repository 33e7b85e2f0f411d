"""Streaming sources: where a :class:`~pitstop.streaming.StreamJob` reads events.

A source hands out :class:`Message` s. Each carries a *partition* (a name), a
*position* (bytes, ordered within its partition: a later message has a greater
position, compared as bytes) and an *ack* token. The job stores the greatest position
of each partition it has written online in the same LMDB transaction as the rows, and
calls :meth:`Source.seek` with those positions when it starts, so a source resumes
right after the last event whose effect is online. It calls :meth:`Source.ack` only
once the events are in the offline (Delta) table as well: a broker that redelivers
unacknowledged messages therefore never loses an event, and the job skips the ones it
already wrote (their positions are not greater than the stored ones).

Sources:

- :class:`FileSource`: a JSON-lines file, tailed (deterministic; for tests and
  replays). Position = the byte offset after the line; one partition, the file.
- :class:`ArrowDirSource`: a directory of Arrow IPC files, read in name order.
  Position = file name + row.
- :class:`RedisStream`: a Redis stream read with a consumer group (``XREADGROUP``,
  ``XACK``). Position = the entry id (ms, seq) as 16 big-endian bytes; partition =
  the consumer (each consumer of a group receives its own increasing ids). On start
  it first re-reads its own pending entries (delivered, not acknowledged: the job
  died before its offline flush), then new ones. A dead consumer's pending entries
  wait for a consumer of the same name; they are never claimed (``XAUTOCLAIM``) by
  another, whose stored position may already be past them. Replies are read as the
  parser (hiredis) makes them, undecoded, and handed on as a :class:`RedisBatch`,
  which :mod:`.parse` reads column by column (no object per event); after a full
  batch (a backlog) the next ``XREADGROUP`` is sent at once, so that Redis prepares
  it while the job writes (its entries are pending until acknowledged, like any).

Kafka would follow the same shape: partition = topic/partition, position = the
offset as 8 big-endian bytes, ``seek`` = ``consumer.assign`` at the stored offset + 1,
``ack`` = ``commit(offsets)`` (the stored LMDB positions stay the truth; the committed
consumer offsets only tell the broker what may be dropped).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from collections.abc import Sequence
from itertools import chain
from typing import Any, NamedTuple

from ..errors import InvalidArgumentError, SourceError


class Message(NamedTuple):
    """One event: its fields (column -> text or JSON value), where it came from, and
    how to acknowledge it. (A tuple: made once per event, it must be cheap.)"""

    partition: str
    position: bytes
    fields: dict[str, Any]
    ack: Any = None


class RedisBatch(Sequence[Message]):
    """New entries of one ``XREADGROUP`` reply, as the reply holds them: ``entries`` =
    ``[[id, [field, value, field, value, ...]], ...]`` in id order, as bytes (or text).
    It is a sequence of :class:`Message` s (made on demand, for the rare batch with a
    bad event), and :mod:`.parse` reads its fields column by column without making
    them."""

    def __init__(self, consumer: str, entries: list[list[Any]]) -> None:
        self.consumer, self.entries = consumer, entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        entry_id, flat = self.entries[i]
        entry_id = _text(entry_id)
        try:
            flat = [_text(x) for x in flat or ()]  # None: an entry deleted while pending
            fields = dict(zip(flat[0::2], flat[1::2]))
        except UnicodeDecodeError as e:
            fields = {"_raw": repr(flat)[:300], "_error": f"a field is not UTF-8 text: {e}"}
        return Message(self.consumer, redis_id(entry_id), fields, entry_id)

    def positions(self) -> dict[str, bytes]:
        """The greatest position: the last entry's (a reply is in id order)."""
        return {self.consumer: redis_id(self.entries[-1][0])}

    def acks(self) -> list[str]:
        """One ack token for the batch: its entry ids joined by spaces (see
        :meth:`RedisStream.ack`), so the batch's acks are one string, not one per
        entry, in the buffered batch the job stores."""
        ids = [e[0] for e in self.entries]
        return [b" ".join(ids).decode() if isinstance(ids[0], bytes) else " ".join(ids)]


def _text(x: str | bytes) -> str:
    return x.decode() if isinstance(x, bytes) else x


class Source:
    """The interface a streaming job reads from (see the module doc)."""

    #: Names the job's stored state (positions, buffered batches, Delta app id).
    name: str = "source"

    def seek(self, positions: dict[str, bytes]) -> None:
        """Resumes after ``positions`` (partition -> last position written online)."""

    def poll(self, max_messages: int, timeout_s: float) -> Sequence[Message]:
        """Up to ``max_messages`` messages, waiting at most ``timeout_s`` for the first
        (a list, or a sequence that also knows its ``positions()`` and ``acks()``, such
        as :class:`RedisBatch`)."""
        raise NotImplementedError

    def ack(self, acks: list[Any]) -> None:
        """Acknowledges delivered messages (their ``ack`` tokens) as durably stored."""

    def drain(self) -> Sequence[Message]:
        """The messages received that no :meth:`poll` returned yet (a read sent
        ahead), without reading more: a stopping job writes them, so that a clean stop
        leaves nothing delivered but unacknowledged."""
        return []

    def close(self) -> None:
        """Releases connections and files."""


def _poll(read: Any, max_messages: int, timeout_s: float) -> list[Message]:
    """``read(max_messages)`` until it gives messages or ``timeout_s`` passes (the
    tailing sources look again every 10 ms)."""
    deadline = time.monotonic() + timeout_s
    while True:
        out = read(max_messages)
        if out or time.monotonic() >= deadline:
            return out
        time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))


class FileSource(Source):
    """Tails a JSON-lines file: one JSON object per line (the group's columns). Lines
    that are not complete yet (no newline) wait for the next poll."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"file:{self.path.name}"
        self._offset = 0

    def seek(self, positions: dict[str, bytes]) -> None:
        pos = positions.get(self.path.name)
        self._offset = 0 if pos is None else int.from_bytes(pos, "big")

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        return _poll(self._read, max_messages, timeout_s)

    def _read(self, max_messages: int) -> list[Message]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self._offset)
                out = []
                while len(out) < max_messages:
                    line = f.readline()
                    if not line.endswith(b"\n"):
                        break
                    self._offset += len(line)
                    if not line.strip():
                        continue
                    pos = self._offset.to_bytes(8, "big")
                    try:
                        fields = json.loads(line)
                    except ValueError as e:
                        fields = {"_raw": line.decode("utf-8", "replace").rstrip("\n"),
                                  "_error": f"not JSON: {e}"}
                    if not isinstance(fields, dict):
                        fields = {"_raw": line.decode("utf-8", "replace").rstrip("\n"),
                                  "_error": "not a JSON object"}
                    out.append(Message(self.path.name, pos, fields, None))
                return out
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SourceError(f"cannot read the stream file {self.path}: {e}") from e


class ArrowDirSource(Source):
    """Tails a directory of Arrow IPC files (``*.arrow``, stream or file format), read
    in name order, each row one event (columns = the group's). Write each file under
    another name and rename it in, so a file is never read half-written. Position =
    the file name, a NUL and the next row (8 bytes big-endian); one partition, the
    directory."""

    def __init__(self, path: str | os.PathLike[str], *, name: str | None = None) -> None:
        self.path = Path(path)
        self.name = name or f"arrow:{self.path.name}"
        self._file, self._row = "", 0

    def seek(self, positions: dict[str, bytes]) -> None:
        pos = positions.get(self.path.name)
        if pos is None:
            self._file, self._row = "", 0
        else:
            name, _, row = pos.rpartition(b"\0")
            self._file, self._row = name.decode(), int.from_bytes(row, "big")

    def poll(self, max_messages: int, timeout_s: float) -> list[Message]:
        return _poll(self._read, max_messages, timeout_s)

    def _read(self, max_messages: int) -> list[Message]:
        import pyarrow as pa

        try:
            names = sorted(e.name for e in os.scandir(self.path)
                           if e.name.endswith(".arrow") and e.name >= self._file)
        except FileNotFoundError:
            return []
        except OSError as e:
            raise SourceError(f"cannot list the stream directory {self.path}: {e}") from e
        out: list[Message] = []
        for name in names:
            if name != self._file:
                self._file, self._row = name, 0
            try:
                with pa.memory_map(str(self.path / name)) as f:
                    try:
                        table = pa.ipc.open_file(f).read_all()
                    except pa.ArrowInvalid:
                        f.seek(0)
                        table = pa.ipc.open_stream(f).read_all()
            except (OSError, pa.ArrowInvalid) as e:
                raise SourceError(f"cannot read the Arrow IPC file {self.path / name}: {e}") from e
            rows = table.slice(self._row, max_messages - len(out)).to_pylist()
            for r in rows:
                self._row += 1
                pos = name.encode() + b"\0" + self._row.to_bytes(8, "big")
                out.append(Message(self.path.name, pos, r, None))
            if len(out) >= max_messages:
                break
        return out


def redis_id(entry_id: str | bytes) -> bytes:
    """A Redis stream entry id ``<ms>-<seq>`` as 16 big-endian bytes (ordered)."""
    if isinstance(entry_id, bytes):
        entry_id = entry_id.decode()
    ms, _, seq = entry_id.partition("-")
    return ((int(ms) << 64) | int(seq or 0)).to_bytes(16, "big")


class RedisStream(Source):
    """A Redis stream read through a consumer group (created at the stream's start,
    with the stream, if missing). ``consumer`` names this reader; several jobs with
    different consumers in one group share the stream's entries."""

    def __init__(self, url: str, *, stream: str, group: str = "pitstop",
                 consumer: str = "worker-1", name: str | None = None,
                 client: Any = None) -> None:
        try:
            import redis
        except ImportError as e:  # pragma: no cover - an optional dependency
            raise SourceError("RedisStream needs the redis package: pip install redis") from e
        self._redis = redis
        self.url, self.stream, self.group, self.consumer = url, stream, group, consumer
        self.name = name or f"redis:{stream}:{group}:{consumer}"
        self._r = client or redis.Redis.from_url(url, decode_responses=True)
        self._pending = True  # first our own pending entries, then new ones
        self._after = "0"
        self._skip: bytes | None = None
        self._pool = getattr(self._r, "connection_pool", None)
        self._ahead: Any = None  # a connection whose XREADGROUP reply is not read yet
        self._call("create the consumer group", self._create_group)

    def _create_group(self) -> None:
        try:
            self._r.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except self._redis.ResponseError as e:
            if "BUSYGROUP" not in str(e):
                raise

    def _call(self, what: str, fn: Any, *args: Any, **kw: Any) -> Any:
        try:
            return fn(*args, **kw)
        except self._redis.RedisError as e:
            raise SourceError(f"Redis at {self.url}: cannot {what} (stream '{self.stream}', "
                              f"group '{self.group}'): {e}") from e

    def seek(self, positions: dict[str, bytes]) -> None:
        self._drop_ahead()
        self._skip = positions.get(self.consumer)
        self._pending, self._after = True, "0"

    def drain(self) -> Sequence[Message]:
        if self._ahead is None:
            return []
        entries = self._call("read new entries", self._receive, *self._take_ahead())
        return RedisBatch(self.consumer, entries) if entries else []

    def poll(self, max_messages: int, timeout_s: float) -> Sequence[Message]:
        out: list[Message] = []
        stale: list[bytes] = []
        while self._pending:
            batch = RedisBatch(self.consumer, self._call(
                "read pending entries", self._read, self._after, max_messages, None))
            if not batch:
                self._pending = False
                break
            for m in batch:
                self._after = m.ack
                if self._skip is not None and m.position <= self._skip:
                    stale.append(m.ack)  # written already (and flushed: see StreamJob)
                else:
                    out.append(m)
            if out:
                break
        if stale:
            self.ack(stale)
        if out:
            return out
        entries = []
        if self._ahead is not None:
            entries = self._call("read new entries", self._receive, *self._take_ahead())
        if not entries:
            entries = self._call("read new entries", self._read, ">", max_messages,
                                 max(1, int(timeout_s * 1000)))
        if len(entries) == max_messages and self._pool is not None:
            self._call("read new entries", self._send_ahead, max_messages)
        return RedisBatch(self.consumer, entries) if entries else []

    # A full batch means a backlog: the next XREADGROUP (no BLOCK) is sent at once and
    # its reply read by the next poll, so Redis gathers it while the job writes this
    # one. Its entries are delivered (pending) as soon as Redis answers: a job that
    # dies before reading them re-reads them from the pending list on restart.

    def _send_ahead(self, count: int) -> None:
        conn = self._pool.get_connection()
        try:
            conn.send_command("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                              "STREAMS", self.stream, ">")
        except BaseException:
            conn.disconnect()
            self._pool.release(conn)
            raise
        self._ahead = conn

    def _take_ahead(self) -> tuple[Any]:
        conn, self._ahead = self._ahead, None
        return (conn,)

    def _drop_ahead(self) -> None:
        """Reads away a reply sent ahead (its entries stay pending for this consumer,
        to be read again from the pending list)."""
        if self._ahead is not None:
            try:
                self._receive(*self._take_ahead())
            except self._redis.RedisError:
                pass

    def _read(self, after: str, count: int, block_ms: int | None) -> list[list[Any]]:
        """``XREADGROUP ... STREAMS <stream> <after>`` on a pooled connection, the reply
        as the parser (hiredis) made it, undecoded: ``[[id, [field, value, ...]], ...]``
        of bytes. redis-py's own reply callback would decode every value and build a
        dict per entry; a batch reads the flat lists column by column instead
        (:mod:`.parse`)."""
        block = () if block_ms is None else ("BLOCK", block_ms)
        if self._pool is None:  # not a plain redis.Redis: its own reply, made flat again
            got = self._r.xreadgroup(self.group, self.consumer, {self.stream: after},
                                     count=count, block=block_ms)
            return _flat_entries(got)
        conn = self._pool.get_connection()
        try:
            conn.send_command("XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                              *block, "STREAMS", self.stream, after)
        except BaseException:
            conn.disconnect()
            self._pool.release(conn)
            raise
        return self._receive(conn)

    def _receive(self, conn: Any) -> list[list[Any]]:
        """The entries of the XREADGROUP reply waiting on ``conn``; releases it."""
        try:
            reply = conn.read_response(disable_decoding=True)  # bytes: no str per value
        except BaseException:
            conn.disconnect()
            raise
        finally:
            self._pool.release(conn)
        if not reply:
            return []
        if isinstance(reply, dict):  # RESP3: {stream: entries}
            return next(iter(reply.values()))
        return reply[0][1]  # RESP2: [[stream, entries]]

    def ack(self, acks: list[Any]) -> None:
        """``XACK`` the entries; a token is an entry id or several joined by spaces."""
        ids = list(chain.from_iterable(a.split(" ") for a in acks))
        for i in range(0, len(ids), 10_000):
            self._call("acknowledge entries", self._r.xack, self.stream, self.group,
                       *ids[i:i + 10_000])

    def close(self) -> None:
        self._drop_ahead()
        try:
            self._r.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def _flat_entries(got: Any) -> list[list[Any]]:
    """A reply parsed by a redis client's own XREADGROUP callback (its shape depends on
    the client's version and protocol) as ``[[id, [field, value, ...]], ...]``."""
    if not got:
        return []
    streams = list(got.values()) if isinstance(got, dict) else [g[1] for g in got]
    entries = streams[0]
    if len(entries) == 1 and entries[0] and isinstance(entries[0][0], (list, tuple)):
        entries = entries[0]  # {stream: [entries]}
    return [[i, [x for kv in (f or {}).items() for x in kv]] for i, f in entries]


def check_batching(max_batch: int) -> int:
    if isinstance(max_batch, bool) or not isinstance(max_batch, int) or max_batch < 1:
        raise InvalidArgumentError(f"max_batch must be a positive integer; got {max_batch!r}")
    return max_batch
