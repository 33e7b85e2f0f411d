"""Drift detection: pitstop vs a plain scipy loop vs Evidently (its own virtualenv).

``python -m benches.monitor`` (``make bench-monitor``) generates 1M reference x 200k
current rows x 24 columns (20 numeric, 4 categorical; a planted shift on 2 numeric and
1 categorical column) and, in one run, times each tool on the same Parquet files, each
in its own child process (peak RSS is that process's own): medians of ``--repeat``
runs, HTML report size. ``--wide`` adds 100k x 100k x 500 numeric columns.

- pitstop: ``pitstop.monitoring.drift`` (PSI decides; KS D, W1 and p-value computed for
  every numeric column, JS for every categorical one) + ``to_html``.
- scipy: the same tests as a loop over columns (``ks_2samp``, ``wasserstein_distance``,
  numpy PSI at the reference deciles, value counts + ``jensenshannon``).
- Evidently: ``DataDriftPreset`` (its defaults, then forced to Wasserstein / JS to
  compare which columns each tool calls drifted), via ``--evidently-python``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np

from . import harness

ROOT = Path(__file__).resolve().parent.parent
CATS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]


def generate(directory: Path, n_ref: int, n_cur: int, numeric: int, categorical: int, seed: int = 3) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    if (directory / "cur.parquet").exists():
        return
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for name, n, shifted in (("ref", n_ref, False), ("cur", n_cur, True)):
        cols = {}
        for j in range(numeric):
            mean, std = j % 7 - 3.0, 1.0 + j % 3
            x = rng.normal(mean, std, n)
            if shifted and j in (2, 9):
                x += std
            cols[f"num_{j:03d}"] = x
        for j in range(categorical):
            p = np.linspace(1, 2, len(CATS))
            if shifted and j == 1:
                p = p[::-1]
            cols[f"cat_{j}"] = pa.array(rng.choice(CATS, n, p=p / p.sum())).dictionary_encode()
        pq.write_table(pa.table(cols), directory / f"{name}.parquet")


def bench_pitstop(data: Path, repeat: int) -> dict:
    import pyarrow.parquet as pq

    from pitstop.monitoring import drift

    ref, cur = pq.read_table(data / "ref.parquet"), pq.read_table(data / "cur.parquet")
    times = harness.repeat(lambda: drift(ref, cur), times=repeat)
    report = drift(ref, cur)
    t_html, html = harness.timed(report.to_html)
    forced = drift(ref, cur, method={c: ("wasserstein" if c.startswith("num") else "js") for c in ref.column_names})
    return {"engine": "pitstop", "times": times, "html_s": t_html, "html_bytes": len(html.encode()),
            "drifted": report.drifted, "drifted_forced": forced.drifted, "peak_rss_mb": harness.peak_rss_mb()}


def scipy_drift(ref, cur) -> list[str]:
    import pyarrow.compute as pc
    from scipy import spatial, stats

    drifted = []
    for name in ref.column_names:
        a, b = ref.column(name), cur.column(name)
        if name.startswith("num"):
            a, b = a.to_numpy(), b.to_numpy()
            cuts = np.quantile(a, np.arange(1, 10) / 10)
            edges = np.concatenate([[-np.inf], cuts, [np.inf]])
            r = np.histogram(a, edges)[0] / len(a)
            c = np.histogram(b, edges)[0] / len(b)
            r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
            psi = float(np.sum((c - r) * np.log(c / r)))
            stats.ks_2samp(a, b)
            stats.wasserstein_distance(a, b) / a.std()
        else:
            ca = {d["values"]: d["counts"] for d in pc.value_counts(a).to_pylist()}
            cb = {d["values"]: d["counts"] for d in pc.value_counts(b).to_pylist()}
            keys = sorted(set(ca) | set(cb), key=str)
            r = np.array([ca.get(k, 0) for k in keys], float)
            c = np.array([cb.get(k, 0) for k in keys], float)
            spatial.distance.jensenshannon(r / r.sum(), c / c.sum(), base=2)
            r, c = r / r.sum(), c / c.sum()
            r, c = np.where(r == 0, 1e-4, r), np.where(c == 0, 1e-4, c)
            psi = float(np.sum((c - r) * np.log(c / r)))
        if psi >= 0.25:
            drifted.append(name)
    return drifted


def bench_scipy(data: Path, repeat: int) -> dict:
    import pyarrow.parquet as pq

    ref, cur = pq.read_table(data / "ref.parquet"), pq.read_table(data / "cur.parquet")
    times = harness.repeat(lambda: scipy_drift(ref, cur), times=repeat, warmup=0)
    return {"engine": "scipy loop", "times": times, "drifted": scipy_drift(ref, cur),
            "peak_rss_mb": harness.peak_rss_mb()}


def run_evidently(python: str, data: Path, repeat: int) -> dict:
    proc = subprocess.run([python, "-m", "benches.monitor_evidently", str(data), str(repeat)],
                          capture_output=True, text=True, cwd=ROOT, timeout=7200)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"engine": "evidently", "error": (proc.stderr.strip().splitlines() or ["?"])[-1]}
    return json.loads(lines[-1])


def report(title: str, results: list[dict]) -> None:
    best = harness.median(results[0]["times"])
    rows = []
    for r in results:
        if "error" in r:
            rows.append([r.get("engine", "?"), "failed: " + r["error"][:80], "", "", ""])
            continue
        m = harness.median(r["times"])
        size = f"{r['html_bytes'] / 1024:,.0f} KiB" if "html_bytes" in r else "-"
        rows.append([r["engine"], m, m / best, r["peak_rss_mb"], size])
    print(f"\n{title}")
    print(harness.markdown_table(["tool", "median s", "x pitstop", "peak RSS MiB", "HTML"], rows))
    for r in results:
        if "drifted" in r:
            print(f"  {r['engine']}: drifted {r['drifted']}"
                  + (f"; forced Wasserstein/JS: {r['drifted_forced']}" if "drifted_forced" in r else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--evidently-python", default=os.environ.get("EVIDENTLY_PYTHON"))
    ap.add_argument("--wide", action="store_true", help="also 100k x 100k x 500 numeric columns")
    ap.add_argument("--only-wide", action="store_true", help="just the wide case")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:  # child process: one engine, one JSON line
        fn = {"pitstop": bench_pitstop, "scipy": bench_scipy}[args.engine]
        print(json.dumps(fn(Path(args.data), args.repeat)))
        return
    cases = [("1M ref x 200k cur x 24 columns (20 numeric, 4 categorical)", (1_000_000, 200_000, 20, 4))]
    if args.only_wide:
        cases = []
    if args.wide or args.only_wide:
        cases.append(("wide: 100k ref x 100k cur x 500 numeric columns", (100_000, 100_000, 500, 0)))
    print(f"{harness.today()} · {harness.machine()} · {harness.load_average()} · "
          f"{harness.versions('pitstop', 'pyarrow', 'numpy', 'scipy')}")
    for title, shape in cases:
        data = ROOT / "bench-data" / ("monitor-" + "-".join(map(str, shape)))
        generate(data, *shape)
        results = []
        for engine in ("pitstop", "scipy"):
            print(f"running {engine} on {title} ...", flush=True)
            t0 = time.perf_counter()
            results.append(harness.run_child("benches.monitor", ["--engine", engine, "--data", str(data),
                                                                 "--repeat", str(args.repeat)]))
            print(f"  done in {time.perf_counter() - t0:.1f} s", flush=True)
        if args.evidently_python:
            print(f"running evidently on {title} ...", flush=True)
            results.append(run_evidently(args.evidently_python, data, 1 if args.wide else min(args.repeat, 3)))
        report(title, results)


if __name__ == "__main__":
    main()
