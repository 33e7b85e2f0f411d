"""``pitstop demo``: a point-in-time join on generated data.

A subscription business: a spine of (user, time, churned) label rows and three feature
tables (engagement, marketing, billing) with values logged at random times. The demo
joins them as of each label's time and shows what no-leakage means on one user.
"""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from .join import pit_join

YEAR_US = 365 * 86_400 * 10**6
START_US = 1_767_225_600 * 10**6  # 2026-01-01


def _table(rng: np.random.Generator, n: int, users: int, names: list[str]) -> pa.Table:
    cols: dict[str, pa.Array] = {
        "user_id": pa.array(rng.integers(0, users, n)),
        "ts": pa.array(START_US + rng.integers(0, YEAR_US, n), pa.timestamp("us", "UTC")),
    }
    for name in names:
        cols[name] = pa.array(rng.random(n).astype(np.float32) * 100)
    return pa.table(cols)


def run(rows: int = 1_000_000, directory: str | None = None) -> int:
    rng = np.random.default_rng(42)
    users = max(rows // 10, 1)
    t0 = time.perf_counter()
    engagement = _table(rng, rows, users, ["sessions_7d", "minutes_7d"])
    marketing = _table(rng, rows, users, ["emails_opened_30d", "discount_pct"])
    billing = _table(rng, rows, users, ["mrr", "failed_payments_90d"])
    spine = pa.table({
        "user_id": pa.array(rng.integers(0, users, rows)),
        "label_time": pa.array(START_US + rng.integers(0, YEAR_US, rows), pa.timestamp("us", "UTC")),
        "churned": pa.array(rng.random(rows) < 0.1),
    })
    print(f"generated a spine of {rows:,} labels and 3 feature tables of {rows:,} rows "
          f"({users:,} users) in {time.perf_counter() - t0:.2f} s")
    t0 = time.perf_counter()
    train = pit_join(spine, [engagement, marketing, billing], on="user_id",
                     spine_time="label_time", feature_time="ts", ttl="90d")
    elapsed = time.perf_counter() - t0
    print(f"pit_join: {train.num_rows:,} rows x {train.num_columns} columns in {elapsed * 1000:.0f} ms "
          f"({3 * rows / elapsed / 1e6:.0f} M feature rows/s)")
    user = spine.column("user_id")[0].as_py()
    mask = pa.compute.equal(train.column("user_id"), user)
    sample = train.filter(mask).sort_by("label_time").slice(0, 3)
    print(f"\nuser {user}: every label row sees only values logged before its label_time")
    print(sample.select(["label_time", "churned", "sessions_7d", "mrr"]).to_pandas().to_string(index=False)
          if _has_pandas() else sample)
    nulls = train.column("sessions_7d").null_count
    print(f"\n{nulls:,} label rows had no engagement value within the 90-day TTL (null, row kept)")
    return 0


def _has_pandas() -> bool:
    try:
        import pandas  # noqa: F401
    except ImportError:
        return False
    return True
