//! The output: the sweep's results moved from key order to spine order, then the
//! spine's batches, each widened with one column per aggregation, sliced from
//! whole-spine arrays. `last` and `last_k` gather the events' own values
//! (any type) with Arrow's `take`.

use std::sync::Arc;

use arrow_array::{
    new_null_array, Array, ArrayRef, Float64Array, Int64Array, ListArray, RecordBatch, UInt32Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::plan::{Plan, Resolved};
use super::sweep::{new_out, Out, NO_ROW};
use super::{Op, WindowAggSpec};
use crate::error::{Error, Result};

/// The type of an aggregation's output column.
fn output_type(plan: &Plan, i: usize) -> DataType {
    let a = &plan.aggs[i];
    let source = || {
        let col = &plan.inputs[a.input.expect("a column")].0;
        col.data_type.clone()
    };
    match a.op {
        Op::Count | Op::Distinct => DataType::Int64,
        Op::Min | Op::Max if source().is_integer() => DataType::Int64,
        Op::Sum | Op::Mean | Op::Std | Op::Min | Op::Max => DataType::Float64,
        Op::Last => source(),
        Op::LastK(_) => DataType::List(Arc::new(Field::new("item", source(), true))),
    }
}

/// The output schema; fails when a name is taken.
pub fn schema(spec: &WindowAggSpec, plan: &Plan) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = (spec.spine.schema.fields().iter())
        .map(|f| f.as_ref().clone())
        .collect();
    for (i, a) in spec.aggs.iter().enumerate() {
        if let Some(pos) = fields.iter().position(|f| *f.name() == a.name) {
            let first = if pos < spec.spine.schema.fields().len() {
                "a spine column"
            } else {
                "another aggregation"
            };
            return Err(Error::OutputNameTaken {
                column: a.name.clone(),
                first: first.into(),
            });
        }
        fields.push(Field::new(a.name.clone(), output_type(plan, i), true));
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        spec.spine.schema.metadata().clone(),
    )))
}

pub fn assemble(
    spec: &WindowAggSpec,
    plan: &Plan,
    schema: &SchemaRef,
    outs: Vec<Out>,
) -> Result<Vec<RecordBatch>> {
    let columns: Vec<ArrayRef> = outs
        .into_par_iter()
        .enumerate()
        .map(|(i, out)| column(plan, i, out))
        .collect::<Result<_>>()?;
    let mut start = 0;
    spec.spine
        .batches
        .iter()
        .map(|batch| {
            let n = batch.num_rows();
            let mut cols = batch.columns().to_vec();
            cols.extend(columns.iter().map(|c| c.slice(start, n)));
            start += n;
            Ok(RecordBatch::try_new(Arc::clone(schema), cols)?)
        })
        .collect()
}

fn nulls(valid: Vec<bool>) -> Option<NullBuffer> {
    Some(NullBuffer::from(valid)).filter(|n| n.null_count() > 0)
}

fn column(plan: &Plan, i: usize, out: Out) -> Result<ArrayRef> {
    Ok(match out {
        Out::I64 { vals, valid } => Arc::new(Int64Array::new(vals.into(), nulls(valid))),
        Out::F64 { vals, valid } => Arc::new(Float64Array::new(vals.into(), nulls(valid))),
        Out::Rows(rows) => {
            let source = events_column(plan, i)?;
            let idx = UInt32Array::new(
                rows.iter()
                    .map(|&r| if r == NO_ROW { 0 } else { r })
                    .collect(),
                nulls(rows.iter().map(|&r| r != NO_ROW).collect()),
            );
            if source.is_empty() {
                new_null_array(source.data_type(), rows.len())
            } else {
                arrow_select::take::take(&source, &idx, None)?
            }
        }
        Out::Lists(lists) => {
            let source = events_column(plan, i)?;
            let flat: Vec<u32> = lists.iter().flatten().copied().collect();
            let values = arrow_select::take::take(&source, &UInt32Array::from(flat), None)?;
            let offsets = OffsetBuffer::from_lengths(lists.iter().map(Vec::len));
            let valid = nulls(lists.iter().map(|l| !l.is_empty()).collect());
            let field = Arc::new(Field::new("item", source.data_type().clone(), true));
            Arc::new(ListArray::try_new(field, offsets, values, valid)?)
        }
    })
}

/// The events' column that aggregation `i` reads, as one array.
fn events_column(plan: &Plan, i: usize) -> Result<ArrayRef> {
    let col = &plan.inputs[plan.aggs[i].input.expect("a column")].0;
    Ok(match col.chunks.len() {
        0 => new_null_array(&col.data_type, 0),
        1 => Arc::clone(&col.chunks[0]),
        _ => {
            let chunks: Vec<&dyn Array> = col.chunks.iter().map(|c| c.as_ref()).collect();
            arrow_select::concat::concat(&chunks)?
        }
    })
}

/// Hands memory freed on the heap back to the system (glibc keeps freed chunks of a
/// few MB mapped; an output copied to spine order frees one such buffer while the
/// next is allocated, so without this the copies stack up: +70 MB of peak resident
/// memory at 1M labels x 16 outputs). ~1 ms a call; a no-op elsewhere.
pub(super) fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// `out` (by label position) in spine order. Every spine row has a count: 0 when its
/// window is empty, which is also the case of a label whose key no event has, a null
/// key or a null time (no events match, no position).
pub(super) fn to_spine_order(
    out: Out,
    a: &Resolved,
    rows: &[u32],
    n: usize,
    int_input: bool,
) -> Out {
    let mut spine = new_out(a.op, n, int_input);
    match (&mut spine, out) {
        (Out::I64 { vals, valid }, Out::I64 { vals: v, valid: ok }) => {
            if matches!(a.op, Op::Count | Op::Distinct) {
                valid.fill(true);
            }
            for ((&r, x), b) in rows.iter().zip(v).zip(ok) {
                vals[r as usize] = x;
                valid[r as usize] = b;
            }
        }
        (Out::F64 { vals, valid }, Out::F64 { vals: v, valid: ok }) => {
            for ((&r, x), b) in rows.iter().zip(v).zip(ok) {
                vals[r as usize] = x;
                valid[r as usize] = b;
            }
        }
        (Out::Rows(dst), Out::Rows(src)) => {
            for (&r, x) in rows.iter().zip(src) {
                dst[r as usize] = x;
            }
        }
        (Out::Lists(dst), Out::Lists(src)) => {
            for (&r, x) in rows.iter().zip(src) {
                dst[r as usize] = x;
            }
        }
        _ => unreachable!("an output keeps its kind"),
    }
    spine
}
