//! `pitstop._core.Server`: a thin wrapper over [`crate::serve::Server`]. Python
//! (`python/pitstop/serve.py`) resolves the registry into the plan's JSON, starts the
//! server, hands over new plans when the registry changes and stops it.

use std::time::Duration;

use pyo3::prelude::*;

use super::errors::IntoPyResult;
use super::online::PyOnlineStore;
use crate::serve::{plan::Plan, Config, Server};

#[pyclass(name = "Server", module = "pitstop._core", frozen)]
pub struct PyServer {
    inner: Server,
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (store, plan, *, host, port, token, workers, max_batch, max_body,
                        max_inflight, timeout_s))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        store: &PyOnlineStore,
        plan: &str,
        host: String,
        port: u16,
        token: Option<String>,
        workers: usize,
        max_batch: usize,
        max_body: usize,
        max_inflight: usize,
        timeout_s: f64,
    ) -> PyResult<Self> {
        let plan = Plan::from_json(plan).py()?;
        let cfg = Config {
            host,
            port,
            token,
            workers,
            max_batch,
            max_body,
            max_inflight,
            timeout: Duration::from_secs_f64(timeout_s.max(0.001)),
        };
        let store = std::sync::Arc::clone(&store.inner);
        let inner = py.detach(|| Server::start(store, plan, cfg)).py()?;
        Ok(PyServer { inner })
    }

    /// The bound port (the one picked when started with port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.inner.addr.port()
    }

    #[getter]
    fn host(&self) -> String {
        self.inner.addr.ip().to_string()
    }

    /// Swaps in a new plan (JSON), off the request path.
    fn set_plan(&self, py: Python<'_>, plan: &str) -> PyResult<()> {
        let plan = Plan::from_json(plan).py()?;
        py.detach(|| self.inner.set_plan(plan));
        Ok(())
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain_s` seconds.
    fn stop(&self, py: Python<'_>, drain_s: f64) {
        py.detach(|| self.inner.stop(Duration::from_secs_f64(drain_s.max(0.0))));
    }

    fn finished(&self) -> bool {
        self.inner.finished()
    }

    fn metrics(&self) -> String {
        self.inner.metrics()
    }
}
