"""The Rust extension. Call it through the public modules (``pitstop.pit_join``),
which normalize arguments; the signatures here take exact types."""

from typing import Any

import pyarrow as pa

__version__: str

def pit_join(
    spine: Any,
    spine_time: str,
    features: list[
        tuple[Any, str, list[str], list[str], str, str | None, int | None, str | None]
    ],
    *,
    allow_exact_matches: bool,
    knowledge_time: bool,
) -> pa.Table:
    """Point-in-time join. ``features`` holds, per table: (table, label for errors,
    spine key columns, feature key columns, event-time column, created-time column,
    TTL in nanoseconds, output prefix). Raises ``pitstop.errors`` classes."""
