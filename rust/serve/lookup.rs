//! A request's features, read from the LMDB snapshot: typed Arrow columns with a
//! status and event time per (entity, selection) for JSON, Arrow and the Feast shape,
//! or a float32 matrix through prepared [`MatrixPlan`]s for models.
//!
//! Cost: one LMDB read transaction per selection (typed path) or per set of
//! selections keyed by the same request columns (matrix path: one descent per entity
//! for all of them, see [`crate::online::read`]); values are decoded straight from the
//! map. Nothing here allocates per feature per entity beyond the output itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, ArrayRef, Float32Array};
use arrow_schema::DataType;

use super::plan::{Selection, Source, View};
use super::text::{cell, float, simple, Text};
use super::Reject;
use crate::encode::columns::decode_column;
use crate::encode::row::RowView;
use crate::error::{Error, Result};
use crate::online::read::Status;
use crate::online::{FeatureRef, KeyValue, Keys, MatrixPlan, OnlineStore};
use crate::transform::Step;

/// The request's entities: per key name, one value per entity.
pub struct Entities {
    pub n: usize,
    pub columns: HashMap<String, Vec<KeyValue>>,
}

impl Entities {
    /// The positional key values of the request keys `spine` (in table key order).
    fn values(&self, spine: &[String], table: &str) -> Result<Vec<KeyValue>, Reject> {
        let mut cols = Vec::with_capacity(spine.len());
        for k in spine {
            cols.push(self.columns.get(k).ok_or_else(|| {
                Reject::bad(format!(
                    "entities lack key '{k}' (table '{table}' is keyed by it); send \
                     {{\"entities\": {{\"{k}\": [...]}}}}"
                ))
            })?);
        }
        let mut out = Vec::with_capacity(self.n * cols.len());
        for r in 0..self.n {
            for c in &cols {
                out.push(c[r].clone());
            }
        }
        Ok(out)
    }
}

/// The request key names that key `sel`'s online table, in its key order.
fn spine(store: &OnlineStore, sel: &Selection) -> Result<Vec<String>> {
    sel.spine_for(&store.table(&sel.table)?.key_names())
}

/// One selection's part of a typed lookup.
pub struct Part {
    /// Per requested output of this selection: (position in the response, values).
    pub columns: Vec<(usize, ArrayRef)>,
    /// Or, for JSON, the values already as JSON text (see [`Text`]).
    pub text: Option<Text>,
    pub status: Vec<Status>,
    /// The row's event time (ns), None where missing or for aggregations.
    pub event: Vec<Option<i64>>,
}

/// The selections (and their outputs) that `features` (indices into the view's
/// features) need: (selection index, [(output index, response position)]).
pub fn needed(view: &View, features: &[usize]) -> Vec<(usize, Vec<(usize, usize)>)> {
    let mut out: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    for (pos, &f) in features.iter().enumerate() {
        if let Some((si, oi)) = view.source[f] {
            match out.iter_mut().find(|(s, _)| *s == si) {
                Some((_, v)) => v.push((oi, pos)),
                None => out.push((si, vec![(oi, pos)])),
            }
        }
    }
    out
}

/// The request keys that `features` need (in the view's key order).
pub fn required_keys(view: &View, features: &[usize]) -> Vec<String> {
    let sels = needed(view, features);
    view.keys
        .iter()
        .filter(|k| {
            sels.iter()
                .any(|(si, _)| view.selections[*si].on.iter().any(|(s, _)| s == *k))
        })
        .cloned()
        .collect()
}

/// Typed lookup of every requested feature (see [`needed`]).
///
/// With `json`, values of the simple types come back as JSON text ([`Text`]).
pub fn typed(
    store: &OnlineStore,
    view: &View,
    features: &[usize],
    ents: &Entities,
    now_ns: i64,
    json: bool,
) -> Result<Vec<Part>, Reject> {
    let mut parts = Vec::new();
    for (si, outs) in needed(view, features) {
        let sel = &view.selections[si];
        let spine = spine(store, sel)?;
        let values = ents.values(&spine, &sel.table)?;
        let keys = Keys::Values {
            arity: spine.len(),
            values: &values,
        };
        let mut part = match &sel.source {
            Source::Group { columns, ttl_ns } => {
                let cols: Vec<&String> = outs.iter().map(|&(oi, _)| &columns[oi]).collect();
                store.with_rows(&sel.table, &keys, now_ns, |rows, def| {
                    let mut status = Vec::with_capacity(rows.len());
                    let mut event = Vec::with_capacity(rows.len());
                    let live: Vec<Option<RowView>> = rows
                        .iter()
                        .map(|r| match r {
                            None => {
                                status.push(Status::Missing);
                                event.push(None);
                                None
                            }
                            Some(v) => {
                                let e = v.stamp().event;
                                event.push(Some(e));
                                if ttl_ns.is_some_and(|t| e < now_ns.saturating_sub(t)) {
                                    status.push(Status::Expired);
                                    None
                                } else {
                                    status.push(Status::Found);
                                    Some(*v)
                                }
                            }
                        })
                        .collect();
                    let ats = cols
                        .iter()
                        .map(|&c| {
                            def.schema.index_of(c).map_err(|_| Error::UnknownFeature {
                                table: format!("table '{}'", def.name),
                                feature: c.clone(),
                                found: def.feature_names(),
                            })
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    if json && ats.iter().all(|&at| simple(def.layout.types[at])) {
                        let steps: Vec<Option<&Vec<Step>>> = outs
                            .iter()
                            .map(|&(_, pos)| view.transforms.get(&view.features[features[pos]]))
                            .collect();
                        let k = ats.len();
                        let mut buf = String::with_capacity(live.len() * k * 12);
                        let mut spans = Vec::with_capacity(live.len() * k);
                        for row in &live {
                            for (j, &at) in ats.iter().enumerate() {
                                let start = buf.len() as u32;
                                match (steps[j], row) {
                                    (Some(chain), _) => {
                                        let x = row.map_or(f32::NAN, |v| v.f32(at));
                                        let y = chain.iter().fold(x, |x, s| s.apply(x));
                                        float(&mut buf, y as f64, true);
                                    }
                                    (None, Some(v)) if !v.is_null(at) => {
                                        cell(&mut buf, v, at, def.layout.types[at])
                                    }
                                    (None, _) => buf.push_str("null"),
                                }
                                spans.push((start, buf.len() as u32));
                            }
                        }
                        let positions = outs.iter().map(|&(_, p)| p).collect();
                        return Ok(Part {
                            columns: Vec::new(),
                            text: Some(Text {
                                positions,
                                buf,
                                spans,
                            }),
                            status,
                            event,
                        });
                    }
                    let mut columns = Vec::with_capacity(cols.len());
                    for (&at, &(_, pos)) in ats.iter().zip(&outs) {
                        let dt = def.schema.field(at).data_type();
                        let a = decode_column(&def.layout, at, dt, &live).map_err(|e| {
                            Error::CorruptStore {
                                path: def.name.clone(),
                                detail: e,
                            }
                        })?;
                        columns.push((pos, a));
                    }
                    Ok(Part {
                        columns,
                        text: None,
                        status,
                        event,
                    })
                })?
            }
            Source::Aggregation { specs } => {
                let specs: Vec<_> = outs.iter().map(|&(oi, _)| specs[oi]).collect();
                let w = specs.len();
                let mut out = vec![0f32; ents.n * w];
                crate::agg::serve::matrix(store, &sel.table, &keys, &specs, now_ns, &mut out)?;
                let columns = outs
                    .iter()
                    .enumerate()
                    .map(|(j, &(_, pos))| {
                        let col: Float32Array = (0..ents.n).map(|r| Some(out[r * w + j])).collect();
                        (pos, Arc::new(col) as ArrayRef)
                    })
                    .collect();
                Part {
                    columns,
                    text: None,
                    status: vec![Status::Found; ents.n],
                    event: vec![None; ents.n],
                }
            }
        };
        for (pos, col) in &mut part.columns {
            if let Some(steps) = view.transforms.get(&view.features[features[*pos]]) {
                *col = transformed(col, steps, &view.features[features[*pos]])?;
            }
        }
        parts.push(part);
    }
    Ok(parts)
}

/// A column through its fitted steps, as float32 (what `get_feature_vectors` gives).
fn transformed(col: &ArrayRef, steps: &[Step], name: &str) -> Result<ArrayRef, Reject> {
    let f = arrow_cast::cast(col, &DataType::Float32).map_err(|e| {
        Reject::bad(format!(
            "feature '{name}' has fitted transforms but is not numeric ({e})"
        ))
    })?;
    let f = f
        .as_any()
        .downcast_ref::<Float32Array>()
        .expect("cast to Float32");
    let mut x: Vec<f32> = (0..f.len())
        .map(|i| if f.is_null(i) { f32::NAN } else { f.value(i) })
        .collect();
    let with: Vec<(usize, Step)> = steps.iter().map(|s| (0, s.clone())).collect();
    crate::transform::apply(&mut x, 1, &with)?;
    Ok(Arc::new(Float32Array::from(x)))
}

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
}

/// Prepared matrix reads by (view, version, requested features), per plan.
#[derive(Default)]
pub struct MatrixCache(Mutex<HashMap<MatrixKey, Arc<Prepared>>>);

/// (view, version, requested features).
type MatrixKey = (String, i64, Vec<usize>);

/// Selections keyed by the same request columns: (those columns, tables, features,
/// response positions).
struct KeySet {
    spine: Vec<String>,
    tables: Vec<String>,
    refs: Vec<FeatureRef>,
    positions: Vec<usize>,
}

impl MatrixCache {
    fn get(&self, store: &OnlineStore, view: &View, features: &[usize]) -> Result<Arc<Prepared>> {
        let key = (view.name.clone(), view.version, features.to_vec());
        if let Some(p) = self.0.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(Arc::clone(p));
        }
        let p = Arc::new(prepare(store, view, features)?);
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, Arc::clone(&p));
        Ok(p)
    }

    fn forget(&self, view: &View, features: &[usize]) {
        let key = (view.name.clone(), view.version, features.to_vec());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }
}

fn spine_for_env(env: &crate::online::Env, sel: &Selection) -> Result<Vec<String>> {
    sel.spine_for(&env.table(&sel.table)?.key_names())
}

fn prepare(store: &OnlineStore, view: &View, features: &[usize]) -> Result<Prepared> {
    let env = store.env()?;
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
    let steps = features
        .iter()
        .enumerate()
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
    let mut attempts = 0;
    loop {
        let prepared = cache.get(store, view, features)?;
        match fill(store, &prepared, ents, now_ns) {
            Err(FillError::Stale) if attempts < 3 => {
                cache.forget(view, features);
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
    }
}
