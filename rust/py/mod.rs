//! The only code that touches pyo3: thin wrappers that convert at the edge, release the
//! GIL around the kernels, and map [`crate::error::Error`] to Python exceptions.

pub mod agg;
pub mod errors;
pub mod join;
pub mod keys;
#[cfg(feature = "serve")]
pub mod model;
pub mod online;
#[cfg(feature = "serve")]
pub mod serve;
pub mod stats;
pub mod transform;
