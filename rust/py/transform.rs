//! Binding of `transform`: a prepared plan of fitted steps applied to float32 input.

use pyo3::buffer::PyBuffer;
use pyo3::prelude::*;
use pyo3::types::PyByteArray;

use super::errors::IntoPyResult;
use crate::error::Error;
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
        let steps = steps
            .into_iter()
            .map(|(col, kind, a, b, edges)| {
                if col >= width {
                    return Err(Error::InvalidArgument(format!(
                        "a transform reads column {col} of a {width}-column input"
                    )));
                }
                Ok((col, step(&kind, a, b, edges)?))
            })
            .collect::<Result<Vec<_>, Error>>()
            .py()?;
        Ok(PyTransformPlan { width, steps })
    }

    /// The transformed copy of `x` (a C-contiguous float32 buffer of rows of `width`
    /// values), as a bytearray of float32.
    fn apply<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let buf: PyBuffer<f32> = PyBuffer::get(x)
            .map_err(|_| Error::InputType("transforms take a C-contiguous float32 matrix".into()))
            .py()?;
        if !buf.is_c_contiguous()
            || (self.width > 0 && !buf.item_count().is_multiple_of(self.width))
        {
            return Err(Error::InputType(format!(
                "transforms take a C-contiguous float32 matrix of {} columns",
                self.width
            )))
            .py();
        }
        let mut data: Vec<f32> = buf.to_vec(py)?;
        apply(&mut data, self.width, &self.steps).py()?;
        // SAFETY-free byte view: every f32 is 4 plain bytes.
        let bytes: Vec<u8> = data.iter().flat_map(|v| v.to_ne_bytes()).collect();
        Ok(PyByteArray::new(py, &bytes))
    }
}
