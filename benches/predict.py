"""End-to-end inference benchmark: ``Predictor.predict`` against the same pipeline
written in plain Python (python-lmdb lookups + numpy assembly + onnxruntime).

Both serve the demo's model (gradient boosting, 100 trees, 60 features from 3 online
feature groups) on the same store contents in the same run; calls alternate in blocks
so machine noise hits both alike. Reported: p50/p99 for batch 1 and batch 100, the
feature part (lookup + assembly) next to the model's own time, and throughput of one
and two worker processes.

    python -m benches.predict [--users 100000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import tempfile
import time
from pathlib import Path

import numpy as np

from benches import harness


def build(directory: Path, users: int, weeks: int, n_trees: int):
    import datetime as dt

    import pitstop as ps
    from pitstop import demo

    fs = ps.FeatureStore(directory / "store")
    tables, spine = demo.generate(users, weeks)
    groups = demo.feature_pipeline(fs, tables)
    groups = groups[:3]  # the plain pipeline reads the three feature groups
    fv = fs.create_feature_view("churn", features=[g.select_all() for g in groups], labels=["churned"])
    train = fv.training_data(spine.slice(0, 20_000), spine_time="label_time")
    x = demo.to_numpy(train.select(fv.features))
    y = train.column("churned").to_numpy(zero_copy_only=False)
    onnx_bytes, _ = demo.train_model(x[:6_000], y[:6_000], n_trees)
    fs.models.register("churn", onnx_bytes, feature_view=fv)
    # The same features plus three on-demand ones and five fitted transforms.
    from pitstop import transforms as T

    from . import predict_fns

    fv_tx = fs.create_feature_view(
        "churn_tx", features=[g.select_all() for g in groups], labels=["churned"],
        on_demand=[ps.on_demand(request={"offer_pct": "float64"}, outputs=o)(f)
                   for f, o in predict_fns.ON_DEMAND],
        transforms={f: (T.clip(-2, 2) if t == "clip" else getattr(T, t)())
                    for f, t in predict_fns.TRANSFORMS})
    x_tr, _, y_tr, _ = fv_tx.train_test_split(spine.slice(0, 20_000), spine_time="label_time",
                                             test_start=demo.START + dt.timedelta(weeks=10**4))
    x = demo.to_numpy(x_tr)
    y = y_tr.column(0).to_numpy(zero_copy_only=False)
    tx_bytes, _ = demo.train_model(x[:6_000], y[:6_000], n_trees)
    fs.models.register("churn_tx", tx_bytes, feature_view=fv_tx, training_snapshot=fv_tx.last_snapshot)
    # The plain-Python pipeline's own LMDB: per (group, user) the latest row's features
    # as float32 bytes, key b"<group>:<user>".
    import lmdb

    env = lmdb.open(str(directory / "plain.lmdb"), map_size=8 << 30, max_dbs=1)
    with env.begin(write=True) as txn:
        for name, table in ((n, t) for n, t in tables.items() if n in demo.GROUPS):
            uid = table.column("user_id").to_numpy()
            ts = table.column("ts").cast("int64").to_numpy()
            feats = demo.to_numpy(table.drop_columns(["user_id", "ts"]))
            order = np.lexsort((ts, uid))
            last = order[np.r_[uid[order][1:] != uid[order][:-1], True]]
            for u, row in zip(uid[last], feats[last]):
                txn.put(f"{name}:{u}".encode(), row.tobytes())
    env.close()
    fitted = fv_tx.fitted_transforms().steps
    fs.close()
    return onnx_bytes, [g.name for g in groups], tx_bytes, fitted


class PlainPipeline:
    def __init__(self, directory: Path, onnx_bytes: bytes, groups: list[str]):
        import lmdb
        import onnxruntime as ort

        self.env = lmdb.open(str(directory / "plain.lmdb"), readonly=True, lock=False, max_dbs=1)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.groups = [g.encode() + b":" for g in groups]
        self.width = 20

    def features(self, users) -> np.ndarray:
        x = np.full((len(users), self.width * len(self.groups)), np.nan, np.float32)
        with self.env.begin(buffers=True) as txn:
            for i, u in enumerate(users):
                key = str(int(u)).encode()
                for j, g in enumerate(self.groups):
                    v = txn.get(g + key)
                    if v is not None:
                        x[i, j * self.width:(j + 1) * self.width] = np.frombuffer(v, np.float32)
        return x

    def predict(self, users) -> np.ndarray:
        return self.sess.run(["probabilities"], {"input": self.features(users)})[0][:, 1]


class PlainTransformPipeline:
    """The plain pipeline plus the on-demand features and the fitted transforms, by hand
    (its own model; the lookups of ``base``)."""

    def __init__(self, base: PlainPipeline, onnx_bytes: bytes, features: list[str], fitted: dict):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        self.sess = ort.InferenceSession(onnx_bytes, opts, providers=["CPUExecutionProvider"])
        self.base, self.names, self.fitted = base, features, fitted

    def predict_request(self, users, request) -> np.ndarray:
        from .predict_fns import plain_transform

        x = plain_transform(self.base.features(users), self.names, request, self.fitted)
        return self.sess.run(["probabilities"], {"input": x})[0][:, 1]


def serve_time(weeks: int):
    """The synthetic data's "now": the end of its weeks (features are within the TTL)."""
    import datetime as dt

    from pitstop import demo

    return demo.START + dt.timedelta(weeks=weeks)


def _throughput(directory: str, seconds: float, weeks: int, q) -> None:
    import pitstop as ps

    now = serve_time(weeks)
    fs = ps.FeatureStore(directory)
    pred = fs.predictor("churn")
    rng = np.random.default_rng()
    users = fs.get_feature_group("engagement").read(columns=["user_id"]).num_rows
    n = 0
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pred.predict({"user_id": rng.integers(0, users // 4, 100)}, now=now)
        n += 100
    q.put(n / seconds)


def throughput(directory: Path, procs: int, weeks: int, seconds: float = 5.0) -> float:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    ps_ = [ctx.Process(target=_throughput, args=(str(directory / "store"), seconds, weeks, q)) for _ in range(procs)]
    for p in ps_:
        p.start()
    total = sum(q.get() for _ in ps_)
    for p in ps_:
        p.join()
    return total


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--users", type=int, default=100_000)
    ap.add_argument("--weeks", type=int, default=4)
    ap.add_argument("--calls", type=int, default=5_000)
    args = ap.parse_args()
    import pitstop as ps

    with tempfile.TemporaryDirectory(prefix="pitstop-bench-") as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        onnx_bytes, groups, tx_bytes, fitted = build(d, args.users, args.weeks, 100)
        print(f"built store + plain LMDB ({args.users:,} users x 3 groups x 20 features) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        fs = ps.FeatureStore(d / "store")
        pred = fs.predictor("churn")
        now = serve_time(args.weeks)
        plain = PlainPipeline(d, onnx_bytes, groups)
        pred_tx = fs.predictor("churn_tx")
        plain_tx = PlainTransformPipeline(plain, tx_bytes, pred.view.features, fitted)
        rng = np.random.default_rng(5)
        one = [rng.integers(0, args.users, 1) for _ in range(args.calls)]
        hundred = [rng.integers(0, args.users, 100) for _ in range(max(args.calls // 10, 50))]
        assert np.allclose(pred.predict({"user_id": hundred[0]}, now=now), plain.predict(hundred[0]), atol=1e-5), \
            "pitstop and the plain pipeline disagree"
        req1, req100 = {"offer_pct": [20.0]}, {"offer_pct": np.full(100, 10.0)}
        assert np.allclose(pred_tx.predict({"user_id": hundred[0]}, request=req100, now=now),
                           plain_tx.predict_request(hundred[0], req100), atol=1e-5), \
            "pitstop and the plain pipeline with transforms disagree"
        results: dict[str, list[float]] = {}

        def timed(name, fn, batches):
            for b in batches[:50]:
                fn(b)
            out = results.setdefault(name, [])
            for b in batches:
                t = time.perf_counter()
                fn(b)
                out.append(time.perf_counter() - t)

        x100 = pred.features({"user_id": hundred[0]}, now=now)
        x1 = pred.features({"user_id": one[0]}, now=now)
        load_start = harness.load_average()
        for block in range(5):  # alternate so drift hits both
            sl = slice(block * len(one) // 5, (block + 1) * len(one) // 5)
            sh = slice(block * len(hundred) // 5, (block + 1) * len(hundred) // 5)
            timed("pitstop b1", lambda u: pred.predict({"user_id": u}, now=now), one[sl])
            timed("plain b1", plain.predict, one[sl])
            timed("pitstop b100", lambda u: pred.predict({"user_id": u}, now=now), hundred[sh])
            timed("plain b100", plain.predict, hundred[sh])
            timed("pitstop features b100", lambda u: pred.features({"user_id": u}, now=now), hundred[sh])
            timed("plain features b100", plain.features, hundred[sh])
            timed("model only b100", lambda _u: pred._run(x100), hundred[sh])
            timed("plain features b1", plain.features, one[sl])
            timed("model only b1", lambda _u: pred._run(x1), one[sl])
            timed("pitstop +transforms b1",
                  lambda u: pred_tx.predict({"user_id": u}, request=req1, now=now), one[sl])
            timed("plain +transforms b1", lambda u: plain_tx.predict_request(u, req1), one[sl])
            timed("pitstop +transforms b100",
                  lambda u: pred_tx.predict({"user_id": u}, request=req100, now=now), hundred[sh])
            timed("plain +transforms b100", lambda u: plain_tx.predict_request(u, req100), hundred[sh])
            timed("pitstop features b1", lambda u: pred.features({"user_id": u}, now=now), one[sl])
            timed("pitstop features +transforms b1",
                  lambda u: pred_tx.features({"user_id": u}, request=req1, now=now), one[sl])
            timed("pitstop features +transforms b100",
                  lambda u: pred_tx.features({"user_id": u}, request=req100, now=now), hundred[sh])
        rows = []
        for name, xs in results.items():
            rows.append([name, harness.percentile(xs, 50) * 1e6, harness.percentile(xs, 99) * 1e6])
        assert not np.isnan(x100).any(), "features expired: serve at the data's time"
        load_end = harness.load_average()
        tp1 = throughput(d, 1, args.weeks)
        tp2 = throughput(d, 2, args.weeks)
        pred.close()
        pred_tx.close()
        fs.close()
    p = {r[0]: r for r in rows}
    print(f"\n{harness.today()} · {harness.machine()} · {harness.versions('pitstop', 'onnxruntime', 'lmdb', 'numpy')}")
    print(f"{load_start} at start, {load_end} at end")
    print(harness.markdown_table(["pipeline", "p50 µs", "p99 µs"], rows))
    print(f"\nbatch 1 p50 speed-up over plain Python: {p['plain b1'][1] / p['pitstop b1'][1]:.2f}x "
          f"(p99 {p['pitstop b1'][2]:.1f} µs); feature part {p['pitstop features b1'][1]:.1f} µs, "
          f"the model alone {p['model only b1'][1]:.1f} µs")
    print(f"\nbatch 100 p50 speed-up over plain Python: {p['plain b100'][1] / p['pitstop b100'][1]:.1f}x; "
          f"feature part {p['pitstop features b100'][1]:.0f} µs vs model {p['model only b100'][1]:.0f} µs")
    print(f"on-demand (3) + transforms (5) add {p['pitstop features +transforms b1'][1] - p['pitstop features b1'][1]:.1f} µs "
          f"at batch 1 and {p['pitstop features +transforms b100'][1] - p['pitstop features b100'][1]:.1f} µs at "
          f"batch 100 (p50 of the feature part); predict with them vs plain Python: "
          f"{p['plain +transforms b1'][1] / p['pitstop +transforms b1'][1]:.1f}x at batch 1, "
          f"{p['plain +transforms b100'][1] / p['pitstop +transforms b100'][1]:.1f}x at batch 100")
    print(f"throughput, batch 100: 1 process {tp1:,.0f} predictions/s, 2 processes {tp2:,.0f}/s "
          f"({tp2 / tp1:.2f}x)")


if __name__ == "__main__":
    main()
