"""Streaming ingestion: events from a source (a Redis stream, a file tail) into a
feature group's online and offline store, each event's effect exactly once.

- :mod:`.sources`: the :class:`Source` interface and its implementations;
- :mod:`.parse`: messages to rows with the group's schema, bad ones with a reason;
- :mod:`.writer`: the exactly-once write path (one LMDB transaction per micro-batch
  with the source positions; Delta appends with application transaction ids);
- :mod:`.job`: the loop (:class:`StreamJob`), made by ``FeatureStore.stream``.
"""

from __future__ import annotations

from .job import StreamJob
from .sources import ArrowDirSource, FileSource, Message, RedisStream, Source

__all__ = ["ArrowDirSource", "FileSource", "Message", "RedisStream", "Source", "StreamJob"]
