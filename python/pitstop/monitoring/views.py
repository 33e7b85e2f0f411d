"""Monitoring a feature view: its prediction log, drift against its training data, and
training/serving skew. ``FeatureView.logs``, ``.drift`` and ``.skew`` call these.

``reference="training"`` is the view's last training snapshot: every feature read from
its group's offline table at the Delta version that training read (the rows of the
groups, not the spine's joined rows, which pitstop does not keep). Pass any table (for
example the training set itself) to compare with exactly those rows instead.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from .._inputs import as_table
from ..errors import InvalidArgumentError, NotFoundError
from .drift import DriftReport, compare, log_window
from .stats import view_offline

if TYPE_CHECKING:
    from ..view import FeatureView, Snapshot

PREDICTION = "prediction"


def logs(view: FeatureView, start: Any = "-7d", end: Any = None, *,
         now: dt.datetime | None = None) -> pa.Table:
    """The view's prediction log between ``start`` and ``end`` (durations back from now
    like ``"-7d"``, datetimes or ISO strings; None for no bound)."""
    from ..logs import read_logs

    return log_window(read_logs(view._store, view), start, end, now=now)


def last_snapshot(view: FeatureView) -> Snapshot:
    row = view._store.registry.one(
        "SELECT id FROM snapshots WHERE view_name=? AND view_version=? ORDER BY id DESC LIMIT 1",
        (view.name, view.version))
    if row is None:
        raise NotFoundError(
            f"feature view '{view.name}' v{view.version} has no training snapshot yet; read "
            "training data with fv.training_data(spine) first, or pass reference=<a table>")
    return view._store._snapshot(int(row["id"]))


def _side(view: FeatureView, data: Any, what: str) -> tuple[Any, str]:
    """A drift side as tables, and a description for the report."""
    from ..view import Snapshot, SNAPSHOT_KEY

    if isinstance(data, str) and data == "training":
        snap = last_snapshot(view)
        return view_offline(view, tables=snap.tables), f"training snapshot {snap.id}"
    if isinstance(data, str) and data.startswith("logs:"):
        window = data[len("logs:"):]
        return logs(view, start=f"-{window.lstrip('-')}"), f"prediction log, last {window.lstrip('-')}"
    if isinstance(data, Snapshot) or (isinstance(data, int) and not isinstance(data, bool)):
        snap = view._resolve_snapshot(data)
        return view_offline(view, tables=snap.tables), f"training snapshot {snap.id}"
    if isinstance(data, str):
        raise InvalidArgumentError(f"{what}={data!r}: pass 'training', 'logs:<window>' (e.g. 'logs:7d'), "
                                   "a Snapshot or its id, or a table")
    table = as_table(data, what)
    meta = table.schema.metadata or {}
    if SNAPSHOT_KEY in meta:
        return table, f"training data (snapshot {Snapshot.from_json(meta[SNAPSHOT_KEY]).id})"
    return table, f"a table of {table.num_rows:,} rows"


def drift(view: FeatureView, reference: Any = "training", current: Any = None, *,
          features: list[str] | None = None, method: Any = None, threshold: Any = None) -> DriftReport:
    """``FeatureView.drift``: the view's features (and ``prediction``, when both sides
    have it) from ``reference`` to ``current`` (default: the last 7 days of logs)."""
    ref, ref_what = _side(view, reference, "reference")
    cur, cur_what = _side(view, "logs:7d" if current is None else current, "current")
    if features is None:
        refs = ref if isinstance(ref, list) else [ref]
        curs = cur if isinstance(cur, list) else [cur]
        have = lambda parts, f: any(f in t.column_names for t in parts)  # noqa: E731
        features = [f for f in view.features if have(refs, f) and have(curs, f)]
        if have(refs, PREDICTION) and have(curs, PREDICTION):
            features.append(PREDICTION)
        if not features:
            raise InvalidArgumentError(
                f"the reference ({ref_what}) and current ({cur_what}) data share none of feature view "
                f"'{view.name}' v{view.version}'s features {view.features}")
    return compare(ref, cur, features=features, method=method, threshold=threshold,
                   meta={"view": view.name, "view_version": view.version,
                         "reference": ref_what, "current": cur_what})
