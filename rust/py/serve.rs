//! `pitstop._core.Server`: a thin wrapper over [`crate::serve::Server`]. Python
//! (`python/pitstop/serve.py`) resolves the registry into the plan's JSON, starts the
//! server, hands over new plans when the registry changes and stops it.

use std::time::Duration;

use pyo3::prelude::*;

use super::errors::IntoPyResult;
use super::online::PyOnlineStore;
use crate::serve::derived::OnDemandFn;
use crate::serve::{plan::Plan, Config, Ingest, LogFn, Reject, Server};

/// The ingest route's handler: `f(group, body, content_type, query) -> (status, bytes)`
/// called with the GIL; anything it raises or returns malformed is a 500.
fn ingest_handler(f: Py<PyAny>) -> Ingest {
    std::sync::Arc::new(move |group: &str, body: &[u8], ctype: &str, query: &str| {
        Python::attach(|py| {
            let body = pyo3::types::PyBytes::new(py, body);
            match f
                .call1(py, (group, body, ctype, query))
                .and_then(|r| r.extract::<(u16, Bound<'_, pyo3::types::PyBytes>)>(py))
            {
                Ok((status, json)) => (status, json.as_bytes().to_vec()),
                Err(e) => (
                    500,
                    serde_json::json!({"error": format!("ingest failed: {e}")})
                        .to_string()
                        .into_bytes(),
                ),
            }
        })
    })
}

/// The prediction log's writer: `f(model, version, entities_json, x_bytes, n, d,
/// y_bytes)` called with the GIL on the log thread; what it raises is printed (a
/// failing log never fails a prediction already answered).
fn log_handler(f: Py<PyAny>) -> LogFn {
    use pyo3::types::PyBytes;

    let bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    std::sync::Arc::new(move |model, version, ents, x, n, d, y| {
        let (xb, yb) = (bytes(x), bytes(y));
        Python::attach(|py| {
            let args = (
                model,
                version,
                ents,
                PyBytes::new(py, &xb),
                n,
                d,
                PyBytes::new(py, &yb),
            );
            if let Err(e) = f.call1(py, args) {
                eprintln!(
                    "pitstop serve: a prediction of '{model}' v{version} was not logged: {e}"
                );
            }
        })
    })
}

/// The on-demand handler: `f(view_key, x_bytes, rows, cols, request_json)` called with
/// the GIL returns a pyarrow RecordBatch of the outputs, or `(status, message)` for a
/// request it refuses; anything it raises is a 500.
fn on_demand_handler(f: Py<PyAny>) -> OnDemandFn {
    use pyo3::types::PyBytes;

    std::sync::Arc::new(move |key, x, n, d, request| {
        let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
        Python::attach(|py| {
            let got = f
                .call1(py, (key, PyBytes::new(py, &xb), n, d, request))
                .map_err(|e| Reject::new(500, format!("on-demand features failed: {e}")))?;
            if let Ok((status, msg)) = got.extract::<(u16, String)>(py) {
                return Err(Reject::new(status, msg));
            }
            let batch = got
                .extract::<pyo3_arrow::PyRecordBatch>(py)
                .map_err(|e| {
                    Reject::new(500, format!("the on-demand handler returned no batch: {e}"))
                })?
                .into_inner();
            Ok(batch.columns().to_vec())
        })
    })
}

#[pyclass(name = "Server", module = "pitstop._core", frozen)]
pub struct PyServer {
    inner: Server,
}

#[pymethods]
impl PyServer {
    #[new]
    #[pyo3(signature = (store, plan, *, host, port, token, workers, max_batch, max_body,
                        max_inflight, timeout_s, spin_us=0, ingest=None, log=None,
                        on_demand=None))]
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
        spin_us: u64,
        ingest: Option<Py<PyAny>>,
        log: Option<Py<PyAny>>,
        on_demand: Option<Py<PyAny>>,
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
            spin: Duration::from_micros(spin_us),
        };
        let store = std::sync::Arc::clone(&store.inner);
        let ingest = ingest.map(ingest_handler);
        let log = log.map(log_handler);
        let on_demand = on_demand.map(on_demand_handler);
        let inner = py
            .detach(|| Server::start(store, plan, cfg, ingest, log, on_demand))
            .py()?;
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
