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
        let picks: Vec<Picks> = spec
            .features
            .par_iter()
            .zip(&matches.rows)
            .map(|(f, rows)| Picks::new(f, &rows[start..start + n]))
            .collect();
        let gathered: Vec<ArrayRef> = tasks
            .par_iter()
            .map(|&(j, c)| picks[j].gather(&spec.features[j], c, n))
            .collect::<Result<_>>()?;
        let mut columns = batch.columns().to_vec();
        columns.extend(gathered);
        out.push(RecordBatch::try_new(Arc::clone(schema), columns)?);
        start += n;
    }
    Ok(out)
}

/// Which rows of one feature table a spine batch takes, in the form its gather needs;
/// built once per (spine batch, table) and shared by the table's columns.
enum Picks {
    /// Nothing matched: every column is all null.
    None,
    /// The table is one batch: `take` indices, null where nothing matched.
    Take(UInt32Array),
    /// Several batches: `interleave` pairs (batch, row); batch `len` is a null row.
    Interleave(Vec<(usize, usize)>),
}

impl Picks {
    fn new(f: &FeatureSpec, rows: &[u32]) -> Picks {
        let batches = &f.table.batches;
        if rows.iter().all(|&r| r == NO_ROW) {
            return Picks::None;
        }
        if batches.len() == 1 {
            let values: ScalarBuffer<u32> = rows
                .iter()
                .map(|&r| if r == NO_ROW { 0 } else { r })
                .collect();
            let nulls = NullBuffer::from_iter(rows.iter().map(|&r| r != NO_ROW));
            return Picks::Take(UInt32Array::new(
                values,
                Some(nulls).filter(|n| n.null_count() > 0),
            ));
        }
        let mut starts = Vec::with_capacity(batches.len());
        let mut total = 0usize;
        for b in batches {
            starts.push(total);
            total += b.num_rows();
        }
        let pairs = rows
            .iter()
            .map(|&r| {
                if r == NO_ROW {
                    return (batches.len(), 0);
                }
                let r = r as usize;
                let b = starts.partition_point(|&s| s <= r) - 1;
                (b, r - starts[b])
            })
            .collect();
        Picks::Interleave(pairs)
    }

    /// Column `c` of feature table `f` at these picks (`n` rows).
    fn gather(&self, f: &FeatureSpec, c: usize, n: usize) -> Result<ArrayRef> {
        let batches = &f.table.batches;
        let dtype = f.table.schema.field(c).data_type();
        Ok(match self {
            Picks::None => new_null_array(dtype, n),
            Picks::Take(indices) => arrow_select::take::take(batches[0].column(c), indices, None)?,
            Picks::Interleave(pairs) => {
                let null = new_null_array(dtype, 1);
                let mut sources: Vec<&dyn Array> =
                    batches.iter().map(|b| b.column(c).as_ref()).collect();
                sources.push(null.as_ref());
                arrow_select::interleave::interleave(&sources, pairs)?
            }
        })
    }
}
