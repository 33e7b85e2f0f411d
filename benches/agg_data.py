"""Generated data for the window-aggregation benchmark (``benches.agg``).

Deterministic (numpy, fixed seeds), written once per size and key distribution as
Parquet under ``bench-data/agg/<size>-<dist>/`` and reused while its ``meta.json``
matches the generator:

- ``events.parquet``: ``user_id`` int64, ``ts`` timestamp[us], ``amount`` float64
  (log-normal, rounded to cents, never null), rows in random order;
- ``labels.parquet``: ``user_id`` int64, ``ts`` timestamp[us], ``row_id`` int64
  (0..n-1, the label's identity: peers reorder rows, so checks match rows by it),
  rows in random order;
- ``reference.parquet``: for the sampled labels (``sample_ids``), ``row_id`` and the
  16 features computed by brute force in numpy (``math.fsum`` for sums), the
  independent truth every engine is checked against.

Events: keys uniform over the entities (``uniform``) or Zipf(1.1)-distributed
(``zipf``: key of rank k drawn with probability proportional to k^-1.1, ranks shuffled
over the ids); times uniform random microseconds over 180 days. Labels take their keys
from the same distribution, and their times so that the window edges are exercised:

- 80% at uniform random times;
- 10% at exactly one of their key's event times (the event being scored: with
  ``closed="left"`` it must not count);
- 10% at exactly one of their key's event times plus one of the four window lengths
  (that event sits on the window's left edge, ``t - W``, and must count).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "bench-data" / "agg"
RESULTS_DIR = ROOT / "bench-results"

GENERATOR_VERSION = 1
START_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z
DAYS = 180
SPAN_US = DAYS * 86_400 * 1_000_000
ZIPF_S = 1.1
SAMPLE_ROWS = 2_000

#: Window labels as pitstop names them, and their lengths in microseconds.
WINDOWS = {"1h": 3_600 * 10**6, "1d": 86_400 * 10**6, "7d": 7 * 86_400 * 10**6,
           "30d": 30 * 86_400 * 10**6}
OPS = ("count", "sum", "mean", "max")


def feature_names() -> list[str]:
    """The 16 feature columns in pitstop's order (op-major, as the aggregations list
    declares them): ``count_1h .. count_30d, sum_amount_1h .. max_amount_30d``."""
    return [f"count_{w}" if op == "count" else f"{op}_amount_{w}" for op in OPS for w in WINDOWS]


def pitstop_aggs():
    """The 16 features as pitstop aggregations (in ``feature_names()``'s order)."""
    from pitstop import agg

    w = list(WINDOWS)
    return [agg.count(windows=w), agg.sum("amount", windows=w), agg.mean("amount", windows=w),
            agg.max("amount", windows=w)]


@dataclass(frozen=True)
class Size:
    name: str
    events: int
    labels: int
    keys: int


SIZES = {
    "XS": Size("XS", 100_000, 10_000, 1_000),  # a smoke test, seconds
    "S": Size("S", 1_000_000, 100_000, 10_000),
    "L": Size("L", 10_000_000, 1_000_000, 100_000),
}
DISTS = ("uniform", "zipf")


def directory(size: Size, dist: str) -> Path:
    return DATA_DIR / f"{size.name}-{dist}"


def paths(size: Size, dist: str) -> dict[str, Path]:
    d = directory(size, dist)
    return {name: d / f"{name}.parquet" for name in ("events", "labels", "reference")}


def sample_ids(size: Size) -> np.ndarray:
    """The label row ids the equality check compares (sorted, deterministic)."""
    rng = np.random.default_rng(7)
    k = min(SAMPLE_ROWS, size.labels)
    return np.sort(rng.choice(size.labels, size=k, replace=False)).astype(np.int64)


def _keys(rng: np.random.Generator, n: int, keys: int, dist: str, perm: np.ndarray) -> np.ndarray:
    if dist == "uniform":
        return rng.integers(0, keys, n, dtype=np.int64)
    p = np.arange(1, keys + 1, dtype=np.float64) ** -ZIPF_S
    cdf = np.cumsum(p / p.sum())
    cdf[-1] = 1.0
    ranks = np.searchsorted(cdf, rng.random(n), side="right")
    return perm[np.minimum(ranks, keys - 1)]


def _generate(size: Size, dist: str):
    rng = np.random.default_rng(1 if dist == "uniform" else 2)
    perm = rng.permutation(size.keys).astype(np.int64)  # Zipf rank -> key id
    ev_key = _keys(rng, size.events, size.keys, dist, perm)
    ev_ts = START_US + rng.integers(0, SPAN_US, size.events, dtype=np.int64)
    amount = np.round(rng.lognormal(3.0, 1.0, size.events), 2)

    n = size.labels
    lb_key = _keys(rng, n, size.keys, dist, perm)
    lb_ts = START_US + rng.integers(0, SPAN_US, n, dtype=np.int64)
    kind = rng.random(n)
    # At an event's time: pick a random event and take its key and time.
    at_event = kind < 0.1
    pick = rng.integers(0, size.events, int(at_event.sum()))
    lb_key[at_event], lb_ts[at_event] = ev_key[pick], ev_ts[pick]
    # An event on the left edge: an event's key and time plus a window length.
    on_edge = kind >= 0.9
    pick = rng.integers(0, size.events, int(on_edge.sum()))
    lens = np.array(list(WINDOWS.values()), dtype=np.int64)
    lb_key[on_edge] = ev_key[pick]
    lb_ts[on_edge] = ev_ts[pick] + lens[rng.integers(0, len(lens), len(pick))]
    return ev_key, ev_ts, amount, lb_key, lb_ts


def reference(ev_key, ev_ts, amount, lb_key, lb_ts, ids: np.ndarray) -> dict[str, list]:
    """The 16 features of the labels ``ids`` by brute force: each label's events by
    binary search on the events sorted by (key, time), window ``[t - W, t)``; sums with
    ``math.fsum`` (exactly rounded), means as that sum over the count."""
    order = np.lexsort((ev_ts, ev_key))
    k_sorted, t_sorted, a_sorted = ev_key[order], ev_ts[order], amount[order]
    out: dict[str, list] = {"row_id": ids.tolist(), **{f: [] for f in feature_names()}}
    for i in ids:
        k, t = lb_key[i], lb_ts[i]
        lo_k = np.searchsorted(k_sorted, k, "left")
        hi_k = np.searchsorted(k_sorted, k, "right")
        times = t_sorted[lo_k:hi_k]
        end = lo_k + np.searchsorted(times, t, "left")  # events strictly before t
        for w, length in WINDOWS.items():
            start = lo_k + np.searchsorted(times, t - length, "left")  # at t - W included
            vals = a_sorted[start:end]
            n = len(vals)
            s = math.fsum(vals) if n else None
            out[f"count_{w}"].append(n)
            out[f"sum_amount_{w}"].append(s)
            out[f"mean_amount_{w}"].append(s / n if n else None)
            out[f"max_amount_{w}"].append(float(vals.max()) if n else None)
    return out


def ensure(size: Size, dist: str, log=print) -> dict[str, Path]:
    """Generates the data of ``size`` and ``dist`` unless a matching copy is on disk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = paths(size, dist)
    d = directory(size, dist)
    meta_path = d / "meta.json"
    meta = {"generator": GENERATOR_VERSION, "dist": dist, "days": DAYS, "zipf_s": ZIPF_S,
            "sample_rows": SAMPLE_ROWS, **asdict(size)}
    if meta_path.exists() and all(f.exists() for f in p.values()):
        if json.loads(meta_path.read_text()) == meta:
            return p
    d.mkdir(parents=True, exist_ok=True)
    meta_path.unlink(missing_ok=True)  # written last: a partial run regenerates
    log(f"generating {size.name}-{dist} ({size.events:,} events, {size.labels:,} labels, "
        f"{size.keys:,} keys) into {d} ...")
    ev_key, ev_ts, amount, lb_key, lb_ts = _generate(size, dist)
    us = pa.timestamp("us")
    pq.write_table(pa.table({
        "user_id": ev_key, "ts": pa.array(ev_ts, pa.int64()).cast(us), "amount": amount,
    }), p["events"])
    pq.write_table(pa.table({
        "user_id": lb_key, "ts": pa.array(lb_ts, pa.int64()).cast(us),
        "row_id": np.arange(size.labels, dtype=np.int64),
    }), p["labels"])
    ref = reference(ev_key, ev_ts, amount, lb_key, lb_ts, sample_ids(size))
    schema = pa.schema([("row_id", pa.int64())] + [
        (f, pa.int64() if f.startswith("count_") else pa.float64()) for f in feature_names()])
    pq.write_table(pa.table(ref, schema=schema), p["reference"])
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return p


def describe(size: Size, dist: str) -> dict[str, float]:
    """Facts about the data for the report: the busiest key's share of events, and the
    mean events in a label's 30-day window (from the reference sample)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    p = paths(size, dist)
    keys = pq.read_table(p["events"], columns=["user_id"]).column("user_id")
    counts = pc.value_counts(keys).field("counts")
    ref = pq.read_table(p["reference"], columns=["count_30d"]).column("count_30d")
    return {"top_key_share": pc.max(counts).as_py() / size.events,
            "mean_30d_events": pc.mean(ref).as_py(), "max_30d_events": pc.max(ref).as_py()}
