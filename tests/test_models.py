"""The model registry: versions, metadata, lineage, schema checks, damaged files."""

from __future__ import annotations

import pyarrow as pa
import pytest

import pitstop as ps
from pitstop import errors

from onnx_models import gbdt


def ts(*s):
    return pa.array([x * 1_000_000 for x in s], pa.timestamp("us", "UTC"))


@pytest.fixture
def view(tmp_path):
    fs = ps.FeatureStore(tmp_path / "store")
    g = fs.create_feature_group("g", primary_key="k", event_time="ts")
    g.insert(pa.table({"k": [1, 2], "ts": ts(1, 2), "a": [1.0, 2.0], "b": [3.0, 4.0]}))
    v = fs.create_feature_view("v", features=[g.select(["a", "b"])], labels=["y"])
    yield fs, v
    fs.close()


def test_register_versions_and_lineage(view, tmp_path):
    fs, v = view
    train = v.training_data(pa.table({"k": [1], "t": ts(5), "y": [1]}))
    m1 = fs.models.register("churn", gbdt(2), feature_view=v, metrics={"auc": 0.8},
                            training_snapshot=ps.snapshot_of(train))
    path = tmp_path / "m.onnx"
    path.write_bytes(gbdt(2, seed=1))
    m2 = fs.models.register("churn", path, feature_view=v, metrics={"auc": 0.9}, description="second")
    assert (m1.version, m2.version) == (1, 2)
    assert m1.snapshot_id == ps.snapshot_of(train).id and m2.snapshot_id is None
    assert (m1.view_name, m1.view_version, m1.inputs) == ("v", 1, ["a", "b"])
    assert fs.models.get("churn").version == 2
    assert fs.models.best("churn", "auc").version == 2
    assert fs.models.best("churn", "auc", "min").version == 1
    assert [m.version for m in fs.models.list("churn")] == [1, 2]
    fs.models.delete("churn", 2)
    assert fs.models.get("churn").version == 1
    with pytest.raises(errors.NotFoundError, match="no model 'churn' v2"):
        fs.models.get("churn", 2)


def test_schema_mismatch(view):
    fs, v = view
    with pytest.raises(errors.SchemaError, match=r"shape \[None, 3\] but the feature view gives 2 features"):
        fs.models.register("m", gbdt(3), feature_view=v)
    assert fs.models.list() == []


def test_not_onnx(view):
    fs, v = view
    with pytest.raises(errors.InvalidArgumentError, match="not a loadable ONNX model"):
        fs.models.register("m", b"\x80\x04pickle?", feature_view=v)


def test_corrupt_model_file(view):
    fs, v = view
    m = fs.models.register("m", gbdt(2), feature_view=v)
    data = bytearray(m.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    m.path.write_bytes(bytes(data))
    with pytest.raises(errors.StoreError, match="corrupt"):
        fs.models.get("m").read_bytes()
    m.path.unlink()
    with pytest.raises(errors.StoreError, match="missing"):
        fs.models.get("m").read_bytes()
