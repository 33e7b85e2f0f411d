"""``pitstop serve`` under hostile or careless clients: auth, size and batch limits,
clear 4xx errors, 503 at the concurrency limit, timeouts, fuzzed bodies, features the
server does not compute, and the CLI's SIGTERM drain. Real server, 127.0.0.1,
bounded request counts."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors
from pitstop import transforms as T

import transform_fns
from serve_client import call, partial_request, post_json, read_response

TOKEN = "s3cret-token-0123456789"


def small_store(path):
    fs = ps.FeatureStore(path)
    g = fs.create_feature_group("profile", primary_key="user_id", event_time="ts", online=True)
    g.insert(pa.table({"user_id": np.arange(20), "ts": pa.array([1_000_000] * 20, pa.timestamp("us")),
                       "income": np.linspace(-100.0, 5000.0, 20), "age": np.arange(20) * 3.0,
                       "country": pa.array(["de", "fr"] * 10)}))
    fs.create_feature_view("v", features=[g.select(["income", "age", "country"])])
    return fs, g


@pytest.fixture(scope="module")
def fs(tmp_path_factory):
    return small_store(tmp_path_factory.mktemp("serr") / "store")[0]


def test_token_guards_every_route_but_healthz(fs):
    with fs.serve_background(token=TOKEN) as srv:
        assert call(srv.url, "/healthz")[0] == 200
        for path, body in (("/readyz", None), ("/metrics", None), ("/v1/registry", None),
                           ("/v1/features/v", {"entities": {"user_id": [1]}})):
            status, headers, _ = call(srv.url, path, body)
            assert status == 401 and headers["www-authenticate"] == "Bearer", path
            assert call(srv.url, path, body, token=TOKEN[:-1] + "x")[0] == 401
            assert call(srv.url, path, body, token=TOKEN + "x")[0] == 401
            assert call(srv.url, path, body, token=TOKEN)[0] == 200, path
    with pytest.raises(errors.InvalidArgumentError, match="token"):
        fs.serve_background(token="  ").__enter__()


def test_limits_and_errors_name_the_problem(fs):
    with fs.serve_background(max_batch=5) as srv:
        url = srv.url

        def err(body, path="/v1/features/v", **kw):
            status, _, out = call(url, path, body, **kw)
            return status, json.loads(out)["error"]

        big = partial_request(srv.port, "/v1/features/v", (1 << 20) + 1, b"{")
        status, out = read_response(big)
        big.close()
        assert status == 413 and "bytes" in json.loads(out)["error"]
        status, msg = err({"entities": {"user_id": list(range(6))}})
        assert status == 413 and "--max-batch" in msg
        assert err(None, raw=b'{"entities": {"user_id": [1,')[0] == 400
        status, msg = err(None, raw=b"not json")
        assert status == 400 and "not valid JSON" in msg
        status, msg = err({"entities": {"user_id": [1.5]}})
        assert status == 400 and "user_id" in msg
        status, msg = err({"entities": {"user_id": ["a"]}})
        assert status == 400 and "user_id" in msg and "int" in msg
        status, msg = err({"entities": {"user_id": [[1]]}})
        assert status == 400 and "user_id" in msg
        status, msg = err({"entities": {"uid": [1]}})
        assert status == 400 and "user_id" in msg
        status, msg = err({"entities": {"user_id": [1]}, "features": ["income", "nope"]})
        assert status == 400 and "'nope'" in msg and "income" in msg
        status, msg = err({"entities": {"user_id": [1]}, "extra": 1})
        assert status == 400 and "'extra'" in msg
        status, msg = err({"entities": {"user_id": [1]}, "now": "yesterday"})
        assert status == 400 and "now" in msg
        assert err([1, 2])[0] == 400
        status, msg = err({"entities": {"user_id": [1]}}, path="/v1/features/nope")
        assert status == 404 and "'nope'" in msg and "v v1" in msg
        assert err({"entities": {"user_id": [1]}}, path="/v1/features/v/v9")[0] == 404
        assert err(None, path="/nowhere")[0] == 404
        status, msg = err({"features": ["nope:x"], "entities": {"user_id": [1]}}, path="/get-online-features")
        assert status == 404 and "nope" in msg
        # Versions: /v1/features/v/v1 is the same view.
        assert post_json(url, "/v1/features/v/v1", {"entities": {"user_id": [1]}})[0] == 200
        # Still serving after all that.
        status, out = post_json(url, "/v1/features/v", {"entities": {"user_id": [1, 2]}})
        assert status == 200 and len(out["values"]) == 2


def test_overload_is_503_and_slow_bodies_time_out(fs):
    with fs.serve_background(max_inflight=1, timeout=1.0) as srv:
        slow = partial_request(srv.port, "/v1/features/v", 100, b'{"entities"')
        time.sleep(0.2)
        status, headers, _ = call(srv.url, "/v1/features/v", {"entities": {"user_id": [1]}})
        assert status == 503 and headers["retry-after"] == "1"
        # The slow request's body never completes: 408 after the timeout.
        assert read_response(slow)[0] == 408
        slow.close()
        assert call(srv.url, "/v1/features/v", {"entities": {"user_id": [1]}})[0] == 200
        assert "pitstop_rejected_busy_total 1" in call(srv.url, "/metrics")[2].decode()


def test_fuzzed_bodies_never_crash_the_server(fs):
    rng = random.Random(1234)
    valid = json.dumps({"entities": {"user_id": [1, 2, 3]}, "features": ["income"],
                        "now": "2026-01-01T00:00:00Z"}).encode()
    pieces = [b"{", b"}", b"[", b"]", b'"', b":", b",", b"null", b"1e999", b"-0", b"\\u0000",
              b'"entities"', b'"user_id"', b'"features"', b'"now"', b"\xff\xfe", b"18446744073709551616",
              b"-9223372036854775809", b"true", b"{}" * 50, b"[" * 200]
    with fs.serve_background() as srv:
        for i in range(300):
            kind = i % 3
            if kind == 0:
                body = valid[: rng.randrange(len(valid))]
            elif kind == 1:
                body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
            else:
                body = b"".join(rng.choice(pieces) for _ in range(rng.randrange(1, 12)))
            path = rng.choice(["/v1/features/v", "/get-online-features", "/v1/features/v/v1"])
            status, _, out = call(srv.url, path, raw=body,
                                  accept=rng.choice([None, "application/octet-stream",
                                                     "application/vnd.apache.arrow.stream"]))
            assert 400 <= status < 500, (status, body, out)
        assert post_json(srv.url, "/v1/features/v", json.loads(valid))[0] == 200
        assert call(srv.url, "/healthz")[0] == 200


def test_on_demand_features_need_the_request_the_rest_served_without(tmp_path):
    fs, g = small_store(tmp_path / "s")
    fv = fs.create_feature_view("od", features=[g.select(["income", "age"])],
                                on_demand=[transform_fns.log_amount])
    with fs.serve_background() as srv:
        status, out = post_json(srv.url, "/v1/features/od", {"entities": {"user_id": [1]}})
        assert status == 400 and "log_amount" in out["error"] and '"amount"' in out["error"]
        status, out = post_json(srv.url, "/v1/features/od",
                                {"entities": {"user_id": [1, 99]}, "features": ["income", "age"]})
        want = fv.get_feature_vectors({"user_id": [1, 99]}, request={"amount": [1.0, 2.0]})
        assert status == 200 and [r[0] for r in out["values"]] == [want.column("income")[0].as_py(), None]
        status, out = post_json(srv.url, "/v1/features/od",
                                {"entities": {"user_id": [1, 99]}, "request": {"amount": [1.0, 2.0]}})
        assert status == 200  # float32 outputs as JSON: their shortest float32 text
        assert np.array([r[2] for r in out["values"]], np.float32).tobytes() == \
            want.column("log_amount").to_numpy().tobytes()


def test_numeric_transforms_applied_in_rust_equal_python(tmp_path):
    fs, g = small_store(tmp_path / "s")
    fv = fs.create_feature_view("t", features=[g.select(["income", "age"])], labels=["y"],
                                transforms={"income": [T.fill_null("median"), T.standard_scaler()],
                                            "age": T.bucketize([10, 20, 40])})
    spine = pa.table({"user_id": np.arange(20), "ts": pa.array([2_000_000] * 20, pa.timestamp("us")),
                      "y": [0, 1] * 10})
    fv.train_test_split(spine, test_start=pa.scalar(1_900_000, pa.timestamp("us")).as_py())
    users = [0, 3, 7, 19, 50]
    with fs.serve_background() as srv:
        status, _, raw = call(srv.url, "/v1/features/t", {"entities": {"user_id": users},
                                                          "features": ["income", "age"]},
                              accept="application/octet-stream")
        assert status == 200, raw
        got = np.frombuffer(raw, "<f4").reshape(len(users), 2)
        fv2 = fs.get_feature_view("t")
        want = fv2.get_feature_vectors({"user_id": users}, as_matrix=True)
        assert np.array_equal(got, want[:, :2], equal_nan=True)
        status, out = post_json(srv.url, "/v1/features/t", {"entities": {"user_id": users},
                                                             "features": ["income", "age"]})
        table = fv2.get_feature_vectors({"user_id": users})
        for i in range(len(users)):
            for j, f in enumerate(["income", "age"]):
                w = table.column(f)[i].as_py()
                assert (out["values"][i][j] is None and (w is None or np.isnan(w))) or \
                    np.float32(out["values"][i][j]) == np.float32(w)


@contextmanager
def serve_cli(store, *args):
    """``pitstop serve --store store --port 0 --workers 1 *args`` in a child process:
    yields the process and its first stdout line (checked to be the serving line);
    killed if still running afterwards."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "pitstop", "serve", "--store", str(store),
                             "--port", "0", "--workers", "1", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "serving" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        yield proc, line
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_serves_and_sigterm_drains_in_flight_requests(tmp_path):
    fs, _ = small_store(tmp_path / "s")
    fs.close()
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with serve_cli(tmp_path / "s", "--token-file", str(token_file)) as (proc, line):
        url = line.split(" on ")[1].split(" ")[0]
        port = int(url.rsplit(":", 1)[1])
        assert post_json(url, "/v1/features/v", {"entities": {"user_id": [2]}}, token=TOKEN)[0] == 200
        body = json.dumps({"entities": {"user_id": [2]}}).encode()
        slow = partial_request(port, "/v1/features/v", len(body), body[:5], token=TOKEN)
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        slow.sendall(body[5:])
        status, out = read_response(slow)
        slow.close()
        # Answered, not dropped, although SIGTERM came first.
        assert status == 200 and json.loads(out)["values"][0][2] == "de", out
        assert proc.wait(timeout=30) == 0
        assert "stopped" in proc.stdout.read()


def test_cli_serves_with_huge_pages(tmp_path):
    fs, _ = small_store(tmp_path / "s")
    fs.close()
    with serve_cli(tmp_path / "s", "--huge-pages") as (proc, line):
        assert "on 2 MiB pages" in line, line
        url = line.split(" on ")[1].split(" ")[0]
        status, out = post_json(url, "/v1/features/v", {"entities": {"user_id": [2]}})
        assert status == 200 and out["values"][0][2] == "de", out
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_bad_options_are_pitstop_errors(fs):
    with fs.serve_background() as srv:
        with pytest.raises(errors.InvalidArgumentError, match="Address already in use"):
            fs.serve_background(port=srv.port).__enter__()
    for kw, what in ((dict(port=70000), "port"), (dict(max_batch=0), "max_batch"),
                     (dict(timeout=-1), "timeout"), (dict(workers=-2), "workers"),
                     (dict(host="999.1.1.1"), "999.1.1.1")):
        with pytest.raises(errors.InvalidArgumentError, match=what):
            fs.serve_background(**kw).__enter__()
