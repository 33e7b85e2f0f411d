"""The ``pitstop`` command line.

Exit codes scripts can trust: 0 success, 1 a pitstop error (the message on stderr says
what is wrong and how to fix it), 2 a usage error.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import warnings

from .errors import InvalidArgumentError, PitstopError, PitstopWarning


def _read_file(path: str):
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such file")
    if p.suffix.lower() == ".csv":
        return pcsv.read_csv(p)
    return pq.read_table(p)


def _store(args: argparse.Namespace, create: bool = False):
    from .store import FeatureStore

    return FeatureStore(args.store, create=create)


def cmd_init(args: argparse.Namespace) -> int:
    fs = _store(args, create=True)
    print(f"initialized a pitstop store at {fs.path}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    fs = _store(args)
    groups, views = fs.feature_groups(), fs.feature_views()
    print(f"store {fs.path}: {len(groups)} feature group version(s), {len(views)} feature view version(s)")
    for g in groups:
        mode = "online+offline" if g.online else "offline"
        print(f"  group {g.name} v{g.version}  key={','.join(g.primary_key)}  {mode}  "
              f"offline version {g.offline.version()}  features={len(g.features)}")
    for v in views:
        print(f"  view  {v.name} v{v.version}  features={len(v.features)}  labels={v.labels}")
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from .errors import NotFoundError

    fs = _store(args)
    try:
        g = fs.get_feature_group(args.name, args.version)
    except NotFoundError:
        v = fs.get_feature_view(args.name, args.version)
        print(f"feature view {v.name} v{v.version}: {v.description}")
        print(f"  labels: {v.labels}")
        for s in v.selections:
            print(f"  from {s.group} v{s.version} on {dict(s.on)}: {s.output_names}")
        return 0
    print(f"feature group {g.name} v{g.version}: {g.description}")
    print(f"  primary key {g.primary_key}, event time '{g.event_time}', created time "
          f"'{g.created_time}', ttl {g.ttl}, online {g.online}, nan_policy {g.nan_policy}")
    print(f"  offline table {g.offline.path} (version {g.offline.version()})")
    if g.schema is not None:
        for f in g.schema:
            print(f"    {f.name}: {f.type}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    fs = _store(args)
    g = fs.get_feature_group(args.group, args.version)
    table = _read_file(args.file)
    version = g.insert(table)
    print(f"inserted {table.num_rows:,} rows into {g.name} v{g.version} (offline version {version})")
    return 0


def cmd_materialize(args: argparse.Namespace) -> int:
    fs = _store(args)
    g = fs.get_feature_group(args.group, args.version)
    rows = g.materialize()
    print(f"materialized {rows:,} rows of {g.name} v{g.version} into the online store")
    return 0


def cmd_training_data(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from .view import snapshot_of

    fs = _store(args)
    v = fs.get_feature_view(args.view, args.version)
    out = v.training_data(_read_file(args.spine), spine_time=args.spine_time)
    pq.write_table(out, args.out)
    print(f"wrote {out.num_rows:,} rows x {out.num_columns} columns to {args.out} "
          f"(snapshot {snapshot_of(out).id})")
    return 0


def cmd_stream(args: argparse.Namespace) -> int:
    import socket

    from .streaming import FileSource, RedisStream

    fs = _store(args)
    g = fs.get_feature_group(args.group, args.version)
    if (args.redis is None) == (args.file is None):
        raise InvalidArgumentError("give one source: --redis URL --stream NAME, or --file PATH")
    if args.redis is not None:
        if not args.stream:
            raise InvalidArgumentError("--redis needs --stream NAME (the Redis stream's key)")
        src = RedisStream(args.redis, stream=args.stream, group=args.group_name,
                          consumer=args.consumer or socket.gethostname())
    else:
        src = FileSource(args.file)
    job = fs.stream(src, into=g, max_batch=args.max_batch, max_delay=args.max_delay,
                    offline_flush=args.offline_flush)
    print(f"streaming {src.name} into {g.name} v{g.version} (SIGTERM/Ctrl-C stops after the "
          "current batch)", file=sys.stderr)
    stats = job.run() if args.seconds is None else job.run_for(args.seconds)
    print(f"streamed {stats['rows']:,} rows in {stats['batches']:,} batches "
          f"({stats['dead']:,} dead letters, {stats['offline_rows']:,} rows offline)")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run

    return run(directory=args.dir, users=args.users)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pitstop", description="pitstop: an embedded feature store")
    p.add_argument("--store", default=os.environ.get("PITSTOP_STORE", "."),
                   help="the store directory (default: $PITSTOP_STORE or .)")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("init", help="create a store")
    s.set_defaults(fn=cmd_init)
    s = sub.add_parser("list", help="list feature groups and views")
    s.set_defaults(fn=cmd_list)
    s = sub.add_parser("describe", help="describe a feature group or view")
    s.add_argument("name")
    s.add_argument("--version", type=int)
    s.set_defaults(fn=cmd_describe)
    s = sub.add_parser("ingest", help="insert a Parquet or CSV file into a feature group")
    s.add_argument("group")
    s.add_argument("file")
    s.add_argument("--version", type=int)
    s.set_defaults(fn=cmd_ingest)
    s = sub.add_parser("materialize", help="rebuild a group's online table from its offline table")
    s.add_argument("group")
    s.add_argument("--version", type=int)
    s.set_defaults(fn=cmd_materialize)
    s = sub.add_parser("repair", help="rebuild the online store from the offline tables "
                       "(after a CorruptStoreError from online/)")
    s.set_defaults(fn=cmd_repair)
    s = sub.add_parser("training-data", help="point-in-time training data of a view, to Parquet")
    s.add_argument("view")
    s.add_argument("spine", help="Parquet or CSV file with the keys, times and labels")
    s.add_argument("out", help="output Parquet file")
    s.add_argument("--version", type=int)
    s.add_argument("--spine-time")
    s.set_defaults(fn=cmd_training_data)
    s = sub.add_parser("stream", help="stream events (Redis stream or JSON-lines file) into a "
                       "feature group, each event's effect exactly once")
    s.add_argument("group")
    s.add_argument("--version", type=int)
    s.add_argument("--redis", help="Redis URL, e.g. redis://127.0.0.1:6379/0")
    s.add_argument("--stream", help="the Redis stream's key")
    s.add_argument("--group", dest="group_name", default="pitstop",
                   help="the Redis consumer group (default: pitstop)")
    s.add_argument("--consumer", help="this consumer's name (default: the host name)")
    s.add_argument("--file", help="a JSON-lines file to tail instead of Redis")
    s.add_argument("--max-batch", type=int, default=5000)
    s.add_argument("--max-delay", default="100ms")
    s.add_argument("--offline-flush", default="10s")
    s.add_argument("--seconds", type=float, help="stop after this many seconds")
    s.set_defaults(fn=cmd_stream)
    s = sub.add_parser("demo", help="run the end-to-end demo")
    s.add_argument("--users", type=int, default=10_000, help="synthetic users (default 10,000)")
    s.add_argument("--dir", help="store directory (default: a temporary one)")
    s.set_defaults(fn=cmd_demo)
    from .monitoring.cli import add_commands

    add_commands(sub)  # stats, drift, skew
    from .serve import add_commands as add_serve

    add_serve(sub)  # serve, snapshot
    return p


def cmd_repair(args: argparse.Namespace) -> int:
    fs = _store(args)
    done = fs.repair_online()
    print(f"rebuilt the online store of {fs.path} from the offline tables: "
          + (", ".join(f"{t} ({n:,} rows)" for t, n in done.items()) or "no online groups"))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always", PitstopWarning)
            warnings.showwarning = _show_warning
            return int(args.fn(args) or 0)
    except (PitstopError, FileNotFoundError) as e:
        print(f"pitstop: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("pitstop: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: still no traceback for the user, but say what happened
        print(f"pitstop: error: unexpected {type(e).__name__}: {e} (this is a bug in pitstop; "
              "please report it, with PITSTOP_TRACEBACK=1 set for the details)", file=sys.stderr)
        if os.environ.get("PITSTOP_TRACEBACK"):
            raise
        return 1


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"pitstop: warning: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
