//! `pitstop._core.OnlineStore` and `pitstop._core.Reader`: thin wrappers over
//! [`crate::online::OnlineStore`]. Arguments arrive normalized by
//! `python/pitstop/online.py` (durations as ns, keys as a list or an Arrow table);
//! this layer converts keys, releases the GIL around every store call, and returns
//! Arrow tables or `bytearray`s of float32 that Python views as numpy arrays.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use pyo3::prelude::*;
use pyo3::types::PyByteArray;
use pyo3_arrow::{PySchema, PyTable};

use super::errors::IntoPyResult;
use super::keys::{extract_keys, push_entity};
use crate::error::Error;
use crate::online::{self, FeatureRef, Keys, MatrixPlan, OnlineStore, WriteSpec};
use crate::table::Table;

/// Runs `fill` on a fresh float32 buffer of `len` floats with the GIL released.
pub(crate) fn float_buffer<'py>(
    py: Python<'py>,
    len: usize,
    fill: impl FnOnce(&mut [f32]) -> crate::error::Result<()> + Send,
) -> PyResult<Bound<'py, PyByteArray>> {
    PyByteArray::new_with(py, len * 4, |bytes| {
        // The bytearray is new and visible to no other Python code, so releasing the
        // GIL while filling it is safe.
        py.detach(|| {
            // SAFETY: every bit pattern is a valid f32 and a valid u8; align_to_mut
            // only yields the correctly aligned middle part.
            let (head, floats, _) = unsafe { bytes.align_to_mut::<f32>() };
            if head.is_empty() && floats.len() == len {
                fill(floats)
            } else {
                let mut tmp = vec![0f32; len];
                fill(&mut tmp)?;
                for (dst, v) in bytes.chunks_exact_mut(4).zip(&tmp) {
                    dst.copy_from_slice(&v.to_ne_bytes());
                }
                Ok(())
            }
        })
        .py()
    })
}

/// `values` copied into a new bytearray of float32.
pub(crate) fn float_bytes<'py>(py: Python<'py>, values: &[f32]) -> Bound<'py, PyByteArray> {
    // SAFETY: an f32 slice viewed as its bytes (u8 has no alignment or validity
    // requirement), alive for the whole borrow.
    let bytes =
        unsafe { std::slice::from_raw_parts(values.as_ptr().cast::<u8>(), values.len() * 4) };
    PyByteArray::new(py, bytes)
}

/// A validated, encoded write waiting to be applied (`OnlineStore.prepare_write`).
#[pyclass(name = "PreparedWrite", module = "pitstop._core", frozen)]
pub struct PyPreparedWrite {
    store: Arc<OnlineStore>,
    inner: std::sync::Mutex<online::write::Prepared>,
}

#[pymethods]
impl PyPreparedWrite {
    /// Applies the write in one transaction (once), setting the table's watermark
    /// when given and `positions` (name -> bytes, None deletes) under `pos/`;
    /// returns (rows, written, unchanged).
    #[pyo3(signature = (watermark=None, positions=None))]
    fn commit(
        &self,
        py: Python<'_>,
        watermark: Option<i64>,
        positions: Option<Vec<(String, Option<Vec<u8>>)>>,
    ) -> PyResult<(usize, usize, usize)> {
        let stats = py
            .detach(|| {
                let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                match &positions {
                    None => self.store.commit_write(&mut p, watermark),
                    Some(pos) => self.store.commit_all(&mut [&mut *p], watermark, pos),
                }
            })
            .py()?;
        Ok((stats.rows, stats.written, stats.unchanged))
    }
}

#[pyclass(name = "OnlineStore", module = "pitstop._core", frozen)]
pub struct PyOnlineStore {
    pub(crate) inner: Arc<OnlineStore>,
}

#[pymethods]
impl PyOnlineStore {
    #[new]
    #[pyo3(signature = (path, *, map_size=None, readonly=false, huge_pages=false))]
    fn new(
        py: Python<'_>,
        path: PathBuf,
        map_size: Option<usize>,
        readonly: bool,
        huge_pages: bool,
    ) -> PyResult<Self> {
        let store = py
            .detach(|| OnlineStore::open_with(&path, map_size, readonly, huge_pages))
            .py()?;
        Ok(PyOnlineStore {
            inner: Arc::new(store),
        })
    }

    /// The LMDB environment's directory.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.dir().to_path_buf()
    }

    #[getter]
    fn readonly(&self) -> bool {
        self.inner.readonly()
    }

    /// Bytes of data.mdb loaded on 2 MiB pages when opened with huge_pages=True.
    #[getter]
    fn huge_page_bytes(&self) -> u64 {
        self.inner.huge_page_bytes()
    }

    fn map_size(&self) -> PyResult<usize> {
        self.inner.map_size().py()
    }

    fn tables(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        py.detach(|| self.inner.tables()).py()
    }

    /// Removes a table with its rows and schema; False if there was none.
    fn drop(&self, py: Python<'_>, table: String) -> PyResult<bool> {
        py.detach(|| self.inner.drop_table(&table)).py()
    }

    /// A consistent copy of the environment in directory `path` (new or empty).
    #[pyo3(signature = (path, compact=true))]
    fn copy(&self, py: Python<'_>, path: PathBuf, compact: bool) -> PyResult<u64> {
        py.detach(|| self.inner.copy(&path, compact)).py()
    }

    /// Releases this handle (the environment closes with its last handle).
    fn close(&self) {
        self.inner.close()
    }

    /// (key columns, feature schema) of a table.
    fn table_info<'py>(
        &self,
        py: Python<'py>,
        table: String,
    ) -> PyResult<(Vec<String>, Bound<'py, PyAny>)> {
        let def = py.detach(|| self.inner.table(&table)).py()?;
        let schema = PySchema::new(Arc::clone(&def.schema)).into_pyarrow(py)?;
        Ok((def.key_names(), schema))
    }

    #[pyo3(signature = (table, data, keys, event_time, created_time=None))]
    fn write(
        &self,
        py: Python<'_>,
        table: String,
        data: PyTable,
        keys: Vec<String>,
        event_time: String,
        created_time: Option<String>,
    ) -> PyResult<(usize, usize, usize)> {
        let (batches, schema) = data.into_inner();
        let data = Table::new(format!("data for table '{table}'"), schema, batches);
        let stats = py
            .detach(|| {
                self.inner.write(&WriteSpec {
                    table: &table,
                    data: &data,
                    keys: &keys,
                    event_time: &event_time,
                    created_time: created_time.as_deref(),
                })
            })
            .py()?;
        Ok((stats.rows, stats.written, stats.unchanged))
    }

    /// Validates and encodes a write without applying it: `PreparedWrite.commit`
    /// applies it later (after the offline commit), and can then fail only on I/O.
    #[pyo3(signature = (table, data, keys, event_time, created_time=None))]
    fn prepare_write(
        &self,
        py: Python<'_>,
        table: String,
        data: PyTable,
        keys: Vec<String>,
        event_time: String,
        created_time: Option<String>,
    ) -> PyResult<PyPreparedWrite> {
        let (batches, schema) = data.into_inner();
        let data = Table::new(format!("data for table '{table}'"), schema, batches);
        let prepared = py
            .detach(|| {
                self.inner
                    .prepare_write(table, data, keys, event_time, created_time)
            })
            .py()?;
        Ok(PyPreparedWrite {
            store: Arc::clone(&self.inner),
            inner: std::sync::Mutex::new(prepared),
        })
    }

    /// Applies several prepared writes and `positions` in one transaction
    /// (`online::write::commit_all`); returns (rows, written, unchanged) summed.
    #[pyo3(signature = (prepared, watermark=None, positions=None))]
    fn commit_all(
        &self,
        py: Python<'_>,
        prepared: Vec<Py<PyPreparedWrite>>,
        watermark: Option<i64>,
        positions: Option<Vec<(String, Option<Vec<u8>>)>>,
    ) -> PyResult<(usize, usize, usize)> {
        let refs: Vec<&PyPreparedWrite> = prepared.iter().map(|p| p.get()).collect();
        let positions = positions.unwrap_or_default();
        let stats = py
            .detach(|| {
                let mut guards: Vec<_> = refs
                    .iter()
                    .map(|p| p.inner.lock().unwrap_or_else(|e| e.into_inner()))
                    .collect();
                let mut writes: Vec<&mut online::write::Prepared> =
                    guards.iter_mut().map(|g| &mut **g).collect();
                self.inner.commit_all(&mut writes, watermark, &positions)
            })
            .py()?;
        Ok((stats.rows, stats.written, stats.unchanged))
    }

    /// The positions stored under `pos/<prefix>`: (name without `pos/`, bytes) pairs.
    fn positions(&self, py: Python<'_>, prefix: String) -> PyResult<Vec<(String, Vec<u8>)>> {
        py.detach(|| self.inner.positions(&prefix)).py()
    }

    /// The last offline version `table` holds, None when unknown.
    fn watermark(&self, py: Python<'_>, table: String) -> PyResult<Option<i64>> {
        py.detach(|| self.inner.watermark(&table)).py()
    }

    /// Swaps table `source` in as `table` in one transaction (see Env::replace_table).
    fn replace(&self, py: Python<'_>, table: String, source: String) -> PyResult<()> {
        py.detach(|| self.inner.replace_table(&table, &source)).py()
    }

    #[pyo3(signature = (table, keys, features=None, ttl_ns=None, now_ns=None))]
    fn read<'py>(
        &self,
        py: Python<'py>,
        table: String,
        keys: &Bound<'py, PyAny>,
        features: Option<Vec<String>>,
        ttl_ns: Option<i64>,
        now_ns: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let keys = extract_keys(keys)?;
        let now = now_ns.unwrap_or_else(online::now_ns);
        let batch = py
            .detach(|| {
                self.inner
                    .read(&table, &keys.keys(), features.as_deref(), ttl_ns, now)
            })
            .py()?;
        let schema = batch.schema();
        PyTable::try_new(vec![batch], schema)?.into_pyarrow(py)
    }

    /// A prepared matrix read. `features` holds (table or None, feature name) pairs;
    /// `ttl_ns` one entry per table; `threads` overrides how many threads look keys up.
    #[pyo3(signature = (tables, features, ttl_ns, threads=None))]
    fn reader(
        &self,
        py: Python<'_>,
        tables: Vec<String>,
        features: Vec<(Option<String>, String)>,
        ttl_ns: Vec<Option<i64>>,
        threads: Option<usize>,
    ) -> PyResult<PyReader> {
        let store = Arc::clone(&self.inner);
        let prepared = py
            .detach(|| PreparedMatrix::new(store, tables, features, ttl_ns, None))
            .py()?;
        Ok(PyReader { prepared, threads })
    }
}

/// A matrix plan that resolves itself again (once) when a table it reads was dropped
/// (and maybe re-created) since: what `Reader` and `ModelInput` read through.
pub(crate) struct PreparedMatrix {
    pub(crate) store: Arc<OnlineStore>,
    plan: RwLock<Arc<MatrixPlan>>,
    pub(crate) tables: Vec<String>,
    pub(crate) features: Vec<FeatureRef>,
    ttl_ns: Vec<Option<i64>>,
    /// Floats per output row; None: one per feature.
    row_width: Option<usize>,
}

impl PreparedMatrix {
    /// `features`: (table or None, name) pairs, as Python gives them.
    pub(crate) fn new(
        store: Arc<OnlineStore>,
        tables: Vec<String>,
        features: Vec<(Option<String>, String)>,
        ttl_ns: Vec<Option<i64>>,
        row_width: Option<usize>,
    ) -> crate::error::Result<Self> {
        let features: Vec<FeatureRef> = features
            .into_iter()
            .map(|(table, name)| FeatureRef { table, name })
            .collect();
        let plan = Self::resolve(&store, &tables, &features, &ttl_ns, row_width)?;
        Ok(PreparedMatrix {
            store,
            plan: RwLock::new(Arc::new(plan)),
            tables,
            features,
            ttl_ns,
            row_width,
        })
    }

    fn resolve(
        store: &OnlineStore,
        tables: &[String],
        features: &[FeatureRef],
        ttl_ns: &[Option<i64>],
        row_width: Option<usize>,
    ) -> crate::error::Result<MatrixPlan> {
        let plan = store.matrix_plan(tables, features, ttl_ns.to_vec())?;
        match row_width {
            Some(w) => plan.with_row_width(w),
            None => Ok(plan),
        }
    }

    /// Runs `f` with the current plan; resolves the plan again once if the catalog
    /// changed under it.
    pub(crate) fn with_plan(
        &self,
        mut f: impl FnMut(&MatrixPlan) -> crate::error::Result<()>,
    ) -> crate::error::Result<()> {
        let plan = Arc::clone(&self.plan.read().unwrap_or_else(|e| e.into_inner()));
        match f(&plan) {
            Err(Error::StaleCatalog) => {
                let fresh = Arc::new(Self::resolve(
                    &self.store,
                    &self.tables,
                    &self.features,
                    &self.ttl_ns,
                    self.row_width,
                )?);
                *self.plan.write().unwrap_or_else(|e| e.into_inner()) = Arc::clone(&fresh);
                f(&fresh)
            }
            other => other,
        }
    }

    /// Floats per output row.
    pub(crate) fn width(&self) -> usize {
        self.plan.read().unwrap_or_else(|e| e.into_inner()).width
    }

    /// Fills `out` (rows of [`Self::width`] floats) with the features of `keys`.
    pub(crate) fn read(
        &self,
        keys: &Keys,
        now_ns: i64,
        out: &mut [f32],
        threads: Option<usize>,
    ) -> crate::error::Result<()> {
        self.with_plan(|plan| self.store.read_matrix(plan, keys, now_ns, out, threads))
    }
}

/// A prepared read of several tables into float32 rows: tables, feature positions and
/// TTLs are resolved once, so a call only converts keys and looks them up.
#[pyclass(name = "Reader", module = "pitstop._core", frozen)]
pub struct PyReader {
    prepared: PreparedMatrix,
    threads: Option<usize>,
}

#[pymethods]
impl PyReader {
    /// Features per row.
    #[getter]
    fn width(&self) -> usize {
        self.prepared.width()
    }

    #[getter]
    fn tables(&self) -> Vec<String> {
        self.prepared.tables.clone()
    }

    #[getter]
    fn features(&self) -> Vec<(Option<String>, String)> {
        self.prepared
            .features
            .iter()
            .map(|f| (f.table.clone(), f.name.clone()))
            .collect()
    }

    /// `len(keys) * width` float32 values (row-major) as a bytearray.
    #[pyo3(signature = (keys, now_ns=None))]
    fn matrix<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let keys = extract_keys(keys)?;
        let now = now_ns.unwrap_or_else(online::now_ns);
        let n = keys.keys().len();
        float_buffer(py, n * self.prepared.width(), |out| {
            self.prepared.read(&keys.keys(), now, out, self.threads)
        })
    }

    /// Like `matrix`, the naive way: one LMDB get per (entity, table) in request order
    /// on one thread (for benchmarks, and as a test oracle).
    #[pyo3(signature = (keys, now_ns=None))]
    fn _naive_matrix<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let keys = extract_keys(keys)?;
        let now = now_ns.unwrap_or_else(online::now_ns);
        let n = keys.keys().len();
        let store = &self.prepared.store;
        float_buffer(py, n * self.prepared.width(), |out| {
            self.prepared
                .with_plan(|plan| store.read_matrix_naive(plan, &keys.keys(), now, out))
        })
    }

    /// One entity (a scalar, or a tuple for a composite key): `width` float32 values.
    #[pyo3(signature = (key, now_ns=None))]
    fn vector<'py>(
        &self,
        py: Python<'py>,
        key: &Bound<'py, PyAny>,
        now_ns: Option<i64>,
    ) -> PyResult<Bound<'py, PyByteArray>> {
        let mut values = Vec::with_capacity(1);
        let arity = push_entity(key, &mut values)?;
        let now = now_ns.unwrap_or_else(online::now_ns);
        float_buffer(py, self.prepared.width(), |out| {
            let keys = Keys::Values {
                arity,
                values: &values,
            };
            self.prepared.read(&keys, now, out, Some(1))
        })
    }
}
