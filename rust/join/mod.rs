//! Point-in-time (as-of) joins: training data without leakage.
//!
//! For every spine row `(keys, t)` and every feature table, take the feature row with
//! the same keys whose event time `e` satisfies `e <= t` (`e < t` without exact
//! matches) and, with a TTL, `e >= t - ttl`; among several, the greatest `e` wins, then
//! the greatest created time, then the row that came last in input order. Under
//! knowledge time only rows created at or before `t` count. The output is the spine,
//! batch for batch and column for column (untouched, zero-copy), plus each feature
//! table's value columns (all but its keys, event time and created time), null where
//! nothing qualifies.
//!
//! The steps, each in its own module:
//! 1. validate everything up front ([`plan`]): a bad input fails before any work,
//!    and nothing partial is ever returned;
//! 2. convert every time column to one common unit ([`time`]);
//! 3. factorize the spine's keys once per key-column set, then look each feature
//!    table's keys up in that dictionary ([`keys`]);
//! 4. per feature table, sort by (key, e, c, row) and binary-search each spine row
//!    ([`kernel`]), giving one row index (or null) per spine row;
//! 5. gather the feature columns for each spine batch, in parallel over columns
//!    ([`gather`]: several columns of a large table at once as records with [`rows`],
//!    others with Arrow's `take`, byte arrays with [`cells`] or [`take`]), each table
//!    as soon as it is matched, so one table's gather overlaps the others' matching.
//!
//! Memory is linear in the inputs (about 24 bytes per feature row and 16 per spine row
//! beyond the output itself), never a product; all phases but the spine
//! factorization run on the rayon pool, and none depend on the thread count.

mod cells;
mod concat;
mod gather;
pub mod kernel;
pub mod keys;
pub(crate) mod plan;
mod rows;
mod take;
pub mod time;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::table::Table;

pub use kernel::Params;

/// One feature table of a join and how it meets the spine.
#[derive(Clone, Debug)]
pub struct FeatureSpec {
    pub table: Table,
    /// Spine key columns, matched position by position with `keys`.
    pub spine_keys: Vec<String>,
    pub keys: Vec<String>,
    pub time: String,
    pub created_time: Option<String>,
    /// Time to live in nanoseconds: rows older than `t - ttl` do not count.
    pub ttl_ns: Option<i64>,
    /// Prefix for this table's output columns.
    pub prefix: Option<String>,
}

#[derive(Clone, Debug)]
pub struct JoinSpec {
    pub spine: Table,
    pub spine_time: String,
    pub features: Vec<FeatureSpec>,
    pub allow_exact_matches: bool,
    pub knowledge_time: bool,
}

/// Runs the join; the result has the spine's rows in the spine's batches.
pub fn pit_join(spec: &JoinSpec) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = plan::Plan::new(spec)?;
    let schema = gather::output_schema(spec)?;
    let bounds = gather::spine_bounds(spec);
    let gathered = plan.run(|j, rows| {
        crate::trace::phase("gather", || gather::gather_table(spec, j, &rows, &bounds))
    })?;
    let batches = gather::assemble(spec, &schema, &gathered)?;
    Ok((schema, batches))
}
