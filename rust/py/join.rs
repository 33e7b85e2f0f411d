//! `pitstop._core.pit_join`: converts the arguments, runs [`crate::join::pit_join`]
//! with the GIL released, and returns a `pyarrow.Table`. Argument normalization
//! (pandas input, TTL strings, broadcasting per-table options) is done in Python
//! (`python/pitstop/join.py`); this layer takes exact types.

use pyo3::prelude::*;
use pyo3_arrow::PyTable;

use super::errors::IntoPyResult;
use crate::join::{FeatureSpec, JoinSpec};
use crate::table::Table;

fn table(name: String, t: PyTable) -> Table {
    let (batches, schema) = t.into_inner();
    Table::new(name, schema, batches)
}

/// One feature table: (table, label, spine keys, feature keys, event time, created
/// time, ttl in ns, prefix).
type FeatureArgs = (
    PyTable,
    String,
    Vec<String>,
    Vec<String>,
    String,
    Option<String>,
    Option<i64>,
    Option<String>,
);

#[pyfunction]
#[pyo3(signature = (spine, spine_time, features, *, allow_exact_matches, knowledge_time))]
pub fn pit_join<'py>(
    py: Python<'py>,
    spine: PyTable,
    spine_time: String,
    features: Vec<FeatureArgs>,
    allow_exact_matches: bool,
    knowledge_time: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let spec = JoinSpec {
        spine: table("spine".into(), spine),
        spine_time,
        features: features
            .into_iter()
            .map(
                |(t, name, spine_keys, keys, time, created_time, ttl_ns, prefix)| FeatureSpec {
                    table: table(name, t),
                    spine_keys,
                    keys,
                    time,
                    created_time,
                    ttl_ns,
                    prefix,
                },
            )
            .collect(),
        allow_exact_matches,
        knowledge_time,
    };
    // The fork-aware pool, not rayon's global one: a process that joined and then forked
    // (a preloading gunicorn master) would otherwise hang on its next join in a child.
    let pool = crate::online::env::pool();
    let (schema, batches) = py
        .detach(|| pool.install(|| crate::join::pit_join(&spec)))
        .py()?;
    PyTable::try_new(batches, schema)?.into_pyarrow(py)
}
