"""Training/serving skew: what was served against what training would have computed.

Each logged prediction carries the entity keys, the time it was logged and the float32
features that were served. ``skew`` replays those (keys, ``logged_at``) rows as a
spine through the same point-in-time join that builds training data
(``FeatureView.training_data``, without recording a snapshot), each row at the offline
table versions that were committed when it was logged (Delta commit times), so a row
inserted after a prediction does not count against it; casts the result to float32 as
serving does, and compares feature by feature:

- a row *matches* when both sides are missing (null/NaN), or both are present and
  ``|served - offline| <= rtol * max(|served|, |offline|)``;
- *missing online*: served NaN where the offline join found a value (the online store
  lags, or lost the row); *missing offline*: the reverse (a row written online only);
- SMAPE over rows present on both sides: mean of ``2|a - b| / (|a| + |b|)`` (0 for 0, 0);
- the worst keys: the mismatched rows, missing ones first, then by ``|a - b|``.

Cost: one read of the log window and one point-in-time join per distinct set of table
versions the window spans (one per insert that landed in it); the comparison is
vectorized numpy. A commit that lands between a lookup and its log timestamp (micro-
seconds) can show as a mismatch of that one row.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .._inputs import as_table
from ..errors import DataError, InvalidArgumentError, SchemaError, StoreError

if TYPE_CHECKING:
    from ..view import FeatureView

WORST = 5

SCHEMA = pa.schema([
    ("feature", pa.string()), ("n", pa.int64()), ("mismatches", pa.int64()),
    ("mismatch_rate", pa.float64()), ("missing_online", pa.int64()), ("missing_offline", pa.int64()),
    ("smape", pa.float64()), ("delta_p50", pa.float64()), ("delta_p99", pa.float64()),
    ("delta_max", pa.float64()), ("worst_keys", pa.list_(pa.string())),
])


class SkewReport:
    """``table`` (one row per feature), ``passed`` (no mismatch anywhere), ``to_json()``,
    ``to_html(path)``."""

    def __init__(self, rows: list[dict], meta: dict[str, Any]):
        self.table: pa.Table = pa.Table.from_pylist(rows, schema=SCHEMA)
        self.meta = meta

    @property
    def skewed(self) -> list[str]:
        return [r["feature"] for r in self.table.to_pylist() if r["mismatches"]]

    @property
    def passed(self) -> bool:
        return not self.skewed

    def __repr__(self) -> str:
        return f"SkewReport({self.table.num_rows} features, skewed={self.skewed})"

    def to_json(self, **kwargs: Any) -> str:
        from .drift import json_safe

        return json.dumps(json_safe({"passed": self.passed, "skewed": self.skewed, **self.meta,
                                     "features": self.table.to_pylist()}), allow_nan=False, **kwargs)

    def to_html(self, path: str | Path | None = None) -> str:
        from .html import skew_html

        text = skew_html(self)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _commit_times(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(versions, commit times in µs) of a Delta table, from the ``commitInfo`` of each
    commit file in ``_delta_log`` (the timestamps Delta's own time travel uses)."""
    versions, times = [], []
    for f in sorted((path / "_delta_log").glob("*.json")):
        if not f.stem.isdigit():
            continue
        try:
            for line in f.read_text().splitlines():
                action = json.loads(line)
                if "commitInfo" in action:
                    versions.append(int(f.stem))
                    times.append(int(action["commitInfo"]["timestamp"]) * 1000)
                    break
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise StoreError(f"cannot read the commit times of the offline table at {path} ({f.name}: "
                             f"{e}); skew needs them to replay each logged row at the data known then") from e
    order = np.argsort(versions, kind="stable")
    v, t = np.array(versions, np.int64)[order], np.array(times, np.int64)[order]
    return v, np.maximum.accumulate(t) if len(t) else t


def _versions_at(view: FeatureView, logged_us: np.ndarray) -> dict[str, np.ndarray]:
    """For each offline table the view reads, the Delta version that was current at
    each logged time (-1: before its first commit)."""
    out: dict[str, np.ndarray] = {}
    for sel, g in zip(view.selections, view._groups()):
        source = g.source if sel.kind == "aggregation" else g
        if source.online_table in out:
            continue
        versions, times = _commit_times(source.offline.path)
        idx = np.searchsorted(times, logged_us, side="right") - 1
        out[source.online_table] = np.where(idx >= 0, versions[np.maximum(idx, 0)], -1) \
            if len(versions) else np.full(len(logged_us), -1, np.int64)
    return out


def _offline_values(view: FeatureView, log: pa.Table, features: list[str]) -> dict[str, np.ndarray]:
    """The training join of the logged (keys, logged_at), each row at the offline
    versions current when it was logged; float32, NaN where the join found nothing."""
    from ..view import Snapshot

    n = log.num_rows
    logged_us = pc.cast(log.column("logged_at"), pa.timestamp("us", "UTC")).cast(pa.int64()).to_numpy()
    versions = _versions_at(view, logged_us)
    tables = list(versions)
    grid = np.stack([versions[t] for t in tables], axis=1)
    epochs, which = np.unique(grid, axis=0, return_inverse=True)
    which = which.reshape(-1)
    out = {f: np.full(n, np.nan, np.float32) for f in features}
    spine = log.select([*view.keys, "logged_at"])
    owner = {}  # output feature -> the offline table it comes from
    for sel, g in zip(view.selections, view._groups()):
        source = g.source if sel.kind == "aggregation" else g
        for name in sel.output_names:
            owner[name] = source.online_table
    for e, epoch in enumerate(epochs):
        known = {t: int(v) for t, v in zip(tables, epoch)}
        if all(v < 0 for v in known.values()):
            continue  # nothing was stored yet: the join finds nothing
        if any(v < 0 for v in known.values()):  # a table not yet written: read its first version
            first = {t: 0 for t, v in known.items() if v < 0}  # and blank its features below
        else:
            first = {}
        rows = np.flatnonzero(which == e)
        snap = Snapshot(None, view.name, view.version, {t: max(v, 0) for t, v in known.items()})
        joined = view.training_data(spine.take(rows), spine_time="logged_at", snapshot=snap)
        for f in features:
            if owner.get(f) not in first:
                out[f][rows] = _f32(joined.column(f))
    return out


def _key_label(keys: pa.Table, i: int) -> str:
    return ",".join(f"{k}={keys.column(k)[i].as_py()}" for k in keys.column_names)


def _f32(col: pa.ChunkedArray) -> np.ndarray:
    return pc.cast(pc.fill_null(pc.cast(col, pa.float64()), float("nan")), pa.float32()).to_numpy()


def skew(view: FeatureView, logs: Any = None, *, rtol: float = 1e-6, sample: float = 1.0,
         seed: int = 0) -> SkewReport:
    """``FeatureView.skew``; see the module docs."""
    from .views import logs as read_logs

    if not (isinstance(rtol, (int, float)) and rtol >= 0):
        raise InvalidArgumentError(f"rtol must be a non-negative number; got {rtol!r}")
    if not (isinstance(sample, (int, float)) and 0 < sample <= 1):
        raise InvalidArgumentError(f"sample must be a fraction in (0, 1]; got {sample!r}")
    log = read_logs(view, start="-1d") if logs is None else as_table(logs, "logs")
    need = [*view.keys, "logged_at"]
    missing = [c for c in need if c not in log.column_names]
    if missing:
        raise SchemaError(f"the logs lack column(s) {missing}; skew replays the logged keys "
                          f"{view.keys} at 'logged_at' (read them with fv.logs(...))")
    if log.num_rows == 0:
        raise DataError("the logs have no rows; nothing to compare (widen the window, e.g. "
                        "fv.logs(start='-7d'))")
    if sample < 1:
        rng = np.random.default_rng(seed)
        log = log.take(np.flatnonzero(rng.random(log.num_rows) < sample))
    features = [f for f in view.features if f in log.column_names]
    offline = _offline_values(view, log, features)
    keys = log.select(view.keys)
    rows = []
    for f in features:
        a = _f32(log.column(f)).astype(np.float64)
        b = offline[f].astype(np.float64)
        na, nb = np.isnan(a), np.isnan(b)
        both = ~na & ~nb
        diff = np.where(both, np.abs(a - b), 0.0)
        scale = np.maximum(np.abs(a), np.abs(b))
        bad = (na != nb) | (both & (diff > rtol * scale))
        denom = np.abs(a) + np.abs(b)
        smape = np.where(both & (denom > 0), 2 * diff / np.where(denom > 0, denom, 1), 0.0)
        d = diff[both]
        order = np.lexsort((-diff, ~(na != nb)))  # missing on one side first, then largest delta
        worst = [_key_label(keys, int(i)) for i in order[: WORST] if bad[i]]
        n = len(a)
        rows.append({
            "feature": f, "n": n, "mismatches": int(bad.sum()), "mismatch_rate": float(bad.mean()),
            "missing_online": int((na & ~nb).sum()), "missing_offline": int((nb & ~na).sum()),
            "smape": float(smape[both].mean()) if both.any() else None,
            "delta_p50": float(np.quantile(d, 0.5)) if d.size else None,
            "delta_p99": float(np.quantile(d, 0.99)) if d.size else None,
            "delta_max": float(d.max()) if d.size else None,
            "worst_keys": worst,
        })
    return SkewReport(rows, {"view": view.name, "view_version": view.version, "rows": log.num_rows,
                             "rtol": rtol, "sample": sample})
