"""Drift reports: a planted shift is flagged on exactly the shifted features, two
samples of one distribution on none; views drift against their training snapshot and
their prediction logs; overrides; training/serving skew; bad input."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors
from pitstop.monitoring import drift

from onnx_models import gbdt

UTC = dt.timezone.utc


def sample(rng, n, shift=()):
    cols = {}
    for j in range(20):
        mean, std = j * 3.0 - 10, 0.5 + j * 0.25
        x = rng.normal(mean, std, n)
        if j in shift:
            x = x + std  # mean + 1 std
        cols[f"f{j:02d}"] = x
    return pa.table(cols)


@pytest.mark.parametrize("seed", range(3))
def test_planted_shift_is_flagged_on_exactly_those_features(seed):
    rng = np.random.default_rng(seed)
    ref, cur = sample(rng, 20_000), sample(rng, 10_000, shift=(3, 11))
    report = drift(ref, cur)
    assert report.drifted == ["f03", "f11"]
    assert not report.passed
    rows = {r["feature"]: r for r in report.table.to_pylist()}
    assert rows["f03"]["ks_d"] > 0.3 and rows["f03"]["wasserstein"] == pytest.approx(1.0, abs=0.05)
    assert all(rows[f]["status"] == "ok" for f in rows if f not in ("f03", "f11"))


@pytest.mark.parametrize("seed", range(3))
def test_two_samples_of_one_distribution_flag_nothing(seed):
    rng = np.random.default_rng(10 + seed)
    report = drift(sample(rng, 20_000), sample(rng, 10_000))
    assert report.drifted == [] and report.passed
    assert max(report.table.column("score").to_pylist()) < 0.1  # not even a warning


def test_null_rate_is_reported_apart_and_categoricals():
    rng = np.random.default_rng(1)
    x = rng.normal(size=4000)
    cur = x.copy().astype(object)
    cur[:1000] = None  # a quarter missing, the rest the same distribution
    cats = rng.choice(["a", "b", "c"], 4000).tolist()
    ref = pa.table({"x": x, "c": cats, "flag": rng.random(4000) < 0.5, "small": rng.integers(0, 4, 4000)})
    cur = pa.table({"x": pa.array(cur.tolist(), pa.float64()), "c": cats[:3000] + ["z"] * 1000,
                    "flag": rng.random(4000) < 0.5, "small": rng.integers(0, 4, 4000).astype(np.float32)})
    report = drift(ref, cur)
    rows = {r["feature"]: r for r in report.table.to_pylist()}
    assert rows["x"]["null_rate_ref"] == 0 and rows["x"]["null_rate_cur"] == 0.25
    assert not rows["x"]["drifted"]  # the distribution of the present values did not move
    assert rows["c"]["type"] == "categorical" and rows["c"]["drifted"] and rows["c"]["js"] > 0.2
    assert rows["flag"]["type"] == "categorical" and not rows["flag"]["drifted"]
    assert rows["small"]["type"] == "categorical" and not rows["small"]["drifted"]
    assert report.drifted == ["c"]


def test_method_and_threshold_overrides():
    rng = np.random.default_rng(2)
    ref = pa.table({"a": rng.normal(size=5000), "b": rng.normal(size=5000), "c": rng.choice(["u", "v"], 5000)})
    cur = pa.table({"a": rng.normal(0.05, 1, 5000), "b": rng.normal(size=5000), "c": rng.choice(["u", "v"], 5000)})
    report = drift(ref, cur, method={"a": "ks", "b": "wasserstein", "c": "js"}, threshold={"b": 0.5})
    rows = {r["feature"]: r for r in report.table.to_pylist()}
    assert rows["a"]["method"] == "ks" and rows["a"]["score"] == rows["a"]["p_value"]
    assert rows["a"]["drifted"] == (rows["a"]["p_value"] < 0.05) and rows["a"]["threshold"] == 0.05
    assert rows["b"]["score"] == rows["b"]["wasserstein"] and rows["b"]["threshold"] == 0.5
    assert rows["c"]["score"] == rows["c"]["js"]
    strict = drift(ref, cur, features=["a"], threshold=0.0)  # PSI >= 0 always: drifted
    assert strict.drifted == ["a"]
    with pytest.raises(errors.InvalidArgumentError, match="method 'ks' does not apply to feature 'c'"):
        drift(ref, cur, method={"c": "ks"})
    with pytest.raises(errors.InvalidArgumentError, match="method must be one of"):
        drift(ref, cur, method="chi2")
    with pytest.raises(errors.InvalidArgumentError, match=r"names feature\(s\) \['zz'\]"):
        drift(ref, cur, threshold={"zz": 0.1})
    with pytest.raises(errors.InvalidArgumentError, match="non-negative number"):
        drift(ref, cur, threshold=-1)


def test_bad_inputs():
    t = pa.table({"x": [1.0, 2.0], "s": ["a", "b"]})
    with pytest.raises(errors.DataError, match="the current data has no rows"):
        drift(t, t.slice(0, 0))
    with pytest.raises(errors.SchemaError, match=r"the current data has no column\(s\) \['y'\]"):
        drift(t.rename_columns(["y", "s"]), t, features=["y"])
    with pytest.raises(errors.ColumnTypeError, match="feature 's' is string in the reference data but double"):
        drift(t, pa.table({"x": [1.0], "s": [1.0]}))
    with pytest.raises(errors.InputTypeError):
        drift(t, "not a table")


def test_report_json_round_trips_and_empty_columns_are_no_data():
    t = pa.table({"x": [1.0, 2.0, 3.0], "n": pa.array([None, None, None], pa.float64())})
    report = drift(t, t)
    inf = drift(t, pa.table({"x": [1.0, float("inf"), 3.0], "n": [1.0, 2.0, 3.0]}))
    assert json.loads(inf.to_json())["features"][0]["wasserstein"] is None  # inf: no JSON number
    d = json.loads(report.to_json())
    assert d["passed"] is True and d["drifted"] == []
    assert [f["feature"] for f in d["features"]] == ["x", "n"]
    n = d["features"][1]
    assert n["status"] == "no data" and n["score"] is None and n["null_rate_cur"] == 1.0


# -- a store: the view's training snapshot, its prediction log, skew ----------------

def ts(*s):
    return pa.array([dt.datetime(2026, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=int(x)) for x in s],
                    pa.timestamp("us", "UTC"))


@pytest.fixture
def logged(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    rng = np.random.default_rng(0)
    a = fs.create_feature_group("a", primary_key="user_id", event_time="ts", online=True)
    b = fs.create_feature_group("b", primary_key="user_id", event_time="ts", online=True)
    n = 400
    a.insert(pa.table({"user_id": np.arange(n) % 100, "ts": ts(*rng.integers(0, 1000, n)),
                       "x": rng.random(n), "y": rng.normal(size=n)}))
    b.insert(pa.table({"user_id": np.arange(n) % 100, "ts": ts(*rng.integers(0, 1000, n)),
                       "z": rng.random(n).astype(np.float32)}))
    fv = fs.create_feature_view("v", features=[a.select(["x", "y"]), b.select(["z"])])
    fs.models.register("m", gbdt(3), feature_view=fv)
    yield fs, fv
    fs.close()


def serve(fs, keys):
    with fs.predictor("m", log=True) as pred:
        pred.predict({"user_id": keys})
        pred.flush()


def test_view_drift_against_training_and_logs(logged):
    fs, fv = logged
    with pytest.raises(errors.NotFoundError, match="has no training snapshot yet"):
        fv.drift()
    fv.training_data(pa.table({"user_id": [1, 2], "t": ts(2000, 2000)}))
    serve(fs, list(range(100)) * 3)
    log = fv.logs(start="-1d")
    assert log.num_rows == 300 and {"x", "y", "z", "prediction", "logged_at"} <= set(log.column_names)
    assert fv.logs(start="-1d", end="-12h").num_rows == 0
    report = fv.drift(current=log)
    assert report.table.column("feature").to_pylist() == ["x", "y", "z"]
    assert report.meta["reference"].startswith("training snapshot")
    # served values are the latest per key: another distribution than every stored row,
    # but the report carries the real numbers, and the default window reads the same logs
    assert fv.drift().table.column("score").to_pylist() == report.table.column("score").to_pylist()
    same = fv.drift(reference=log, current="logs:1d")
    assert same.table.column("feature").to_pylist() == ["x", "y", "z", "prediction"]  # prediction drift
    assert same.passed and set(same.table.column("score").to_pylist()) == {0.0}
    stats = fs.statistics("a")
    assert stats.column("feature").to_pylist() == ["x", "y"] and stats.column("count").to_pylist() == [400, 400]
    assert fs.statistics(fv).column("feature").to_pylist() == ["x", "y", "z"]
    with pytest.raises(errors.NotFoundError, match="no feature group or feature view named 'nope'"):
        fs.statistics("nope")
    with pytest.raises(errors.InvalidArgumentError, match="is not a time"):
        fv.logs(start="yesterday")


def test_skew_consistent_then_online_only_write(logged):
    fs, fv = logged
    keys = list(range(100))
    serve(fs, keys)
    skew = fv.skew(logs=fv.logs(start="-1d"))
    assert skew.passed and skew.table.column("mismatch_rate").to_pylist() == [0.0, 0.0, 0.0]
    assert skew.table.column("n").to_pylist() == [100, 100, 100]
    # a row written to the online store alone: key 7 gets a newer x and y online only,
    # and key 150 exists online only
    a = fs.get_feature_group("a")
    fs.online.write(a.online_table, pa.table({"user_id": [7, 150], "ts": ts(5000, 5000), "x": [9.0, 1.0],
                                              "y": [-9.0, 2.0]}), keys="user_id", event_time="ts")
    serve(fs, [7, 150, 8])
    log = fv.logs(start="-1d")
    skew = fv.skew(logs=log)
    rows = {r["feature"]: r for r in skew.table.to_pylist()}
    assert skew.skewed == ["x", "y"]
    assert rows["x"]["mismatches"] == 2 and rows["x"]["missing_offline"] == 1
    assert rows["x"]["worst_keys"] == ["user_id=150", "user_id=7"]
    assert rows["z"]["mismatches"] == 0 and rows["z"]["missing_online"] == 0
    assert rows["x"]["mismatch_rate"] == pytest.approx(2 / 103)
    assert "user_id=7" in skew.to_html() and json.loads(skew.to_json())["skewed"] == ["x", "y"]
    with pytest.raises(errors.SchemaError, match=r"the logs lack column\(s\) \['user_id'\]"):
        fv.skew(logs=log.drop_columns(["user_id"]))
    with pytest.raises(errors.InvalidArgumentError, match="sample must be a fraction"):
        fv.skew(logs=log, sample=2)


def test_cli_stats_drift_skew(logged, tmp_path, capsys):
    from pitstop import cli

    fs, fv = logged
    store = str(fs.path)
    assert cli.main(["--store", store, "stats", "a"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].split()[:4] == ["feature", "kind", "count", "nulls"] and "\nx " in out
    fv.training_data(pa.table({"user_id": [1], "t": ts(2000)}))
    serve(fs, list(range(100)))
    argv = ["--store", store, "drift", "v", "--reference", "logs:1d", "--current", "logs:1d", "--fail-on-drift"]
    assert cli.main(argv) == 0
    assert "0 of 4 features drifted" in capsys.readouterr().out
    # the features move: new rows for every key, x shifted by 5
    rng = np.random.default_rng(5)
    fs.get_feature_group("a").insert(pa.table({"user_id": np.arange(100), "ts": ts(*[3000] * 100),
                                               "x": rng.random(100) + 5, "y": rng.normal(size=100)}))
    serve(fs, list(range(100)))
    html = tmp_path / "drift.html"
    argv = ["--store", store, "drift", "v", "--current", "logs:1d", "--html", str(html), "--fail-on-drift"]
    assert cli.main(argv) == 1
    out = capsys.readouterr().out
    assert "features drifted: x" in out and html.exists() and 'data-feature="x" data-drifted="true"' in html.read_text()
    assert cli.main(argv[:-1]) == 0  # without --fail-on-drift the report is all
    capsys.readouterr()
    assert cli.main(["--store", store, "skew", "v", "--since", "1d", "--fail-on-skew"]) == 0
    assert "mismatch_rate" in capsys.readouterr().out
    assert cli.main(["--store", store, "drift", "nope"]) == 1
    assert "pitstop: error:" in capsys.readouterr().err


def test_drift_per_window_and_segment():
    rng = np.random.default_rng(5)
    ref = sample(rng, 4000)
    ref = ref.append_column("country", pa.array(rng.choice(["de", "fr"], 4000)))
    n = 3000
    cur = sample(rng, n)
    country = rng.choice(["de", "fr"], n)
    day = rng.integers(0, 3, n)
    # Day 2 of "fr" is shifted on f03: only that window and segment drift.
    f03 = cur.column("f03").to_numpy().copy()
    hit = (country == "fr") & (day == 2)
    f03[hit] += 0.5 + 3 * 0.25
    cur = cur.set_column(3, "f03", pa.array(f03)).append_column("country", pa.array(country))
    cur = cur.append_column("logged_at", pa.array(
        [dt.datetime(2026, 3, 1, 5, tzinfo=UTC) + dt.timedelta(days=int(d)) for d in day],
        pa.timestamp("us", "UTC")))
    from pitstop.monitoring.views import split_drift

    feats = [f"f{j:02d}" for j in range(20)]
    rep = split_drift(ref, cur, features=feats, method=None, threshold=None, window="1d",
                      segment_by="country", meta={})
    rows = rep.table.to_pylist()
    assert len(rows) == 20 * 2 * 3 and {"window", "segment"} <= set(rep.table.column_names)
    drifted = {(r["feature"], r["segment"], r["window"]) for r in rows if r["drifted"]}
    assert drifted == {("f03", "fr", "2026-03-03T00:00:00+00:00")}
    assert rep.drifted == ["f03"] and not rep.passed
    assert all(r["n_ref"] < 4000 for r in rows)  # the reference is split by segment too
    html = rep.to_html()
    assert html.count('data-drifted="true"') == 1
    json.loads(rep.to_json())
    with pytest.raises(errors.InvalidArgumentError, match="segment_by"):
        split_drift(ref, cur, features=feats, method=None, threshold=None, window=None,
                    segment_by="nope", meta={})
    with pytest.raises(errors.InvalidArgumentError, match="window"):
        split_drift(ref, cur.drop_columns(["logged_at"]), features=feats, method=None,
                    threshold=None, window="1d", segment_by=None, meta={})
