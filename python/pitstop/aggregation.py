"""Aggregations in a feature store: window features of a feature group's events, for
training (computed exactly at each label's time) and for serving (kept online).

``fs.create_aggregation("user_spend", source=purchases, aggregations=[...])`` registers
the definition. Training data computes it with :func:`pitstop.agg.window_agg` over the
source group's offline table (at the snapshot's version). With ``online=True`` each
insert into the source also merges the new events into a per-entity *state* in the
online store (``rust/agg/state.rs``: the events the windows can still see, pruned to
the longest window), in its own LMDB transaction together with the aggregation's
watermark, so a crash between the group's write and this one is caught up on the next
open like any online table. A lookup reads the states and aggregates them at ``now``
by the same rules as training: the value served at ``now = T`` equals the training
value of a label at ``T`` for every ``T`` at or after the entity's newest event.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from . import _core, _schema
from . import agg as A
from .errors import InvalidArgumentError, NotFoundError, SchemaError
from .group import OnlineTable, Selection
from .online import now_ns
from .registry import registry_row

if TYPE_CHECKING:
    from .group import FeatureGroup
    from .store import FeatureStore

STATE = "state"


@dataclass(frozen=True)
class Definition:
    """What an aggregation computes: the parts every path reads."""

    aggs: tuple[A.Agg, ...]
    key: tuple[str, ...]
    closed: str

    @property
    def value_columns(self) -> list[str]:
        return sorted({a.column for a in self.aggs if a.column is not None})

    @property
    def keep_ns(self) -> int:
        return max([a.window.ns for a in self.aggs if a.window is not None], default=0)

    @property
    def by_name(self) -> dict[str, A.Agg]:
        return {a.name: a for a in self.aggs}

    @property
    def last_columns(self) -> list[int]:
        cols = self.value_columns
        return sorted({cols.index(a.column) for a in self.aggs if a.op == "last"})


class Aggregation(OnlineTable):
    """One version of an aggregation. Get it from a :class:`FeatureStore`."""

    def __init__(self, store: FeatureStore, row: dict[str, Any]):
        self._store = store
        self.name: str = row["name"]
        self.version: int = int(row["version"])
        with registry_row(f"aggregation '{self.name}' v{self.version}"):
            self.source_name: str = row["source_name"]
            self.source_version: int = int(row["source_version"])
            self.definition = Definition(
                tuple(A.Agg.from_json(d) for d in json.loads(row["spec"])),
                tuple(str(k) for k in json.loads(row["key_cols"])), str(row["closed"]))
            self.online: bool = bool(row["online"])
            self.description: str = row["description"]

    def __repr__(self) -> str:
        return f"Aggregation({self.name!r}, version={self.version}, source={self.source_name!r})"

    @property
    def features(self) -> list[str]:
        return [a.name for a in self.definition.aggs]

    @property
    def key(self) -> list[str]:
        return list(self.definition.key)

    @property
    def source(self) -> FeatureGroup:
        return self._store.get_feature_group(self.source_name, self.source_version)

    @property
    def online_table(self) -> str:
        return f"{self.name}.agg.v{self.version}"

    @property
    def _label(self) -> str:
        return f"aggregation '{self.name}' v{self.version}"

    def _offline_table(self):
        return self.source.offline

    def select(self, features: list[str], *, on: dict[str, str] | None = None,
               prefix: str | None = None) -> Selection:
        """Features of this aggregation for a feature view (``on`` maps spine columns
        to the aggregation's key columns)."""
        if isinstance(features, str):
            features = [features]
        unknown = [f for f in features if f not in self.features]
        if unknown or not features:
            raise SchemaError(f"aggregation '{self.name}' has no feature(s) {unknown}; its "
                              f"features are {self.features}")
        mapping = on or {k: k for k in self.key}
        if sorted(mapping.values()) != sorted(self.key):
            raise InvalidArgumentError(
                f"on={on!r} must map a spine column to each key column of aggregation "
                f"'{self.name}' ({self.key})")
        ordered = tuple(next((s, p) for s, p in mapping.items() if p == k) for k in self.key)
        return Selection(self.name, self.version, tuple(features), ordered, prefix, "aggregation")

    def select_all(self, *, on: dict[str, str] | None = None, prefix: str | None = None) -> Selection:
        return self.select(self.features, on=on, prefix=prefix)

    # -- training ------------------------------------------------------------------

    def _specs(self, sel: Selection) -> list[tuple]:
        by_name = self.definition.by_name
        return [_spec(by_name[f], (sel.prefix or "") + f) for f in sel.features]

    def join(self, spine: pa.Table, sel: Selection, spine_time: str, *, version: int | None,
             knowledge_time: bool) -> tuple[int, pa.Table]:
        """(source version read, the spine plus the selected features)."""
        g = self.source
        created = [g.created_time] if g.created_time else []
        cols = list(dict.fromkeys([*self.key, g.event_time, *created, *self.definition.value_columns]))
        read, events = g.offline.read(version=version, columns=cols)
        out = _core.window_agg(
            spine, spine_time, events.drop_columns([_schema.SEQ]), [s for s, _ in sel.on],
            [p for _, p in sel.on], g.event_time, g.created_time, self._specs(sel),
            self.definition.closed, bool(knowledge_time))
        return read, out

    # -- online --------------------------------------------------------------------

    def _check(self, schema: pa.Schema) -> None:
        """The columns an insert must carry for this aggregation (before any write)."""
        check_definition(self.source, list(self.definition.aggs), self.key, True, schema)

    def _prepare_online(self, target: str, table: pa.Table):
        """The online write merging ``table`` (an insert into the source, with its
        insertion sequence) into the states stored in ``target``: reads the states of
        its keys, merges in Rust, and validates and encodes the write; nothing is
        written."""
        g, d = self.source, self.definition
        created = [g.created_time] if g.created_time else []
        events = table.select(list(dict.fromkeys(
            [*d.key, g.event_time, *created, _schema.SEQ, *d.value_columns])))
        keys = events.select(list(d.key)).group_by(list(d.key)).aggregate([])
        old = self._states(keys, target)
        merged = _core.agg_merge(events, list(d.key), g.event_time, g.created_time, _schema.SEQ,
                                 d.value_columns, keys.append_column(STATE, old), d.keep_ns,
                                 d.last_columns)
        return self._store.online.prepare_write(target, merged, keys=list(d.key),
                                                event_time="ts")

    def _states(self, keys: pa.Table, table: str, now: Any = None) -> pa.ChunkedArray:
        try:
            got = self._store.online.read(table, keys, features=[STATE], now=now)
        except NotFoundError:  # no state written yet
            return pa.chunked_array([pa.nulls(keys.num_rows, pa.binary())])
        return got.column(STATE)

    def catch_up(self) -> int:
        """Merges the source's offline commits that the online state lacks."""
        g = self.source
        with self._store._lock(g.name, g.version):
            return self._catch_up_locked()

    def materialize(self) -> int:
        """Rebuilds the online state from the source's whole offline table, beside the
        live one, and swaps it in with one transaction."""
        if not self.online:
            raise InvalidArgumentError(f"aggregation '{self.name}' is not online")
        g = self.source
        with self._store._lock(g.name, g.version):
            return self._materialize_locked()

    def serve(self, keys: pa.Table, sel: Selection, now_ns: int) -> pa.Table:
        """The selected features of ``keys`` (the aggregation's key columns) at ``now``."""
        states = self._states(keys, self.online_table, now=now_ns)
        out = _core.agg_serve(pa.table({STATE: states}), self._online_specs(sel),
                              self.definition.closed, now_ns)
        schema = self.source.schema
        cols = []
        by_name = self.definition.by_name
        for f, name in zip(sel.features, sel.output_names):
            col, a = out.column(name), by_name[f]
            if a.op in ("last", "last_k"):
                want = schema.field(a.column).type
                want = pa.list_(want) if a.op == "last_k" else want
                if pa.types.is_date32(schema.field(a.column).type):
                    col = col.cast(pa.list_(pa.int32()) if a.op == "last_k" else pa.int32())
                col = col.cast(want)
            cols.append(col)
        return pa.table(cols, names=sel.output_names)

    def matrix_reader(self, sel: Selection):
        """A function (keys table, now) -> float32 matrix of the selected features, all
        in Rust: the states are read from LMDB and aggregated in place."""
        schema = self.source.schema
        by_name = self.definition.by_name
        for f in sel.features:
            a = by_name[f]
            t = None if a.column is None or schema is None else schema.field(a.column).type
            if a.op == "last_k" or (a.op == "last" and t is not None and not (
                    pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t))):
                raise InvalidArgumentError(
                    f"feature '{f}' is not a number; a model's float32 input takes numeric "
                    "features only (use get_feature_vectors for the table)")
        specs = [s[:4] for s in self._online_specs(sel)]
        # Ops parsed and the table resolved once, not per request.
        prepared = _core.AggMatrix(self._store.online._core, self.online_table, specs,
                                   self.definition.closed)
        width = len(specs)

        def read(keys: pa.Table, now: Any = None) -> np.ndarray:
            at = time.time_ns() if now is None else now_ns(now)
            return np.frombuffer(prepared.matrix(keys, at), dtype=np.float32).reshape(-1, width)

        return read

    def _online_specs(self, sel: Selection) -> list[tuple]:
        cols = self.definition.value_columns
        by_name = self.definition.by_name
        out = []
        for f, name in zip(sel.features, sel.output_names):
            a = by_name[f]
            out.append((a.op, None if a.column is None else cols.index(a.column),
                        None if a.window is None else a.window.ns, a.k, name))
        return out


def _spec(a: A.Agg, name: str) -> tuple:
    return (a.op, a.column, None if a.window is None else a.window.ns, a.k, name)


def check_definition(source: FeatureGroup, aggs: list[A.Agg], key: list[str], online: bool,
                     schema: pa.Schema | None = None) -> None:
    """Checks an aggregation against its source's schema (when it has one)."""
    schema = schema or source.schema
    if schema is None:
        return
    names = schema.names
    for k in key:
        if k not in names:
            raise SchemaError(f"key column '{k}' is not a column of feature group "
                              f"'{source.name}' (columns: {names})")
    for a in aggs:
        if a.column is None:
            continue
        if a.column not in names:
            raise SchemaError(f"aggregation '{a.name}' reads '{a.column}', which feature group "
                              f"'{source.name}' does not have (columns: {names})")
        t = schema.field(a.column).type
        numeric = pa.types.is_integer(t) or pa.types.is_floating(t)
        if a.op in ("sum", "mean", "std", "min", "max") and not numeric:
            raise SchemaError(f"aggregation '{a.name}' needs a numeric column; '{a.column}' is {t}")
        if online and not (numeric or pa.types.is_string(t) or pa.types.is_binary(t)
                           or pa.types.is_boolean(t) or pa.types.is_temporal(t)):
            raise SchemaError(f"aggregation '{a.name}' cannot be served online over {t} column "
                              f"'{a.column}'")
