//! Assembling the output: the spine's batches, each widened with the feature columns
//! gathered for its rows.
//!
//! Per (spine batch, feature table), each slot's source is located once as (chunk,
//! row) ([`take::locate`]); each feature value column is then gathered from the
//! table's chunks in place ([`take::gather`]), so a table that arrived in many batches
//! is never concatenated, and every output buffer is allocated once at its final size.
//! Types the direct gather does not cover (booleans, views, nested, dictionaries) take
//! the general path: the column concatenated (one copy per thread at a time, none for
//! a single batch), Arrow's `take` on null-free indices, then the mask of unmatched
//! rows. The work runs in parallel over columns, each gathering its spine batches in
//! turn (see [`assemble`] for why that order).

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::kernel::NO_ROW;
use super::plan::Matches;
use super::take::{self, Loc};
use super::{FeatureSpec, JoinSpec};
use crate::error::{Error, Result};

/// The columns a feature table contributes: all but its keys, event and created time.
pub fn value_columns(f: &FeatureSpec) -> Vec<usize> {
    let skip = |name: &str| {
        f.keys.iter().any(|k| k == name)
            || f.time == name
            || f.created_time.as_deref() == Some(name)
    };
    let fields = f.table.schema.fields();
    (0..fields.len())
        .filter(|&i| !skip(fields[i].name()))
        .collect()
}

/// The output schema; fails on a duplicate column name.
pub fn output_schema(spec: &JoinSpec) -> Result<SchemaRef> {
    let mut fields: Vec<Field> = spec
        .spine
        .schema
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut origin: Vec<String> = fields.iter().map(|_| "the spine".to_string()).collect();
    for f in &spec.features {
        for i in value_columns(f) {
            let src = f.table.schema.field(i);
            let name = format!("{}{}", f.prefix.as_deref().unwrap_or(""), src.name());
            if let Some(pos) = fields.iter().position(|x| *x.name() == name) {
                return Err(Error::NameCollision {
                    column: name,
                    first: origin[pos].clone(),
                    second: f.table.name.clone(),
                });
            }
            fields.push(src.clone().with_name(name).with_nullable(true));
            origin.push(f.table.name.clone());
        }
    }
    Ok(Arc::new(Schema::new_with_metadata(
        fields,
        spec.spine.schema.metadata().clone(),
    )))
}

/// The spine's batches widened with the gathered feature columns.
///
/// First every (spine batch, feature table) locates its rows in the table's chunks
/// ([`take::locate`]), in parallel; the global row indices are then dropped. Then the
/// columns, in parallel, each gathering its spine batches in turn: a thread works on
/// one source column at a time, so the column's random reads stay within one cache-
/// sized working set (gathering batch-major, with every column in flight at once, was
/// markedly slower). Columns the direct gather handles ([`take::direct`]) read the
/// chunks in place; the others are made one array (a copy only when the table came in
/// several batches) for Arrow's `take`, one such copy per thread at a time.
pub fn assemble(spec: &JoinSpec, schema: &SchemaRef, matches: Matches) -> Result<Vec<RecordBatch>> {
    let tasks: Vec<(usize, usize)> = spec
        .features
        .iter()
        .enumerate()
        .flat_map(|(j, f)| value_columns(f).into_iter().map(move |c| (j, c)))
        .collect();
    let mut bounds = Vec::with_capacity(spec.spine.batches.len());
    let mut start = 0;
    for batch in &spec.spine.batches {
        bounds.push((start, batch.num_rows()));
        start += batch.num_rows();
    }
    // starts[j][i]: the global index of feature table j's chunk i's first row.
    let starts: Vec<Vec<usize>> = spec
        .features
        .iter()
        .map(|f| {
            let mut at = 0;
            let mut starts = Vec::with_capacity(f.table.batches.len());
            for b in &f.table.batches {
                starts.push(at);
                at += b.num_rows();
            }
            starts
        })
        .collect();
    // locs[b][j]: table j's sources for spine batch b; None when nothing matched.
    let locs: Vec<Vec<Option<Vec<Loc>>>> = bounds
        .par_iter()
        .map(|&(start, n)| {
            (matches.rows.par_iter().zip(&starts))
                .map(|(rows, starts)| {
                    let rows = &rows[start..start + n];
                    rows.iter()
                        .any(|&r| r != NO_ROW)
                        .then(|| take::locate(rows, starts))
                })
                .collect()
        })
        .collect();
    drop(matches);
    // gathered[t][b]: task t's column for spine batch b.
    let gathered: Vec<Vec<ArrayRef>> = tasks
        .par_iter()
        .map(|&(j, c)| {
            let f = &spec.features[j];
            let dt = f.table.schema.field(c).data_type();
            let chunks: Vec<ArrayRef> = f
                .table
                .batches
                .iter()
                .map(|b| Arc::clone(b.column(c)))
                .collect();
            if take::direct(dt, &chunks) {
                return bounds
                    .iter()
                    .zip(&locs)
                    .map(|(&(_, n), locs)| match &locs[j] {
                        None => Ok(new_null_array(dt, n)),
                        Some(locs) => take::gather(dt, &chunks, locs),
                    })
                    .collect::<Result<Vec<_>>>();
            }
            let source = whole_column(f, c)?;
            bounds
                .iter()
                .zip(&locs)
                .map(|(&(_, n), locs)| match &locs[j] {
                    None => Ok(new_null_array(dt, n)),
                    Some(locs) => {
                        let (idx, matched) = take_indices(locs, &starts[j]);
                        take_masked(&source, &idx, matched.as_ref())
                    }
                })
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    spec.spine
        .batches
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            let mut columns = batch.columns().to_vec();
            columns.extend(gathered.iter().map(|col| Arc::clone(&col[b])));
            Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
        })
        .collect()
}

/// Column `c` of feature table `f` as one array (zero-copy when it is one batch).
fn whole_column(f: &FeatureSpec, c: usize) -> Result<ArrayRef> {
    let batches = &f.table.batches;
    match batches.len() {
        0 => Ok(new_null_array(f.table.schema.field(c).data_type(), 0)),
        1 => Ok(Arc::clone(batches[0].column(c))),
        _ => {
            let chunks: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            Ok(arrow_select::concat::concat(&chunks)?)
        }
    }
}

/// Null-free `take` indices and the mask of spine rows that matched (None: all did).
type Picks = (UInt32Array, Option<NullBuffer>);

/// Null-free `take` indices into the concatenated column for `locs` (0 where nothing
/// matched) and the mask of slots that matched (None when all did); `starts[i]` is
/// chunk i's first row.
fn take_indices(locs: &[Loc], starts: &[usize]) -> Picks {
    let none = starts.len() as u32;
    let values: ScalarBuffer<u32> = locs
        .iter()
        .map(|l| match starts.get(l.chunk as usize) {
            Some(s) => (s + l.row as usize) as u32,
            None => 0,
        })
        .collect();
    let matched = NullBuffer::from_iter(locs.iter().map(|l| l.chunk != none));
    (
        UInt32Array::new(values, None),
        Some(matched).filter(|n| n.null_count() > 0),
    )
}

/// `source` at `idx`, null where `matched` says no row matched. The take runs with
/// null-free indices (Arrow's fastest path, several times faster for strings than
/// nullable indices) and the mask is applied to the result's validity afterwards; the
/// values under a masked slot are row 0's, never visible.
fn take_masked(
    source: &ArrayRef,
    idx: &UInt32Array,
    matched: Option<&NullBuffer>,
) -> Result<ArrayRef> {
    use arrow_schema::DataType::{Null, RunEndEncoded, Union};
    let Some(matched) = matched else {
        return Ok(arrow_select::take::take(source, idx, None)?);
    };
    if matches!(source.data_type(), Null | Union(..) | RunEndEncoded(..)) {
        // No validity buffer of their own to mask: let take produce the nulls.
        let nullable = UInt32Array::new(idx.values().clone(), Some(matched.clone()));
        return Ok(arrow_select::take::take(source, &nullable, None)?);
    }
    let taken = arrow_select::take::take(source, idx, None)?;
    let nulls = NullBuffer::union(taken.nulls(), Some(matched));
    let data = taken.into_data().into_builder().nulls(nulls).build()?;
    Ok(arrow_array::make_array(data))
}
