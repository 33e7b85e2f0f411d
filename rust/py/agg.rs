//! `pitstop._core.window_agg`: converts the arguments, runs [`crate::agg::window_agg`]
//! with the GIL released, and returns a `pyarrow.Table`. Normalization (pandas input,
//! window strings, names) happens in `python/pitstop/agg.py`.

use pyo3::prelude::*;
use pyo3_arrow::PyTable;

use super::errors::IntoPyResult;
use crate::agg::layout::merge;
use crate::agg::serve::StateView;
use crate::agg::state::{Event, Tag, Val};
use crate::agg::{AggSpec, Closed, Op, WindowAggSpec};
use crate::error::Error;
use crate::table::Table;

fn table(name: &str, t: PyTable) -> Table {
    let (batches, schema) = t.into_inner();
    Table::new(name, schema, batches)
}

/// One aggregation: (op, column, window in ns, k, output name).
type AggArgs = (String, Option<String>, Option<i64>, Option<usize>, String);
/// One served aggregation: (op, value column index, window in ns, k, output name).
type ServeArgs = (String, Option<usize>, Option<i64>, Option<usize>, String);
/// One aggregation read into a matrix: (op, value column index, window in ns, k).
type MatrixArgs = (String, Option<usize>, Option<i64>, Option<usize>);

#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (spine, spine_time, events, spine_keys, event_keys, event_time, created_time, aggregations, closed, knowledge_time))]
pub fn window_agg<'py>(
    py: Python<'py>,
    spine: PyTable,
    spine_time: String,
    events: PyTable,
    spine_keys: Vec<String>,
    event_keys: Vec<String>,
    event_time: String,
    created_time: Option<String>,
    aggregations: Vec<AggArgs>,
    closed: String,
    knowledge_time: bool,
) -> PyResult<Bound<'py, PyAny>> {
    let closed = match closed.as_str() {
        "left" => Closed::Left,
        "right" => Closed::Right,
        "both" => Closed::Both,
        other => {
            return Err(Error::InvalidArgument(format!(
                "closed must be 'left', 'right' or 'both'; got {other:?}"
            )))
            .py()
        }
    };
    let aggs = aggregations
        .into_iter()
        .map(|(op, column, window_ns, k, name)| {
            let op = Op::parse(&op, k).ok_or_else(|| {
                Error::InvalidArgument(format!("unknown aggregation op {op:?} (k={k:?})"))
            })?;
            Ok(AggSpec {
                op,
                column,
                window_ns,
                name,
            })
        })
        .collect::<Result<Vec<_>, Error>>()
        .py()?;
    let spec = WindowAggSpec {
        spine: table("spine", spine),
        spine_time,
        events: table("events", events),
        spine_keys,
        event_keys,
        event_time,
        created_time,
        aggs,
        closed,
        knowledge_time,
    };
    let pool = crate::online::env::pool();
    let (schema, batches) = py
        .detach(|| pool.install(|| crate::agg::window_agg(&spec)))
        .py()?;
    PyTable::try_new(batches, schema)?.into_pyarrow(py)
}

/// Arrow columns of the events as state values: (tag, values by row).
fn state_values(col: &arrow_array::ArrayRef) -> Result<(Tag, Vec<Val>), Error> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type};
    use arrow_array::Array;
    use arrow_schema::DataType;
    let dt = col.data_type();
    let n = col.len();
    let valid = |i: usize| col.is_valid(i);
    Ok(if dt.is_floating() {
        let a = arrow_cast::cast(col, &DataType::Float64)?;
        let a = a.as_primitive::<Float64Type>();
        let vals = (0..n).map(|i| {
            if valid(i) {
                Val::F(a.value(i))
            } else {
                Val::Null
            }
        });
        (Tag::F64, vals.collect())
    } else if dt.is_integer() || dt.is_temporal() || *dt == DataType::Boolean {
        let a = arrow_cast::cast(col, &DataType::Int64)?;
        let a = a.as_primitive::<Int64Type>();
        let vals = (0..n).map(|i| {
            if valid(i) {
                Val::I(a.value(i))
            } else {
                Val::Null
            }
        });
        (Tag::I64, vals.collect())
    } else {
        let a = arrow_cast::cast(col, &DataType::LargeBinary)?;
        let a = a.as_binary::<i64>();
        let vals = (0..n).map(|i| {
            if valid(i) {
                Val::B(a.value(i).to_vec())
            } else {
                Val::Null
            }
        });
        (Tag::Bytes, vals.collect())
    })
}

fn concat_column(t: &Table, name: &str) -> Result<arrow_array::ArrayRef, Error> {
    let col = t.column(name, "the aggregation state reads it")?;
    let chunks: Vec<&dyn arrow_array::Array> = col.chunks.iter().map(|c| c.as_ref()).collect();
    Ok(match chunks.len() {
        0 => arrow_array::new_null_array(&col.data_type, 0),
        _ => arrow_select::concat::concat(&chunks)?,
    })
}

/// Merges inserted `events` into the stored states of their keys. `old` holds the
/// distinct keys of the events (key columns) and their stored state (column
/// `state`, null when none). Returns the key columns, `ts` (each state's newest event,
/// its stamp in the online store) and the new `state`.
#[pyfunction]
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (events, key_cols, event_time, created_time, seq, value_cols, old, keep_ns, last_cols))]
pub fn agg_merge<'py>(
    py: Python<'py>,
    events: PyTable,
    key_cols: Vec<String>,
    event_time: String,
    created_time: Option<String>,
    seq: String,
    value_cols: Vec<String>,
    old: PyTable,
    keep_ns: i64,
    last_cols: Vec<usize>,
) -> PyResult<Bound<'py, PyAny>> {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::Int64Type;
    use arrow_array::{Array, ArrayRef, BinaryArray, RecordBatch, TimestampNanosecondArray};
    use arrow_schema::{DataType, Field, Schema, TimeUnit};

    use crate::join::keys::{KeyDict, NO_KEY};
    use crate::join::time;

    let events = table("events", events);
    let old = table("aggregation state", old);
    let run = || -> Result<RecordBatch, Error> {
        let old_keys = (key_cols.iter())
            .map(|k| old.column(k, "the state's key"))
            .collect::<Result<Vec<_>, _>>()?;
        let ev_keys = (key_cols.iter())
            .map(|k| events.column(k, "the aggregation's key"))
            .collect::<Result<Vec<_>, _>>()?;
        let dict = KeyDict::build(&old_keys)?;
        let ids = dict.lookup(&ev_keys);
        let e = time::to_unit(
            &events.column(&event_time, "event time")?,
            "event_time",
            TimeUnit::Nanosecond,
        )?;
        let c = match &created_time {
            Some(c) => Some(time::to_unit(
                &events.column(c, "created time")?,
                "created_time",
                TimeUnit::Nanosecond,
            )?),
            None => None,
        };
        let seqs = concat_column(&events, &seq)?;
        let seqs = arrow_cast::cast(&seqs, &DataType::Int64)?;
        let seqs = seqs.as_primitive::<Int64Type>();
        let mut tags = Vec::new();
        let mut cols = Vec::new();
        for name in &value_cols {
            let (tag, vals) = state_values(&concat_column(&events, name)?)?;
            tags.push(tag);
            cols.push(vals);
        }
        let n_old = old.num_rows();
        let mut new: Vec<Vec<Event>> = vec![Vec::new(); n_old];
        for (r, &k) in ids.iter().enumerate() {
            if k == NO_KEY || k as usize >= n_old || dict.ids.get(k as usize).is_none() {
                continue;
            }
            new[k as usize].push(Event {
                e: e.values[r],
                c: c.as_ref().map_or(0, |c| c.values[r]),
                seq: seqs.value(r),
                vals: cols.iter().map(|col| col[r].clone()).collect(),
            });
        }
        // dict ids are assigned in first-seen order of the old table's rows, which are
        // distinct, so id i is old row i.
        let stored = concat_column(&old, "state")?;
        let stored = arrow_cast::cast(&stored, &DataType::Binary)?;
        let stored = stored.as_binary::<i32>();
        let mut stamps = Vec::with_capacity(n_old);
        let mut states: Vec<Vec<u8>> = Vec::with_capacity(n_old);
        let unreadable = |i: usize| Error::CorruptStore {
            path: "online store".into(),
            detail: format!("an aggregation state (row {i}) is unreadable"),
        };
        for (i, events) in new.into_iter().enumerate() {
            let view = if stored.is_valid(i) {
                let v = StateView::parse(stored.value(i))
                    .filter(|v| v.tags() == tags)
                    .ok_or_else(|| unreadable(i))?;
                Some(v)
            } else {
                None
            };
            let (bytes, newest) = merge(view.as_ref(), &tags, events, keep_ns, &last_cols)
                .ok_or_else(|| unreadable(i))?;
            stamps.push(newest.unwrap_or(0));
            states.push(bytes);
        }
        let mut fields: Vec<Field> = old_keys.iter().map(|c| c.field.clone()).collect();
        let mut arrays: Vec<ArrayRef> = (key_cols.iter())
            .map(|k| concat_column(&old, k))
            .collect::<Result<_, _>>()?;
        fields.push(Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
            false,
        ));
        arrays.push(Arc::new(
            TimestampNanosecondArray::from(stamps).with_timezone("UTC"),
        ));
        fields.push(Field::new("state", DataType::Binary, false));
        arrays.push(Arc::new(BinaryArray::from_iter_values(states.iter())));
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?)
    };
    let batch = py.detach(run).py()?;
    let schema = batch.schema();
    PyTable::try_new(vec![batch], schema)?.into_pyarrow(py)
}

/// Aggregates stored states at `now_ns`: one output row per state (column `state`,
/// null for an entity with none), one column per aggregation
/// (op, value column index, window ns, k, name).
#[pyfunction]
#[pyo3(signature = (states, aggregations, closed, now_ns))]
pub fn agg_serve<'py>(
    py: Python<'py>,
    states: PyTable,
    aggregations: Vec<ServeArgs>,
    closed: String,
    now_ns: i64,
) -> PyResult<Bound<'py, PyAny>> {
    use std::sync::Arc;

    use arrow_array::builder::{Float64Builder, Int64Builder};
    use arrow_array::cast::AsArray;
    use arrow_array::{Array, ArrayRef, RecordBatch};
    use arrow_schema::{DataType, Field, Schema};

    use crate::agg::serve::{lags_ns, Served};

    let closed = match closed.as_str() {
        "left" => Closed::Left,
        "right" => Closed::Right,
        _ => Closed::Both,
    };
    let states = table("aggregation states", states);
    let run = || -> Result<RecordBatch, Error> {
        let col = concat_column(&states, "state")?;
        let col = arrow_cast::cast(&col, &DataType::Binary)?;
        let col = col.as_binary::<i32>();
        let parsed: Vec<Option<StateView>> = (0..col.len())
            .map(|i| {
                if col.is_null(i) {
                    return Ok(None);
                }
                StateView::parse(col.value(i))
                    .map(Some)
                    .ok_or_else(|| Error::CorruptStore {
                        path: "online store".into(),
                        detail: format!("an aggregation state (entity {i}) is unreadable"),
                    })
            })
            .collect::<Result<_, _>>()?;
        let first = parsed.iter().flatten().next();
        let mut fields = Vec::new();
        let mut arrays: Vec<ArrayRef> = Vec::new();
        for (op, column, window_ns, k, name) in &aggregations {
            let op = Op::parse(op, *k)
                .ok_or_else(|| Error::InvalidArgument(format!("unknown op {op}")))?;
            let lags = lags_ns(*window_ns, closed);
            let tag = column.and_then(|j| first.and_then(|v| v.tag(j)));
            let results: Vec<Option<Served>> = parsed
                .iter()
                .map(|s| s.as_ref().map(|s| s.serve(op, *column, lags, now_ns)))
                .collect();
            let value = |s: &StateView, i: usize| s.value(column.expect("a column"), i);
            let (dt, array): (DataType, ArrayRef) = match op {
                Op::Count | Op::Distinct => {
                    let mut b = Int64Builder::new();
                    for r in &results {
                        b.append_value(match r {
                            Some(Served::Int(v)) => *v,
                            _ => 0,
                        });
                    }
                    (DataType::Int64, Arc::new(b.finish()))
                }
                Op::Last | Op::LastK(_) => {
                    let values: Vec<Vec<Val>> = parsed
                        .iter()
                        .zip(&results)
                        .map(|(s, r)| match (s, r) {
                            (Some(s), Some(Served::Events(ix))) => {
                                ix.iter().map(|&i| value(s, i)).collect()
                            }
                            _ => Vec::new(),
                        })
                        .collect();
                    let list = matches!(op, Op::LastK(_));
                    build_values(tag, &values, list)
                }
                _ => {
                    let int = matches!(op, Op::Min | Op::Max) && tag == Some(Tag::I64);
                    if int {
                        let mut b = Int64Builder::new();
                        for r in &results {
                            match r {
                                Some(Served::Int(v)) => b.append_value(*v),
                                _ => b.append_null(),
                            }
                        }
                        (DataType::Int64, Arc::new(b.finish()))
                    } else {
                        let mut b = Float64Builder::new();
                        for r in &results {
                            match r {
                                Some(Served::Float(v)) => b.append_value(*v),
                                _ => b.append_null(),
                            }
                        }
                        (DataType::Float64, Arc::new(b.finish()))
                    }
                }
            };
            fields.push(Field::new(name.clone(), dt, true));
            arrays.push(array);
        }
        let options = arrow_array::RecordBatchOptions::new().with_row_count(Some(col.len()));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            arrays,
            &options,
        )?)
    };
    let batch = py.detach(run).py()?;
    let schema = batch.schema();
    PyTable::try_new(vec![batch], schema)?.into_pyarrow(py)
}

/// `last` (one value per row) or `last_k` (a list per row) as an Arrow array of the
/// state column's kind: float64, int64 or binary (the caller casts to the source type).
fn build_values(
    tag: Option<Tag>,
    rows: &[Vec<Val>],
    list: bool,
) -> (arrow_schema::DataType, arrow_array::ArrayRef) {
    use std::sync::Arc;

    use arrow_array::builder::{
        ArrayBuilder, BinaryBuilder, Float64Builder, Int64Builder, ListBuilder,
    };
    use arrow_array::Array;

    fn push(b: &mut dyn ArrayBuilder, v: &Val) {
        if let Some(b) = b.as_any_mut().downcast_mut::<Float64Builder>() {
            match v {
                Val::F(x) => b.append_value(*x),
                _ => b.append_null(),
            }
        } else if let Some(b) = b.as_any_mut().downcast_mut::<Int64Builder>() {
            match v {
                Val::I(x) => b.append_value(*x),
                _ => b.append_null(),
            }
        } else if let Some(b) = b.as_any_mut().downcast_mut::<BinaryBuilder>() {
            match v {
                Val::B(x) => b.append_value(x),
                _ => b.append_null(),
            }
        }
    }
    let make = || -> Box<dyn ArrayBuilder> {
        match tag {
            Some(Tag::F64) => Box::new(Float64Builder::new()),
            Some(Tag::I64) => Box::new(Int64Builder::new()),
            _ => Box::new(BinaryBuilder::new()),
        }
    };
    if list {
        let mut b = ListBuilder::new(make());
        for r in rows {
            if r.is_empty() {
                b.append_null();
            } else {
                for v in r {
                    push(b.values().as_mut(), v);
                }
                b.append(true);
            }
        }
        let a = b.finish();
        (a.data_type().clone(), Arc::new(a))
    } else {
        let mut b = make();
        for r in rows {
            push(b.as_mut(), r.first().unwrap_or(&Val::Null));
        }
        let a = b.finish();
        (a.data_type().clone(), a)
    }
}

/// Aggregation features of `keys` from the states in online table `table` at `now_ns`,
/// as `len(keys) × len(aggregations)` float32 (see `agg::state::matrix`); every
/// aggregation is (op, value column index, window ns, k). For repeated reads,
/// `AggMatrix` prepares the same once.
#[pyfunction]
#[pyo3(signature = (store, table, keys, aggregations, closed, now_ns))]
pub fn agg_matrix<'py>(
    py: Python<'py>,
    store: &super::online::PyOnlineStore,
    table: String,
    keys: &Bound<'py, PyAny>,
    aggregations: Vec<MatrixArgs>,
    closed: String,
    now_ns: i64,
) -> PyResult<Bound<'py, pyo3::types::PyByteArray>> {
    PyAggMatrix::new(store, table, aggregations, closed)?.matrix(py, keys, now_ns)
}

/// A prepared aggregation matrix read: the ops parsed and the table resolved once
/// (again only when it is dropped or re-created), so a call converts the keys and
/// serves them.
#[pyclass(name = "AggMatrix", module = "pitstop._core", frozen)]
pub struct PyAggMatrix {
    store: std::sync::Arc<crate::online::OnlineStore>,
    rows: crate::online::read::RowsPlan,
    specs: Vec<(Op, Option<usize>, (i64, i64))>,
}

#[pymethods]
impl PyAggMatrix {
    #[new]
    fn new(
        store: &super::online::PyOnlineStore,
        table: String,
        aggregations: Vec<MatrixArgs>,
        closed: String,
    ) -> PyResult<Self> {
        use crate::agg::serve::lags_ns;

        let closed = match closed.as_str() {
            "left" => Closed::Left,
            "right" => Closed::Right,
            _ => Closed::Both,
        };
        let specs = aggregations
            .into_iter()
            .map(|(op, col, window_ns, k)| {
                let op = Op::parse(&op, k)
                    .ok_or_else(|| Error::InvalidArgument(format!("unknown op {op}")))?;
                Ok((op, col, lags_ns(window_ns, closed)))
            })
            .collect::<Result<Vec<_>, Error>>()
            .py()?;
        Ok(PyAggMatrix {
            store: std::sync::Arc::clone(&store.inner),
            rows: crate::online::read::RowsPlan::new(&table),
            specs,
        })
    }

    /// `len(keys) × len(aggregations)` float32 at `now_ns`, as a bytearray.
    fn matrix<'py>(
        &self,
        py: Python<'py>,
        keys: &Bound<'py, PyAny>,
        now_ns: i64,
    ) -> PyResult<Bound<'py, pyo3::types::PyByteArray>> {
        let keys = super::keys::extract_keys(keys)?;
        let keys = keys.keys();
        super::online::float_buffer(py, keys.len() * self.specs.len(), |out| {
            crate::agg::serve::matrix_prepared(
                &self.store,
                &self.rows,
                &keys,
                &self.specs,
                now_ns,
                out,
            )
        })
    }
}
