//! Prepared float32 reads of a view's features for models and the
//! `application/octet-stream` form: per set of selections keyed by the same request
//! columns one [`MatrixPlan`] (one descent per entity for all of them, see
//! [`crate::online::read`]), aggregations and encoded categorical columns on their
//! own, then the fitted transforms. Prepared once per (view, features) and plan, and
//! again when a table was dropped or re-created.
//!
//! Cost: the LMDB reads, one copy of each part into place, one pass of the steps.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::lookup::{needed, Entities};
use super::plan::{Selection, Source, View};
use super::Reject;
use crate::error::{Error, Result};
use crate::online::read::RowsPlan;
use crate::online::{FeatureRef, Keys, MatrixPlan, OnlineStore};
use crate::transform::categories::Encoder;
use crate::transform::Step;

/// A prepared float32 read of some features of a view: per set of selections keyed by
/// the same request columns one [`MatrixPlan`], aggregations on their own.
pub struct Prepared {
    parts: Vec<Prep>,
    /// Per response position: its fitted steps.
    steps: Vec<(usize, Step)>,
    width: usize,
}

enum Prep {
    Rows {
        /// The request keys, in the tables' key order.
        spine: Vec<String>,
        plan: MatrixPlan,
        positions: Vec<usize>,
    },
    Agg {
        spine: Vec<String>,
        table: String,
        specs: Vec<(crate::agg::Op, Option<usize>, (i64, i64))>,
        positions: Vec<usize>,
    },
    /// A categorical column read as a group column is, then encoded: (slot, response
    /// position) per requested encoded column.
    Encoded {
        spine: Vec<String>,
        rows: RowsPlan,
        column: String,
        ttl_ns: Option<i64>,
        encoder: Encoder,
        slots: Vec<(usize, usize)>,
    },
}

/// Prepared matrix reads by (view, version, requested features), per plan.
#[derive(Default)]
pub struct MatrixCache(Mutex<HashMap<MatrixKey, Arc<Prepared>>>);

/// (view, version, requested features, without the transforms).
type MatrixKey = (String, i64, Vec<usize>, bool);

/// Selections keyed by the same request columns: (those columns, tables, features,
/// response positions).
struct KeySet {
    spine: Vec<String>,
    tables: Vec<String>,
    refs: Vec<FeatureRef>,
    positions: Vec<usize>,
}

impl MatrixCache {
    fn get(
        &self,
        store: &OnlineStore,
        view: &View,
        features: &[usize],
        raw: bool,
    ) -> Result<Arc<Prepared>> {
        let key = (view.name.clone(), view.version, features.to_vec(), raw);
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(prepare(store, view, features, raw)?);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&p));
        Ok(p)
    }

    fn forget(&self, view: &View, features: &[usize], raw: bool) {
        let key = (view.name.clone(), view.version, features.to_vec(), raw);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

fn spine_for_env(env: &crate::online::Env, sel: &Selection) -> Result<Vec<String>> {
    sel.spine_for(&env.table(&sel.table)?.key_names())
}

fn prepare(store: &OnlineStore, view: &View, features: &[usize], raw: bool) -> Result<Prepared> {
    let env = store.env()?;
    let encoded = super::derived::encoded_slots(view, features);
    // Group selections by the request columns (in table key order) that key them.
    let mut sets: Vec<KeySet> = Vec::new();
    let mut parts = Vec::new();
    for (si, outs) in needed(view, features) {
        let sel = &view.selections[si];
        let spine = spine_for_env(&env, sel)?;
        match &sel.source {
            Source::Group { columns, .. } => {
                let at = match sets.iter().position(|s| s.spine == spine) {
                    Some(at) => at,
                    None => {
                        sets.push(KeySet {
                            spine,
                            tables: Vec::new(),
                            refs: Vec::new(),
                            positions: Vec::new(),
                        });
                        sets.len() - 1
                    }
                };
                let set = &mut sets[at];
                set.tables.push(sel.table.clone());
                for (oi, pos) in outs {
                    set.refs.push(FeatureRef {
                        table: Some(sel.table.clone()),
                        name: columns[oi].clone(),
                    });
                    set.positions.push(pos);
                }
            }
            Source::Aggregation { specs } => parts.push(Prep::Agg {
                spine,
                table: sel.table.clone(),
                specs: outs.iter().map(|&(oi, _)| specs[oi]).collect(),
                positions: outs.iter().map(|&(_, p)| p).collect(),
            }),
        }
    }
    for KeySet {
        spine,
        tables,
        refs,
        positions,
    } in sets
    {
        let ttl: Vec<Option<i64>> = tables
            .iter()
            .map(|t| {
                view.selections
                    .iter()
                    .find(|s| &s.table == t)
                    .and_then(|s| match s.source {
                        Source::Group { ttl_ns, .. } => ttl_ns,
                        _ => None,
                    })
            })
            .collect();
        let plan = MatrixPlan::new(&env, &tables, &refs, ttl)?;
        parts.push(Prep::Rows {
            spine,
            plan,
            positions,
        });
    }
    for (ei, slots) in encoded {
        let e = &view.encoders[ei];
        let sel = &view.selections[e.source.0];
        let Source::Group { columns, ttl_ns } = &sel.source else {
            continue; // the plan only lets group columns be encoded
        };
        parts.push(Prep::Encoded {
            spine: spine_for_env(&env, sel)?,
            rows: RowsPlan::new(&sel.table),
            column: columns[e.source.1].clone(),
            ttl_ns: *ttl_ns,
            encoder: e.encoder.clone(),
            slots,
        });
    }
    let steps = features
        .iter()
        .enumerate()
        .filter(|_| !raw)
        .flat_map(|(pos, &f)| {
            view.transforms
                .get(&view.features[f])
                .into_iter()
                .flatten()
                .map(move |s| (pos, s.clone()))
        })
        .collect();
    Ok(Prepared {
        parts,
        steps,
        width: features.len(),
    })
}

/// The float32 matrix (entities × features, row-major) of `features`: NaN where
/// missing, expired or null, transforms applied.
pub fn matrix(
    store: &OnlineStore,
    cache: &MatrixCache,
    view: &View,
    features: &[usize],
    ents: &Entities,
    now_ns: i64,
) -> Result<Vec<f32>, Reject> {
    matrix_of(store, cache, view, features, ents, now_ns, false)
}

/// [`matrix`], without the transforms when `raw`.
pub fn matrix_of(
    store: &OnlineStore,
    cache: &MatrixCache,
    view: &View,
    features: &[usize],
    ents: &Entities,
    now_ns: i64,
    raw: bool,
) -> Result<Vec<f32>, Reject> {
    let mut attempts = 0;
    loop {
        let prepared = cache.get(store, view, features, raw)?;
        match fill(store, &prepared, ents, now_ns) {
            Err(FillError::Stale) if attempts < 3 => {
                cache.forget(view, features, raw);
                attempts += 1;
            }
            Err(FillError::Stale) => return Err(Error::StaleCatalog.into()),
            Err(FillError::Reject(r)) => return Err(r),
            Ok(m) => return Ok(m),
        }
    }
}

enum FillError {
    Stale,
    Reject(Reject),
}

impl From<Reject> for FillError {
    fn from(r: Reject) -> Self {
        FillError::Reject(r)
    }
}

impl From<Error> for FillError {
    fn from(e: Error) -> Self {
        match e {
            Error::StaleCatalog | Error::UnknownTable { .. } => FillError::Stale,
            e => FillError::Reject(e.into()),
        }
    }
}

fn fill(
    store: &OnlineStore,
    p: &Prepared,
    ents: &Entities,
    now_ns: i64,
) -> Result<Vec<f32>, FillError> {
    let (n, d) = (ents.n, p.width);
    let mut out = vec![f32::NAN; n * d];
    let mut scratch = Vec::new();
    for part in &p.parts {
        if let Prep::Encoded {
            spine,
            rows,
            column,
            ttl_ns,
            encoder,
            slots,
        } = part
        {
            let values = ents.values(spine, rows.table())?;
            let keys = Keys::Values {
                arity: spine.len(),
                values: &values,
            };
            let w = encoder.width();
            super::derived::encode_rows(
                store,
                rows,
                &keys,
                column,
                *ttl_ns,
                now_ns,
                encoder,
                &mut scratch,
            )?;
            for r in 0..n {
                for &(slot, q) in slots {
                    out[r * d + q] = scratch[r * w + slot];
                }
            }
            continue;
        }
        let (spine, positions, table) = match part {
            Prep::Rows {
                spine,
                positions,
                plan,
            } => (spine, positions, &plan.read.tables[0].name),
            Prep::Agg {
                spine,
                positions,
                table,
                ..
            } => (spine, positions, table),
            Prep::Encoded { .. } => continue,
        };
        let values = ents.values(spine, table)?;
        let keys = Keys::Values {
            arity: spine.len(),
            values: &values,
        };
        let w = positions.len();
        if p.parts.len() == 1 && positions.iter().enumerate().all(|(j, &q)| j == q) {
            // Every feature from one read, in order: fill the output itself.
            write_part(store, part, &keys, now_ns, &mut out)?;
            break;
        }
        scratch.clear();
        scratch.resize(n * w, 0.0);
        write_part(store, part, &keys, now_ns, &mut scratch)?;
        for r in 0..n {
            for (j, &q) in positions.iter().enumerate() {
                out[r * d + q] = scratch[r * w + j];
            }
        }
    }
    if !p.steps.is_empty() {
        crate::transform::apply(&mut out, d, &p.steps).map_err(Reject::from)?;
    }
    Ok(out)
}

fn write_part(
    store: &OnlineStore,
    part: &Prep,
    keys: &Keys,
    now_ns: i64,
    out: &mut [f32],
) -> Result<()> {
    match part {
        Prep::Rows { plan, .. } => store.read_matrix(plan, keys, now_ns, out, None),
        Prep::Agg { table, specs, .. } => {
            crate::agg::serve::matrix(store, table, keys, specs, now_ns, out)
        }
        Prep::Encoded { .. } => Ok(()), // filled by `fill` itself
    }
}
