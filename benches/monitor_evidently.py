"""Evidently's DataDriftPreset on the data of ``benches.monitor``, run by that harness
in Evidently's own virtualenv (``.venv-evidently``: Evidently does not import with
pandas 3). Prints one JSON line: times, peak RSS, HTML size, drifted columns (with its
default methods, and forced to Wasserstein / Jensen-Shannon)."""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path

P_VALUE_METHODS = {"ks", "chisquare", "z", "fisher_exact", "g_test", "t_test", "mannw", "anderson",
                   "cramer_von_mises", "epps_singleton", "empirical_mmd"}


def drifted(snapshot) -> list[str]:
    out = []
    for m in snapshot.dict()["metrics"]:
        cfg = m.get("config", {})
        if not cfg.get("type", "").endswith("ValueDrift"):
            continue
        value, thr = float(m["value"]), float(cfg["threshold"])
        hit = value < thr if cfg["method"] in P_VALUE_METHODS else value >= thr
        if hit:
            out.append(cfg["column"])
    return sorted(out)


def main() -> None:
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    data, repeat = Path(sys.argv[1]), int(sys.argv[2])
    ref, cur = pd.read_parquet(data / "ref.parquet"), pd.read_parquet(data / "cur.parquet")
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        snapshot = Report([DataDriftPreset()]).run(current_data=cur, reference_data=ref)
        times.append(time.perf_counter() - t0)
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        snapshot.save_html(f"{d}/r.html")
        html_s = time.perf_counter() - t0
        size = Path(f"{d}/r.html").stat().st_size
    forced = Report([DataDriftPreset(num_method="wasserstein", cat_method="jensenshannon")]).run(
        current_data=cur, reference_data=ref)
    print(json.dumps({"engine": "evidently", "times": times, "html_s": html_s, "html_bytes": size,
                      "drifted": drifted(snapshot), "drifted_forced": drifted(forced),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


if __name__ == "__main__":
    main()
