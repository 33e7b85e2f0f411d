//! Window aggregations over raw events, exact at every label's time.
//!
//! For every spine (label) row `(keys, t)` and every aggregation `(op, column, W)`,
//! the op over the events with the same keys whose event time `e` lies in the label's
//! window: `[t - W, t)` with `closed = left` (the default: an event at exactly `t` is
//! usually the one being scored), `(t - W, t]` with `right`, `[t - W, t]` with `both`.
//! `last` has no window (`e < t`, or `e <= t` unless `closed = left`). Nulls (and NaN)
//! in the value column are skipped; an empty window gives count 0 and null otherwise.
//! With `knowledge_time`, only events created at or before `t` count. Keys, times and
//! bad input follow the point-in-time join ([`crate::join`]): composite and string
//! keys, any unit and zone compared as instants, null keys match nothing, every check
//! before any work, the output is the spine's batches plus one column per aggregation.
//!
//! **Windows as lags.** All times are converted to one unit (the finest involved) and
//! a window becomes an inclusive range of integer lags `t - e`: `left` is `[1, ⌊W⌋]`,
//! `right` `[0, ⌈W⌉ - 1]`, `both` `[0, ⌊W⌋]` (W in that unit), which is exact even when
//! W is not a whole number of units.
//!
//! **The sweep** ([`sweep`]). Events are grouped by key (counting sort) and ordered by
//! (event time, created time, input row) — the join's tie order, which decides `last`
//! and `last_k`; labels are grouped by key and ordered by time. Per key, each label's
//! window is the index range `[tail, head)` of its events (two binary searches), and
//! both ends only move forward as labels advance, so:
//! - count, sum, mean, std are differences of per-key prefix sums, kept in
//!   double-double ([`dd`]): exact to ~1e-16 relative as long as a key's running sum
//!   does not exceed its window sums by more than ~10^15; ±inf are counted apart, so
//!   one infinity makes only the windows holding it infinite (NaN for std);
//! - min and max use a monotonic deque per window (amortized O(1) per event), or scan
//!   each window when the key's windows hold fewer events in all than its history
//!   (short windows: cheaper than the deque, and the same result, the newest of the
//!   window's best values);
//! - `approx_distinct` keeps a count per distinct value in the window (exact, so its
//!   error is 0), amortized O(1) per event;
//! - `last` and `last_k` follow a "previous non-null" chain back from the head.
//!
//! Cost: O((n + q) log(n + q)) for n events and q labels, independent of how keys are
//! skewed (a key with many events costs its own sort and sweep, never a product of
//! its events and labels); memory about 40 bytes per event and label plus the
//! outputs. Keys run in parallel on the fork-aware pool. The one exception is
//! `knowledge_time`, whose windows are scanned event by event (O(window) per label),
//! since an event's creation time can hide it from some labels and not others.

pub mod dd;
pub mod layout;
mod naive;
mod order;
mod output;
mod plan;
pub mod serve;
pub mod state;
mod sums;
mod sweep;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;

use crate::error::Result;
use crate::table::Table;

/// One aggregation's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Count,
    Sum,
    Mean,
    Min,
    Max,
    Std,
    Last,
    LastK(usize),
    Distinct,
}

impl Op {
    pub fn parse(name: &str, k: Option<usize>) -> Option<Op> {
        Some(match (name, k) {
            ("count", _) => Op::Count,
            ("sum", _) => Op::Sum,
            ("mean", _) => Op::Mean,
            ("min", _) => Op::Min,
            ("max", _) => Op::Max,
            ("std", _) => Op::Std,
            ("last", _) => Op::Last,
            ("last_k", Some(k)) if k > 0 => Op::LastK(k),
            ("approx_distinct", _) => Op::Distinct,
            _ => return None,
        })
    }
}

/// Which end of a window is closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closed {
    Left,
    Right,
    Both,
}

/// One output feature.
#[derive(Clone, Debug)]
pub struct AggSpec {
    pub op: Op,
    pub column: Option<String>,
    /// The window length in nanoseconds (None for `last`).
    pub window_ns: Option<i64>,
    /// The output column's name.
    pub name: String,
}

#[derive(Clone, Debug)]
pub struct WindowAggSpec {
    pub spine: Table,
    pub spine_time: String,
    pub events: Table,
    pub spine_keys: Vec<String>,
    pub event_keys: Vec<String>,
    pub event_time: String,
    pub created_time: Option<String>,
    pub aggs: Vec<AggSpec>,
    pub closed: Closed,
    pub knowledge_time: bool,
}

/// Runs the aggregation; the result has the spine's rows in the spine's batches.
pub fn window_agg(spec: &WindowAggSpec) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let plan = plan::Plan::new(spec)?;
    let schema = output::schema(spec, &plan)?;
    let prepared = crate::trace::phase("agg prepare", || plan.prepare())?;
    // The sweep drops the sorted events and inputs before it copies its outputs.
    let outs = crate::trace::phase("agg sweep", || sweep::run(&plan, prepared));
    let batches = crate::trace::phase("agg output", || {
        output::assemble(spec, &plan, &schema, outs)
    })?;
    Ok((schema, batches))
}

#[cfg(test)]
mod layout_tests;
#[cfg(test)]
mod tests;
