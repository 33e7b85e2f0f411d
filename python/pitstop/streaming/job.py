"""The streaming job: a loop a reader can hold in their head.

::

    start:  flush what a previous run buffered (idempotent); seek the source to the
            positions stored online
    loop:   poll up to max_batch messages (waiting at most max_delay)
            parse with the group's schema -> rows + dead letters (with reasons)
            transform (optional)
            ONE LMDB transaction: online rows, aggregation states, positions, the
                                  batch buffered for the offline table
            every offline_flush: Delta append with app transaction (job, batch no.)
                                 -> drop the buffered batches -> ack the source
    stop:   (SIGTERM/SIGINT, run_for's end) after the current batch (and the one
            the source read ahead, if any): flush, ack

Guarantees (``writer.py`` says how): after any crash the online store holds the
newest row per key of exactly the events whose positions it stored, each counted once
by the group's aggregations; the offline table holds every acknowledged event exactly
once (a repeated flush is a Delta no-op); the source is acknowledged last; a bad event
lands in the dead-letter table ``<store>/deadletter/<group>/v<N>`` with the reason and
the job goes on.
"""

from __future__ import annotations

import gc
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import pyarrow as pa

from .._inputs import duration_ns
from ..errors import (ColumnTypeError, DataError, InvalidArgumentError, SchemaError,
                      SourceError)
from .parse import parse
from .sources import Message, Source, check_batching
from .writer import Writer, dead_letter

if TYPE_CHECKING:
    from ..group import FeatureGroup

_BAD = (DataError, SchemaError, ColumnTypeError)


@dataclass
class JobStats:
    """What a job did so far."""

    batches: int = 0
    rows: int = 0
    dead: int = 0
    flushes: int = 0
    offline_rows: int = 0
    last_event_lag_s: float | None = None  # now - newest event time of the last batch
    started: float = field(default_factory=time.time)


class StreamJob:
    """Streams ``source`` into feature group ``into`` (see the module doc). Make it with
    :meth:`FeatureStore.stream`."""

    def __init__(self, source: Source, into: FeatureGroup, *,
                 transform: Callable[[pa.Table], pa.Table] | None = None,
                 max_batch: int = 5000, max_delay: Any = "100ms",
                 offline_flush: Any = "10s", name: str | None = None) -> None:
        if not isinstance(source, Source):
            raise InvalidArgumentError(f"source must be a pitstop.streaming Source (FileSource, "
                                       f"RedisStream, ...); got {type(source).__name__}")
        if transform is not None and not callable(transform):
            raise InvalidArgumentError("transform must be a function pa.Table -> pa.Table")
        self.source, self.group, self.transform = source, into, transform
        self.max_batch = check_batching(max_batch)
        self.max_delay_s = (duration_ns(max_delay, "max_delay") or 0) / 1e9
        self.flush_s = (duration_ns(offline_flush, "offline_flush") or 0) / 1e9
        self.writer = Writer(into, name or source.name)
        self._stats = JobStats()
        self._stop = threading.Event()
        self._started = False
        self._last_flush = time.monotonic()

    def stats(self) -> dict[str, Any]:
        """Batches, rows, dead letters, flushes, offline rows, the lag of the newest
        event of the last batch (seconds), rows buffered for the offline table."""
        s = self._stats
        return {"batches": s.batches, "rows": s.rows, "dead": s.dead, "flushes": s.flushes,
                "offline_rows": s.offline_rows, "lag_s": s.last_event_lag_s,
                "buffered": self.writer.buffered_rows,
                "rows_per_s": s.rows / max(1e-9, time.time() - s.started)}

    def stop(self) -> None:
        """Asks the loop to stop after the current batch (thread- and signal-safe)."""
        self._stop.set()

    def run(self) -> dict[str, Any]:
        """Runs until :meth:`stop`, SIGTERM or SIGINT; returns :meth:`stats`."""
        return self._run(None)

    def run_for(self, seconds: Any) -> dict[str, Any]:
        """Runs for ``seconds`` (a number or a duration like ``"30s"``), then stops as
        :meth:`run` does; returns :meth:`stats`."""
        if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
            limit = float(seconds)
        else:
            limit = (duration_ns(seconds, "seconds") or 0) / 1e9
        return self._run(time.monotonic() + limit)

    def _run(self, deadline: float | None) -> dict[str, Any]:
        self._stop.clear()
        previous = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                previous[sig] = signal.signal(sig, lambda *_: self._stop.set())
        try:
            if not self._started:
                self.start()
            polled = False  # a bounded run polls once even if starting took its time
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline and polled:
                    break
                polled = True
                wait = self.max_delay_s
                if deadline is not None:
                    wait = max(0.0, min(wait, deadline - time.monotonic()))
                self.step(wait)
            rest = self._read(self.source.drain)  # received already: written before stopping
            if rest:
                with _no_cyclic_gc():
                    self._write(rest)
            self.flush()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return self.stats()

    def start(self) -> None:
        """Flushes what a previous run left, then seeks the source (run does this)."""
        acks = self.writer.start()
        if acks:
            self.source.ack(acks)
        self.source.seek(self.writer.positions())
        self._started = True

    def step(self, wait_s: float) -> int:
        """One micro-batch (poll, parse, one online transaction), and a flush when due;
        returns the messages handled."""
        if not self._started:
            self.start()
        with _no_cyclic_gc():
            messages = self._read(self.source.poll, self.max_batch, wait_s)
            if messages:
                self._write(messages)
            n = len(messages)
            del messages
        if self.writer.buffered_rows and (time.monotonic() - self._last_flush >= self.flush_s):
            self.flush()
        return n

    def _read(self, fn: Callable[..., Sequence[Message]], *args: Any) -> Sequence[Message]:
        """``fn(*args)`` (the source's poll or drain). A read that fails may have had
        entries delivered (a broker's pending list) that the job never saw, while later
        ones would move its stored position past them: so after a failure the next step
        starts again (flush, acknowledge, seek to the stored positions), and reads those
        entries from where the broker keeps them."""
        try:
            return fn(*args)
        except SourceError:
            self._started = False
            raise

    def flush(self) -> int:
        """Moves buffered batches to the offline tables and acknowledges the source."""
        rows = self.writer.flush(self.source)
        self._last_flush = time.monotonic()
        if rows:
            self._stats.flushes += 1
            self._stats.offline_rows += rows
        return rows

    def _write(self, messages: Sequence[Message]) -> None:
        job = self.writer.job
        columns = self.writer.columns()
        g = self.group
        required = {*g.primary_key, g.event_time, *([g.created_time] if g.created_time else [])}
        table, good, bad = parse(messages, columns, required)
        dead = [dead_letter(m, reason, job) for m, reason in bad]
        if self.transform is not None and table.num_rows:
            try:
                table = self.transform(table)
            except Exception as e:  # noqa: BLE001 - a user function: its batch is dead
                reason = f"transform failed: {type(e).__name__}: {e}"
                dead += [dead_letter(m, reason, job) for m in good]
                table, good = columns.empty_table(), []
        positions, acks = positions_and_acks(messages)
        try:
            self.writer.write(table, positions=positions, dead=dead, acks=acks)
        except _BAD:
            if len(good) <= 1:  # this one row is bad: dead-letter it
                dead += [dead_letter(m, "rejected by the group's checks", job) for m in good]
                self.writer.write(columns.empty_table(), positions=positions, dead=dead, acks=acks)
            else:  # split to find the bad rows (only when a batch has some)
                self._write_split(table, good, dead, positions, acks)
        s = self._stats
        s.batches += 1
        s.rows += table.num_rows
        s.dead += len(dead)
        if table.num_rows:
            newest = pa.compute.max(table.column(g.event_time)).as_py()
            if newest is not None:
                s.last_event_lag_s = time.time() - newest.timestamp()

    def _write_split(self, table: pa.Table, good: Sequence[Message], dead: list[dict[str, Any]],
                     positions: dict[str, bytes], acks: list[Any]) -> None:
        keep, job = [], self.writer.job
        from .. import _schema

        g = self.group
        if table.num_rows != len(good):  # a transform changed the rows: no way to tell
            dead += [dead_letter(m, "the batch was rejected by the group's checks", job)
                     for m in good]
            good = []
        for i, m in enumerate(good):
            row = table.slice(i, 1)
            try:
                _schema.validate(_schema.normalize(row), g._columns, g.nan_policy)
                keep.append(i)
            except _BAD as e:
                dead.append(dead_letter(m, str(e), job))
        self.writer.write(table.take(keep) if keep else table.slice(0, 0),
                          positions=positions, dead=dead, acks=acks)


def positions_and_acks(messages: Sequence[Message]) -> tuple[dict[str, bytes], list[Any]]:
    """The greatest position per partition and the ack tokens of a batch (a
    :class:`~.sources.RedisBatch` knows them without making its messages)."""
    if hasattr(messages, "positions"):
        return messages.positions(), messages.acks()  # type: ignore[attr-defined]
    positions: dict[str, bytes] = {}
    for m in messages:
        if m.position > positions.get(m.partition, b""):
            positions[m.partition] = m.position
    return positions, [m.ack for m in messages if m.ack is not None]


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """A micro-batch allocates a few container objects per event (the reply's lists,
    messages), all freed by reference counting when it ends. Left on, the cyclic
    collector runs many times per batch and, as survivors pile up, full collections
    that walk every object of the process (pyarrow's, deltalake's): a quarter of the
    job's time in a profile. It is paused for the batch and resumed after (an
    allocation then triggers a collection of whatever is left: nothing, unless a
    cycle was made)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
