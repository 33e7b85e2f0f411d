//! `pitstop._core.window_agg`: converts the arguments, runs [`crate::agg::window_agg`]
//! with the GIL released, and returns a `pyarrow.Table`. Normalization (pandas input,
//! window strings, names) happens in `python/pitstop/agg.py`.

use pyo3::prelude::*;
use pyo3_arrow::PyTable;

use super::errors::IntoPyResult;
use crate::agg::{AggSpec, Closed, Op, WindowAggSpec};
use crate::error::Error;
use crate::table::Table;

fn table(name: &str, t: PyTable) -> Table {
    let (batches, schema) = t.into_inner();
    Table::new(name, schema, batches)
}

/// One aggregation: (op, column, window in ns, k, output name).
type AggArgs = (String, Option<String>, Option<i64>, Option<usize>, String);

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
