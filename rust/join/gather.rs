//! Assembling the output: the spine's batches, each widened with the feature columns
//! gathered for its rows.
//!
//! A large table's fixed-width and short byte-array columns are gathered together, a
//! record per feature row ([`super::rows`], one random read per spine row for all of
//! them). The rest, column by column, as follows.
//!
//! Each feature value column is gathered with Arrow's `take` on null-free indices,
//! then masked where nothing matched. A feature table that arrived in several batches
//! has each value column concatenated first (`take` on one array is several times
//! faster than `interleave` across chunks), one column at a time per thread so the
//! copies never add up; one in a single batch is used as it is. A null-free
//! fixed-width column is concatenated by hand into one buffer on huge pages (see
//! [`concat_fixed`]): at 10M rows its random reads then rarely miss the TLB. The work
//! runs in parallel over the columns of a table, and each table is gathered as soon as
//! it is matched ([`super::plan::Plan::run`]), while the other tables are still being
//! matched. Byte-array columns (Utf8, Binary and their large forms) of 65,536 rows or
//! more whose values all fit in 15 bytes are rewritten as 16-byte cells and gathered
//! with one random read per value ([`super::cells`]); other byte-array columns are
//! concatenated by [`super::concat`] (onto huge pages from 4 MiB: their gather makes
//! two dependent random reads per value) and gathered by [`super::take`], faster than
//! Arrow's `take` on short values.

use std::sync::Arc;

use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, UInt32Array};
use arrow_buffer::{BooleanBuffer, NullBuffer, ScalarBuffer};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use rayon::prelude::*;

use super::cells::{self, Cells};
use super::kernel::NO_ROW;
use super::rows;
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

/// The global row range `(start, len)` of each spine batch.
pub fn spine_bounds(spec: &JoinSpec) -> Vec<(usize, usize)> {
    let mut bounds = Vec::with_capacity(spec.spine.batches.len());
    let mut start = 0;
    for batch in &spec.spine.batches {
        bounds.push((start, batch.num_rows()));
        start += batch.num_rows();
    }
    bounds
}

/// Feature table `j`'s value columns for every spine batch (`[column][batch]`), given
/// its row for each spine row (`rows`, `NO_ROW` where nothing matched).
///
/// Parallel over the table's groups of columns ([`rows::layout`]) and its other
/// columns; each task makes its columns one store (the group's records, or the column
/// as one array: a copy only when the table came in several batches, or short strings
/// rewritten as cells), gathers it for every spine batch, and drops the copy, so at
/// most one copied store per thread is alive at a time.
pub fn gather_table(
    spec: &JoinSpec,
    j: usize,
    rows: &[u32],
    bounds: &[(usize, usize)],
) -> Result<Vec<Vec<ArrayRef>>> {
    let f = &spec.features[j];
    // picks[b]: the take indices for spine batch b.
    let picks: Vec<Option<Picks>> = bounds
        .par_iter()
        .map(|&(start, n)| take_indices(&rows[start..start + n]))
        .collect();
    let cols = value_columns(f);
    let dt = |c: usize| f.table.schema.field(c).data_type();
    if picks.iter().all(Option::is_none) {
        // Nothing matched: all null, and no copy of any column is needed.
        return Ok(cols
            .iter()
            .map(|&c| {
                bounds
                    .iter()
                    .map(|&(_, n)| new_null_array(dt(c), n))
                    .collect()
            })
            .collect());
    }
    let layout = rows::layout(&f.table.batches, &cols, rows.len(), rows::LIMITS);
    let group_picks: Vec<_> = picks
        .iter()
        .map(|p| {
            p.as_ref()
                .map(|(idx, m)| (idx.values().as_ref(), m.as_ref()))
        })
        .collect();
    // The groups and the other columns, in parallel (groups first: the larger tasks).
    let units: Vec<Unit> = layout
        .groups
        .iter()
        .map(Unit::Group)
        .chain(layout.rest.iter().map(|&pos| Unit::Column(pos)))
        .collect();
    let done: Vec<Vec<(usize, Vec<ArrayRef>)>> = units
        .par_iter()
        .map(|unit| match *unit {
            Unit::Group(group) => group.gather(&f.table.batches, &group_picks, bounds),
            Unit::Column(pos) => {
                let c = cols[pos];
                let taken = if let Some(cells) = column_cells(f, c) {
                    per_batch(bounds, &picks, dt(c), |idx, m| cells.take(idx.values(), m))?
                } else {
                    let source = whole_column(f, c)?;
                    per_batch(bounds, &picks, dt(c), |idx, m| take_masked(&source, idx, m))?
                };
                Ok(vec![(pos, taken)])
            }
        })
        .collect::<Result<_>>()?;
    let mut out: Vec<(usize, Vec<ArrayRef>)> = done.into_iter().flatten().collect();
    out.sort_by_key(|&(pos, _)| pos);
    Ok(out.into_iter().map(|(_, arrays)| arrays).collect())
}

/// What one task of [`gather_table`] gathers: a group of columns, or one column (by
/// position among the value columns).
enum Unit<'a> {
    Group(&'a rows::Group),
    Column(usize),
}

/// One array per spine batch: `take(indices, matched)` where the batch has picks, all
/// null (of type `dt`) where nothing in it matched.
fn per_batch(
    bounds: &[(usize, usize)],
    picks: &[Option<Picks>],
    dt: &DataType,
    take: impl Fn(&UInt32Array, Option<&NullBuffer>) -> Result<ArrayRef>,
) -> Result<Vec<ArrayRef>> {
    bounds
        .iter()
        .zip(picks)
        .map(|(&(_, n), picks)| match picks {
            None => Ok(new_null_array(dt, n)),
            Some((idx, matched)) => take(idx, matched.as_ref()),
        })
        .collect()
}

/// The spine's batches widened with the gathered feature columns (`gathered[j][k][b]`:
/// table `j`'s `k`-th value column for spine batch `b`).
pub fn assemble(
    spec: &JoinSpec,
    schema: &SchemaRef,
    gathered: &[Vec<Vec<ArrayRef>>],
) -> Result<Vec<RecordBatch>> {
    spec.spine
        .batches
        .iter()
        .enumerate()
        .map(|(b, batch)| {
            let mut columns = batch.columns().to_vec();
            columns.extend(gathered.iter().flatten().map(|col| Arc::clone(&col[b])));
            Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
        })
        .collect()
}

/// Column `c` of feature table `f` as 16-byte cells, when [`cells`] takes it (short
/// byte-array values).
fn column_cells(f: &FeatureSpec, c: usize) -> Option<Cells> {
    let chunks: Vec<&dyn Array> = f
        .table
        .batches
        .iter()
        .map(|b| b.column(c).as_ref())
        .collect();
    cells::cells(&chunks)
}

/// Column `c` of feature table `f` as one array (zero-copy when it is one batch):
/// byte arrays by [`super::concat`], null-free fixed-width ones by [`concat_fixed`],
/// the rest by Arrow's `concat`.
fn whole_column(f: &FeatureSpec, c: usize) -> Result<ArrayRef> {
    let batches = &f.table.batches;
    match batches.len() {
        0 => Ok(new_null_array(f.table.schema.field(c).data_type(), 0)),
        1 => Ok(Arc::clone(batches[0].column(c))),
        _ => {
            let chunks: Vec<&dyn Array> = batches.iter().map(|b| b.column(c).as_ref()).collect();
            if let Some(whole) = super::concat::concat(&chunks) {
                return Ok(whole);
            }
            if let Some(whole) = concat_fixed(&chunks) {
                return Ok(whole);
            }
            Ok(arrow_select::concat::concat(&chunks)?)
        }
    }
}

/// Arrow's `concat` for null-free fixed-width chunks, into one buffer on huge pages
/// ([`crate::huge::buffer`]: a mapping of its own from 4 MiB): the gathers that follow
/// read it at random, and on 4 KiB pages nearly every such read of a large column also
/// misses the TLB, and writing the copy faults once per 4 KiB instead of once per 2 MiB.
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
    let mut parts = Vec::with_capacity(datas.len());
    for d in &datas {
        let buf = d.buffers().first()?;
        parts.push(
            buf.as_slice()
                .get(d.offset() * width..(d.offset() + d.len()) * width)?,
        );
    }
    let bytes = crate::huge::buffer(total * width, |out| {
        let mut at = 0;
        for p in &parts {
            out[at..at + p.len()].copy_from_slice(p);
            at += p.len();
        }
    });
    let data = arrow_data::ArrayDataBuilder::new(dt.clone())
        .len(total)
        .buffers(vec![bytes]);
    // Validated (cheap: a null-free fixed-width array): a buffer Arrow would refuse
    // falls back to `concat`.
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
    // collect_bool packs 64 flags per word (from_iter appends them one at a time).
    let matched = NullBuffer::new(BooleanBuffer::collect_bool(rows.len(), |i| {
        rows[i] != NO_ROW
    }));
    Some((
        UInt32Array::new(values, None),
        Some(matched).filter(|n| n.null_count() > 0),
    ))
}

/// `source` at `idx`, null where `matched` says no row matched. Byte arrays go to
/// [`take::take_bytes`] (empty values under masked slots). Otherwise the take runs with
/// null-free indices (Arrow's fastest path, several times faster for strings than
/// nullable indices) and the mask is applied to the result's validity afterwards; the
/// values under a masked slot are row 0's, never visible.
fn take_masked(
    source: &ArrayRef,
    idx: &UInt32Array,
    matched: Option<&NullBuffer>,
) -> Result<ArrayRef> {
    use arrow_schema::DataType::{Null, RunEndEncoded, Union};
    if let Some(taken) = take::take_bytes(source, idx, matched) {
        return taken;
    }
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
