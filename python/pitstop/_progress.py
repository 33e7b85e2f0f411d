"""Progress for long work: a line on stderr that updates in place on a terminal, and
nothing at all when stderr is not a terminal (logs and CI stay clean)."""

from __future__ import annotations

import sys
import time

THRESHOLD_ROWS = 500_000


class Progress:
    def __init__(self, title: str, *, min_rows: int = THRESHOLD_ROWS):
        self.title = title
        self.min_rows = min_rows
        self.start = time.perf_counter()
        self.on = sys.stderr.isatty()
        self.shown = False

    def step(self, what: str, rows: int) -> None:
        if self.on and rows >= self.min_rows:
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(f"\r\x1b[K{self.title}: {what} ({rows:,} rows, {elapsed:.1f} s)")
            sys.stderr.flush()
            self.shown = True

    def done(self, rows: int) -> None:
        if self.shown:
            elapsed = time.perf_counter() - self.start
            sys.stderr.write(f"\r\x1b[K{self.title}: {rows:,} rows in {elapsed:.1f} s\n")
            sys.stderr.flush()
