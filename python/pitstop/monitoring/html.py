"""The reports as one self-contained HTML file: a few lines of CSS, one inline SVG
histogram per feature (reference grey, current blue, each side as fractions of its own
values), a colour per status, no script and no network access, readable when printed.
Each feature is one ``<tr class="feature" data-feature=... data-drifted="true|false">``
carrying the same numbers as ``report.table``. About 1 KB per feature.
"""

from __future__ import annotations

import html
from typing import Any

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222}
h1{font-size:20px;margin:0 0 8px}
.summary{font-size:16px;padding:8px 12px;border-radius:4px;display:inline-block}
.passed{background:#e8f5e9;color:#1b5e20}.failed{background:#ffebee;color:#b71c1c}
table{border-collapse:collapse;margin-top:12px}
th,td{padding:4px 8px;border-bottom:1px solid #ddd;text-align:right;vertical-align:middle;white-space:nowrap}
th{background:#f5f5f5;position:sticky;top:0}
td.name,th.name{text-align:left;font-weight:600}
tr.s-drift td.st{background:#e53935;color:#fff}tr.s-warn td.st{background:#ffb300}
tr.s-ok td.st{background:#43a047;color:#fff}tr.s-nodata td.st{background:#9e9e9e;color:#fff}
td.st{text-align:center;font-weight:600;border-radius:3px}
svg{display:block}.r{fill:#9e9e9e}.c{fill:#1e88e5}
.legend{color:#555;max-width:60em}
@media print{th{position:static}}
""".strip()

W, H = 200, 44


def _num(v: Any, digits: int = 4) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return f"{v:,}" if isinstance(v, int) else html.escape(str(v))


def _pct(v: Any) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def _bars(counts_ref: list[int], counts_cur: list[int]) -> str:
    """Two bars per bin, heights as each side's fractions, one path per side."""
    k = len(counts_ref)
    if k == 0:
        return ""
    tr, tc = sum(counts_ref) or 1, sum(counts_cur) or 1
    fr = [c / tr for c in counts_ref]
    fc = [c / tc for c in counts_cur]
    top = max(max(fr), max(fc)) or 1
    w = W / k
    bw = w / 2
    paths = []
    for cls, fracs, off in (("r", fr, 0.0), ("c", fc, bw)):
        d = []
        for i, f in enumerate(fracs):
            h = round((H - 12) * f / top, 1)
            if h > 0:
                d.append(f"M{i * w + off:.1f} {H - 12}v{-h}h{bw:.1f}v{h}z")
        if d:
            paths.append(f'<path class="{cls}" d="{"".join(d)}"/>')
    return "".join(paths)


def _svg(detail: dict, kind: str) -> str:
    body = _bars(detail["counts_ref"], detail["counts_cur"])
    if kind == "numeric" and detail["edges"]:
        lo, hi = detail["edges"][0], detail["edges"][-1]
        title = f"{detail['feature']}: {lo:.4g} to {hi:.4g}"
        labels = (f'<text x="0" y="{H - 1}" font-size="10">{lo:.3g}</text>'
                  f'<text x="{W}" y="{H - 1}" font-size="10" text-anchor="end">{hi:.3g}</text>')
    else:
        names = detail["labels"]
        title = f"{detail['feature']}: " + ", ".join(names)
        labels = (f'<text x="0" y="{H - 1}" font-size="10">{html.escape(names[0][:12]) if names else ""}</text>'
                  f'<text x="{W}" y="{H - 1}" font-size="10" text-anchor="end">(null)</text>') if names else ""
    return (f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img">'
            f"<title>{html.escape(title)}</title>{body}{labels}</svg>")


def _page(title: str, summary: str, passed: bool, lines: list[str], head: list[str],
          rows: list[str], legend: str) -> str:
    ths = "".join(f'<th class="name">{h}</th>' if i == 0 else f"<th>{h}</th>" for i, h in enumerate(head))
    meta = "".join(f"<div>{line}</div>" for line in lines)
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{html.escape(title)}</h1>"
            f'<p class="summary {"passed" if passed else "failed"}" id="summary">{summary}</p>{meta}'
            f'<table id="features"><thead><tr>{ths}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'<p class="legend">{legend}</p></body></html>\n')


def drift_html(report: Any) -> str:
    meta = report.meta
    title = "pitstop drift report" + (f": {meta['view']} v{meta['view_version']}" if "view" in meta else "")
    rows = []
    for r, d in zip(report.table.to_pylist(), report.details):
        status = r["status"].replace(" ", "")
        rows.append(
            f'<tr class="feature s-{status}" data-feature="{html.escape(r["feature"], quote=True)}" '
            f'data-drifted="{"true" if r["drifted"] else "false"}">'
            f'<td class="name">{html.escape(r["feature"])}</td><td>{r["type"]}</td><td>{r["method"]}</td>'
            f'<td>{_num(r["score"])}</td><td>{_num(r["threshold"])}</td><td class="st">{r["status"]}</td>'
            f'<td>{_pct(r["null_rate_ref"])} → {_pct(r["null_rate_cur"])}</td>'
            f'<td>{_num(r["n_ref"])} / {_num(r["n_cur"])}</td>'
            f'<td>{_num(r["ks_d"])}</td><td>{_num(r["wasserstein"])}</td><td>{_num(r["p_value"], 3)}</td>'
            f'<td>{_num(r["js"])}</td><td>{_svg(d, r["type"])}</td></tr>')
    drifted = report.drifted
    n = report.table.num_rows
    summary = (f"{len(drifted)} of {n} features drifted: " + html.escape(", ".join(drifted))) if drifted \
        else f"no drift in {n} features"
    lines = [f"<b>reference</b>: {html.escape(str(meta.get('reference', '')))}" if "reference" in meta else "",
             f"<b>current</b>: {html.escape(str(meta.get('current', '')))}" if "current" in meta else "",
             f"created {html.escape(str(meta.get('created_at', '')))}"]
    head = ["feature", "type", "method", "score", "threshold", "status", "missing ref → cur",
            "rows ref / cur", "KS D", "W1 / σ", "KS p", "JS", '<span style="color:#9e9e9e">▮</span> reference <span style="color:#1e88e5">▮</span> current']
    legend = ("PSI over 10 bins at the reference deciles (categorical: top 20 values + other + null), "
              "empty bins floored at 1e-4; warn at 0.1, drift at 0.25. KS D and Wasserstein-1 "
              "(divided by the reference std) are exact; the KS p-value is asymptotic and reported, "
              "not deciding. Missing = null or NaN, reported apart from the distribution. "
              "Histograms: each side as fractions of its own values (grey reference, blue current).")
    return _page(title, summary, not drifted, [x for x in lines if x], head, rows, legend)


def skew_html(report: Any) -> str:
    meta = report.meta
    title = f"pitstop skew report: {meta.get('view', '')} v{meta.get('view_version', '')}"
    rows = []
    for r in report.table.to_pylist():
        status = "drift" if r["mismatches"] else "ok"
        rows.append(
            f'<tr class="feature s-{status}" data-feature="{html.escape(r["feature"], quote=True)}" '
            f'data-drifted="{"true" if r["mismatches"] else "false"}">'
            f'<td class="name">{html.escape(r["feature"])}</td><td>{_num(r["n"])}</td>'
            f'<td class="st">{_pct(r["mismatch_rate"])}</td><td>{_num(r["missing_online"])}</td>'
            f'<td>{_num(r["missing_offline"])}</td><td>{_num(r["smape"])}</td>'
            f'<td>{_num(r["delta_max"])}</td><td>{html.escape(" ".join(r["worst_keys"]))}</td></tr>')
    skewed = report.skewed
    summary = (f"{len(skewed)} features differ between serving and training: {html.escape(', '.join(skewed))}"
               if skewed else "served features equal the training join")
    head = ["feature", "rows", "mismatch rate", "missing online", "missing offline", "SMAPE",
            "max |Δ|", "worst keys"]
    legend = (f"Logged (keys, logged_at) replayed through the training join; a value matches within "
              f"rtol={meta.get('rtol')}; missing = NaN/null on one side only.")
    return _page(title, summary, not skewed, [f"{meta.get('rows', 0):,} logged rows"], head, rows, legend)
