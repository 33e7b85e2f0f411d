//! Float32 model inputs from the online store: a [`MatrixPlan`] resolves tables,
//! feature positions and TTLs once; [`read_matrix`] looks a batch of entities up
//! through [`super::read`]'s sorted, one-seek-per-entity path and writes each found
//! row's features straight from the memory map into the row-major output (a float32
//! column with one load, other numbers converted); NaN where missing, expired or
//! null. [`read_matrix_naive`] is the reference: one `mdb_get` per (entity, table).
//!
//! Cost: the lookup's (one descent per entity) plus O(entities × features) stores;
//! from 4096 entities on, the rows are filled on every core.

use rayon::prelude::*;

use super::env::{pool, Env};
use super::read::{encode_group, lookup, threads_for, Keys, ReadPlan, PARALLEL_MIN};
use crate::encode::columns::Encoded;
use crate::encode::key;
use crate::encode::row::{RowView, Slot, ValueType};
use crate::error::{py_list, Error, Result};

/// A feature of a matrix: `table` None means "the one table that has it".
#[derive(Clone, Debug)]
pub struct FeatureRef {
    pub table: Option<String>,
    pub name: String,
}

/// One feature of a matrix row: table column `col` goes to position `pos`;
/// `float32_at` is its byte offset in the row when it is a float32 (the common case,
/// read with one load instead of the general conversion).
#[derive(Clone, Copy, Debug)]
struct Output {
    col: usize,
    pos: usize,
    float32_at: Option<usize>,
}

/// Consecutive float32 features of a table that go to consecutive output positions:
/// columns `col..col + len`, stored from byte `at` on, to positions `pos..pos + len`
/// (one bounds check and a straight copy per run instead of one per feature).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Run {
    col: usize,
    pos: usize,
    at: usize,
    len: usize,
}

/// A prepared matrix read: tables, output positions and TTLs resolved once.
#[derive(Debug)]
pub struct MatrixPlan {
    pub read: ReadPlan,
    /// Per table: (column in the table, position in the output row).
    outputs: Vec<Vec<Output>>,
    /// Per table: its float32 outputs as runs, and the rest (`outputs` split).
    runs: Vec<(Vec<Run>, Vec<Output>)>,
    /// Features per output row.
    pub width: usize,
}

impl MatrixPlan {
    pub fn new(
        env: &Env,
        tables: &[String],
        features: &[FeatureRef],
        ttl_ns: Vec<Option<i64>>,
    ) -> Result<MatrixPlan> {
        let read = ReadPlan::new(env, tables, ttl_ns)?;
        let mut outputs = vec![Vec::new(); tables.len()];
        for (pos, f) in features.iter().enumerate() {
            let candidates: Vec<usize> = match &f.table {
                Some(t) => vec![tables.iter().position(|x| x == t).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "feature ({t:?}, {:?}) names a table that is not read (tables: {})",
                        f.name,
                        py_list(tables)
                    ))
                })?],
                None => (0..tables.len()).collect(),
            };
            let hits: Vec<(usize, usize)> = candidates
                .iter()
                .filter_map(|&j| read.tables[j].schema.index_of(&f.name).ok().map(|c| (j, c)))
                .collect();
            let (j, c) = match hits.as_slice() {
                [one] => *one,
                [] => {
                    let named: Vec<String> = candidates
                        .iter()
                        .map(|&j| format!("'{}'", tables[j]))
                        .collect();
                    let found = candidates
                        .iter()
                        .flat_map(|&j| read.tables[j].feature_names())
                        .collect();
                    return Err(Error::UnknownFeature {
                        table: if named.len() == 1 {
                            format!("table {}", named[0])
                        } else {
                            format!("tables {}", named.join(", "))
                        },
                        feature: f.name.clone(),
                        found,
                    });
                }
                many => {
                    let named: Vec<String> = many.iter().map(|(j, _)| tables[*j].clone()).collect();
                    return Err(Error::InvalidArgument(format!(
                        "feature '{}' is in several tables ({}); name it as a (table, feature) \
                         pair",
                        f.name,
                        py_list(&named)
                    )));
                }
            };
            let def = &read.tables[j];
            if !def.layout.types[c].is_numeric() {
                return Err(Error::NotNumeric {
                    table: def.name.clone(),
                    column: f.name.clone(),
                    dtype: def.schema.field(c).data_type().clone(),
                });
            }
            let float32_at = match (def.layout.types[c], def.layout.slots[c]) {
                (ValueType::F32, Slot::Fixed { offset, .. }) => Some(offset),
                _ => None,
            };
            outputs[j].push(Output {
                col: c,
                pos,
                float32_at,
            });
        }
        Ok(MatrixPlan {
            read,
            runs: outputs.iter().map(|o| runs(o)).collect(),
            outputs,
            width: features.len(),
        })
    }

    /// The same plan writing rows of `width` floats: feature `i` still goes to
    /// position `i`, positions from `features.len()` on are left as they are (a model
    /// input whose later columns are filled by someone else).
    pub fn with_row_width(mut self, width: usize) -> Result<MatrixPlan> {
        let used = self.outputs.iter().map(Vec::len).sum::<usize>();
        if width < used {
            return Err(Error::InvalidArgument(format!(
                "a row of {width} values cannot hold {used} features"
            )));
        }
        self.width = width;
        Ok(self)
    }
}

/// `outputs` split into runs of float32 features (see [`Run`]) and the others.
fn runs(outputs: &[Output]) -> (Vec<Run>, Vec<Output>) {
    let mut runs: Vec<Run> = Vec::new();
    let mut rest = Vec::new();
    for o in outputs {
        let Some(at) = o.float32_at else {
            rest.push(*o);
            continue;
        };
        match runs.last_mut() {
            Some(r)
                if r.col + r.len == o.col && r.pos + r.len == o.pos && r.at + 4 * r.len == at =>
            {
                r.len += 1
            }
            _ => runs.push(Run {
                col: o.col,
                pos: o.pos,
                at,
                len: 1,
            }),
        }
    }
    (runs, rest)
}

/// Fills `out` (`keys.len()` rows of `plan.width` floats, row-major) with the
/// features of each entity; NaN where missing, expired or null. Positions no feature
/// maps to (see [`MatrixPlan::with_row_width`]) are not written. `threads` overrides
/// how many threads look keys up (see [`threads_for`]).
pub fn read_matrix(
    env: &Env,
    plan: &MatrixPlan,
    keys: &Keys,
    now_ns: i64,
    out: &mut [f32],
    threads: Option<usize>,
) -> Result<()> {
    let n = keys.len();
    let d = plan.width;
    assert_eq!(out.len(), n * d, "output has n * width floats");
    env.with_reads(threads_for(n, threads), |txns| {
        let found = lookup(env, txns, &plan.read, keys, now_ns)?;
        let t = found.n_tables;
        let fill = |r: usize, row_out: &mut [f32]| {
            for (j, (runs, rest)) in plan.runs.iter().enumerate() {
                match &found.rows[r * t + j] {
                    Some(view) => {
                        for run in runs {
                            view.f32_run(run.col, run.at, &mut row_out[run.pos..run.pos + run.len]);
                        }
                        for o in rest {
                            row_out[o.pos] = view.f32(o.col);
                        }
                    }
                    None => {
                        for run in runs {
                            row_out[run.pos..run.pos + run.len].fill(f32::NAN);
                        }
                        for o in rest {
                            row_out[o.pos] = f32::NAN;
                        }
                    }
                }
            }
        };
        if d == 0 {
            return Ok(());
        }
        if n >= PARALLEL_MIN {
            pool().install(|| {
                out.par_chunks_mut(d)
                    .enumerate()
                    .for_each(|(r, row)| fill(r, row))
            });
        } else {
            out.chunks_mut(d)
                .enumerate()
                .for_each(|(r, row)| fill(r, row));
        }
        Ok(())
    })
}

/// The naive equivalent of [`read_matrix`], for benchmarks and as a test oracle: one
/// `mdb_get` per (entity, table) in request order, on one thread and one transaction,
/// decoding into `out` like the real thing. The gap between the two is what the layout
/// and the sorted, walking lookup buy.
pub fn read_matrix_naive(
    env: &Env,
    plan: &MatrixPlan,
    keys: &Keys,
    now_ns: i64,
    out: &mut [f32],
) -> Result<()> {
    let n = keys.len();
    let d = plan.width;
    assert_eq!(out.len(), n * d, "output has n * width floats");
    let read = &plan.read;
    let encoded: Vec<(Encoded, Vec<bool>)> = read
        .tables
        .iter()
        .map(|def| {
            let group = read
                .groups
                .iter()
                .find(|g| g.ids.contains(&def.id))
                .expect("every table is in a group");
            encode_group(group, keys)
        })
        .collect::<Result<_>>()?;
    env.with_read(|txn| {
        let mut key = Vec::with_capacity(64);
        for r in 0..n {
            let row_out = &mut out[r * d..(r + 1) * d];
            for (j, def) in read.tables.iter().enumerate() {
                let (enc, valid) = &encoded[j];
                let mut found = None;
                if valid[r] {
                    key.clear();
                    key.extend_from_slice(enc.get(r));
                    key::push_table_id(&mut key, def.id);
                    if let Some(b) = txn
                        .get(env.rows, &key)
                        .map_err(|e| env.lmdb_error("read", e))?
                    {
                        let view = RowView::parse(&def.layout, &[&key], b)
                            .map_err(|e| env.corrupt(format!("table '{}': {e}", def.name)))?;
                        let expired = read.ttl_ns[j]
                            .is_some_and(|ttl| view.stamp().event < now_ns.saturating_sub(ttl));
                        found = (!expired).then_some(view);
                    }
                }
                for o in &plan.outputs[j] {
                    row_out[o.pos] = found.map_or(f32::NAN, |v| v.f32(o.col));
                }
            }
        }
        Ok(())
    })
}
