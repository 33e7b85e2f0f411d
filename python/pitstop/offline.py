"""The offline store: one Delta Lake table per feature group version.

An insert is one Delta commit (atomic: readers see all of it or none), so every read
can name the table version it saw, and time travel reproduces it. Each row carries
``_pitstop_seq`` = (commit version << 32) | row, its insertion order; reads return rows
in that order (files sorted by their minimum ``_pitstop_seq``, a check, and a sort only
when the check fails), so "the row that came last" means the same thing every time.
Spark, DuckDB and polars read the same tables.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._schema import SEQ
from .errors import NotFoundError


def _deltalake():
    import deltalake

    return deltalake


class DeltaGroupTable:
    """The Delta table of one feature group version, at ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return (self.path / "_delta_log").is_dir()

    def version(self) -> int:
        """The latest committed version, or -1 when nothing was inserted yet."""
        if not self.exists():
            return -1
        return _deltalake().DeltaTable(str(self.path)).version()

    def append(self, table: pa.Table) -> int:
        """Appends ``table`` (already carrying ``_pitstop_seq``) in one commit; returns
        the new version."""
        dl = _deltalake()
        mode = "append" if self.exists() else "error"
        self.path.mkdir(parents=True, exist_ok=True)
        dl.write_deltalake(str(self.path), table, mode=mode)
        return self.version()

    def _table(self, version: int | None = None, as_of: dt.datetime | None = None):
        dl = _deltalake()
        if not self.exists():
            raise NotFoundError(f"the offline table at {self.path} has no data yet; insert first")
        t = dl.DeltaTable(str(self.path))
        if version is not None:
            if version > t.version() or version < 0:
                raise NotFoundError(
                    f"the offline table at {self.path} has versions 0..{t.version()}; "
                    f"there is no version {version}"
                )
            t.load_as_version(version)
        elif as_of is not None:
            t.load_as_version(as_of)
        return t

    def files(self, version: int | None = None, as_of: dt.datetime | None = None) -> tuple[int, list[str]]:
        """(version, data files in insertion order) of the table at a version or time."""
        t = self._table(version, as_of)
        actions = pa.table(t.get_add_actions(flatten=True))
        paths = actions.column("path").to_pylist()
        key = f"min.{SEQ}"
        mins = actions.column(key).to_pylist() if key in actions.column_names else [0] * len(paths)
        ordered = [p for _, p in sorted(zip(mins, paths))]
        return t.version(), [p if os.path.isabs(p) else str(self.path / p) for p in ordered]

    def read(
        self,
        *,
        version: int | None = None,
        as_of: dt.datetime | None = None,
        columns: list[str] | None = None,
        since: int | None = None,
    ) -> tuple[int, pa.Table]:
        """(version read, rows in insertion order). ``since=v`` reads only the rows
        committed after version ``v`` (for catching the online store up)."""
        ver, files = self.files(version, as_of)
        cols = None if columns is None else list(dict.fromkeys([*columns, SEQ]))
        schema = self.schema(ver)
        if not files:
            empty = schema.empty_table()
            return ver, empty.select(cols) if cols else empty
        table = pq.ParquetDataset(files).read(columns=cols, use_threads=True)
        table = table.cast(pa.schema([schema.field(n) for n in table.column_names]))
        seq = table.column(SEQ).to_numpy()
        if since is not None:
            keep = (seq >> 32) > since
            table, seq = table.filter(pa.array(keep)), seq[keep]
        if len(seq) > 1 and not bool(np.all(seq[1:] >= seq[:-1])):
            table = table.take(pc.sort_indices(table.column(SEQ)))
        return ver, table

    def schema(self, version: int | None = None) -> pa.Schema:
        t = self._table(version)
        return pa.schema(t.schema().to_arrow())
