//! Binding of [`crate::serve::onnx`]: an ONNX model run through ONNX Runtime's C API
//! (`OnnxModel`), and the predictor's whole batch in one call (`OnnxModel.predict`:
//! keys -> the prepared model input -> the model -> one float32 per key), so a batch
//! of one crosses from Python to Rust once and the GIL is released for the lookup and
//! the model together.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyList, PyTuple};
use pyo3::IntoPyObjectExt;

use super::errors::IntoPyResult;
use super::online::float_bytes;
use super::transform::PyModelInput;
use crate::error::Error;
use crate::online;
use crate::serve::onnx::{Dim, Model};

#[pyclass(name = "OnnxModel", module = "pitstop._core", frozen)]
pub struct PyOnnxModel {
    model: Model,
}

fn failed(e: String) -> Error {
    Error::InvalidArgument(format!("the model failed to run: {e}"))
}

#[pymethods]
impl PyOnnxModel {
    /// The model of `model` (ONNX bytes) on ONNX Runtime loaded from `lib` (the
    /// library of the `onnxruntime` wheel), with `threads` intra-op threads.
    #[new]
    fn new(py: Python<'_>, lib: &str, model: &[u8], threads: usize) -> PyResult<Self> {
        let model = py
            .detach(|| Model::load(lib, model, threads))
            .map_err(|e| Error::InvalidArgument(format!("not a loadable ONNX model: {e}")))
            .py()?;
        Ok(PyOnnxModel { model })
    }

    /// Whether the output is one float32 per row (as `[n]`, `[n, 1]` or class
    /// probabilities `[n, 2]`); `run` and `predict` serve only such models.
    #[getter]
    fn one_per_row(&self) -> bool {
        self.model.one_per_row()
    }

    /// The model's inputs as `(name, type, shape)`, in the words of onnxruntime's
    /// Python binding: `("input", "tensor(float)", [None, 3])`, a dimension that is
    /// not fixed being its symbolic name or None.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyTuple>>> {
        self.model
            .inputs()
            .iter()
            .map(|i| {
                let dims = i.shape.iter().map(|d| match d {
                    Dim::Fixed(n) => n.into_bound_py_any(py),
                    Dim::Named(s) => s.into_bound_py_any(py),
                    Dim::Free => Ok(py.None().into_bound(py)),
                });
                let shape = PyList::new(py, dims.collect::<PyResult<Vec<_>>>()?)?;
                let name = i.name.as_str().into_bound_py_any(py)?;
                PyTuple::new(
                    py,
                    [name, i.ty.as_str().into_bound_py_any(py)?, shape.into_any()],
                )
            })
            .collect()
    }

    /// The predictions for `x` (a C-contiguous float32 matrix of `width` columns) as
    /// a bytearray of float32: the positive class of two probabilities, else the
    /// output as is.
    fn run<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        width: usize,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let buf: PyBuffer<f32> = PyBuffer::get(x)
            .ok()
            .filter(|b| b.is_c_contiguous() && width > 0 && b.item_count() % width == 0)
            .ok_or_else(|| {
                Error::InputType(format!(
                    "the model takes a C-contiguous float32 matrix of {width} columns"
                ))
            })
            .py()?;
        let x: Vec<f32> = buf.to_vec(py)?;
        let n = x.len() / width;
        let y = py
            .detach(|| self.model.run(&x, n, width))
            .map_err(failed)
            .py()?;
        Ok(float_bytes(py, &y))
    }

    /// `input`'s rows for `keys` at `now_ns` (None: now) run through the model: one
    /// float32 per key as a bytearray. None when the keys need converting in Python
    /// first (as `ModelInput.matrix`).
    #[pyo3(signature = (input, keys, now_ns=None))]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        input: &PyModelInput,
        keys: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
    ) -> PyResult<Option<Bound<'py, PyByteArray>>> {
        let Some(keys) = input.keys(keys, false)? else {
            return Ok(None);
        };
        let now = now_ns.unwrap_or_else(online::now_ns);
        let width = input.row_width();
        let y = py
            .detach(|| {
                let keys = keys.keys();
                let n = keys.len();
                let mut x = vec![0f32; n * width];
                input.fill(&keys, now, &mut x)?;
                self.model.run(&x, n, width).map_err(failed)
            })
            .py()?;
        Ok(Some(float_bytes(py, &y)))
    }
}
