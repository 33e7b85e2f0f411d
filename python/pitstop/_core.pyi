"""The Rust extension. Call it through the public modules (``pitstop.pit_join``),
which normalize arguments; the signatures here take exact types."""

from os import PathLike
from typing import Any, Callable

import pyarrow as pa

__version__: str

def pit_join(
    spine: Any,
    spine_time: str,
    features: list[
        tuple[Any, str, list[str], list[str], str, str | None, int | None, str | None]
    ],
    *,
    allow_exact_matches: bool,
    knowledge_time: bool,
) -> pa.Table:
    """Point-in-time join. ``features`` holds, per table: (table, label for errors,
    spine key columns, feature key columns, event-time column, created-time column,
    TTL in nanoseconds, output prefix). Raises ``pitstop.errors`` classes."""

def window_agg(
    spine: Any,
    spine_time: str,
    events: Any,
    spine_keys: list[str],
    event_keys: list[str],
    event_time: str,
    created_time: str | None,
    aggregations: list[tuple[str, str | None, int | None, int | None, str]],
    closed: str,
    knowledge_time: bool,
) -> pa.Table:
    """Window aggregations: the spine plus one column per (op, column, window ns, k,
    name). Raises ``pitstop.errors`` classes."""

def agg_merge(
    events: Any,
    key_cols: list[str],
    event_time: str,
    created_time: str | None,
    seq: str,
    value_cols: list[str],
    old: Any,
    keep_ns: int,
    last_cols: list[int],
) -> pa.Table:
    """Merges inserted events into the stored aggregation states of their keys (``old``:
    the distinct keys and their ``state``); returns keys, ``ts`` and the new ``state``."""

def agg_serve(
    states: Any,
    aggregations: list[tuple[str, int | None, int | None, int | None, str]],
    closed: str,
    now_ns: int,
) -> pa.Table:
    """Aggregates stored states (column ``state``) at ``now_ns``: one row per state."""

def agg_matrix(
    store: OnlineStore,
    table: str,
    keys: list[Any] | Any,
    aggregations: list[tuple[str, int | None, int | None, int | None]],
    closed: str,
    now_ns: int,
) -> bytearray:
    """Aggregation features of ``keys`` from the states in ``table``, as float32."""

def stats_profile(
    data: Any,
    columns: list[tuple[str, str]],
    *,
    bins: int,
    top_k: int,
) -> list[dict[str, Any]]:
    """Statistics of ``columns`` ((name, "numeric" | "categorical")) of ``data``: one
    dict per column (rows, nulls, nan, count, mean, std, min, max, quantiles at p01 p05
    p25 p50 p75 p95 p99, hist_edges, hist_counts, distinct, top)."""

def stats_drift(
    reference: Any,
    current: Any,
    columns: list[tuple[str, str]],
    *,
    bins: int,
    top_k: int,
) -> list[dict[str, Any]]:
    """Drift of ``columns`` from ``reference`` to ``current``: one dict per column
    (rows_ref, rows_cur, missing_ref, missing_cur, psi, js, ks_d, p_value, wasserstein,
    edges, labels, counts_ref, counts_cur)."""

def encode_categories(
    kind: str,
    type_: str,
    categories_: list[Any],
    width: int,
    column: Any,
    name: str,
) -> bytearray:
    """The one column of ``column`` (a table) encoded by a fitted ``label_encoder`` or
    ``one_hot`` of ``categories_`` (of type ``string``, ``int64`` or ``bool``): rows x
    ``width`` float32, row-major. Unseen values are "other", missing ones NaN (label) or
    all zeros (one-hot)."""

class OnlineStore:
    """The LMDB online store of one directory (``pitstop.OnlineStore`` wraps it).
    ``path`` is a store root (the environment is ``<path>/online/``) or the ``online/``
    directory itself. Safe across threads and ``fork``. Raises ``pitstop.errors``
    classes (``NotAStoreError``, ``CorruptStoreError``, ``StoreError`` ...)."""

    def __init__(
        self,
        path: str | PathLike[str],
        *,
        map_size: int | None = None,
        readonly: bool = False,
        huge_pages: bool = False,
    ) -> None: ...
    @property
    def path(self) -> str:
        """The LMDB environment's directory."""
    @property
    def readonly(self) -> bool: ...
    @property
    def huge_page_bytes(self) -> int:
        """Bytes of data.mdb found cached in 2 MiB pages when ``huge_pages=True``
        loaded it at open."""
    def map_size(self) -> int:
        """The current LMDB map size in bytes (grows on demand)."""
    def tables(self) -> list[str]:
        """Every table's name, sorted."""
    def drop(self, table: str) -> bool:
        """Removes a table with its rows and schema; False if there was none."""
    def copy(self, path: str | PathLike[str], compact: bool = True) -> int: ...
    def close(self) -> None:
        """Releases this handle (the environment closes with its last handle)."""
    def table_info(self, table: str) -> tuple[list[str], pa.Schema]:
        """(key column names, schema of the feature columns) of ``table``."""
    def write(
        self,
        table: str,
        data: Any,
        keys: list[str],
        event_time: str,
        created_time: str | None = None,
    ) -> tuple[int, int, int]:
        """Upserts an Arrow-exportable table in one transaction; returns (rows,
        written, unchanged)."""
    def prepare_write(
        self,
        table: str,
        data: Any,
        keys: list[str],
        event_time: str,
        created_time: str | None = None,
    ) -> PreparedWrite:
        """Validates and encodes a write without applying it."""
    def commit_all(self, prepared: list[PreparedWrite], watermark: int | None = None,
                   positions: list[tuple[str, bytes | None]] | None = None) -> tuple[int, int, int]: ...
    def positions(self, prefix: str) -> list[tuple[str, bytes]]: ...
    def watermark(self, table: str) -> int | None:
        """The last offline version ``table`` holds (stored with its rows), or None."""
    def replace(self, table: str, source: str) -> None:
        """Swaps table ``source`` in as ``table`` in one transaction."""
    def read(
        self,
        table: str,
        keys: list[Any] | Any,
        features: list[str] | None = None,
        ttl_ns: int | None = None,
        now_ns: int | None = None,
    ) -> pa.Table:
        """Features (all when None) plus ``status`` for each key. ``keys``: a list of
        ids (tuples for composite keys, positional in key order) or an Arrow-exportable
        table of key columns (by name). ``now_ns`` defaults to the current time."""
    def reader(
        self,
        tables: list[str],
        features: list[tuple[str | None, str]],
        ttl_ns: list[int | None],
        threads: int | None = None,
    ) -> Reader:
        """A prepared float32 read; ``features`` are (table or None, name) pairs in
        output order, ``ttl_ns`` has one entry per table, ``threads`` overrides how
        many threads look keys up (default: 1 below 4096 entities, all cores above)."""

class PreparedWrite:
    """A validated, encoded write (``OnlineStore.prepare_write``), applied once."""

    def commit(self, watermark: int | None = None,
               positions: list[tuple[str, bytes | None]] | None = None) -> tuple[int, int, int]:
        """Applies the write in one transaction, storing ``watermark`` with the rows;
        returns (rows, written, unchanged)."""

class Reader:
    """A prepared read of several tables into float32 rows (``pitstop.Reader`` wraps
    it). Results are ``bytearray``s of native-endian float32, row-major."""

    @property
    def width(self) -> int:
        """Features per row."""
    @property
    def tables(self) -> list[str]: ...
    @property
    def features(self) -> list[tuple[str | None, str]]: ...
    def matrix(self, keys: list[Any] | Any, now_ns: int | None = None) -> bytearray:
        """``len(keys) * width`` floats; NaN where missing, expired or null."""
    def _naive_matrix(self, keys: list[Any] | Any, now_ns: int | None = None) -> bytearray:
        """``matrix`` the naive way: one LMDB get per (entity, table), in request order,
        on one thread (a benchmark baseline and test oracle)."""
    def vector(self, key: Any, now_ns: int | None = None) -> bytearray:
        """``width`` floats for one entity (an id, or a tuple for a composite key)."""

class TransformPlan:
    """Fitted model-dependent transforms of a ``width``-column float32 input: steps
    ``(column, kind, a, b, edges)`` with kind ``scale`` (``(x - a) / b``), ``log1p``,
    ``clip`` (``[a, b]``), ``bucketize`` (``edges``) or ``fill_null`` (``a``)."""
    def __init__(self, width: int, steps: list[tuple[int, str, float, float, list[float]]]) -> None: ...
    def apply(self, x: Any) -> bytearray: ...

class Server:
    """``pitstop serve``: the Rust HTTP server over an online store, started at once
    (``port=0`` picks a free port); ``plan`` is the serving plan's JSON
    (``pitstop.serve.plan_json``)."""
    def __init__(self, store: OnlineStore, plan: str, *, host: str, port: int,
                 token: str | None, workers: int, max_batch: int, max_body: int,
                 max_inflight: int, timeout_s: float, spin_us: int = 0,
                 ingest: Callable[[str, bytes, str, str], tuple[int, bytes]] | None = None,
                 log: Callable[..., None] | None = None,
                 on_demand: Callable[[str, bytes, int, int, str], Any] | None = None) -> None: ...
    @property
    def port(self) -> int: ...
    @property
    def host(self) -> str: ...
    def set_plan(self, plan: str) -> None: ...
    def stop(self, drain_s: float) -> None: ...
    def finished(self) -> bool: ...
    def metrics(self) -> str: ...

class ModelInput:
    """A predictor's model input prepared once: the view's features (``features``:
    (table, name) pairs, at positions ``0..``) of rows ``width`` wide, read from
    ``tables`` (one TTL each) by entity keys ``key_names``; ``pre`` steps (as
    ``TransformPlan``'s: missing-value fills, fitted transforms) run in the same call,
    ``post`` steps by ``finish`` after the caller filled the other columns."""
    def __init__(
        self,
        store: OnlineStore,
        tables: list[str],
        features: list[tuple[str | None, str]],
        ttl_ns: list[int | None],
        key_names: list[str],
        width: int,
        pre: list[tuple[int, str, float, float, list[float]]],
        post: list[tuple[int, str, float, float, list[float]]],
    ) -> None: ...
    @property
    def width(self) -> int:
        """Values per row."""
    @property
    def key_names(self) -> list[str]:
        """The key columns a keys dict gives, in entity-key order."""
    def matrix(self, keys: Any, now_ns: int | None = None, normalized: bool = False) -> bytearray | None:
        """``len(keys) * width`` floats (row-major): features, NaN where missing,
        expired or null, then the ``pre`` steps; other columns 0. ``keys``: a dict of
        key columns (lists, 1-D int64 arrays, or one entity of int/str scalars) or a
        list of entities; with ``normalized=True`` also an Arrow table. None when the
        keys need converting in Python first."""
    def finish(self, x: Any) -> None:
        """Applies the ``post`` steps in place to a writable C-contiguous float32
        matrix of rows of ``width`` values."""

class OnnxModel:
    """An ONNX model on ONNX Runtime's C API (the library at ``lib``, the onnxruntime
    wheel's, 1.22+), with ``threads`` intra-op threads (0: one per core); the same
    floats as onnxruntime's Python session. Calls from several threads run in parallel,
    each on a session of its own. Only with the ``serve`` feature."""
    def __init__(self, lib: str, model: bytes, threads: int) -> None: ...
    @property
    def one_per_row(self) -> bool:
        """Whether the output is one float32 per row (``[n]``, ``[n, 1]`` or class
        probabilities ``[n, 2]``): what ``run`` and ``predict`` serve."""
    @property
    def inputs(self) -> list[tuple[str, str, list[int | str | None]]]:
        """The model's inputs as ``(name, type, shape)``, as onnxruntime's Python
        binding words them: ``("input", "tensor(float)", [None, 3])``."""
    def run(self, x: Any, width: int) -> bytearray:
        """Predictions for ``x`` (a C-contiguous float32 matrix of ``width`` columns) as
        float32 bytes: the positive class of two probabilities, else the output."""
    def predict(self, input: ModelInput, keys: Any, now_ns: int | None = None) -> bytearray | None:
        """``input``'s rows for ``keys`` at ``now_ns`` (None: now) run through the model,
        one float32 per key, in one call with the GIL released; None when the keys need
        converting in Python first (as ``ModelInput.matrix``)."""

class AggMatrix:
    """``agg_matrix`` prepared once: the ops ``aggregations`` ((op, value column index,
    window ns, k)) parsed and online table ``table`` resolved on first use (again only
    after it is dropped or re-created)."""
    def __init__(self, store: OnlineStore, table: str,
                 aggregations: list[tuple[str, int | None, int | None, int | None]], closed: str) -> None: ...
    def matrix(self, keys: Any, now_ns: int) -> bytearray:
        """``len(keys) * len(aggregations)`` float32 served at ``now_ns``."""
