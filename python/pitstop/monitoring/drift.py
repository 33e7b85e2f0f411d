"""Drift: how far each feature's current distribution is from a reference one.

Methods (the distances are computed in Rust, ``rust/stats/distance.rs``):

- ``psi`` (the default for every feature): the population stability index. Numeric
  features: 10 bins cut at the reference's deciles; categorical features: the
  reference's top 20 values, one "other" bin and one null bin. Empty bins count as a
  fraction of 1e-4. ``PSI >= 0.1`` is a warning, ``>= 0.25`` (the threshold) drift.
- ``js``: the Jensen–Shannon distance, base 2 (in [0, 1]), categorical features only;
  drift at ``>= 0.1``.
- ``wasserstein``: the Wasserstein-1 distance divided by the reference's std, numeric
  only; drift at ``>= 0.1``.
- ``ks``: the asymptotic two-sample Kolmogorov–Smirnov p-value, numeric only; drift
  when ``p < 0.05``. Never the default: on a million rows every tiny shift is
  "significant".

Every row also reports KS D, the normalized Wasserstein-1 and the p-value (numeric),
JS (categorical), and the missing rate (nulls and NaN) on each side, which never enters
the distribution's score: a change of null rate shows on its own.

Which features are categorical: strings, dictionaries and booleans, and integer columns
with at most 20 distinct values in the reference. A boolean on one side and numbers on
the other (a served float32 copy of a boolean) compare as 0/1.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from .. import _core
from .._inputs import as_table
from ..errors import ColumnTypeError, DataError, InvalidArgumentError, SchemaError
from .stats import BINS, TOP_K, kind_of, value_type

THRESHOLDS = {"psi": 0.25, "js": 0.1, "wasserstein": 0.1, "ks": 0.05}
PSI_WARN = 0.1
NUMERIC_ONLY = ("wasserstein", "ks")
CATEGORICAL_ONLY = ("js",)
SMALL_CARDINALITY = 20

SCHEMA = pa.schema([
    ("feature", pa.string()), ("type", pa.string()), ("method", pa.string()),
    ("score", pa.float64()), ("threshold", pa.float64()), ("drifted", pa.bool_()),
    ("status", pa.string()),
    ("null_rate_ref", pa.float64()), ("null_rate_cur", pa.float64()),
    ("n_ref", pa.int64()), ("n_cur", pa.int64()),
    ("psi", pa.float64()), ("js", pa.float64()), ("ks_d", pa.float64()),
    ("wasserstein", pa.float64()), ("p_value", pa.float64()),
])
#: The extra columns of a report split by ``window=`` / ``segment_by=``.
SPLIT_FIELDS = [pa.field("window", pa.string()), pa.field("segment", pa.string())]


def json_safe(obj: Any) -> Any:
    """``obj`` with every non-finite float as None (JSON has no NaN or infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_safe(v) for v in obj]
    return obj


def _f(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


class DriftReport:
    """The result of a drift check: ``table`` (one row per feature), ``drifted``,
    ``passed``, ``to_json()``, ``to_html(path)``."""

    def __init__(self, rows: list[dict], details: list[dict], meta: dict[str, Any]):
        schema = SCHEMA
        for f in SPLIT_FIELDS:
            if rows and f.name in rows[0]:
                schema = schema.append(f)
        self.table: pa.Table = pa.Table.from_pylist(rows, schema=schema)
        self.details = details  # per feature: the histogram bins of both sides, for the report
        self.meta = meta

    @property
    def drifted(self) -> list[str]:
        """The drifted features (in any window or segment), in report order."""
        return list(dict.fromkeys(r["feature"] for r in self.table.to_pylist() if r["drifted"]))

    @property
    def passed(self) -> bool:
        return not self.drifted

    def __repr__(self) -> str:
        return (f"DriftReport({self.table.num_rows} features, drifted={self.drifted})")

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "drifted": self.drifted, **self.meta,
                "features": self.table.to_pylist()}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(json_safe(self.to_dict()), allow_nan=False, **kwargs)

    def to_html(self, path: str | Path | None = None) -> str:
        """The report as one self-contained HTML file (inline SVG, no scripts, no
        network); written to ``path`` when given. Returns the HTML."""
        from .html import drift_html

        text = drift_html(self)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _per_feature(value: Any, features: list[str], what: str, check) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, dict):
        unknown = [f for f in value if f not in features]
        if unknown:
            raise InvalidArgumentError(f"{what}= names feature(s) {unknown} that the report does not "
                                       f"have; its features are {features}")
        for v in value.values():
            check(v)
        return dict(value)
    check(value)
    return {f: value for f in features}


def _check_method(m: Any) -> None:
    if m not in THRESHOLDS:
        raise InvalidArgumentError(f"method must be one of {sorted(THRESHOLDS)}; got {m!r}")


def _check_threshold(t: Any) -> None:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t < 0:
        raise InvalidArgumentError(f"a threshold is a non-negative number; got {t!r}")


def _parts(data: Any, what: str) -> list[pa.Table]:
    if isinstance(data, list) and all(isinstance(t, pa.Table) for t in data):
        return data
    return [as_table(data, what)]


def _find(parts: list[pa.Table], name: str) -> int | None:
    return next((i for i, t in enumerate(parts) if name in t.column_names), None)


def _kind(name: str, ref: pa.Table, cur: pa.Table) -> tuple[str, pa.Table, pa.Table]:
    """The kind of a feature, and both sides made comparable (a boolean side compared
    with numbers becomes 0/1)."""
    tr, tc = value_type(ref.schema.field(name).type), value_type(cur.schema.field(name).type)
    kr, kc = kind_of(tr), kind_of(tc)
    if kr is None or kc is None:
        bad, t = ("reference", tr) if kr is None else ("current", tc)
        raise ColumnTypeError(f"feature '{name}' is {t} in the {bad} data; drift takes numbers, "
                              "strings, booleans and dictionaries (cast it, or leave it out of features=...)")
    if kr != kc:
        if pa.types.is_boolean(tr) and kc == "numeric":
            ref = ref.set_column(ref.schema.get_field_index(name), name, pc.cast(ref.column(name), pa.float64()))
        elif pa.types.is_boolean(tc) and kr == "numeric":
            cur = cur.set_column(cur.schema.get_field_index(name), name, pc.cast(cur.column(name), pa.float64()))
        else:
            raise ColumnTypeError(f"feature '{name}' is {tr} in the reference data but {tc} in the "
                                  "current data; cast one side so both are numbers or both strings")
        return "categorical", ref, cur
    if kr == "numeric" and pa.types.is_integer(tr) and \
            pc.count_distinct(ref.column(name)).as_py() <= SMALL_CARDINALITY:
        return "categorical", ref, cur
    return kr, ref, cur


def compare(reference: Any, current: Any, *, features: list[str] | None = None,
            method: str | dict[str, str] | None = None,
            threshold: float | dict[str, float] | None = None,
            meta: dict[str, Any] | None = None) -> DriftReport:
    """Drift of ``features`` (default: every column of a usable type that both sides
    have) from ``reference`` to ``current``: any tables, or lists of tables (the
    features of a view stored in several groups)."""
    refs, curs = _parts(reference, "reference"), _parts(current, "current")
    for side, parts in (("reference", refs), ("current", curs)):
        if sum(t.num_rows for t in parts) == 0:
            raise DataError(f"the {side} data has no rows; drift needs rows on both sides "
                            "(for logs: widen the window, e.g. start='-30d')")
    if features is None:
        names = list(dict.fromkeys(n for t in refs for n in t.column_names))
        features = [n for n in names if _find(curs, n) is not None
                    and kind_of(refs[_find(refs, n)].schema.field(n).type) is not None
                    and kind_of(curs[_find(curs, n)].schema.field(n).type) is not None]
    else:
        if isinstance(features, str):
            features = [features]
        for side, parts in (("reference", refs), ("current", curs)):
            missing = [f for f in features if _find(parts, f) is None]
            if missing:
                cols = sorted({c for t in parts for c in t.column_names})
                raise SchemaError(f"the {side} data has no column(s) {missing}; its columns are {cols}")
    methods = _per_feature(method, features, "method", _check_method)
    thresholds = _per_feature(threshold, features, "threshold", _check_threshold)
    # group the features by the (reference part, current part) that hold them
    groups: dict[tuple[int, int], list[tuple[str, str]]] = {}
    tables: dict[tuple[int, int], tuple[pa.Table, pa.Table]] = {}
    kinds: dict[str, str] = {}
    for name in features:
        key = (_find(refs, name), _find(curs, name))
        ref, cur = tables.get(key, (refs[key[0]], curs[key[1]]))
        kind, ref, cur = _kind(name, ref, cur)
        m = methods.get(name, "psi")
        if (m in NUMERIC_ONLY and kind != "numeric") or (m in CATEGORICAL_ONLY and kind != "categorical"):
            raise InvalidArgumentError(f"method {m!r} does not apply to feature '{name}', which is {kind}; "
                                       f"{m!r} takes {'numeric' if m in NUMERIC_ONLY else 'categorical'} "
                                       "features (use 'psi', which takes both)")
        tables[key] = (ref, cur)
        kinds[name] = kind
        groups.setdefault(key, []).append((name, kind))
    results: dict[str, dict] = {}
    for key, cols in groups.items():
        ref, cur = tables[key]
        for r in _core.stats_drift(ref, cur, cols, bins=BINS, top_k=TOP_K):
            results[r["feature"]] = r
    rows, details = [], []
    for name in features:
        r = results[name]
        m = methods.get(name, "psi")
        thr = float(thresholds.get(name, THRESHOLDS[m]))
        score = {"psi": r["psi"], "js": r["js"], "wasserstein": r["wasserstein"], "ks": r["p_value"]}[m]
        if math.isnan(score):
            drifted, status = False, "no data"
        else:
            drifted = score < thr if m == "ks" else score >= thr
            status = "drift" if drifted else ("warn" if m == "psi" and score >= PSI_WARN else "ok")
        rows.append({
            "feature": name, "type": kinds[name], "method": m, "score": _f(score), "threshold": thr,
            "drifted": drifted, "status": status,
            "null_rate_ref": r["missing_ref"] / r["rows_ref"] if r["rows_ref"] else None,
            "null_rate_cur": r["missing_cur"] / r["rows_cur"] if r["rows_cur"] else None,
            "n_ref": r["rows_ref"], "n_cur": r["rows_cur"],
            "psi": _f(r["psi"]), "js": _f(r["js"]), "ks_d": _f(r["ks_d"]),
            "wasserstein": _f(r["wasserstein"]), "p_value": _f(r["p_value"]),
        })
        details.append({"feature": name, "edges": r["edges"], "labels": r["labels"],
                        "counts_ref": r["counts_ref"], "counts_cur": r["counts_cur"]})
    meta = dict(meta or {})
    meta.setdefault("created_at", dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    return DriftReport(rows, details, meta)


def _when(value: Any, now: dt.datetime, what: str) -> dt.datetime | None:
    from .._inputs import duration_ns

    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day, tzinfo=dt.timezone.utc)
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("-") or text[:1].isdigit() and not text[:4].isdigit():
            ns = duration_ns(text.lstrip("-"), what)
            return now - dt.timedelta(microseconds=ns // 1000)
        try:
            return _when(dt.datetime.fromisoformat(text), now, what)
        except ValueError:
            pass
    raise InvalidArgumentError(f"{what}={value!r} is not a time; pass a datetime, an ISO time "
                               "('2026-06-01T00:00'), or a duration back from now ('-7d', '-12h')")


def log_window(table: pa.Table, start: Any = None, end: Any = None, *,
               now: dt.datetime | None = None) -> pa.Table:
    """The rows of a prediction log with ``start <= logged_at < end``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    lo, hi = _when(start, now, "start"), _when(end, now, "end")
    if table.num_rows == 0 or "logged_at" not in table.column_names:
        return table
    t = table.column("logged_at")
    mask = None
    for bound, op in ((lo, pc.greater_equal), (hi, pc.less)):
        if bound is not None:
            m = op(t, pa.scalar(bound, t.type))
            mask = m if mask is None else pc.and_(mask, m)
    return table if mask is None else table.filter(mask)
