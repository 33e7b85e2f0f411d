//! `pitstop._core.stats_profile` and `stats_drift`: convert the arguments, run
//! [`crate::stats`] with the GIL released on the fork-aware pool, and return one dict
//! per column. Choosing columns, kinds, methods and thresholds is Python's
//! (`python/pitstop/monitoring/`).

use pyo3::prelude::*;
use pyo3::types::PyDict;
use pyo3_arrow::PyTable;

use super::errors::IntoPyResult;
use crate::error::Error;
use crate::stats::{Drift, Kind, Options, Profile};
use crate::table::Table;

fn table(name: &str, t: PyTable) -> Table {
    let (batches, schema) = t.into_inner();
    Table::new(name, schema, batches)
}

fn kinds(columns: Vec<(String, String)>) -> PyResult<Vec<(String, Kind)>> {
    columns
        .into_iter()
        .map(|(name, kind)| {
            let k = Kind::parse(&kind).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "column '{name}': kind must be 'numeric' or 'categorical'; got {kind:?}"
                ))
            });
            k.map(|k| (name, k)).py()
        })
        .collect()
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::Numeric => "numeric",
        Kind::Categorical => "categorical",
    }
}

fn profile_dict<'py>(py: Python<'py>, p: Profile) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("feature", p.name)?;
    d.set_item("kind", kind_name(p.kind))?;
    d.set_item("rows", p.rows)?;
    d.set_item("nulls", p.nulls)?;
    d.set_item("nan", p.nan)?;
    d.set_item("count", p.count)?;
    d.set_item("mean", p.mean)?;
    d.set_item("std", p.std)?;
    d.set_item("min", p.min)?;
    d.set_item("max", p.max)?;
    d.set_item("quantiles", p.quantiles)?;
    d.set_item("hist_edges", p.hist_edges)?;
    d.set_item("hist_counts", p.hist_counts)?;
    d.set_item("distinct", p.distinct)?;
    d.set_item("top", p.top)?;
    Ok(d)
}

fn drift_dict<'py>(py: Python<'py>, r: Drift) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("feature", r.name)?;
    d.set_item("kind", kind_name(r.kind))?;
    d.set_item("rows_ref", r.rows_ref)?;
    d.set_item("rows_cur", r.rows_cur)?;
    d.set_item("missing_ref", r.missing_ref)?;
    d.set_item("missing_cur", r.missing_cur)?;
    d.set_item("psi", r.psi)?;
    d.set_item("js", r.js)?;
    d.set_item("ks_d", r.ks_d)?;
    d.set_item("p_value", r.p_value)?;
    d.set_item("wasserstein", r.wasserstein)?;
    d.set_item("edges", r.edges)?;
    d.set_item("labels", r.labels)?;
    d.set_item("counts_ref", r.counts_ref)?;
    d.set_item("counts_cur", r.counts_cur)?;
    Ok(d)
}

/// Statistics of `columns` ((name, "numeric" | "categorical")) of `data`.
#[pyfunction]
#[pyo3(signature = (data, columns, *, bins, top_k))]
pub fn stats_profile<'py>(
    py: Python<'py>,
    data: PyTable,
    columns: Vec<(String, String)>,
    bins: usize,
    top_k: usize,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let columns = kinds(columns)?;
    let data = table("the data", data);
    let opts = Options { bins, top_k };
    let pool = crate::online::env::pool();
    let out = py
        .detach(|| pool.install(|| crate::stats::profile(&data, &columns, &opts)))
        .py()?;
    out.into_iter().map(|p| profile_dict(py, p)).collect()
}

/// Drift of `columns` from `reference` to `current`.
#[pyfunction]
#[pyo3(signature = (reference, current, columns, *, bins, top_k))]
pub fn stats_drift<'py>(
    py: Python<'py>,
    reference: PyTable,
    current: PyTable,
    columns: Vec<(String, String)>,
    bins: usize,
    top_k: usize,
) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let columns = kinds(columns)?;
    let (reference, current) = (
        table("the reference data", reference),
        table("the current data", current),
    );
    let opts = Options { bins, top_k };
    let pool = crate::online::env::pool();
    let out = py
        .detach(|| pool.install(|| crate::stats::drift(&reference, &current, &columns, &opts)))
        .py()?;
    out.into_iter().map(|r| drift_dict(py, r)).collect()
}
