"""Streaming without a broker: the JSON-lines file source, message parsing, the
exactly-once write path (a batch online but not yet offline when the job dies, a flush
repeated after a kill), ``fg.push``, positions in the online store, and errors."""

from __future__ import annotations

import datetime as dt
import json
import os

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import agg
from pitstop.errors import InvalidArgumentError, PitstopError, SchemaError
from pitstop.streaming import FileSource, Message
from pitstop.streaming.sources import RedisBatch
from pitstop.streaming.parse import parse
from pitstop.streaming.writer import Writer, decode_batch

UTC = dt.timezone.utc
T0 = dt.datetime(2026, 11, 1, tzinfo=UTC)
SCHEMA = pa.schema([("k", pa.int64()), ("ts", pa.timestamp("us", tz="UTC")),
                    ("x", pa.float64()), ("flag", pa.bool_()), ("s", pa.string())])


def group(tmp_path, *, aggregation=False):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    g.insert(pa.table({"k": [0], "ts": pa.array([T0], SCHEMA.field("ts").type), "x": [0.0],
                       "flag": [False], "s": ["init"]}))
    if aggregation:
        a = fs.create_aggregation("a", source=g, online=True,
                                  aggregations=[agg.count(windows=["1d"]),
                                                agg.sum("x", windows=["1d"])])
        fs.create_feature_view("v", features=[a.select_all()])
    return fs, g


def msg(i: int, **fields) -> Message:
    return Message("p", i.to_bytes(8, "big"), fields, None)


def test_parse_text_json_times_and_bad_values():
    good_ms = int((T0 + dt.timedelta(seconds=5)).timestamp() * 1000)
    ms = [
        msg(1, k="1", ts="2026-11-01T00:00:01Z", x="1.5", flag="true", s="a"),
        msg(2, k="2", ts=str(good_ms), x="2", flag="0", s="b"),  # epoch milliseconds
        msg(3, json=json.dumps({"k": 3, "ts": "2026-11-01T01:00:00+01:00", "x": 3,
                                "flag": True, "s": "c"})),
        msg(4, k="4", ts="2026-11-01T00:00:01", x="abc", flag="true", s="d"),  # bad number
        msg(5, k="5", x="1", flag="true", s="e"),  # no ts
        msg(6, k="6", ts="yesterday", x="1", flag="true", s="f"),  # bad time
        msg(7, json="{oops"),  # not JSON
        msg(8, k="", ts="2026-11-01T00:00:01Z", x="1", flag="1", s="g"),  # null key
        msg(9, k="9", ts="2026-11-01T00:00:01Z", x="1", flag="maybe", s="h"),  # bad bool
        msg(10, k="10", ts="2026-11-01T00:00:01Z", x="1", flag="1", s="i", extra="?"),
    ]
    table, good, bad = parse(ms, SCHEMA, {"k", "ts"})
    assert table.column("k").to_pylist() == [1, 2, 3]
    assert table.column("ts").to_pylist() == [T0 + dt.timedelta(seconds=1),
                                              T0 + dt.timedelta(seconds=5), T0]
    assert table.column("flag").to_pylist() == [True, False, True]
    assert [m.position[-1] for m in good] == [1, 2, 3]
    reasons = {m.position[-1]: r for m, r in bad}
    assert sorted(reasons) == [4, 5, 6, 7, 8, 9, 10]
    assert "'x'" in reasons[4] and "lacks field(s) ['ts']" in reasons[5]
    assert "'ts'" in reasons[6] and "not JSON" in reasons[7]
    assert "null" in reasons[8] and "'flag'" in reasons[9] and "extra" in reasons[10]


def redis_batch(rows: list[list[tuple[str, str]]], raw: bool = True) -> RedisBatch:
    """A RedisBatch as an XREADGROUP reply holds it: [[id, [field, value, ...]], ...],
    bytes (``raw``, as the job reads it) or text (a client that decodes)."""
    enc = (lambda x: x.encode()) if raw else (lambda x: x)
    return RedisBatch("c", [[enc(f"1700000000000-{i}"), [enc(x) for kv in r for x in kv]]
                            for i, r in enumerate(rows)])


def same_parse(batch: RedisBatch) -> tuple[pa.Table, list, list]:
    """Parses ``batch`` by its columns and as a list of messages; both must agree, and
    with the same batch as text."""
    fast = parse(batch, SCHEMA, {"k", "ts"})
    slow = parse(list(batch), SCHEMA, {"k", "ts"})
    text = RedisBatch("c", [[m.ack, [x for kv in m.fields.items() for x in kv]]
                            for m in batch if "_error" not in m.fields])
    for other in (slow, parse(text, SCHEMA, {"k", "ts"}) if len(text) == len(batch) else slow):
        assert fast[0].equals(other[0])
        assert list(fast[1]) == list(other[1])
        assert [(m, r) for m, r in fast[2]] == [(m, r) for m, r in other[2]]
    return fast


def test_a_redis_batch_parses_by_columns_as_it_does_message_by_message():
    good = [[("k", str(i)), ("ts", f"2026-11-01T00:00:0{i}Z"), ("x", f"{i}.5"),
             ("flag", "true" if i % 2 else "0"), ("s", f"s{i}")] for i in range(5)]
    table, msgs, bad = same_parse(redis_batch(good))
    assert table.column("k").to_pylist() == list(range(5)) and not bad
    assert [m.position for m in msgs] == [((1700000000000 << 64) | i).to_bytes(16, "big")
                                          for i in range(5)]
    assert redis_batch(good).positions() == {"c": msgs[-1].position}
    assert redis_batch(good).acks() == [" ".join(f"1700000000000-{i}" for i in range(5))]
    # Another field order, the same in every entry; epoch milliseconds.
    table, _, _ = same_parse(redis_batch([[r[4], r[2], r[0], ("ts", "1790000000000"), r[3]]
                                          for r in good]))
    assert table.column("ts").to_pylist() == [dt.datetime(2026, 9, 21, 14, 13, 20,
                                                          tzinfo=UTC)] * 5
    # Each kind of irregular batch falls back to message by message, which names the bad.
    cases = [
        [good[0], good[1][:4]],                                    # a missing field
        [good[0], [*good[1], ("extra", "1")]],                     # an unknown field
        [good[0], [good[1][1], good[1][0], *good[1][2:]]],         # another order
        [good[0], [("k", ""), *good[1][1:]]],                      # an empty key
        [good[0], [*good[1][:2], ("x", "abc"), *good[1][3:]]],     # a bad number
        [good[0], [*good[1][:3], ("flag", "maybe"), good[1][4]]],  # a bad boolean
        [good[0], [good[1][0], ("ts", "2026-11-01T00:00:01"), *good[1][2:]]],  # naive time
        [[("json", '{"k": 1}')], good[0]],                         # a JSON entry
        [[("k", "1"), ("k", "2"), *good[0][2:], ("ts", "0")]],     # a repeated field
    ]
    for rows in cases:
        same_parse(redis_batch(rows))
    # Bytes that are not UTF-8: a dead letter saying so; the rest of the batch is read.
    batch = redis_batch(good[:3])
    batch.entries[1][1][9] = b"\xff\xfe"
    table, msgs, bad = same_parse(batch)
    assert table.column("k").to_pylist() == [0, 2] and len(bad) == 1
    assert "not UTF-8" in bad[0][1] and bad[0][0].ack == "1700000000000-1"


def write_lines(path, rows):
    with open(path, "a") as f:
        for r in rows:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def row(i, k, seconds, x=1.0):
    return {"k": k, "ts": (T0 + dt.timedelta(seconds=seconds)).isoformat(), "x": x,
            "flag": i % 2 == 0, "s": f"r{i}"}


def test_file_source_resumes_after_the_stored_position(tmp_path):
    fs, g = group(tmp_path)
    path = tmp_path / "events.jsonl"
    write_lines(path, [row(i, i % 4, 100 - i) for i in range(20)])  # out of order
    job = fs.stream(FileSource(path), into=g, max_batch=7, max_delay="1ms", offline_flush="0s")
    stats = job.run_for(0.3)
    assert stats["rows"] == 20 and stats["batches"] >= 3 and stats["dead"] == 0
    # Newest event time per key wins, whatever the arrival order.
    got = fs.online.read("e.v1", [0, 1, 2, 3], features=["s"]).column("s").to_pylist()
    assert got == ["r0", "r1", "r2", "r3"]
    write_lines(path, [row(20, 1, 500), '{"k": 1, "ts": "bad"'])  # + a partial line
    job2 = fs.stream(FileSource(path), into=g, max_delay="1ms", offline_flush="0s")
    stats = job2.run_for(0.2)
    assert stats["rows"] == 1, "a new job resumes after the stored position"
    assert fs.online.read("e.v1", [1], features=["s"]).column("s").to_pylist() == ["r20"]
    assert sorted(g.read().column("s").to_pylist()) == sorted(
        ["init"] + [f"r{i}" for i in range(21)])
    pos = fs.online.positions("file:events.jsonl/src/")
    assert list(pos) == ["file:events.jsonl/src/events.jsonl"]
    fs.close()


def test_a_batch_online_but_not_offline_is_flushed_once_by_the_next_run(tmp_path):
    fs, g = group(tmp_path, aggregation=True)
    path = tmp_path / "events.jsonl"
    write_lines(path, [row(i, i % 3, i) for i in range(30)])
    job = fs.stream(FileSource(path), into=g, max_batch=10, offline_flush="1h")
    for _ in range(3):
        job.step(0.01)  # online only: the offline flush is not due
    assert job.stats()["rows"] == 30 and g.offline.version() == 0
    assert fs.online.positions("file:events.jsonl/buf/")
    # The job dies here. A Delta commit of the flush lands, but not what follows it
    # (the LMDB cleanup): the next run must not append it again.
    blobs = fs.online.positions("file:events.jsonl/buf/")
    table = pa.concat_tables([decode_batch(b)[0] for _, b in sorted(blobs.items())])
    last = int(sorted(blobs)[-1].rsplit("/", 1)[1], 16)
    g.offline.append_txn(table, "pitstop-stream:file:events.jsonl", last)
    assert g.offline.version() == 1
    fs.close()
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.get_feature_group("e")
    job = fs.stream(FileSource(path), into=g, offline_flush="0s")
    assert job.run_for(0.2)["rows"] == 0
    assert g.offline.version() == 1, "the repeated flush is a Delta no-op"
    assert not fs.online.positions("file:events.jsonl/buf/")
    assert sorted(g.read().column("s").to_pylist()) == sorted(["init"] + [f"r{i}" for i in range(30)])
    assert fs.online.watermark("e.v1") == 1
    # The aggregation counted each event once, online and after a rebuild from Delta.
    fv = fs.get_feature_view("v")
    now = T0 + dt.timedelta(seconds=40)
    spine = pa.table({"k": [0, 1, 2], "t": pa.array([now] * 3, pa.timestamp("us", tz="UTC"))})
    want = fv.training_data(spine, spine_time="t").select(fv.features).to_pylist()
    assert fv.get_feature_vectors({"k": [0, 1, 2]}, now=now).select(fv.features).to_pylist() == want
    assert [r[fv.features[0]] for r in want] == [11, 10, 10]  # the insert's row + 10 each
    fs.get_aggregation("a").materialize()
    assert fv.get_feature_vectors({"k": [0, 1, 2]}, now=now).select(fv.features).to_pylist() == want
    fs.close()


def test_push_is_online_at_once_and_offline_after_the_flush_interval(tmp_path):
    fs, g = group(tmp_path, aggregation=True)
    t = pa.table({"k": [1, 1, 2], "ts": pa.array([T0 + dt.timedelta(seconds=s) for s in (5, 3, 1)],
                                                  pa.timestamp("us", tz="UTC")),
                  "x": [1.0, 2.0, 3.0], "flag": [True, False, True], "s": ["a", "b", "c"]})
    assert g.push(t, offline_flush="1h") == 3
    assert fs.online.read("e.v1", [1, 2], features=["s"]).column("s").to_pylist() == ["a", "c"]
    assert g.offline.version() == 0
    g.push(t.slice(0, 0), offline_flush="0s")  # due: flushes what is buffered
    assert sorted(g.read().column("s").to_pylist()) == ["a", "b", "c", "init"]
    fv = fs.get_feature_view("v")
    now = T0 + dt.timedelta(seconds=10)
    got = fv.get_feature_vectors({"k": [1, 2]}, now=now).select(fv.features).to_pylist()
    assert [r[fv.features[0]] for r in got] == [2, 1]
    with pytest.raises(SchemaError, match="has columns"):
        g.push(t.drop_columns(["x"]))
    fs.close()


def test_positions_commit_with_the_rows_and_a_prepared_write_commits_once(tmp_path):
    store = ps.OnlineStore(tmp_path / "online")
    data = pa.table({"k": [1], "ts": pa.array([T0], pa.timestamp("us", tz="UTC")), "x": [1.0]})
    p = store.prepare_write("t", data, keys="k", event_time="ts")
    p.commit(positions={"job/a": b"\x01", "job/b": b"\x02"})
    assert store.positions("job/") == {"job/a": b"\x01", "job/b": b"\x02"}
    q = store.prepare_write("t", data, keys="k", event_time="ts")
    store.commit_all([q], watermark=3, positions={"job/a": None})
    assert store.positions("job/") == {"job/b": b"\x02"} and store.watermark("t") == 3
    with pytest.raises(PitstopError, match="committed already"):
        store.commit_all([q])
    r = store.prepare_write("t", data, keys="k", event_time="ts")
    with pytest.raises(InvalidArgumentError, match="twice"):
        store.commit_all([r, r])
    store.close()


def test_a_batch_after_an_insert_numbers_its_rows_after_that_insert(tmp_path):
    """The writer remembers the offline version while ``_delta_log`` is unchanged; an
    insert between two batches changes it, and the next batch's sequence numbers
    follow the insert's version."""
    fs, g = group(tmp_path)  # version 0
    log = g.offline.path / "_delta_log"
    old = log.stat().st_mtime_ns - 2_000_000_000
    os.utime(log, ns=(old, old))  # old enough to be remembered
    w = Writer(g, "j")

    def batch(k: int) -> pa.Table:
        return pa.table({"k": [k], "ts": pa.array([T0], SCHEMA.field("ts").type), "x": [1.0],
                         "flag": [True], "s": ["b"]})

    w.write(batch(1))  # rows of version 1 (the next)
    g.insert(batch(2))  # version 1
    w.write(batch(3))  # rows of version 2
    w.flush()
    _, t = g.offline.read(columns=["k", "_pitstop_seq"])
    got = dict(zip(t.column("k").to_pylist(),
                   [s >> 32 for s in t.column("_pitstop_seq").to_pylist()]))
    assert got == {0: 0, 2: 1, 1: 1, 3: 2}
    fs.close()


def test_errors_name_the_problem(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("e", primary_key="k", event_time="ts", online=True)
    (tmp_path / "f.jsonl").write_text("")
    job = fs.stream(FileSource(tmp_path / "f.jsonl"), into=g)
    with pytest.raises(SchemaError, match="has no schema yet"):
        job.run_for(0.05)
    with pytest.raises(InvalidArgumentError, match="Source"):
        fs.stream(object(), into=g)
    with pytest.raises(InvalidArgumentError, match="max_batch"):
        fs.stream(FileSource(tmp_path / "f.jsonl"), into=g, max_batch=0)
    with pytest.raises(InvalidArgumentError, match="max_delay"):
        fs.stream(FileSource(tmp_path / "f.jsonl"), into=g, max_delay="soon")
    fs.close()


def test_a_failing_transform_sends_its_batch_to_the_dead_letters(tmp_path):
    import deltalake

    fs, g = group(tmp_path)
    path = tmp_path / "events.jsonl"
    write_lines(path, [row(i, 1, i) for i in range(3)])

    def boom(t: pa.Table) -> pa.Table:
        raise RuntimeError("no")

    fs.stream(FileSource(path), into=g, transform=boom, offline_flush="0s").run_for(0.1)
    dead = deltalake.DeltaTable(str(tmp_path / "store" / "deadletter" / "e" / "v1"))
    reasons = dead.to_pyarrow_table().column("reason").to_pylist()
    assert reasons == ["transform failed: RuntimeError: no"] * 3
    double = lambda t: t.set_column(2, "x", pa.compute.multiply(t.column("x"), 2))  # noqa: E731
    write_lines(path, [row(9, 2, 9, x=4.0)])
    fs.stream(FileSource(path), into=g, transform=double, offline_flush="0s").run_for(0.1)
    assert fs.online.read("e.v1", [2], features=["x"]).column("x").to_pylist() == [8.0]
    fs.close()


def test_cli_streams_a_file_into_a_group(tmp_path, capsys):
    from pitstop.cli import main

    fs, g = group(tmp_path)
    fs.close()
    path = tmp_path / "events.jsonl"
    write_lines(path, [row(i, i % 2, i) for i in range(5)] + ["[1]"])
    store = str(tmp_path / "store")
    assert main(["--store", store, "stream", "e", "--file", str(path), "--seconds", "0.3",
                 "--offline-flush", "0s"]) == 0
    assert "streamed 5 rows" in capsys.readouterr().out
    assert main(["--store", store, "stream", "e", "--seconds", "0.1"]) == 1
    assert "give one source" in capsys.readouterr().err
    assert main(["--store", store, "stream", "e", "--redis", "redis://127.0.0.1:1/0",
                 "--seconds", "0.1"]) == 1
    assert "--stream" in capsys.readouterr().err


def test_arrow_directory_source_reads_files_in_order_and_resumes(tmp_path):
    from pitstop.streaming import ArrowDirSource

    fs, g = group(tmp_path)
    d = tmp_path / "in"
    d.mkdir()

    def put(name: str, ks, secs, stream_format: bool) -> None:
        t = pa.table({"k": pa.array(ks, pa.int64()),
                      "ts": pa.array([T0 + dt.timedelta(seconds=s) for s in secs],
                                     pa.timestamp("ms", tz="UTC")),
                      "x": [float(s) for s in secs], "flag": [True] * len(ks),
                      "s": [f"{name}{i}" for i in range(len(ks))]})
        tmp = d / f"{name}.tmp"
        with pa.OSFile(str(tmp), "wb") as f:
            opener = pa.ipc.new_stream if stream_format else pa.ipc.new_file
            with opener(f, t.schema) as w:
                w.write_table(t)
        tmp.rename(d / f"{name}.arrow")

    put("a", [1, 2, 1], [5, 5, 9], True)
    put("b", [1, 2], [7, 1], False)  # late: older than what key 1 and 2 hold
    job = fs.stream(ArrowDirSource(d), into=g, max_batch=2, max_delay="1ms", offline_flush="0s")
    assert job.run_for(0.3)["rows"] == 5
    assert fs.online.read("e.v1", [1, 2], features=["s"]).column("s").to_pylist() == ["a2", "a1"]
    put("c", [2], [50], True)
    assert fs.stream(ArrowDirSource(d), into=g, offline_flush="0s").run_for(0.2)["rows"] == 1
    assert fs.online.read("e.v1", [2], features=["x"]).column("x").to_pylist() == [50.0]
    assert sorted(g.read().column("s").to_pylist()) == ["a0", "a1", "a2", "b0", "b1", "c0", "init"]
    fs.close()
