//! Assembling the output: the spine's batches, each widened with the feature columns
//! gathered for its rows.
//!
//! A feature table that arrived as one batch is gathered with Arrow's `take` (nullable
//! indices give nulls where nothing matched); one in several batches with `interleave`
//! over its batches plus a one-row null array, so neither is concatenated first. The
//! (table, column) gathers of a spine batch run in parallel.

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::kernel::NO_ROW;
use super::plan::Matches;
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
pub fn assemble(
    spec: &JoinSpec,
    schema: &SchemaRef,
    matches: &Matches,
) -> Result<Vec<RecordBatch>> {
    let tasks: Vec<(usize, usize)> = spec
        .features
        .iter()
        .enumerate()
        .flat_map(|(j, f)| value_columns(f).into_iter().map(move |c| (j, c)))
        .collect();
    let mut out = Vec::with_capacity(spec.spine.batches.len());
    let mut start = 0;
    for batch in &spec.spine.batches {
        let n = batch.num_rows();
        let gathered: Vec<ArrayRef> = tasks
            .par_iter()
            .map(|&(j, c)| gather(&spec.features[j], c, &matches.rows[j][start..start + n]))
            .collect::<Result<_>>()?;
        let mut columns = batch.columns().to_vec();
        columns.extend(gathered);
        out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        start += n;
    }
    Ok(out)
}

/// Column `c` of feature table `f` at `rows` (NO_ROW gives null).
fn gather(f: &FeatureSpec, c: usize, rows: &[u32]) -> Result<ArrayRef> {
    let batches = &f.table.batches;
    let dtype = f.table.schema.field(c).data_type();
    if rows.iter().all(|&r| r == NO_ROW) {
        return Ok(new_null_array(dtype, rows.len()));
    }
    if batches.len() == 1 {
        let values: ScalarBuffer<u32> = rows
            .iter()
            .map(|&r| if r == NO_ROW { 0 } else { r })
            .collect();
        let nulls = NullBuffer::from_iter(rows.iter().map(|&r| r != NO_ROW));
        let indices = UInt32Array::new(values, Some(nulls).filter(|n| n.null_count() > 0));
        return Ok(arrow_select::take::take(
            batches[0].column(c).as_ref(),
            &indices,
            None,
        )?);
    }
    // Several batches: interleave, with a one-row null array for the misses.
    let null = new_null_array(dtype, 1);
    let mut sources: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
    sources.push(null.as_ref());
    let mut starts = Vec::with_capacity(batches.len() + 1);
    let mut total = 0usize;
    for b in batches {
        starts.push(total);
        total += b.num_rows();
    }
    let null_source = batches.len();
    let pairs: Vec<(usize, usize)> = rows
        .iter()
        .map(|&r| {
            if r == NO_ROW {
                return (null_source, 0);
            }
            let r = r as usize;
            let b = starts.partition_point(|&s| s <= r) - 1;
            (b, r - starts[b])
        })
        .collect();
    Ok(arrow_select::interleave::interleave(&sources, &pairs)?)
}
