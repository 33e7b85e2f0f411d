//! Bindings of `transform`: a prepared plan of fitted steps applied to float32 input
//! (`TransformPlan`), and the whole model input of a predictor prepared once
//! (`ModelInput`: keys -> online features -> missing-value fills and fitted steps in
//! one call, the hot path of `Predictor.predict`).

use std::sync::Arc;

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyDict, PyList};

use super::errors::IntoPyResult;
use super::keys::{dict_keys, extract_keys, OwnedKeys};
use super::online::{float_buffer, float_bytes, PreparedMatrix, PyOnlineStore};
use crate::error::Error;
use crate::online::{self, Keys};
use crate::transform::categories::{Categories, Encoder};
use crate::transform::{apply, Step};

/// One step as Python gives it: (column, kind, a, b, edges).
type StepArgs = (usize, String, f64, f64, Vec<f64>);

fn step(kind: &str, a: f64, b: f64, edges: Vec<f64>) -> Result<Step, Error> {
    let s = match kind {
        "scale" => Step::Scale {
            center: a,
            scale: b,
        },
        "log1p" => Step::Log1p,
        "clip" => Step::Clip { lo: a, hi: b },
        "bucketize" => Step::Bucketize { edges },
        "fill_null" => Step::FillNull { value: a },
        other => {
            return Err(Error::InvalidArgument(format!(
                "unknown transform step '{other}'"
            )))
        }
    };
    s.check()?;
    Ok(s)
}

/// Fitted transforms of a model input `width` columns wide, checked once.
#[pyclass(name = "TransformPlan", module = "pitstop._core", frozen)]
pub struct PyTransformPlan {
    width: usize,
    steps: Vec<(usize, Step)>,
}

#[pymethods]
impl PyTransformPlan {
    #[new]
    fn new(width: usize, steps: Vec<StepArgs>) -> PyResult<Self> {
        let steps = checked_steps(width, steps).py()?;
        Ok(PyTransformPlan { width, steps })
    }

    /// The transformed copy of `x` (a C-contiguous float32 buffer of rows of `width`
    /// values), as a bytearray of float32.
    fn apply<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let buf = matrix_buffer(x, self.width)?;
        let mut data: Vec<f32> = buf.to_vec(py)?;
        apply(&mut data, self.width, &self.steps).py()?;
        Ok(float_bytes(py, &data))
    }
}

/// `x` as a C-contiguous float32 buffer of rows of `width` values.
fn matrix_buffer(x: &Bound<'_, PyAny>, width: usize) -> PyResult<PyBuffer<f32>> {
    let buf: PyBuffer<f32> = PyBuffer::get(x)
        .map_err(|_| Error::InputType("transforms take a C-contiguous float32 matrix".into()))
        .py()?;
    if !buf.is_c_contiguous() || (width > 0 && !buf.item_count().is_multiple_of(width)) {
        return Err(Error::InputType(format!(
            "transforms take a C-contiguous float32 matrix of {width} columns"
        )))
        .py();
    }
    Ok(buf)
}

/// Steps as Python gives them, checked against a row of `width` values.
fn checked_steps(width: usize, steps: Vec<StepArgs>) -> Result<Vec<(usize, Step)>, Error> {
    steps
        .into_iter()
        .map(|(col, kind, a, b, edges)| {
            if col >= width {
                return Err(Error::InvalidArgument(format!(
                    "a transform reads column {col} of a {width}-column input"
                )));
            }
            Ok((col, step(&kind, a, b, edges)?))
        })
        .collect()
}

/// A model input prepared once per predictor: the looked-up features (positions
/// `0..features`) of rows `width` wide, then `pre` steps applied in the same call
/// (missing-value fills, and the fitted transforms when nothing comes between), and
/// `post` steps applied by `finish` after the caller has filled the other columns
/// (on-demand features). Keys, the read and the steps are one call from Python.
#[pyclass(name = "ModelInput", module = "pitstop._core", frozen)]
pub struct PyModelInput {
    read: PreparedMatrix,
    /// The key columns, in entity-key order, as the keys dict names them.
    key_names: Vec<String>,
    width: usize,
    pre: Vec<(usize, Step)>,
    post: Vec<(usize, Step)>,
}

#[pymethods]
impl PyModelInput {
    #[new]
    #[pyo3(signature = (store, tables, features, ttl_ns, key_names, width, pre, post))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &PyOnlineStore,
        tables: Vec<String>,
        features: Vec<(Option<String>, String)>,
        ttl_ns: Vec<Option<i64>>,
        key_names: Vec<String>,
        width: usize,
        pre: Vec<StepArgs>,
        post: Vec<StepArgs>,
    ) -> PyResult<Self> {
        let (pre, post) = (
            checked_steps(width, pre).py()?,
            checked_steps(width, post).py()?,
        );
        let store = Arc::clone(&store.inner);
        let read = py
            .detach(|| PreparedMatrix::new(store, tables, features, ttl_ns, Some(width)))
            .py()?;
        Ok(PyModelInput {
            read,
            key_names,
            width,
            pre,
            post,
        })
    }

    /// Values per row.
    #[getter]
    fn width(&self) -> usize {
        self.width
    }

    /// The key columns a keys dict gives, in entity-key order.
    #[getter]
    fn key_names(&self) -> Vec<String> {
        self.key_names.clone()
    }

    /// `len(keys) * width` float32 (row-major) as a bytearray: the features of `keys`
    /// (NaN where missing, expired or null), then the `pre` steps; the other columns
    /// are 0. `keys`: a dict of key columns or a list of entities; with
    /// `normalized=True` also an Arrow table. None when the keys need converting in
    /// Python first (see `online.rs`'s `dict_keys`).
    #[pyo3(signature = (keys, now_ns=None, normalized=false))]
    fn matrix<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
        normalized: bool,
    ) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let Some(keys) = self.keys(keys, normalized)? else {
            return Ok(None);
        };
        let now = now_ns.unwrap_or_else(online::now_ns);
        let keys = keys.keys();
        float_buffer(py, keys.len() * self.width, |out| {
            self.fill(&keys, now, out)
        })
        .map(Some)
    }

    /// Applies the `post` steps to `x` in place (a writable C-contiguous float32
    /// buffer of rows of `width` values, e.g. the array `matrix` returned).
    fn finish(&self, x: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.post.is_empty() {
            return Ok(());
        }
        let buf = matrix_buffer(x, self.width)?;
        if buf.readonly() {
            return Err(Error::InputType(
                "transforms need a writable float32 matrix".into(),
            ))
            .py();
        }
        if buf.item_count() == 0 {
            return Ok(());
        }
        // SAFETY: the buffer is writable, C-contiguous, aligned for f32 (checked by
        // PyBuffer::get) and `item_count` floats long; the GIL is held for the whole
        // call, so no Python code sees it change midway.
        let data =
            unsafe { std::slice::from_raw_parts_mut(buf.buf_ptr() as *mut f32, buf.item_count()) };
        apply(data, self.width, &self.post).py()
    }
}

impl PyModelInput {
    /// `keys` read as `matrix` reads them; None when they need converting in Python
    /// first (see `online.rs`'s `dict_keys`).
    pub(crate) fn keys(
        &self,
        keys: &Bound<'_, PyAny>,
        normalized: bool,
    ) -> PyResult<Option<OwnedKeys>> {
        if normalized {
            return extract_keys(keys).map(Some);
        }
        if let Ok(d) = keys.cast::<PyDict>() {
            return dict_keys(d, &self.key_names);
        }
        if let Ok(list) = keys.cast::<PyList>() {
            let first_is_dict = list.len() > 0 && list.get_item(0)?.is_instance_of::<PyDict>();
            return if first_is_dict {
                Ok(None)
            } else {
                extract_keys(keys).map(Some)
            };
        }
        Ok(None)
    }

    /// The rows of `keys` at `now` into `out` (`keys.len() * width` values): the
    /// looked-up features, then the `pre` steps.
    pub(crate) fn fill(&self, keys: &Keys<'_>, now: i64, out: &mut [f32]) -> Result<(), Error> {
        self.read.read(keys, now, out, None)?;
        apply(out, self.width, &self.pre)
    }

    /// Values per row.
    pub(crate) fn row_width(&self) -> usize {
        self.width
    }
}

/// The categories of a fitted encoder as Python stores them (a list, of the fitted
/// `type`: `string`, `int64` or `bool`).
pub(crate) fn categories(type_: &str, values: &Bound<'_, PyAny>) -> PyResult<Categories> {
    let bad = |e: PyErr| {
        Error::InvalidArgument(format!(
            "fitted categories of type {type_} must be a list of that type ({e})"
        ))
    };
    Ok(match type_ {
        "string" => Categories::Str(values.extract().map_err(bad).py()?),
        "int64" => Categories::Int(values.extract().map_err(bad).py()?),
        "bool" => Categories::Bool(values.extract().map_err(bad).py()?),
        other => {
            return Err(Error::InvalidArgument(format!(
                "fitted categories have type {other}; expected string, int64 or bool"
            )))
            .py()
        }
    })
}

/// The single column of `column` (a table of one column, feature `name`) encoded by a
/// fitted `kind` (`label_encoder` / `one_hot`) encoder: rows × `width` float32,
/// row-major, as a bytearray (see `transform::categories`).
#[pyfunction]
pub fn encode_categories<'py>(
    py: Python<'py>,
    kind: &str,
    type_: &str,
    categories_: &Bound<'py, PyAny>,
    width: usize,
    column: pyo3_arrow::PyTable,
    name: &str,
) -> PyResult<Bound<'py, PyByteArray>> {
    let enc = Encoder::new(kind, categories(type_, categories_)?, width).py()?;
    let (batches, _) = column.into_inner();
    let n: usize = batches.iter().map(|b| b.num_rows()).sum();
    float_buffer(py, n * width, move |out| {
        let mut row = 0;
        for b in &batches {
            let Some(a) = b.columns().first() else {
                continue;
            };
            enc.encode(a.as_ref(), name, &mut out[row * width..], width, 0)?;
            row += b.num_rows();
        }
        Ok(())
    })
}
