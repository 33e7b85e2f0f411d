//! Validation and preparation: every check that can fail runs in [`Plan::new`] before
//! any work; [`Plan::prepare`] then groups labels and events by key, orders them, and
//! lays each value column out in the events' sorted order for the sweep.

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::Array;
use arrow_cast::{cast_with_options, CastOptions};
use arrow_schema::{DataType, TimeUnit};
use hashbrown::HashMap;
use rayon::prelude::*;

use super::order::{group, sort_runs};
use super::{AggSpec, Closed, Op, WindowAggSpec};
use crate::error::{Error, Result};
use crate::join::keys::KeyDict;
use crate::join::plan::no_nulls;
use crate::join::time::{self, nanos_per};
use crate::table::Column;

/// How the sweep reads a value column.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Only which rows are non-null (count(column), last, last_k).
    Validity,
    /// As f64 (sum, mean, std, and min/max of floats); NaN counts as null.
    F64,
    /// As i64 (min/max of integers).
    I64,
    /// As dense ids of distinct values (approx_distinct).
    Ids,
}

/// One aggregation, resolved.
pub struct Resolved {
    pub op: Op,
    /// Inclusive range of lags `t - e` (in the plan's unit) inside the window.
    pub lags: (i64, i64),
    /// Index into `Plan::inputs`, None for count().
    pub input: Option<usize>,
}

pub struct Plan<'s> {
    pub spec: &'s WindowAggSpec,
    pub unit: TimeUnit,
    spine_time: Column,
    spine_keys: Vec<Column>,
    event_keys: Vec<Column>,
    event_time: Column,
    created: Option<Column>,
    pub aggs: Vec<Resolved>,
    /// (column, how it is read), one per distinct pair.
    pub inputs: Vec<(Column, Kind)>,
}

/// A value column in the events' sorted order.
pub struct Input {
    pub f64s: Vec<f64>,
    pub i64s: Vec<i64>,
    pub ids: Vec<u32>,
    /// None when every value is present.
    pub valid: Option<Vec<bool>>,
}

impl Input {
    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        self.valid.as_ref().is_none_or(|v| v[i])
    }
}

pub struct Prepared {
    pub n_keys: usize,
    /// Spine row -> key id or NO_KEY.
    pub spine_ids: Vec<u32>,
    /// Key `k`'s labels are `label_rows[label_off[k]..label_off[k + 1]]`, by time.
    pub label_off: Vec<usize>,
    pub label_rows: Vec<u32>,
    /// The time of each label in `label_rows` (same positions).
    pub label_t: Vec<i64>,
    /// Key `k`'s events are positions `event_off[k]..event_off[k + 1]` of the
    /// following, ordered by (event time, created time, row).
    pub event_off: Vec<usize>,
    pub event_rows: Vec<u32>,
    pub e: Vec<i64>,
    pub c: Option<Vec<i64>>,
    pub inputs: Vec<Input>,
}

impl<'s> Plan<'s> {
    pub fn new(spec: &'s WindowAggSpec) -> Result<Self> {
        let spine = &spec.spine;
        let events = &spec.events;
        let spine_time = spine.column(&spec.spine_time, "spine_time must name its time column")?;
        let mut units = vec![time::check_temporal(&spine_time, "spine_time")?];
        if spec.event_keys.is_empty() || spec.event_keys.len() != spec.spine_keys.len() {
            return Err(Error::InvalidArgument(format!(
                "give one or more key columns, as many on the spine side ({:?}) as on the \
                 events side ({:?})",
                spec.spine_keys, spec.event_keys
            )));
        }
        for t in [spine, events] {
            if t.num_rows() >= u32::MAX as usize {
                return Err(Error::TooManyRows {
                    table: t.name.clone(),
                    rows: t.num_rows(),
                    max: u32::MAX as usize - 1,
                });
            }
        }
        let role = "`on` must name key columns present on both sides";
        let spine_keys = (spec.spine_keys.iter())
            .map(|k| spine.column(k, role))
            .collect::<Result<Vec<_>>>()?;
        let event_keys = (spec.event_keys.iter())
            .map(|k| events.column(k, role))
            .collect::<Result<Vec<_>>>()?;
        KeyDict::check_types(&spine_keys, &event_keys)?;
        for k in spine_keys.iter().chain(&event_keys) {
            crate::join::keys::key_kind(k)?;
        }
        let event_time = events.column(&spec.event_time, "event_time must name its time column")?;
        units.push(time::check_temporal(&event_time, "event_time")?);
        no_nulls(&event_time, "the event time (event_time)")?;
        let created = match &spec.created_time {
            Some(name) => {
                let c = events.column(name, "created_time must name a column of the events")?;
                units.push(time::check_temporal(&c, "created_time")?);
                no_nulls(&c, "the created time (created_time)")?;
                Some(c)
            }
            None if spec.knowledge_time => {
                return Err(Error::InvalidArgument(
                    "knowledge_time=True needs created_time: name the column that says when \
                     each event became known"
                        .into(),
                ))
            }
            None => None,
        };
        let unit = time::finest(units);
        if spec.aggs.is_empty() {
            return Err(Error::InvalidArgument(
                "aggregations is empty; declare at least one (agg.count(windows=['1d']), ...)"
                    .into(),
            ));
        }
        let mut inputs: Vec<(Column, Kind)> = Vec::new();
        let mut aggs = Vec::with_capacity(spec.aggs.len());
        for a in &spec.aggs {
            let lags = lags(a, spec.closed, unit)?;
            let kind = match a.op {
                Op::Count => a.column.as_ref().map(|_| Kind::Validity),
                Op::Last | Op::LastK(_) => Some(Kind::Validity),
                Op::Distinct => Some(Kind::Ids),
                Op::Sum | Op::Mean | Op::Std => Some(Kind::F64),
                Op::Min | Op::Max => Some(Kind::F64), // refined below for integers
            };
            let input = match (kind, &a.column) {
                (None, _) => None,
                (Some(_), None) => {
                    return Err(Error::InvalidArgument(format!(
                        "aggregation '{}' needs a column",
                        a.name
                    )))
                }
                (Some(mut kind), Some(name)) => {
                    let col = events.column(name, &format!("aggregation '{}' reads it", a.name))?;
                    kind = check_value_type(&col, a, kind)?;
                    let at = inputs
                        .iter()
                        .position(|(c, k)| c.name() == col.name() && *k == kind);
                    Some(at.unwrap_or_else(|| {
                        inputs.push((col, kind));
                        inputs.len() - 1
                    }))
                }
            };
            aggs.push(Resolved {
                op: a.op,
                lags,
                input,
            });
        }
        Ok(Plan {
            spec,
            unit,
            spine_time,
            spine_keys,
            event_keys,
            event_time,
            created,
            aggs,
            inputs,
        })
    }

    /// Groups, orders and converts everything the sweep reads.
    pub fn prepare(&self) -> Result<Prepared> {
        let spine_t = time::to_unit(&self.spine_time, "spine_time", self.unit)?;
        let e_raw = time::to_unit(&self.event_time, "event_time", self.unit)?.values;
        let c_raw = match &self.created {
            Some(c) => Some(time::to_unit(c, "created_time", self.unit)?.values),
            None => None,
        };
        use crate::trace::phase;
        let dict = phase("agg   keys", || KeyDict::build(&self.spine_keys))?;
        let n_keys = dict.n_keys;
        let event_ids = phase("agg   key lookup", || dict.lookup(&self.event_keys));
        // Labels: counting sort by key, then by time within each key.
        let (label_off, mut label_rows) = group(&dict.ids, n_keys, |i| spine_t.get(i).is_some());
        let mut label_t = vec![0i64; label_rows.len()];
        sort_runs(
            &label_off,
            &mut label_rows,
            &mut label_t,
            &spine_t.values,
            None,
        );
        drop(spine_t);
        // Events: counting sort by key (stable: rows in input order), then by
        // (event time, created time, row) within each key.
        let (event_off, mut event_rows) =
            phase("agg   group", || group(&event_ids, n_keys, |_| true));
        drop(event_ids); // the buffers no later phase reads go before the next is made
        let mut e = crate::huge::filled(event_rows.len(), 0i64);
        let c = phase("agg   sort", || {
            sort_runs(
                &event_off,
                &mut event_rows,
                &mut e,
                &e_raw,
                c_raw.as_deref(),
            )
        });
        drop((e_raw, c_raw));
        let inputs = phase("agg   inputs", || {
            self.inputs
                .par_iter()
                .map(|(col, kind)| input(col, *kind, &event_rows))
                .collect::<Result<Vec<_>>>()
        })?;
        // Only `last` and `last_k` name events by input row: without them the rows go
        // now, before the sweep allocates its outputs (10M events: 40 MB off the peak).
        let event_rows = if (self.aggs.iter()).any(|a| matches!(a.op, Op::Last | Op::LastK(_))) {
            event_rows
        } else {
            Vec::new()
        };
        Ok(Prepared {
            n_keys,
            spine_ids: dict.ids,
            label_off,
            label_rows,
            label_t,
            event_off,
            event_rows,
            e,
            c,
            inputs,
        })
    }
}

/// The lag range of an aggregation's window (see the module doc of `agg`).
fn lags(a: &AggSpec, closed: Closed, unit: TimeUnit) -> Result<(i64, i64)> {
    let min = if closed == Closed::Left { 1 } else { 0 };
    let windowed = !matches!(a.op, Op::Last);
    let Some(w) = a.window_ns else {
        if windowed {
            return Err(Error::InvalidArgument(format!(
                "aggregation '{}' needs a window (a positive duration such as '7d')",
                a.name
            )));
        }
        return Ok((min, i64::MAX));
    };
    if !windowed {
        return Err(Error::InvalidArgument(format!(
            "aggregation '{}' (last) takes no window; use last_k for a windowed latest value",
            a.name
        )));
    }
    if w <= 0 {
        return Err(Error::InvalidArgument(format!(
            "the window of aggregation '{}' is {w} ns; a window must be a positive duration \
             such as '7d'",
            a.name
        )));
    }
    let per = nanos_per(unit);
    let floor = w / per;
    let ceil = (w + per - 1) / per;
    Ok(match closed {
        Closed::Left | Closed::Both => (min, floor),
        Closed::Right => (0, ceil - 1),
    })
}

fn check_value_type(col: &Column, a: &AggSpec, kind: Kind) -> Result<Kind> {
    let dt = &col.data_type;
    let bad = |what: &str| {
        Error::InvalidArgument(format!(
            "events column '{}' is {dt}; aggregation '{}' needs {what} (cast it first)",
            col.name(),
            a.name
        ))
    };
    let int = dt.is_integer();
    let float = dt.is_floating();
    Ok(match kind {
        Kind::F64 if matches!(a.op, Op::Min | Op::Max) => match (int, float) {
            (true, _) => Kind::I64,
            (_, true) => Kind::F64,
            _ => return Err(not_numeric(col)),
        },
        Kind::F64 if !(int || float) => return Err(not_numeric(col)),
        Kind::Ids => {
            let ok = int
                || float
                || dt.is_temporal()
                || matches!(
                    dt,
                    DataType::Boolean
                        | DataType::Utf8
                        | DataType::LargeUtf8
                        | DataType::Utf8View
                        | DataType::Binary
                        | DataType::LargeBinary
                        | DataType::BinaryView
                );
            if !ok {
                return Err(bad("numbers, strings, booleans, dates or timestamps"));
            }
            Kind::Ids
        }
        k => k,
    })
}

fn not_numeric(col: &Column) -> Error {
    Error::AggColumnType {
        table: col.table.clone(),
        column: col.name().to_string(),
        dtype: col.data_type.clone(),
    }
}

/// A numeric column's values as f64 (null slots as stored): borrowed from the Arrow
/// buffer when it is one float64 chunk, else cast chunk by chunk into one vector.
fn f64_values(col: &Column) -> Result<std::borrow::Cow<'_, [f64]>> {
    use std::borrow::Cow;

    if let [one] = col.chunks.as_slice() {
        if *one.data_type() == DataType::Float64 {
            return Ok(Cow::Borrowed(one.as_primitive::<Float64Type>().values()));
        }
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    // The chunks are cast and copied in parallel, each into its own part of `v`.
    let n = col.len();
    let mut v: Vec<f64> = Vec::with_capacity(n);
    crate::huge::advise(&mut v);
    let mut parts = Vec::with_capacity(col.chunks.len());
    let mut rest = &mut v.spare_capacity_mut()[..n];
    for chunk in &col.chunks {
        let (part, tail) = rest.split_at_mut(chunk.len());
        parts.push((chunk, part));
        rest = tail;
    }
    parts.into_par_iter().try_for_each(|(chunk, part)| {
        let a = cast_with_options(chunk, &DataType::Float64, &strict)?;
        for (slot, x) in part
            .iter_mut()
            .zip(a.as_primitive::<Float64Type>().values())
        {
            slot.write(*x);
        }
        Ok::<(), Error>(())
    })?;
    // SAFETY: the parts cover the first n slots (the chunks' lengths sum to n) and
    // every one was written above.
    unsafe { v.set_len(n) };
    Ok(Cow::Owned(v))
}

/// A numeric column without nulls read as f64 in the order of `rows`: one parallel
/// gather, NaN found in the gathered values (a validity vector only when there is one).
fn floats_without_nulls(col: &Column, rows: &[u32]) -> Result<Input> {
    let raw = f64_values(col)?;
    let mut f64s = crate::huge::filled(rows.len(), 0.0);
    (f64s.par_iter_mut().zip(rows))
        .with_min_len(1 << 14)
        .for_each(|(x, &r)| *x = raw[r as usize]);
    let valid = f64s
        .par_iter()
        .any(|x| x.is_nan())
        .then(|| f64s.par_iter().map(|x| !x.is_nan()).collect());
    Ok(Input {
        f64s,
        i64s: Vec::new(),
        ids: Vec::new(),
        valid,
    })
}

/// Column `col` read as `kind`, in the order of `rows`.
fn input(col: &Column, kind: Kind, rows: &[u32]) -> Result<Input> {
    if kind == Kind::F64 && col.null_count() == 0 {
        return floats_without_nulls(col, rows);
    }
    let n = col.len();
    let mut valid_raw = vec![true; n];
    let mut any_null = false;
    let mut at = 0;
    for chunk in &col.chunks {
        if let Some(nulls) = chunk.logical_nulls() {
            for (j, v) in nulls.iter().enumerate() {
                if !v {
                    valid_raw[at + j] = false;
                    any_null = true;
                }
            }
        }
        at += chunk.len();
    }
    let strict = CastOptions {
        safe: false,
        ..Default::default()
    };
    let mut out = Input {
        f64s: Vec::new(),
        i64s: Vec::new(),
        ids: Vec::new(),
        valid: None,
    };
    if col.data_type.is_floating() && kind != Kind::F64 {
        // NaN counts as missing for every op (as nulls do), not only the numeric ones.
        let mut at = 0;
        for chunk in &col.chunks {
            let a = arrow_cast::cast(chunk, &DataType::Float64)?;
            for (j, x) in a.as_primitive::<Float64Type>().values().iter().enumerate() {
                if x.is_nan() {
                    valid_raw[at + j] = false;
                    any_null = true;
                }
            }
            at += chunk.len();
        }
    }
    match kind {
        Kind::Validity => {}
        Kind::F64 => {
            let raw = f64_values(col)?;
            for (i, x) in raw.iter().enumerate() {
                if x.is_nan() {
                    valid_raw[i] = false;
                    any_null = true;
                }
            }
            out.f64s = rows.par_iter().map(|&r| raw[r as usize]).collect();
        }
        Kind::I64 => {
            let mut raw = Vec::with_capacity(n);
            for chunk in &col.chunks {
                let a = cast_with_options(chunk, &DataType::Int64, &strict).map_err(|_| {
                    Error::InvalidArgument(format!(
                        "{} column '{}' holds integers beyond the 64-bit signed range; min and \
                         max read integers as int64",
                        col.table,
                        col.name()
                    ))
                })?;
                raw.extend_from_slice(a.as_primitive::<Int64Type>().values());
            }
            out.i64s = rows.par_iter().map(|&r| raw[r as usize]).collect();
        }
        Kind::Ids => {
            let raw = distinct_ids(col, &mut valid_raw, &mut any_null)?;
            out.ids = rows.par_iter().map(|&r| raw[r as usize]).collect();
        }
    }
    if any_null {
        out.valid = Some(rows.par_iter().map(|&r| valid_raw[r as usize]).collect());
    }
    Ok(out)
}

/// Dense ids of the distinct values of `col` by row (NaN and nulls marked invalid).
fn distinct_ids(col: &Column, valid: &mut [bool], any_null: &mut bool) -> Result<Vec<u32>> {
    let mut ids = Vec::with_capacity(col.len());
    let dt = &col.data_type;
    if dt.is_integer() || dt.is_temporal() || dt.is_floating() || *dt == DataType::Boolean {
        let mut map: HashMap<u64, u32> = HashMap::new();
        for chunk in &col.chunks {
            let bits: Vec<u64> = if dt.is_floating() {
                let a = arrow_cast::cast(chunk, &DataType::Float64)?;
                (a.as_primitive::<Float64Type>().values().iter())
                    .map(|x| {
                        if *x == 0.0 {
                            0
                        } else if x.is_nan() {
                            u64::MAX
                        } else {
                            x.to_bits()
                        }
                    })
                    .collect()
            } else if dt.is_unsigned_integer() {
                let a = arrow_cast::cast(chunk, &DataType::UInt64)?;
                a.as_primitive::<arrow_array::types::UInt64Type>()
                    .values()
                    .to_vec()
            } else {
                let a = arrow_cast::cast(chunk, &DataType::Int64)?;
                (a.as_primitive::<Int64Type>().values().iter())
                    .map(|x| *x as u64)
                    .collect()
            };
            for b in bits {
                if dt.is_floating() && b == u64::MAX {
                    valid[ids.len()] = false;
                    *any_null = true;
                }
                let next = map.len() as u32;
                ids.push(*map.entry(b).or_insert(next));
            }
        }
    } else {
        let mut map: HashMap<Vec<u8>, u32> = HashMap::new();
        for chunk in &col.chunks {
            let a = arrow_cast::cast(chunk, &DataType::LargeBinary)?;
            let a = a.as_binary::<i64>();
            for i in 0..a.len() {
                let v = if a.is_null(i) { &[][..] } else { a.value(i) };
                let next = map.len() as u32;
                let id = match map.get(v) {
                    Some(id) => *id,
                    None => {
                        map.insert(v.to_vec(), next);
                        next
                    }
                };
                ids.push(id);
            }
        }
    }
    Ok(ids)
}
