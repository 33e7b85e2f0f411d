"""Feature views: the features a model reads, joined point-in-time for training and
looked up online for inference.

A view is a list of selections (some features of one feature group version each) and
the label columns its spines carry. ``training_data`` reads each group's Delta table
and joins all of them to the spine in one ``pit_join`` call (each group with its own
keys, TTL and created time); it records the Delta versions it read as a *snapshot*, so
the same rows come back later, after any number of new inserts.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from . import _core
from ._inputs import as_table, keys_table
from ._schema import SEQ
from . import model_input as MI
from . import ondemand as OD
from .model_input import one_entity
from . import transforms as T
from .group import Selection
from .online import _key_list, now_ns
from .registry import registry_row
from .errors import InvalidArgumentError, NotFoundError, SchemaError

if TYPE_CHECKING:
    from .store import FeatureStore

SNAPSHOT_KEY = b"pitstop.snapshot"


@dataclass(frozen=True)
class Snapshot:
    """Which offline table versions a training set read: ``tables`` maps
    ``"<group>.v<version>"`` to the Delta version."""

    id: int | None  # None when read from a read-only store (not recorded)
    view: str
    view_version: int
    tables: dict[str, int]

    def to_json(self) -> str:
        return json.dumps({"id": self.id, "view": self.view, "view_version": self.view_version,
                           "tables": self.tables}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Snapshot:
        d = json.loads(text)
        return cls(d["id"], d["view"], d["view_version"], {k: int(v) for k, v in d["tables"].items()})


def snapshot_of(table: pa.Table) -> Snapshot:
    """The snapshot a ``training_data`` result was read at."""
    meta = table.schema.metadata or {}
    if SNAPSHOT_KEY not in meta:
        raise NotFoundError("this table carries no pitstop snapshot (it was not made by training_data)")
    return Snapshot.from_json(meta[SNAPSHOT_KEY])


class FeatureView:
    """One version of a feature view. Get it from a :class:`FeatureStore`."""

    def __init__(self, store: FeatureStore, row: dict[str, Any], *, allow_changed: bool = False):
        self._store = store
        self.name: str = row["name"]
        self.version: int = row["version"]
        extra = store._view_transforms(self.name, self.version)
        with registry_row(f"feature view '{self.name}' v{self.version}"):
            self.selections: list[Selection] = [Selection.from_json(s) for s in json.loads(row["spec"])]
            self.labels: list[str] = [str(x) for x in json.loads(row["labels"])]
            self.description: str = row["description"]
            specs = json.loads(extra["on_demand"]) if extra else []
            self.transforms: dict[str, list[T.Transform]] = {
                str(k): [T.Transform.from_json(t) for t in v]
                for k, v in (json.loads(extra["transforms"]) if extra else {}).items()}
        self.on_demand: list[OD.OnDemand] = [
            OD.load_on_demand(d, allow_changed=allow_changed) for d in specs]
        self.last_snapshot: Snapshot | None = None
        self.last_fitted: T.Fitted | None = None
        self._plan = None
        self._od_names: tuple | None = None
        self._cat_plan: tuple | None = None
        self._fits: dict[int, tuple[str, T.Fitted]] = {}
        # fitted_transforms(snapshot or None) -> (registry.changes() then, the fit)
        self._fit_marks: dict[int | None, tuple[tuple[int, int], T.Fitted]] = {}
        self._fast_plans: tuple | None = None  # (fitted, ModelInput or None): model_input.view_plan

    def __repr__(self) -> str:
        return f"FeatureView({self.name!r}, version={self.version}, features={self.features})"

    @property
    def features(self) -> list[str]:
        """Output feature names, in the view's order (the model's input order): the
        looked-up features (a categorical one replaced by its encoded columns), then the
        on-demand ones."""
        return [*self._encoded_lookup, *(o for f in self.on_demand for o in f.outputs)]

    @property
    def _encoded_lookup(self) -> list[str]:
        cat = self.categorical
        return [n for f in self.lookup_features
                for n in (T.encoded_names(f, cat[f]) if f in cat else [f])]

    @property
    def categorical(self) -> dict[str, T.Transform]:
        """The features encoded by ``label_encoder`` / ``one_hot``, with their encoder."""
        return {f: c[0] for f, c in self.transforms.items() if c[0].kind in T.CATEGORICAL}

    @property
    def lookup_features(self) -> list[str]:
        """The features read from feature groups and aggregations."""
        return [n for s in self.selections for n in s.output_names]

    @property
    def request_fields(self) -> dict[str, str]:
        """The request fields the on-demand functions read (name -> type)."""
        out: dict[str, str] = {}
        for f in self.on_demand:
            out.update(f.request)
        return out

    @property
    def keys(self) -> list[str]:
        """The spine columns the view's groups are keyed on."""
        return list(dict.fromkeys(spine for s in self.selections for spine, _ in s.on))

    def _groups(self, selections: list[Selection] | None = None):
        """The group (or aggregation) of each selection."""
        return [self._store.get_aggregation(s.group, s.version) if s.kind == "aggregation"
                else self._store.get_feature_group(s.group, s.version)
                for s in (self.selections if selections is None else selections)]

    # -- offline -----------------------------------------------------------------

    def training_data(self, spine: Any, *, spine_time: str | None = None,
                      knowledge_time: bool = False, snapshot: Any = None,
                      engine: str = "local", spark: Any = None) -> pa.Table:
        """The spine with every feature of the view as of each spine row's time.

        ``snapshot`` (a :class:`Snapshot`, its id, or an earlier result of this method)
        reads the offline tables at the versions recorded then, reproducing that result.
        ``engine="spark"`` (with ``spark=<SparkSession>``) runs the join on Spark and
        returns a Spark DataFrame; its snapshot is then ``self.last_snapshot``.
        """
        if engine == "spark":
            return self._training_data_spark(spine, spark, spine_time, knowledge_time, snapshot)
        if engine != "local":
            raise InvalidArgumentError(f"engine must be 'local' or 'spark'; got {engine!r}")
        spine = as_table(spine, "spine")
        spine_time = _spine_time(spine, spine_time)
        snap = self._resolve_snapshot(snapshot)
        args = []
        tables: dict[str, int] = {}
        aggregations = []
        for sel, group in zip(self.selections, self._groups()):
            if sel.kind == "aggregation":
                aggregations.append((sel, group))
                continue
            want = snap.tables.get(group.online_table) if snap else None
            if snap and want is None:
                raise NotFoundError(f"snapshot {snap.id} has no version of {group.online_table}")
            version, table = group.offline.read(version=want, columns=_columns(group, sel))
            tables[group.online_table] = version
            args.append((
                table.drop_columns([SEQ]), f"feature group '{group.name}' v{group.version}",
                [s for s, _ in sel.on], [p for _, p in sel.on], group.event_time,
                group.created_time, group.ttl_ns, sel.prefix,
            ))
        out = _core.pit_join(spine, spine_time, args, allow_exact_matches=True,
                             knowledge_time=bool(knowledge_time)) if args else spine
        for sel, aggregation in aggregations:
            source = aggregation.source.online_table
            if snap and source not in snap.tables:
                raise NotFoundError(f"snapshot {snap.id} has no version of {source}")
            version, out = aggregation.join(
                out, sel, spine_time, version=snap.tables[source] if snap else None,
                knowledge_time=knowledge_time)
            tables[source] = version
        out = OD.add_on_demand(self, out, "the spine")
        snap = snap or self._store._record_snapshot(self, tables)
        self.last_snapshot = snap
        meta = dict(out.schema.metadata or {})
        meta[SNAPSHOT_KEY] = snap.to_json().encode()
        return out.replace_schema_metadata(meta)

    def _training_data_spark(self, spine: Any, spark: Any, spine_time: str | None,
                             knowledge_time: bool, snapshot: Any):
        """The same join on Spark. pitstop resolves each group's Delta snapshot itself
        (the data files at that version, from the Delta log) and Spark reads those
        Parquet files, so no Delta jar is needed; rows keep their insertion sequence,
        which breaks full ties exactly as locally."""
        from pyspark.sql import DataFrame

        from . import spark as pspark

        if spark is None:
            raise InvalidArgumentError("engine='spark' needs spark=<SparkSession>")
        if self.on_demand:
            raise InvalidArgumentError(
                f"feature view '{self.name}' has on-demand features, which engine='spark' does "
                "not compute yet; use the local engine")
        if not isinstance(spine, DataFrame):
            spine = spark.createDataFrame(as_table(spine, "spine"))
        if spine_time is None:
            temporal = [f.name for f in spine.schema.fields
                        if type(f.dataType).__name__ in ("TimestampType", "TimestampNTZType", "DateType")]
            if len(temporal) != 1:
                raise InvalidArgumentError(
                    f"name the spine's time column with spine_time=...; it has {temporal}")
            spine_time = temporal[0]
        snap = self._resolve_snapshot(snapshot)
        tables: dict[str, int] = {}
        out = spine
        for sel, group in zip(self.selections, self._groups()):
            want = snap.tables.get(group.online_table) if snap else None
            version, files = group.offline.files(version=want)
            tables[group.online_table] = version
            cols = [*_columns(group, sel), SEQ]
            feats = spark.read.parquet(*files).select(*cols) if files else \
                spark.createDataFrame(group.offline.schema(version).empty_table().select(cols))
            out = pspark.pit_join(
                out, feats, on={s: p for s, p in sel.on}, spine_time=spine_time,
                feature_time=group.event_time, ttl=None if group.ttl_ns is None else f"{group.ttl_ns}ns",
                created_time=group.created_time, knowledge_time=knowledge_time,
                prefix=sel.prefix, order=SEQ,
            )
        self.last_snapshot = snap or self._store._record_snapshot(self, tables)
        return out

    def _resolve_snapshot(self, snapshot: Any) -> Snapshot | None:
        if snapshot is None:
            return None
        if isinstance(snapshot, pa.Table):
            snapshot = snapshot_of(snapshot)
        if isinstance(snapshot, (str, bytes)):
            snapshot = Snapshot.from_json(snapshot)
        if isinstance(snapshot, int) and not isinstance(snapshot, bool):
            snapshot = self._store._snapshot(snapshot)
        if not isinstance(snapshot, Snapshot):
            raise InvalidArgumentError(
                "snapshot must be a Snapshot, its id, or a table returned by training_data"
            )
        if (snapshot.view, snapshot.view_version) != (self.name, self.version):
            raise InvalidArgumentError(
                f"snapshot {snapshot.id} was taken for view '{snapshot.view}' "
                f"v{snapshot.view_version}, not '{self.name}' v{self.version}"
            )
        return snapshot

    def train_test_split(self, spine: Any, *, test_start: Any, spine_time: str | None = None,
                         test_end: Any = None, knowledge_time: bool = False):
        """(X_train, X_test, y_train, y_test) as pyarrow Tables, split by time: spine rows
        before ``test_start`` train, rows from ``test_start`` (to ``test_end``) test.
        X holds the view's features in order, y its labels."""
        if not self.labels:
            raise InvalidArgumentError(
                f"feature view '{self.name}' has no labels; create it with labels=[...]"
            )
        spine = as_table(spine, "spine")
        spine_time = _spine_time(spine, spine_time)
        missing = [c for c in self.labels if c not in spine.column_names]
        if missing:
            raise SchemaError(f"the spine lacks the label column(s) {missing} of view '{self.name}'")
        data = self.training_data(spine, spine_time=spine_time, knowledge_time=knowledge_time)
        t = data.column(spine_time)
        start = _scalar_like(test_start, t.type)
        is_test = pc.greater_equal(t, start)
        if test_end is not None:
            is_test = pc.and_(is_test, pc.less(t, _scalar_like(test_end, t.type)))
        is_train = pc.less(t, start)
        train, test = data.filter(is_train), data.filter(pc.fill_null(is_test, False))
        if self.transforms:
            fitted = T.Fitted.fit(self.transforms, train, self.features)
            self._store._record_fits(self.last_snapshot.id, fitted.to_json())
            self.last_fitted = fitted
            train, test = fitted.apply_table(train), fitted.apply_table(test)
        return (train.select(self.features), test.select(self.features),
                train.select(self.labels), test.select(self.labels))

    # -- transformations -----------------------------------------------------------

    def fitted_transforms(self, snapshot: Any = None) -> T.Fitted:
        """The transforms fitted on the training split of ``snapshot`` (a Snapshot, its
        id, or a training_data result); by default the ones fitted last for this view
        (by this object, else the newest recorded)."""
        if snapshot is None and self.last_fitted is not None:
            return self.last_fitted
        # Served per request: while the registry is unchanged, the answer is too.
        if snapshot is None or (type(snapshot) is int and snapshot >= 0):
            hint = snapshot
        elif isinstance(snapshot, Snapshot) and snapshot.id is not None and (
                snapshot.view, snapshot.view_version) == (self.name, self.version):
            hint = snapshot.id
        else:
            return self._load_fitted(snapshot)
        mark = self._store.registry.changes()
        hit = self._fit_marks.get(hint)
        if hit is not None and hit[0] == mark:
            return hit[1]
        fitted = self._load_fitted(snapshot)
        if len(self._fit_marks) >= 64:
            self._fit_marks.clear()
        self._fit_marks[hint] = (mark, fitted)
        return fitted

    def _load_fitted(self, snapshot: Any) -> T.Fitted:
        snap = self._resolve_snapshot(snapshot)
        sid = snap.id if snap is not None else self._store._latest_fitted(self.name, self.version)
        text = None if sid is None else self._store._fits(sid)
        if text is None:
            which = f"snapshot {sid}" if sid is not None else f"feature view '{self.name}' v{self.version}"
            raise NotFoundError(
                f"no fitted transforms for {which}: fit them with fv.train_test_split(...) first")
        cached = self._fits.get(sid)
        if cached is not None and cached[0] == text:
            return cached[1]  # the same object for the same fit: prepared plans are reused
        with registry_row(f"the fitted transforms of snapshot {sid}"):
            fitted = T.Fitted.from_json(text, self.features)
        self._fits[sid] = (text, fitted)
        return fitted

    def transform_statistics(self, snapshot: Any = None) -> pa.Table:
        """What was fitted (see :meth:`fitted_transforms`): one row per feature and step."""
        return self.fitted_transforms(snapshot).statistics()

    def transform(self, table: Any, snapshot: Any = None) -> pa.Table:
        """``table`` (training_data rows) with the fitted transforms applied."""
        return self.fitted_transforms(snapshot).apply_table(as_table(table, "table"))

    def batch_data(self, spine: Any = None, *, now: dt.datetime | None = None) -> pa.Table:
        """Features for batch scoring: as of each spine row, or, without a spine, the
        latest values (within TTL as of ``now``) of every entity of the view's first
        feature group."""
        if spine is not None:
            return self.training_data(spine)
        sel, group = self.selections[0], self._groups()[0]
        _, keys = group.offline.read(columns=group.primary_key)
        keys = keys.drop_columns([SEQ])
        keys = keys.group_by(group.primary_key).aggregate([]).rename_columns(
            {p: s for s, p in sel.on})
        missing = [k for k in self.keys if k not in keys.column_names]
        if missing:
            raise InvalidArgumentError(
                f"feature view '{self.name}' needs key column(s) {missing} that its first group "
                "does not have; pass a spine with every key"
            )
        when = now or dt.datetime.now(dt.timezone.utc)
        t = pa.array(np.full(keys.num_rows, int(when.timestamp() * 1e6)), pa.timestamp("us", "UTC"))
        out = self.training_data(keys.append_column("_now", t), spine_time="_now")
        return out.drop_columns(["_now"])

    # -- monitoring (pitstop.monitoring) ------------------------------------------

    def logs(self, start: Any = "-7d", end: Any = None) -> pa.Table:
        """The prediction log of this view between ``start`` and ``end`` (``"-7d"``,
        a datetime or an ISO string; None for no bound)."""
        from .monitoring import views

        return views.logs(self, start, end)

    def drift(self, reference: Any = "training", current: Any = None, *,
              features: list[str] | None = None, method: Any = None, threshold: Any = None,
              window: Any = None, segment_by: str | None = None):
        """A :class:`~pitstop.monitoring.DriftReport` of the view's features (and the
        logged ``prediction``) from ``reference`` (``"training"``: the last training
        snapshot; a Snapshot, its id, or a table) to ``current`` (default: the last 7
        days of logs; ``"logs:1d"``, a Snapshot, or a table); ``window="1d"`` and
        ``segment_by="country"`` report each time window / segment of the current rows."""
        from .monitoring import views

        return views.drift(self, reference, current, features=features, method=method,
                           threshold=threshold, window=window, segment_by=segment_by)

    def skew(self, logs: Any = None, *, rtol: float = 1e-6, sample: float = 1.0):
        """A :class:`~pitstop.monitoring.SkewReport`: the logged (keys, logged_at) replayed
        through the training join, compared with what was served (default: the last
        day of logs)."""
        from .monitoring.skew import skew

        return skew(self, logs, rtol=rtol, sample=sample)

    # -- online ------------------------------------------------------------------

    def _online_plan(self, selections: list[Selection] | None = None):
        """A function (keys, now) -> float32 matrix in the view's feature order, with
        tables, feature positions and TTLs resolved once (prepared online readers).
        When every group is keyed by the same spine columns under the same names, one
        reader serves all groups in one pass over the keys, and keys go to Rust as given."""
        sels = self.selections if selections is None else selections
        groups = self._groups(sels)
        self._check_online(groups)
        online = self._store.online
        same = all(sel.on == sels[0].on and all(s == p for s, p in sel.on) for sel in sels)
        if any(sel.kind == "aggregation" for sel in sels):
            parts = []
            for sel, g in zip(sels, groups):
                if sel.kind == "aggregation":
                    parts.append((sel, g.matrix_reader(sel)))
                else:
                    r = online.reader(g.online_table, features=list(sel.features), ttl=g.ttl_ns)
                    parts.append((sel, lambda keys, now, r=r: r.matrix(keys, now=now)))

            def lookup_mixed(keys: Any, now: Any = None) -> np.ndarray:
                table = keys_table(one_entity(keys))
                cols = [read(_rename(table, sel), now) for sel, read in parts]
                return np.ascontiguousarray(np.hstack(cols), dtype=np.float32)

            if not same:
                return lookup_mixed
            names = [p for _, p in sels[0].on]

            def lookup_same(keys: Any, now: Any = None) -> np.ndarray:
                # One key list for every part, made once (no table per call).
                keys = _key_list(one_entity(keys), names)
                if len(parts) == 1:
                    return parts[0][1](keys, now)
                return np.hstack([read(keys, now) for _, read in parts])

            return lookup_same
        if same:
            reader = online.reader(
                [g.online_table for g in groups],
                features=[(g.online_table, f) for sel, g in zip(sels, groups) for f in sel.features],
                ttl=[g.ttl_ns for g in groups],
            )

            def lookup(keys: Any, now: Any = None) -> np.ndarray:
                return reader.matrix(one_entity(keys), now=now)

            return lookup
        readers = [online.reader(g.online_table, features=list(sel.features), ttl=g.ttl_ns)
                   for sel, g in zip(sels, groups)]

        def lookup_each(keys: Any, now: Any = None) -> np.ndarray:
            table = keys_table(keys)
            parts = [r.matrix(_rename(table, sel), now=now) for r, sel in zip(readers, sels)]
            return np.ascontiguousarray(np.hstack(parts), dtype=np.float32)

        return lookup_each

    def _check_online(self, groups: list) -> None:
        offline_only = [g.name for g in groups if not g.online]
        if offline_only:
            raise InvalidArgumentError(
                f"feature view '{self.name}' reads offline-only group(s) or aggregation(s) "
                f"{offline_only}; online lookups need online=True ones"
            )

    def get_feature_vectors(self, keys: Any, *, as_matrix: bool = False,
                            now: dt.datetime | None = None, request: Any = None,
                            snapshot: Any = None):
        """Online lookup of the view's features for ``keys`` (a dict of columns, a table,
        or a list of dicts, named as the spine names them): a pyarrow Table in the view's
        feature order, or a float32 matrix (NaN where missing or expired). A view with
        on-demand features needs ``request`` (its fields, one row per key); one with
        transforms applies those fitted for ``snapshot`` (default: the newest fit)."""
        fitted = self.fitted_transforms(snapshot) if self.transforms else None
        if as_matrix:
            plan = MI.view_plan(self, fitted)
            if plan is not None:
                if request is not None and not self.on_demand:
                    _no_request(self)
                x = MI.input_matrix(plan, keys, None if now is None else now_ns(now))
                if self.on_demand:
                    OD.fill_on_demand(self, x, len(self.lookup_features), request)
                    plan.finish(x)
                return x
            x = self._matrix_lookup(fitted)(keys, now)
            if self.on_demand or request is not None:
                x = OD.with_on_demand(self, x, request) if self.on_demand else _no_request(self)
            return x if fitted is None else fitted.apply_matrix(x)
        out = self._lookup_table(keys, now)
        if self.on_demand or request is not None:
            if not self.on_demand:
                _no_request(self)
            if request is None:
                raise InvalidArgumentError(
                    f"feature view '{self.name}' needs request fields {list(self.request_fields)}")
            # The request converted as the matrix path converts it, then computed as in
            # training (from columns).
            with_req = out
            for r, a in OD.request_columns(request, self.request_fields, out.num_rows,
                                           self.name).items():
                with_req = with_req.append_column(r, pa.array(a))
            out = OD.add_on_demand(self, with_req, "request")
        if fitted is not None:
            out = fitted.apply_table(out)
        return out.select(self.features)

    def _matrix_lookup(self, fitted: T.Fitted | None):
        """A function (keys, now) -> the looked-up part of the model input (float32):
        numeric features through the prepared matrix readers, categorical ones read as
        Arrow and encoded as ``fitted`` says (the function training rows go through)."""
        cat = self.categorical
        if not cat:
            if self._plan is None:  # prepared once per view object (readers re-resolve
                self._plan = self._online_plan()  # tables that are rebuilt or re-created)
            return self._plan
        if fitted is None or set(fitted.categorical) != set(cat):
            raise NotFoundError(f"feature view '{self.name}' encodes {sorted(cat)}: fit its "
                                "transforms with train_test_split first")
        if self._cat_plan is not None and self._cat_plan[0] is fitted:
            return self._cat_plan[1]

        def part(keep) -> list[Selection]:
            out = []
            for sel in self.selections:
                feats = tuple(f for f, o in zip(sel.features, sel.output_names) if keep(o))
                if feats:
                    out.append(replace(sel, features=feats))
            return out

        numeric, categorical = part(lambda o: o not in cat), part(lambda o: o in cat)
        plan = self._online_plan(numeric) if numeric else None
        names = self._encoded_lookup
        pos = {n: j for j, n in enumerate(names)}
        num_pos = [pos[o] for sel in numeric for o in sel.output_names]
        blocks = [(f, fitted.categorical[f], pos[T.encoded_names(f, t)[0]]) for f, t in cat.items()]

        def lookup(keys: Any, now: Any = None) -> np.ndarray:
            raw = self._lookup_table(keys, now, categorical)
            out = np.empty((raw.num_rows, len(names)), np.float32)
            if plan is not None:
                out[:, num_pos] = plan(keys, now)
            for f, fit, at in blocks:
                out[:, at:at + fit["width"]] = T.encode(fit, raw.column(f), f)
            return out

        self._cat_plan = (fitted, lookup)  # holds `fitted`: an identity check is exact
        return lookup

    def _lookup_table(self, keys: Any, now: Any, selections: list[Selection] | None = None) -> pa.Table:
        keys = keys_table(one_entity(keys))
        sels = self.selections if selections is None else selections
        groups = self._groups(sels)
        self._check_online(groups)
        cols: dict[str, pa.Array] = {}
        at = None
        for sel, g in zip(sels, groups):
            if sel.kind == "aggregation":
                if at is None:
                    at = now_ns(now) if now is not None else time.time_ns()
                part = g.serve(_rename(keys, sel), sel, at)
                for name in sel.output_names:
                    cols[name] = part.column(name)
                continue
            part = self._store.online.read(g.online_table, _rename(keys, sel),
                                           features=list(sel.features), ttl=g.ttl_ns, now=now)
            for f, name in zip(sel.features, sel.output_names):
                cols[name] = part.column(f)
        return pa.table(cols)


def _columns(group, sel: Selection) -> list[str]:
    """The columns of ``group`` a join of selection ``sel`` reads."""
    created = [group.created_time] if group.created_time else []
    return [*group.primary_key, group.event_time, *created, *sel.features]


def _rename(keys: pa.Table, sel: Selection) -> pa.Table:
    missing = [s for s, _ in sel.on if s not in keys.column_names]
    if missing:
        raise SchemaError(f"the keys lack column(s) {missing}; found {keys.column_names}")
    return pa.table({p: keys.column(s) for s, p in sel.on})


def _spine_time(spine: pa.Table, spine_time: str | None) -> str:
    if spine_time is not None:
        return spine_time
    temporal = [f.name for f in spine.schema if pa.types.is_timestamp(f.type) or pa.types.is_date(f.type)]
    if len(temporal) != 1:
        raise InvalidArgumentError(
            f"name the spine's time column with spine_time=...; the spine has {len(temporal)} "
            f"timestamp columns ({temporal})"
        )
    return temporal[0]


def _scalar_like(value: Any, t: pa.DataType) -> pa.Scalar:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    if isinstance(value, dt.datetime) and value.tzinfo is None and getattr(t, "tz", None):
        value = value.replace(tzinfo=dt.timezone.utc)
    if isinstance(value, dt.datetime) and value.tzinfo is not None and not getattr(t, "tz", None):
        value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return pa.scalar(value, type=t)


def _no_request(view: FeatureView):
    raise InvalidArgumentError(f"feature view '{view.name}' has no on-demand features; it takes no request")
