//! Assembling the output: the spine's batches, each widened with the feature columns
//! gathered for its rows.
//!
//! Each feature value column is gathered with Arrow's `take` on null-free indices,
//! then masked where nothing matched. A feature table that arrived in several batches
//! has each value column concatenated first (`take` on one array is several times
//! faster than `interleave` across chunks), one column at a time per thread so the
//! copies never add up; one in a single batch is used as it is. A null-free
//! fixed-width column is concatenated by hand into one buffer on huge pages (see
//! [`concat_fixed`]): at 10M rows its random reads then rarely miss the TLB. The work
//! runs in parallel over (table, column).

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_schema::{Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::kernel::NO_ROW;
use super::plan::Matches;
use super::take;
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

/// One unit of gather work: a table's supported columns for one spine batch, or one
/// column of another type for every spine batch.
enum Task {
    Rows { table: usize, batch: usize },
    Column { table: usize, col: usize },
}

/// The spine's batches widened with the gathered feature columns.
///
/// Columns of the types [`take`] handles are gathered per (table, spine batch): the
/// batch's feature rows are located in the table's chunks once and every such column
/// of the table is read from the chunks directly, while that batch's locations are
/// still in cache; the tasks are many and even, so the cores stay busy. Any other
/// column is one (table, column) task: the column is made one array (a copy only when
/// the table came in several batches), gathered with Arrow's `take` for every spine
/// batch, and the copy dropped.
pub fn assemble(
    spec: &JoinSpec,
    schema: &SchemaRef,
    matches: &Matches,
) -> Result<Vec<RecordBatch>> {
    let mut bounds = Vec::with_capacity(spec.spine.batches.len());
    let mut start = 0;
    for batch in &spec.spine.batches {
        bounds.push((start, batch.num_rows()));
        start += batch.num_rows();
    }
    let columns: Vec<Vec<usize>> = spec.features.iter().map(value_columns).collect();
    let direct =
        |j: usize, c: usize| take::supported(spec.features[j].table.schema.field(c).data_type());
    let chunks: Vec<take::Chunks> = spec
        .features
        .iter()
        .map(|f| take::Chunks::new(f.table.batches.iter().map(|b| b.num_rows())))
        .collect();
    let mut tasks = Vec::new();
    for (j, cols) in columns.iter().enumerate() {
        if cols.iter().any(|&c| direct(j, c)) {
            tasks.extend((0..bounds.len()).map(|batch| Task::Rows { table: j, batch }));
        }
        for &col in cols.iter().filter(|&&c| !direct(j, c)) {
            tasks.push(Task::Column { table: j, col });
        }
    }
    // Each task's output: (table, column, spine batch, array).
    let pieces: Vec<Vec<(usize, usize, usize, ArrayRef)>> = tasks
        .par_iter()
        .map(|task| match *task {
            Task::Rows { table: j, batch: b } => {
                let f = &spec.features[j];
                let (start, n) = bounds[b];
                let locs = chunks[j].locate(&matches.rows[j][start..start + n]);
                columns[j]
                    .iter()
                    .filter(|&&c| direct(j, c))
                    .map(|&c| {
                        let dt = f.table.schema.field(c).data_type();
                        let array = match &locs {
                            None => new_null_array(dt, n),
                            Some(locs) => {
                                let parts: Vec<&ArrayRef> = chunks[j]
                                    .batches
                                    .iter()
                                    .map(|&i| f.table.batches[i].column(c))
                                    .collect();
                                take::gather(&parts, dt, locs)?
                            }
                        };
                        Ok((j, c, b, array))
                    })
                    .collect()
            }
            Task::Column { table: j, col: c } => {
                let source = whole_column(&spec.features[j], c)?;
                bounds
                    .iter()
                    .enumerate()
                    .map(|(b, &(start, n))| {
                        let array = match take_indices(&matches.rows[j][start..start + n]) {
                            None => new_null_array(source.data_type(), n),
                            Some((idx, matched)) => take_masked(&source, &idx, matched.as_ref())?,
                        };
                        Ok((j, c, b, array))
                    })
                    .collect()
            }
        })
        .collect::<Result<_>>()?;
    // gathered[j][k][b]: table j's k-th value column for spine batch b.
    let mut gathered: Vec<Vec<Vec<Option<ArrayRef>>>> = columns
        .iter()
        .map(|cols| vec![vec![None; bounds.len()]; cols.len()])
        .collect();
    for (j, c, b, array) in pieces.into_iter().flatten() {
        let k = columns[j]
            .iter()
            .position(|&x| x == c)
            .expect("a value column");
        gathered[j][k][b] = Some(array);
    }
    spec.spine
        .batches
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            let mut out = batch.columns().to_vec();
            for col in gathered.iter().flatten() {
                out.push(col[b].clone().expect("every task ran"));
            }
            Ok(RecordBatch::try_new(Arc::clone(schema), out)?)
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
            if let Some(whole) = concat_fixed(&chunks) {
                return Ok(whole);
            }
            Ok(arrow_select::concat::concat(&chunks)?)
        }
    }
}

/// Arrow's `concat` for null-free fixed-width chunks, into one buffer on huge pages
/// ([`crate::huge::advise`]; 32 MiB or more): the gathers that follow read it at
/// random, and on 4 KiB pages nearly every such read of a large column also misses
/// the TLB, and writing the copy faults once per 4 KiB instead of once per 2 MiB.
/// None (use `concat`) for other types, chunks with nulls or an odd buffer layout.
fn concat_fixed(chunks: &[&dyn Array]) -> Option<ArrayRef> {
    let dt = chunks.first()?.data_type();
    let width = dt.primitive_width().filter(|_| dt.is_primitive())?;
    if chunks
        .iter()
        .any(|c| c.data_type() != dt || c.null_count() > 0)
    {
        return None;
    }
    let datas: Vec<_> = chunks.iter().map(|c| c.to_data()).collect();
    let total: usize = datas.iter().map(|d| d.len()).sum();
    let mut bytes: Vec<u8> = Vec::with_capacity(total * width);
    crate::huge::advise(&mut bytes);
    for d in &datas {
        let buf = d.buffers().first()?;
        let from = buf
            .as_slice()
            .get(d.offset() * width..(d.offset() + d.len()) * width)?;
        bytes.extend_from_slice(from);
    }
    let data = arrow_data::ArrayDataBuilder::new(dt.clone())
        .len(total)
        .buffers(vec![arrow_buffer::Buffer::from_vec(bytes)]);
    // Validated (a `Vec<u8>` is only promised byte alignment; malloc gives 16): a
    // buffer Arrow would refuse falls back to `concat`.
    let data = data.build().ok()?;
    Some(arrow_array::make_array(data))
}

/// Null-free `take` indices and the mask of spine rows that matched (None: all did).
type Picks = (UInt32Array, Option<NullBuffer>);

/// `take` indices for feature rows `rows` (0 where NO_ROW) and the mask of rows that
/// matched (None when all did); None when nothing matched, so the columns are all null
/// without a gather.
fn take_indices(rows: &[u32]) -> Option<Picks> {
    if rows.iter().all(|&r| r == NO_ROW) {
        return None;
    }
    let values: ScalarBuffer<u32> = rows
        .iter()
        .map(|&r| if r == NO_ROW { 0 } else { r })
        .collect();
    let matched = NullBuffer::from_iter(rows.iter().map(|&r| r != NO_ROW));
    Some((
        UInt32Array::new(values, None),
        Some(matched).filter(|n| n.null_count() > 0),
    ))
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
    let data = taken.into_data().into_builder().nulls(nulls);
    // SAFETY: `take` built a valid array of `idx.len()` slots; only its validity
    // changes, to one of the same length that marks more slots null. (`build` would
    // re-validate every value, UTF-8 included, for nothing.)
    Ok(arrow_array::make_array(unsafe { data.build_unchecked() }))
}
