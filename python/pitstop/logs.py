"""Prediction logs: what was served, kept as a Delta table per feature view
(``logs/<view>/v<N>/``), for monitoring and as future training data.

A background thread owns the writes: ``log`` puts a batch on a bounded queue and returns;
the thread drains the queue, gathers what is waiting into one Arrow table and appends
it in one Delta commit. ``flush`` waits for the queue to drain and the commit to land;
``close`` flushes and stops the thread. A full queue blocks the caller (backpressure)
rather than dropping a prediction.
"""

from __future__ import annotations

import datetime as dt
import queue
import threading
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from .offline import DeltaGroupTable

if TYPE_CHECKING:
    from .predictor import Predictor
    from .store import FeatureStore
    from .view import FeatureView

_STOP = object()


def log_table(store: FeatureStore, view: FeatureView) -> DeltaGroupTable:
    return DeltaGroupTable(store.path / "logs" / view.name / f"v{view.version}")


class PredictionLogger:
    def __init__(self, store: FeatureStore, predictor: Predictor, *, maxsize: int = 1024):
        self._table = log_table(store, predictor.view)
        self._model = predictor.model
        self._features = predictor.model.inputs
        self._queue: queue.Queue = queue.Queue(maxsize=maxsize)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="pitstop-log", daemon=True)
        self._thread.start()

    def log(self, keys: pa.Table, x: np.ndarray, y: np.ndarray) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((keys, x.copy(), np.asarray(y).copy(), dt.datetime.now(dt.timezone.utc)))

    def _batch(self, items: list) -> pa.Table:
        parts = []
        for keys, x, y, when in items:
            cols = {name: keys.column(name) for name in keys.column_names}
            for j, f in enumerate(self._features):
                cols[f] = pa.array(x[:, j], pa.float32())
            cols["prediction"] = pa.array(y.reshape(len(x), -1)[:, -1], pa.float32())
            cols["model"] = pa.array([self._model.name] * len(x))
            cols["model_version"] = pa.array([self._model.version] * len(x), pa.int32())
            cols["logged_at"] = pa.array([when] * len(x), pa.timestamp("us", "UTC"))
            parts.append(pa.table(cols))
        return pa.concat_tables(parts, promote_options="permissive")

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            items, stop = [], item is _STOP
            if not stop:
                items.append(item)
            while not stop:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    stop = True
                else:
                    items.append(more)
            try:
                if items:
                    from ._schema import normalize

                    self._table.append(normalize(self._batch(items)))
            except BaseException as e:  # surfaced on the next log/flush
                self._error = e
            finally:
                for _ in range(len(items) + (1 if stop else 0)):
                    self._queue.task_done()
            if stop:
                return

    def flush(self) -> None:
        self._queue.join()
        if self._error is not None:
            raise self._error

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_STOP)
            self._thread.join()
        if self._error is not None:
            raise self._error


def read_logs(store: FeatureStore, view: FeatureView) -> pa.Table:
    table = log_table(store, view)
    if not table.exists():
        return pa.table({})
    return table.read()[1]  # through offline.py's dispatch point: works in forked children
