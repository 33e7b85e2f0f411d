//! pitstop's Rust core: point-in-time joins over Arrow data ([`join`]), window
//! aggregations ([`agg`]), feature statistics and drift ([`stats`]), the LMDB-backed online
//! store and model-dependent transforms ([`transform`]). The kernels know nothing of
//! Python; `py/` (built only with
//! the `python` feature, which maturin turns on) is the one place that touches pyo3, and
//! the `#[pymodule]` below is the whole Python surface of the extension.

pub mod agg;
pub mod encode;
pub mod error;
pub mod huge;
pub mod join;
pub mod online;
pub mod prefetch;
#[cfg(feature = "serve")]
pub mod serve;
pub mod stats;
pub mod table;
#[cfg(test)]
mod test_util;
pub mod trace;
pub mod transform;

#[cfg(feature = "python")]
mod py;

#[cfg(feature = "python")]
#[pyo3::pymodule]
fn _core(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
    use pyo3::prelude::*;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(py::join::pit_join, m)?)?;
    m.add_function(wrap_pyfunction!(py::agg::window_agg, m)?)?;
    m.add_function(wrap_pyfunction!(py::agg::agg_merge, m)?)?;
    m.add_function(wrap_pyfunction!(py::agg::agg_serve, m)?)?;
    m.add_function(wrap_pyfunction!(py::agg::agg_matrix, m)?)?;
    m.add_function(wrap_pyfunction!(py::stats::stats_profile, m)?)?;
    m.add_function(wrap_pyfunction!(py::stats::stats_drift, m)?)?;
    m.add_class::<py::online::PyOnlineStore>()?;
    m.add_class::<py::online::PyReader>()?;
    m.add_class::<py::online::PyPreparedWrite>()?;
    m.add_function(wrap_pyfunction!(py::transform::encode_categories, m)?)?;
    m.add_class::<py::transform::PyTransformPlan>()?;
    m.add_class::<py::transform::PyModelInput>()?;
    m.add_class::<py::agg::PyAggMatrix>()?;
    #[cfg(feature = "serve")]
    m.add_class::<py::serve::PyServer>()?;
    #[cfg(feature = "serve")]
    m.add_class::<py::model::PyOnnxModel>()?;
    Ok(())
}
