"""The monitoring commands of the ``pitstop`` CLI: ``stats``, ``drift`` and ``skew``.

``pitstop drift VIEW --current logs:7d --html out.html --fail-on-drift`` exits 1 when
a feature drifted, so a scheduler can alert; ``pitstop skew VIEW --since 1d
--fail-on-skew`` likewise when served values differ from the training join.
"""

from __future__ import annotations

import argparse
import math
from typing import Any


def _cell(v: Any) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def print_table(rows: list[dict], columns: list[str]) -> None:
    """Columns aligned for a terminal: text left, numbers right."""
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    numeric = [all(isinstance(r.get(c), (int, float)) or r.get(c) is None for r in rows) and i > 0
               for i, c in enumerate(columns)]
    fmt = lambda vals: "  ".join(v.rjust(w) if n else v.ljust(w)  # noqa: E731
                                 for v, w, n in zip(vals, widths, numeric)).rstrip()
    print(fmt(columns))
    for row in cells:
        print(fmt(row))


def cmd_stats(args: argparse.Namespace) -> int:
    from ..store import FeatureStore

    with FeatureStore(args.store, create=False) as fs:
        table = fs.statistics(args.name, version=args.version, as_of=args.as_of)
    rows = table.to_pylist()
    for r in rows:
        r["top"] = ", ".join(f"{t['value']} ({t['count']:,})" for t in r["top_k"][:3])
    print_table(rows, ["feature", "kind", "count", "nulls", "nan", "mean", "std", "min", "p50", "max",
                       "distinct", "top"])
    return 0


def cmd_drift(args: argparse.Namespace) -> int:
    from ..store import FeatureStore

    reference: Any = args.reference
    if reference.isdigit():
        reference = int(reference)  # a snapshot id
    with FeatureStore(args.store, create=False) as fs:
        view = fs.get_feature_view(args.view, args.version)
        report = view.drift(reference=reference, current=args.current, window=args.window,
                            segment_by=args.segment_by)
    print(f"drift of feature view {view.name} v{view.version}: {report.meta['reference']} -> "
          f"{report.meta['current']}")
    split = [c for c in ("window", "segment") if c in report.table.column_names]
    print_table(report.table.to_pylist(), [*split, "feature", "type", "method", "score", "threshold", "status",
                                           "null_rate_ref", "null_rate_cur", "n_ref", "n_cur", "ks_d",
                                           "wasserstein"])
    if args.html:
        report.to_html(args.html)
        print(f"wrote {args.html}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(report.to_json(indent=1))
    drifted = report.drifted
    print(f"{len(drifted)} of {report.table.num_rows} features drifted" + (f": {', '.join(drifted)}" if drifted else ""))
    return 1 if drifted and args.fail_on_drift else 0


def cmd_skew(args: argparse.Namespace) -> int:
    from ..store import FeatureStore

    with FeatureStore(args.store, create=False) as fs:
        view = fs.get_feature_view(args.view, args.version)
        report = view.skew(logs=view.logs(start=f"-{args.since.lstrip('-')}"), rtol=args.rtol)
    rows = report.table.to_pylist()
    for r in rows:
        r["worst_keys"] = " ".join(r["worst_keys"][:3])
    print(f"skew of feature view {view.name} v{view.version} over {report.meta['rows']:,} logged rows "
          f"(rtol={args.rtol:g})")
    print_table(rows, ["feature", "n", "mismatch_rate", "missing_online", "missing_offline", "smape",
                       "delta_max", "worst_keys"])
    if args.html:
        report.to_html(args.html)
        print(f"wrote {args.html}")
    return 1 if report.skewed and args.fail_on_skew else 0


def add_commands(sub: Any) -> None:
    s = sub.add_parser("stats", help="feature statistics of a feature group or view")
    s.add_argument("name", help="a feature group (or view) name")
    s.add_argument("--version", type=int)
    s.add_argument("--as-of", help="an offline table version (int) or time (ISO)")
    s.set_defaults(fn=cmd_stats)
    s = sub.add_parser("drift", help="drift of a view's features (and predictions) against training")
    s.add_argument("view")
    s.add_argument("--version", type=int)
    s.add_argument("--reference", default="training",
                   help="'training' (the last training snapshot), a snapshot id, or logs:<window>")
    s.add_argument("--current", default="logs:7d", help="logs:<window>, e.g. logs:7d (default)")
    s.add_argument("--html", help="write the report to this HTML file")
    s.add_argument("--json", help="write the report to this JSON file")
    s.add_argument("--fail-on-drift", action="store_true", help="exit 1 when a feature drifted")
    s.add_argument("--window", help="report each window of the current rows, e.g. 1d")
    s.add_argument("--segment-by", help="report each value of this column of the current rows")
    s.set_defaults(fn=cmd_drift)
    s = sub.add_parser("skew", help="served features against the training join of the same keys and times")
    s.add_argument("view")
    s.add_argument("--version", type=int)
    s.add_argument("--since", default="1d", help="the log window, e.g. 1d (default), 12h")
    s.add_argument("--rtol", type=float, default=1e-6)
    s.add_argument("--html", help="write the report to this HTML file")
    s.add_argument("--fail-on-skew", action="store_true", help="exit 1 when a feature differs")
    s.set_defaults(fn=cmd_skew)
