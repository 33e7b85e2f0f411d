"""``pitstop demo``: the three pipelines of a churn model on an embedded store.

A subscription business with deterministic synthetic data: users whose engagement
drifts, marketing actions, billing events, and churn labels observed at different times.

1. Feature pipeline: weekly features per user, inserted into three online feature
   groups (engagement, marketing, billing; 20 features each), and raw payment events
   into a fourth group, from which an online aggregation keeps spend windows (count,
   sum, mean, max over 7 and 28 days), exact at every label's time.
2. Training pipeline: a feature view over all 66 features plus two request-time ones
   (the retention offer made in the call, an on-demand function) with a log and a
   scaler fitted on the training split, point-in-time training data for the labels, a
   time-based split, a gradient-boosted model (scikit-learn) exported to ONNX and
   registered with its metrics and training snapshot.
3. Inference pipeline: a predictor serving 10k predictions from the online store and
   the request, with latency percentiles for batch 1 and batch 100, and what-if questions.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

START = dt.datetime(2026, 1, 5, tzinfo=dt.timezone.utc)
DAY_US = 86_400 * 10**6
GROUPS = {
    "engagement": ["sessions", "minutes", "active_days", "features_used", "errors", "support_tickets",
                   "mobile_share", "night_share", "shares", "invites"],
    "marketing": ["emails_sent", "emails_opened", "clicks", "discount_pct", "campaigns", "push_sent",
                  "push_opened", "referrals", "survey_score", "nps"],
    "billing": ["mrr", "seats", "failed_payments", "refunds", "plan_level", "tenure_weeks",
                "upgrades", "downgrades", "invoices_late", "credits"],
}


def _say(msg: str) -> None:
    print(msg, flush=True)


def generate(users: int, weeks: int, seed: int = 7) -> tuple[dict[str, pa.Table], pa.Table]:
    """Weekly feature tables for three groups and a spine of churn labels."""
    rng = np.random.default_rng(seed)
    health = rng.normal(0, 1, users)  # latent: how healthy each account is
    drift = rng.normal(0, 0.15, users)  # and where it is heading
    tables = {}
    for g, names in GROUPS.items():
        uid = np.repeat(np.arange(users), weeks)
        week = np.tile(np.arange(weeks), users)
        ts = (START.timestamp() * 1e6 + week * 7 * DAY_US + rng.integers(0, 7 * DAY_US, users * weeks)).astype(np.int64)
        state = health[uid] + drift[uid] * week
        cols = {"user_id": pa.array(uid, pa.int64()), "ts": pa.array(ts, pa.timestamp("us", "UTC"))}
        for j, n in enumerate(names):
            signal = state * (1.0 / (1 + j)) * (1 if j % 2 == 0 else -1)
            for w in ("7d", "28d"):
                noise = rng.normal(0, 1.0 if w == "7d" else 0.5, users * weeks)
                cols[f"{g[:3]}_{n}_{w}"] = pa.array((signal + noise).astype(np.float32))
        tables[g] = pa.table(cols)
    # Raw payment events: healthier accounts pay more often and more.
    per_user = rng.poisson(np.clip(2.0 + health, 0.2, None) * weeks)
    uid = np.repeat(np.arange(users), per_user)
    ts = (START.timestamp() * 1e6 + rng.uniform(0, weeks * 7 * DAY_US, len(uid))).astype(np.int64)
    tables["payments"] = pa.table({
        "user_id": pa.array(uid, pa.int64()),
        "ts": pa.array(ts, pa.timestamp("us", "UTC")),
        "amount": pa.array(np.round(rng.gamma(2.0, 20.0 + 5 * np.clip(health[uid], -3, 3)), 2)),
    })
    n_labels = users * 4
    uid = rng.integers(0, users, n_labels)
    week = rng.uniform(2, weeks + 1, n_labels)
    t = (START.timestamp() * 1e6 + week * 7 * DAY_US).astype(np.int64)
    # The retention offer made in the call the label comes from: known only at request
    # time, so it reaches the model through an on-demand feature.
    offer = rng.choice([0.0, 10.0, 20.0, 30.0], n_labels)
    risk = -(health[uid] + drift[uid] * week) - offer / 25 + rng.normal(0, 0.8, n_labels)
    spine = pa.table({
        "user_id": pa.array(uid, pa.int64()),
        "label_time": pa.array(t, pa.timestamp("us", "UTC")),
        "offer_pct": pa.array(offer),
        "churned": pa.array(risk > 1.0),
    })
    return tables, spine


def feature_pipeline(fs, tables: dict[str, pa.Table]) -> list:
    """Three groups of weekly features, and spend windows aggregated from raw payments."""
    from pitstop import agg

    groups = []
    for name in GROUPS:
        g = fs.create_feature_group(name, primary_key="user_id", event_time="ts", online=True,
                                    ttl="30d", description=f"weekly {name} features per user")
        g.insert(tables[name])
        groups.append(g)
    payments = fs.create_feature_group("payments", primary_key="user_id", event_time="ts",
                                       description="raw payment events")
    spend = fs.create_aggregation("spend", source=payments, online=True, aggregations=[
        agg.count(windows=["7d", "28d"]), agg.sum("amount", windows=["7d", "28d"]),
        agg.mean("amount", windows=["28d"]), agg.max("amount", windows=["7d"])])
    payments.insert(tables["payments"])  # offline, and spend's online state in the same call
    return groups + [spend]


def train_model(x: np.ndarray, y: np.ndarray, n_trees: int, seed: int = 0) -> tuple[bytes, object]:
    from sklearn.ensemble import GradientBoostingClassifier
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    model = GradientBoostingClassifier(n_estimators=n_trees, max_depth=3, subsample=0.8,
                                       random_state=seed)
    model.fit(x, y)
    onx = to_onnx(model, initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
                  options={id(model): {"zipmap": False}}, target_opset=17)
    return onx.SerializeToString(), model


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (rank statistic, ties averaged)."""
    order = np.argsort(score, kind="mergesort")
    ranks = np.empty(len(score))
    ranks[order] = np.arange(1, len(score) + 1)
    s = score[order]
    i = 0
    while i < len(s):  # average ranks of ties
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = (i + j + 2) / 2
        i = j + 1
    pos = y.astype(bool)
    n_pos, n_neg = pos.sum(), (~pos).sum()
    if not n_pos or not n_neg:
        return float("nan")
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def to_numpy(table: pa.Table) -> np.ndarray:
    """Model input: float32, a missing value (an empty spend window, an expired row) as 0,
    the same default the predictor applies when serving."""
    x = np.column_stack([c.to_numpy(zero_copy_only=False) for c in table.columns]).astype(np.float32) \
        if table.num_columns else np.zeros((table.num_rows, 0), np.float32)
    return np.nan_to_num(x, nan=0.0)


def latencies(fn, batches: list) -> tuple[float, float]:
    out = []
    for b in batches:
        t0 = time.perf_counter()
        fn(b)
        out.append(time.perf_counter() - t0)
    out.sort()
    return out[len(out) // 2] * 1e6, out[min(len(out) - 1, int(len(out) * 0.99))] * 1e6


def offer_features(cols: dict) -> dict:
    """The demo's on-demand function (registered by its import path): the retention
    offer made at request time, and its value against the account's monthly revenue."""
    return {"offer": cols["offer_pct"],
            "offer_value": cols["offer_pct"] / 100 * np.abs(cols["bil_mrr_28d"])}


def run(rows: int | None = None, directory: str | None = None, *, users: int = 10_000,
        weeks: int = 26, n_trees: int = 100, requests: int = 10_000, max_train: int = 6_000) -> int:
    import pitstop as ps

    t_start = time.perf_counter()
    tmp = None
    if directory is None:
        tmp = tempfile.TemporaryDirectory(prefix="pitstop-demo-")
        directory = str(Path(tmp.name) / "churn.pitstop")
    fs = ps.FeatureStore(directory)
    _say(f"pitstop demo: a churn model on an embedded store at {directory}\n")

    t0 = time.perf_counter()
    tables, spine = generate(users, weeks)
    groups = feature_pipeline(fs, tables)
    n_rows = sum(t.num_rows for t in tables.values())
    _say(f"1. feature pipeline   {len(groups) - 1} online feature groups and 1 aggregation "
         f"({tables['payments'].num_rows:,} payment events -> {len(groups[-1].features)} spend "
         f"windows), {n_rows:,} rows, {sum(len(g.features) for g in groups)} features  "
         f"({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    from pitstop import transforms as T

    fv = fs.create_feature_view(
        "churn", features=[g.select_all() for g in groups], labels=["churned"],
        on_demand=[ps.on_demand(request={"offer_pct": "float64"},
                                outputs={"offer": "float64", "offer_value": "float64"})(offer_features)],
        transforms={"sum_amount_28d": T.log1p(), "bil_mrr_28d": T.standard_scaler()})
    test_start = START + dt.timedelta(weeks=int(weeks * 0.75))
    x_tr, x_te, y_tr, y_te = fv.train_test_split(spine, test_start=test_start, spine_time="label_time")
    x_tr, y_tr = to_numpy(x_tr), y_tr.column(0).to_numpy(zero_copy_only=False)
    x_te, y_te = to_numpy(x_te), y_te.column(0).to_numpy(zero_copy_only=False)
    t_join = time.perf_counter() - t0
    sample = np.random.default_rng(0).permutation(len(x_tr))[:max_train]
    onnx_bytes, _ = train_model(x_tr[sample], y_tr[sample], n_trees)
    import onnxruntime as ort

    sess = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    p_te = sess.run(["probabilities"], {"input": x_te})[0][:, 1]
    metric = auc(y_te, p_te)
    snapshot = fv.last_snapshot  # the split's: its transforms were fitted on x_tr
    model = fs.models.register("churn", onnx_bytes, feature_view=fv, metrics={"auc": metric},
                               training_snapshot=snapshot, description=f"GBDT, {n_trees} trees")
    _say(f"2. training pipeline  {len(x_tr):,} train / {len(x_te):,} test rows (point-in-time, split at "
         f"{test_start.date()}), join {t_join:.2f} s; GBDT {n_trees} trees on {len(sample):,} rows; "
         f"test AUC {metric:.3f}; registered churn v{model.version}  ({time.perf_counter() - t0:.1f} s)")

    t0 = time.perf_counter()
    pred = fs.predictor("churn", missing="default", defaults={f: 0.0 for f in fv.features})
    serve_at = START + dt.timedelta(weeks=weeks)  # the synthetic business's "now"
    rng = np.random.default_rng(1)
    n_single = requests // 2
    # A request: the user, and the offer on the table (a request-time feature).
    singles = [({"user_id": int(u)}, {"offer_pct": [20.0]}) for u in rng.integers(0, users, n_single)]
    hundreds = [({"user_id": rng.integers(0, users, 100)}, {"offer_pct": np.full(100, 10.0)})
                for _ in range((requests - n_single) // 100)]

    def serve(req):
        return pred.predict(req[0], request=req[1], now=serve_at)

    for b in singles[:200] + hundreds[:5]:  # warm up
        serve(b)
    p1 = latencies(serve, singles)
    p100 = latencies(serve, hundreds)
    x = fv.get_feature_vectors(hundreds[0][0], as_matrix=True, now=serve_at, request=hundreds[0][1])
    fresh = 1 - np.isnan(x).mean()
    _say(f"3. inference pipeline {n_single + 100 * len(hundreds):,} predictions from online features: "
         f"batch 1 p50 {p1[0]:.0f} µs / p99 {p1[1]:.0f} µs; batch 100 p50 {p100[0]:.0f} µs / "
         f"p99 {p100[1]:.0f} µs; {fresh:.0%} of feature values fresh (within the 30-day TTL)  "
         f"({time.perf_counter() - t0:.1f} s)")

    user = int(spine.column("user_id")[0].as_py())
    feat = fv.features[0]
    before, after = pred.what_if({"user_id": user}, {feat: 3.0}, now=serve_at,
                                 request={"offer_pct": [0.0]})
    _say(f"\nwhat if user {user} had {feat} = 3.0? churn probability {before:.2f} -> {after:.2f}")
    no_offer, offer = (pred.predict({"user_id": user}, request={"offer_pct": [p]}, now=serve_at)[0]
                       for p in (0.0, 30.0))
    _say(f"and with a 30% retention offer instead of none? {no_offer:.2f} -> {offer:.2f}")
    pd_curve = pred.partial_dependence(feat, [-2, 0, 2], {"user_id": rng.integers(0, users, 200)},
                                       request={"offer_pct": np.zeros(200)}, now=serve_at)
    _say(f"partial dependence of churn on {feat} at -2/0/2: " + " / ".join(f"{v:.2f}" for v in pd_curve))
    _say(f"\ndone in {time.perf_counter() - t_start:.1f} s; store: feature groups "
         f"{[g.name for g in groups[:-1]] + ['payments']}, aggregation spend, view churn v1, "
         f"model churn v{model.version} (auc {metric:.3f})")
    pred.close()
    fs.close()
    if tmp is not None:
        tmp.cleanup()
    return 0
