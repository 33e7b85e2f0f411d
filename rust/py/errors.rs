//! Error mapping: each [`Error`] variant becomes the `pitstop.errors` class its
//! [`Error::py_class`] names. The classes live in Python so that they can also subclass
//! the builtin they mean (`SchemaError(PitstopError, ValueError)`).

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::PyModule;

use crate::error::Error;

static ERRORS: PyOnceLock<Py<PyModule>> = PyOnceLock::new();

pub fn to_py(err: Error) -> PyErr {
    Python::attach(|py| {
        let module = ERRORS.get_or_try_init(py, || py.import("pitstop.errors").map(|m| m.unbind()));
        let class = module.and_then(|m| m.bind(py).getattr(err.py_class()));
        match class {
            Ok(class) => match class.call1((err.to_string(),)) {
                Ok(instance) => PyErr::from_value(instance),
                Err(e) => e,
            },
            Err(e) => e,
        }
    })
}

/// `?` for core results inside binding functions.
pub trait IntoPyResult<T> {
    fn py(self) -> PyResult<T>;
}

impl<T> IntoPyResult<T> for Result<T, Error> {
    fn py(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}
