"""The offline store: one Delta Lake table per feature group version.

An insert is one Delta commit (atomic: readers see all of it or none), so every read
can name the table version it saw, and time travel reproduces it. Each row carries
``_pitstop_seq`` = (commit version << 32) | row, its insertion order; reads return rows
in that order (files sorted by their minimum ``_pitstop_seq``, a check, and a sort only
when the check fails), so "the row that came last" means the same thing every time.
Spark, DuckDB and polars read the same tables.

**One dispatch point for deltalake.** Every deltalake call goes through :func:`_call`
and is one of a few operations: ``version``, ``append`` (write + the new version),
``append_txn`` / ``txn_version`` (an append carrying an application transaction id, which
makes a replayed streaming flush a no-op) and ``snapshot`` (add actions + schema at a
version or time). Parquet data files are read
with pyarrow by the caller, never through deltalake. ``_call`` turns every failure of
deltalake (including its Rust panics, which are ``BaseException``) into a
:class:`~pitstop.errors.PitstopError` naming the table.

**Forked processes.** deltalake's binding records the PID that created its tokio runtime
and panics in any other process, so a forked child (gunicorn workers, multiprocessing
``fork``) of a process that used it cannot call deltalake at all. ``_call`` therefore
runs the operation in-process only in the process that first used deltalake here; in a
forked child it sends it to a *helper*: a fresh interpreter started on first need (one
per child, with ``multiprocessing.spawn``'s executable but not its machinery, because
spawn re-imports ``__main__``, which re-runs an unguarded script that forks). Requests
and replies are pickled (protocol 5, Arrow buffers out of band) over a socket pair.
The helper exits when the socket closes, i.e. when its child exits (``os._exit`` and
SIGKILL included) — mid-operation too, as an in-process write would have died, so it
never commits after the dead child's group lock was released. Callers see no
difference. Should deltalake have been used before fork outside pitstop, the first
in-process call panics before any I/O, and the process switches to the helper and
retries. Cost, measured on a 2-core box: the first call in a child ~0.45 s (a new
interpreter importing pyarrow, pitstop and deltalake), each later call ≲1 ms more than
in-process, plus ~80 ms per 64 MB of table sent (inserts, log writes); calls from
threads of one child take turns. Parquet reads stay in the child, at full speed.

**Damage.** A writer killed inside a table's first commit leaves a ``_delta_log``
without a commit (and unreferenced data files); such a table counts as not existing
(version -1), and the next append clears the dead attempt away under a lock every
first commit takes, then creates the table. A damaged commit or data file (garbage
JSON, a missing or truncated parquet file) raises :class:`CorruptStoreError` naming the
table and what to do.
"""

from __future__ import annotations

import atexit
import datetime as dt
import errno
import fcntl
import os
import pickle
import queue
import re
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ._schema import SEQ
from .errors import CorruptStoreError, NotFoundError, PitstopError, SchemaError, StoreError

_COMMIT = re.compile(r"\d{20}\.json|\d{20}\.checkpoint(\.[^/]*)?\.(parquet|json)|_last_checkpoint")
_CREATE_LOCK = ".pitstop-create.lock"


class DeltaGroupTable:
    """The Delta table of one feature group version (or prediction log), at ``path``."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        """True once the table has a commit (a log without one is a dead first commit)."""
        log = self.path / "_delta_log"
        if (log / "00000000000000000000.json").exists() or (log / "_last_checkpoint").exists():
            return True
        return any(_COMMIT.fullmatch(e.name) for e in _scan(log))

    def version(self) -> int:
        """The latest committed version, or -1 when nothing was inserted yet."""
        if not self.exists():
            return -1
        return _call("version", self.path)

    def append(self, table: pa.Table) -> int:
        """Appends ``table`` (already carrying ``_pitstop_seq``) in one commit; returns
        the new version."""
        if self.exists():
            return _call("append", self.path, table)
        with self._create_lock():
            if not self.exists():
                self._clear_dead_attempt()
            return _call("append", self.path, table)

    def append_txn(self, table: pa.Table, app_id: str, txn: int) -> int:
        """Appends ``table`` in one commit carrying the application transaction
        (``app_id``, ``txn``), or nothing if the table records ``txn`` (or a later one)
        for ``app_id`` already; returns the table's version afterwards."""
        if self.exists():
            return _call("append_txn", self.path, table, app_id, txn)
        with self._create_lock():
            if not self.exists():
                self._clear_dead_attempt()
            return _call("append_txn", self.path, table, app_id, txn)

    def txn_version(self, app_id: str) -> int:
        """The last application transaction ``app_id`` committed here; -1: none."""
        if not self.exists():
            return -1
        return _call("txn_version", self.path, app_id)

    @contextmanager
    def _create_lock(self) -> Iterator[None]:
        """Serializes first commits across processes and threads (released by the OS if
        the holder dies), so clearing a dead attempt never removes a live one's files."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            f = open(self.path / _CREATE_LOCK, "a+")
        except OSError as e:
            raise StoreError(f"cannot create the Delta table at {self.path}: {e}; check the "
                             "disk and the store's permissions") from e
        with f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _clear_dead_attempt(self) -> None:
        """Removes what a writer killed inside the first commit left: temporary commit
        files and data files. No commit exists (we hold the create lock and checked), so
        no commit references any of them."""
        log = self.path / "_delta_log"
        doomed = [e.path for e in _scan(log) if e.is_file(follow_symlinks=False)]
        doomed += [e.path for e in _scan(self.path)
                   if e.is_file(follow_symlinks=False) and ".parquet" in e.name]
        for p in doomed:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass
            except OSError as e:
                raise StoreError(f"cannot clear away {p}, left by a writer that died inside "
                                 f"the first commit of {self.path}: {e}; check the store's "
                                 "permissions") from e

    def _snapshot(self, version: int | None, as_of: dt.datetime | None):
        if not self.exists():
            raise NotFoundError(f"the offline table at {self.path} has no data yet; insert first")
        return _call("snapshot", self.path, version, as_of)

    def files(self, version: int | None = None, as_of: dt.datetime | None = None) -> tuple[int, list[str]]:
        """(version, data files in insertion order) of the table at a version or time."""
        ver, files, _ = self._snapshot(version, as_of)
        return ver, files

    def read(
        self,
        *,
        version: int | None = None,
        as_of: dt.datetime | None = None,
        columns: list[str] | None = None,
        since: int | None = None,
    ) -> tuple[int, pa.Table]:
        """(version read, rows in insertion order). ``since=v`` reads only the rows
        committed after version ``v`` (for catching the online store up). A table
        without ``_pitstop_seq`` (prediction logs) is read in commit order."""
        ver, files, schema = self._snapshot(version, as_of)
        ordered = SEQ in schema.names
        cols = None
        if columns is not None:
            cols = list(dict.fromkeys([*columns, SEQ] if ordered else columns))
            unknown = [c for c in cols if c not in schema.names]
            if unknown:
                raise SchemaError(f"the offline table at {self.path} has no column(s) {unknown}; "
                                  f"its columns are {schema.names}")
        if not files:
            empty = schema.empty_table()
            return ver, empty.select(cols) if cols else empty
        try:
            table = pq.ParquetDataset(files).read(columns=cols, use_threads=True)
            table = table.cast(pa.schema([schema.field(n) for n in table.column_names]))
        except (OSError, ValueError, KeyError, pa.ArrowException) as e:  # missing, truncated, garbage
            err = _translate(e, "read", self.path)
            if err is None:
                raise
            raise err from e
        if not ordered:
            return ver, table
        seq = table.column(SEQ).to_numpy()
        if since is not None:
            keep = (seq >> 32) > since
            table, seq = table.filter(pa.array(keep)), seq[keep]
        if len(seq) > 1 and not bool(np.all(seq[1:] >= seq[:-1])):
            table = table.take(pc.sort_indices(table.column(SEQ)))
        return ver, table

    def schema(self, version: int | None = None) -> pa.Schema:
        return self._snapshot(version, None)[2]


def _scan(directory: Path) -> list[os.DirEntry]:
    try:
        return list(os.scandir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as e:
        raise StoreError(f"cannot list {directory}: {e}; check the store's permissions") from e


# -- the operations: the only code that calls deltalake -------------------------------


def _op_version(path: str) -> int:
    import deltalake

    return deltalake.DeltaTable(path).version()


def _op_append(path: str, table: pa.Table) -> int:
    import deltalake

    deltalake.write_deltalake(path, table, mode="append")
    return deltalake.DeltaTable(path).version()


def _op_snapshot(path: str, version: int | None, as_of: dt.datetime | None):
    """(version, data files in insertion order, arrow schema) at a version or time."""
    import deltalake

    t = deltalake.DeltaTable(path)
    if version is not None:
        if version > t.version() or version < 0:
            raise NotFoundError(f"the offline table at {path} has versions 0..{t.version()}; "
                                f"there is no version {version}")
        t.load_as_version(version)
    elif as_of is not None:
        t.load_as_version(as_of)
    actions = pa.table(t.get_add_actions(flatten=True))
    paths = actions.column("path").to_pylist()
    key = f"min.{SEQ}"
    if key in actions.column_names:  # else (no _pitstop_seq): commit order as listed
        paths = [p for _, p in sorted(zip(actions.column(key).to_pylist(), paths))]
    files = [p if os.path.isabs(p) else os.path.join(path, p) for p in paths]
    return t.version(), files, pa.schema(t.schema().to_arrow())


def _op_append_txn(path: str, table: pa.Table, app_id: str, txn: int) -> int:
    """Appends with an application transaction (``app_id``, ``txn``) unless the table
    already records ``txn`` or a later one for ``app_id``: a replayed append is a
    no-op. Returns the table's version afterwards."""
    import deltalake
    from deltalake import CommitProperties, Transaction
    from deltalake.exceptions import TableNotFoundError

    try:
        t = deltalake.DeltaTable(path)
    except TableNotFoundError:  # the first commit
        t = None
    if t is not None:
        done = t.transaction_version(app_id)
        if done is not None and done >= txn:
            return t.version()
    props = CommitProperties(app_transactions=[Transaction(app_id, txn)])
    deltalake.write_deltalake(path, table, mode="append", commit_properties=props)
    return deltalake.DeltaTable(path).version()


def _op_txn_version(path: str, app_id: str) -> int:
    """The last application transaction ``app_id`` committed to the table, -1: none."""
    import deltalake

    v = deltalake.DeltaTable(path).transaction_version(app_id)
    return -1 if v is None else int(v)


_OPS = {"version": _op_version, "append": _op_append, "snapshot": _op_snapshot,
        "append_txn": _op_append_txn, "txn_version": _op_txn_version}


class _ForkedRuntime(StoreError):
    """deltalake's runtime belongs to an ancestor process (raised before any I/O)."""


def _run(op: str, path: str, args: tuple) -> Any:
    """Runs one operation in this process; its failures become PitstopErrors."""
    fn = _OPS[op]
    try:
        return fn(path, *args)
    except PitstopError:
        raise
    except BaseException as e:
        err = _translate(e, op, Path(path))
        if err is None:
            raise
        raise err from e


def _translate(e: BaseException, op: str, path: Path) -> PitstopError | None:
    """The PitstopError for a failure of deltalake or pyarrow on the table at ``path``,
    or None for what is not theirs to cause (KeyboardInterrupt, bugs)."""
    name = type(e).__name__
    text = str(e).strip()
    msg = (text.splitlines()[0] if text else name)[:400]
    if name == "PanicException":
        if "Forked process detected" in text:
            return _ForkedRuntime(f"deltalake cannot run in this forked process: {msg}")
        return StoreError(f"deltalake failed ({op}) on the Delta table at {path}: {msg}")
    try:
        from deltalake.exceptions import (CommitFailedError, DeltaError, DeltaProtocolError,
                                          SchemaMismatchError, TableNotFoundError)
    except ImportError:  # pragma: no cover - deltalake is a dependency
        DeltaError = CommitFailedError = DeltaProtocolError = SchemaMismatchError = TableNotFoundError = ()
    if not isinstance(e, (DeltaError, OSError, ValueError, KeyError, pa.ArrowException)):
        return None
    if isinstance(e, SchemaMismatchError):
        return SchemaError(f"the rows do not fit the schema of the Delta table at {path}: {msg}")
    if isinstance(e, CommitFailedError):
        return StoreError(f"another writer committed to the Delta table at {path} at the same "
                          f"time ({msg}); retry")
    if isinstance(e, DeltaProtocolError):
        return StoreError(f"the Delta table at {path} needs a newer deltalake ({msg}); upgrade "
                          "deltalake")
    io = e.errno if isinstance(e, OSError) else None
    if io in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT) or any(
            s in text for s in ("Permission denied", "No space left", "Read-only file system")):
        return StoreError(f"cannot {'write' if op == 'append' else 'read'} the Delta table at "
                          f"{path}: {msg}; check the disk and the store's permissions")
    if isinstance(e, TableNotFoundError) and not path.exists():
        return NotFoundError(f"the Delta table at {path} was deleted while in use: {msg}")
    what = "a data file is missing" if isinstance(e, FileNotFoundError) else "it cannot be read"
    return CorruptStoreError(
        f"the Delta table at {path} is damaged: {what} ({msg}). Restore the damaged file under "
        f"{path} from a backup; if you cannot, delete the table (for a feature group: "
        "FeatureStore.delete_feature_group(name, version)) and insert its data again"
    )


# -- the dispatch point ---------------------------------------------------------------

_owner: int | None = None  # the process whose deltalake runtime we use in-process; -1: none


def _call(op: str, path: Path, *args: Any) -> Any:
    """Runs a deltalake operation: in-process in the process that first used deltalake,
    in this process's helper in a forked child."""
    global _owner
    pid = os.getpid()
    if _owner is None:
        _owner = pid
    if _owner == pid:
        try:
            return _run(op, str(path), args)
        except _ForkedRuntime:  # deltalake was used before fork, outside pitstop
            _owner = -1
    return _helper().call(op, str(path), args)


class _Helper:
    """A fresh interpreter that runs operations for one forked process."""

    def __init__(self) -> None:
        from multiprocessing.spawn import get_executable  # honours mp.set_executable

        ours, theirs = socket.socketpair()
        code = ("import sys; sys.path[:0] = sys.argv[2:]; "
                "from pitstop.offline import _serve; _serve(int(sys.argv[1]))")
        try:
            self.proc = subprocess.Popen(
                [get_executable(), "-c", code, str(theirs.fileno()), *sys.path],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except OSError as e:
            ours.close()
            raise StoreError(f"cannot start the deltalake helper process for this forked "
                             f"process: {e}") from e
        finally:
            theirs.close()
        self.sock = ours
        self.lock = threading.Lock()

    def call(self, op: str, path: str, args: tuple) -> Any:
        with self.lock:
            try:
                _send(self.sock, (op, path, args))
                ok, value = _recv(self.sock)
            except (EOFError, OSError) as e:
                _retire(self)
                raise StoreError(
                    f"the deltalake helper process of this forked process failed during {op} "
                    f"on {path} ({e!r}); the next call starts a new one. If it was an append, "
                    "check the table's latest version before retrying"
                ) from e
            except BaseException:  # e.g. KeyboardInterrupt: the stream is out of step
                _retire(self)
                raise
        if ok:
            return value
        raise value


_helper_obj: _Helper | None = None
_helper_lock = threading.Lock()
_retired: list[_Helper] = []  # closed, maybe still finishing an operation; reaped later


def _helper() -> _Helper:
    global _helper_obj
    with _helper_lock:
        _retired[:] = [h for h in _retired if h.proc.poll() is None]
        if _helper_obj is None:
            _helper_obj = _Helper()
        return _helper_obj


def _retire(helper: _Helper) -> None:
    """Closes our end of a helper's socket: it exits after its current operation."""
    global _helper_obj
    if _helper_obj is helper:
        _helper_obj = None
    helper.sock.close()
    _retired.append(helper)


def _shutdown() -> None:
    """At exit: close every helper's socket and wait (bounded) for them to exit."""
    if _helper_obj is not None:
        _retire(_helper_obj)
    for h in _retired:
        try:
            h.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            h.proc.kill()
            h.proc.wait()
    _retired.clear()


def _after_fork_in_child() -> None:
    """A helper belongs to the process that started it: forget (and close our copies of
    the sockets of) inherited ones, so they still exit with their owner."""
    global _helper_obj, _helper_lock
    _helper_lock = threading.Lock()
    for h in [_helper_obj, *_retired]:
        if h is not None:
            h.sock.close()
    _helper_obj = None
    _retired.clear()


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(_shutdown)


# -- the wire: pickle protocol 5, Arrow buffers out of band ---------------------------


def _send(sock: socket.socket, obj: Any) -> None:
    """Sends ``obj``: sizes, the pickle, then each Arrow buffer as it is in memory, so a
    table crosses the socket once, without the copies of in-band pickling."""
    buffers: list[pickle.PickleBuffer] = []
    head = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    views = [b.raw() for b in buffers]
    sock.sendall(struct.pack(f"!QQ{len(views)}Q", len(head), len(views), *(v.nbytes for v in views)))
    sock.sendall(head)
    for v in views:
        sock.sendall(v)


def _recv_exactly(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view, got = memoryview(buf), 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("the other side closed the socket")
        got += k
    return buf


def _recv(sock: socket.socket) -> Any:
    size, count = struct.unpack("!QQ", _recv_exactly(sock, 16))
    sizes = struct.unpack(f"!{count}Q", _recv_exactly(sock, 8 * count))
    head = _recv_exactly(sock, size)
    return pickle.loads(head, buffers=[_recv_exactly(sock, n) for n in sizes])


def _serve(fd: int) -> None:
    """The helper's loop: one operation per request, until the socket closes. An
    operation runs on a thread while the loop watches the socket: if the process we
    serve dies meanwhile, the helper exits at once, as the operation would have died
    in-process, instead of committing after the dead process's locks were released (a
    Delta commit is atomic, so stopping anywhere is safe)."""
    global _owner
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the process we serve
    _owner = os.getpid()
    sock = socket.socket(fileno=fd)
    done_r, done_w = os.pipe()
    requests: queue.SimpleQueue = queue.SimpleQueue()
    box: list[tuple[bool, Any]] = []
    threading.Thread(target=_work, args=(requests, box, done_w), daemon=True).start()
    while True:
        try:
            op, path, args = _recv(sock)
        except (EOFError, OSError):
            return
        requests.put((op, path, args))
        ready, _, _ = select.select([sock, done_r], [], [])
        if done_r not in ready:
            os._exit(0)  # the socket closed (nothing else is sent during an operation)
        os.read(done_r, 1)
        try:
            _send(sock, box.pop())
        except OSError:
            return
        except Exception as e:  # the reply did not pickle (nothing was sent)
            _send(sock, (False, StoreError(f"the deltalake helper could not return the result "
                                           f"of {op} on {path}: {type(e).__name__}: {e}")))


def _work(requests: queue.SimpleQueue, box: list, done: int) -> None:
    """The helper's operation thread (one, so deltalake sees one thread throughout)."""
    while True:
        op, path, args = requests.get()
        try:
            box.append((True, _run(op, path, args)))
        except PitstopError as e:
            box.append((False, e))
        except BaseException as e:
            box.append((False, StoreError(f"the deltalake helper failed ({op}) on {path}: "
                                          f"{type(e).__name__}: {e}")))
        finally:
            os.write(done, b"x")
