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
          features: list[str] | None = None, method: Any = None, threshold: Any = None,
          window: Any = None, segment_by: str | None = None) -> DriftReport:
    """``FeatureView.drift``: the view's features (and ``prediction``, when both sides
    have it) from ``reference`` to ``current`` (default: the last 7 days of logs);
    ``window`` and ``segment_by`` split the current rows (see :func:`split_drift`)."""
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
    meta = {"view": view.name, "view_version": view.version, "reference": ref_what,
            "current": cur_what}
    if window is not None or segment_by is not None:
        return split_drift(ref, cur, features=features, method=method, threshold=threshold,
                           window=window, segment_by=segment_by, meta=meta)
    return compare(ref, cur, features=features, method=method, threshold=threshold, meta=meta)


def split_drift(ref: Any, cur: Any, *, features: list[str] | None, method: Any, threshold: Any,
                window: Any, segment_by: str | None, meta: dict) -> DriftReport:
    """Drift per time window of the current rows (``window="1d"``: buckets of that length
    on their ``logged_at``, or their only timestamp column) and/or per value of column
    ``segment_by`` (the reference is split by it too when it has the column). One report
    row per feature and (window, segment), with ``window`` (the bucket's start, ISO) and
    ``segment`` columns; windows or segments without current rows are left out."""
    import pyarrow.compute as pc

    from .._inputs import duration_ns

    if isinstance(cur, list):
        if len(cur) != 1:
            raise InvalidArgumentError(
                "window= and segment_by= split one current table (prediction logs, or a table "
                "with every feature); this current side is several group tables")
        cur = cur[0]
    parts: list[tuple[dict, Any, pa.Table]] = [({}, ref, cur)]
    if segment_by is not None:
        if segment_by not in cur.column_names:
            raise InvalidArgumentError(
                f"segment_by={segment_by!r} is not a column of the current data ({cur.column_names})")
        split = []
        for labels, r, c in parts:
            for value in pc.unique(c.column(segment_by)).drop_null().to_pylist():
                def keep(t: pa.Table) -> pa.Table:
                    return t.filter(pc.fill_null(pc.equal(t.column(segment_by), value), False)) \
                        if segment_by in t.column_names else t
                rr = [keep(t) for t in r] if isinstance(r, list) else keep(r)
                split.append(({**labels, "segment": str(value)}, rr, keep(c)))
        parts = sorted(split, key=lambda p: p[0]["segment"])
    if window is not None:
        width = duration_ns(window, "window")
        times = [f.name for f in cur.schema if pa.types.is_timestamp(f.type)]
        column = "logged_at" if "logged_at" in cur.column_names else (times[0] if len(times) == 1 else None)
        if column is None:
            raise InvalidArgumentError(
                "window= splits the current rows by their time: give them a 'logged_at' column "
                f"or exactly one timestamp column (found {times})")
        if not width or width <= 0:
            raise InvalidArgumentError(f"window={window!r} must be a positive duration like '1d'")
        split = []
        for labels, r, c in parts:
            t = pc.cast(c.column(column), pa.timestamp("ns", "UTC"))
            ns = pc.cast(t, pa.int64()).to_numpy(zero_copy_only=False)
            valid = ~pc.is_null(t).to_numpy(zero_copy_only=False)
            bucket = (ns // width) * width
            for start in sorted(set(bucket[valid].tolist())):
                sub = c.filter(pa.array(valid & (bucket == start)))
                at = dt.datetime.fromtimestamp(start / 1e9, dt.timezone.utc).isoformat(timespec="seconds")
                split.append(({**labels, "window": at}, r, sub))
        parts = split
    rows, details = [], []
    for labels, r, c in parts:
        if c.num_rows == 0 or (isinstance(r, pa.Table) and r.num_rows == 0):
            continue
        rep = compare(r, c, features=features, method=method, threshold=threshold)
        for row in rep.table.to_pylist():
            rows.append({**row, **{k: labels.get(k) for k in ("window", "segment")
                                   if (k == "window" and window is not None)
                                   or (k == "segment" and segment_by is not None)}})
        details.extend(rep.details)
    meta = {**meta, "window": None if window is None else str(window), "segment_by": segment_by,
            "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    return DriftReport(rows, details, meta)
