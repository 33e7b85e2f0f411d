//! A request's features, read from the LMDB snapshot as typed Arrow columns with a
//! status and event time per (entity, selection), for JSON, Arrow and the Feast shape
//! (the float32 form: [`super::matrix`]; derived features: [`super::derived`]).
//!
//! Cost: one LMDB read transaction per selection; values are decoded straight from
//! the map. Nothing here allocates per feature per entity beyond the output itself.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array};
use arrow_schema::DataType;

use super::plan::{Selection, Source, View};
use super::text::{cell, float, simple, Text};
use super::Reject;
use crate::encode::columns::decode_column;
use crate::encode::row::RowView;
use crate::error::{Error, Result};
use crate::online::catalog::TableDef;
use crate::online::read::{RowsPlan, Status};
use crate::online::{KeyValue, Keys, OnlineStore};
use crate::transform::Step;

/// The request's entities: per key name, one value per entity.
pub struct Entities {
    pub n: usize,
    pub columns: HashMap<String, Vec<KeyValue>>,
}

impl Entities {
    /// The positional key values of the request keys `spine` (in table key order).
    pub fn values(&self, spine: &[String], table: &str) -> Result<Vec<KeyValue>, Reject> {
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
pub fn spine(store: &OnlineStore, sel: &Selection) -> Result<Vec<String>> {
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
    grouped(features, |f| view.source[f])
}

/// `features` grouped by what `of` maps each to, `(group, member)` (None: left out),
/// groups in the order they first appear: (group, [(member, response position)]).
pub fn grouped(
    features: &[usize],
    of: impl Fn(usize) -> Option<(usize, usize)>,
) -> Vec<(usize, Vec<(usize, usize)>)> {
    let mut out: Vec<(usize, Vec<(usize, usize)>)> = Vec::new();
    for (pos, &f) in features.iter().enumerate() {
        if let Some((g, m)) = of(f) {
            match out.iter_mut().find(|(h, _)| *h == g) {
                Some((_, v)) => v.push((m, pos)),
                None => out.push((g, vec![(m, pos)])),
            }
        }
    }
    out
}

/// The request keys that `features` need (in the view's key order): those of the
/// selections they read, of the raw columns of encoded ones, and all of the view's
/// when an on-demand feature (which may read any looked-up feature) is asked for.
pub fn required_keys(view: &View, features: &[usize]) -> Vec<String> {
    let mut sels: Vec<usize> = needed(view, features).iter().map(|(si, _)| *si).collect();
    sels.extend(
        features
            .iter()
            .filter_map(|&f| view.encoded[f].map(|(ei, _)| view.encoders[ei].source.0)),
    );
    if super::derived::wants_on_demand(view, features) {
        sels = (0..view.selections.len()).collect();
    }
    view.keys
        .iter()
        .filter(|k| {
            sels.iter()
                .any(|si| view.selections[*si].on.iter().any(|(s, _)| s == *k))
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
                let ((columns, text), status, event) = group_rows(
                    store,
                    &sel.rows,
                    &keys,
                    &cols,
                    *ttl_ns,
                    now_ns,
                    |live, def, ats| {
                        if json && ats.iter().all(|&at| simple(def.layout.types[at])) {
                            let steps: Vec<Option<&Vec<Step>>> = outs
                                .iter()
                                .map(|&(_, pos)| view.transforms.get(&view.features[features[pos]]))
                                .collect();
                            let text = json_text(live, def, ats, &steps);
                            let positions = outs.iter().map(|&(_, p)| p).collect();
                            return Ok((Vec::new(), Some(Text { positions, ..text })));
                        }
                        let mut columns = Vec::with_capacity(ats.len());
                        for (&at, &(_, pos)) in ats.iter().zip(&outs) {
                            columns.push((pos, decoded(def, at, live)?));
                        }
                        Ok((columns, None))
                    },
                )?;
                Part {
                    columns,
                    text,
                    status,
                    event,
                }
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

/// The rows of `keys` in the group table of `rows`, live ones only (None where missing or
/// expired by `ttl_ns`), handed to `f` with the table's definition and the positions
/// of `cols` in its schema; with each entity's status and row event time.
pub fn group_rows<R>(
    store: &OnlineStore,
    rows: &RowsPlan,
    keys: &Keys,
    cols: &[&String],
    ttl_ns: Option<i64>,
    now_ns: i64,
    mut f: impl FnMut(&[Option<RowView>], &TableDef, &[usize]) -> Result<R>,
) -> Result<(R, Vec<Status>, Vec<Option<i64>>)> {
    store.with_rows_prepared(rows, keys, now_ns, |rows, def| {
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
        Ok((f(&live, def, &ats)?, status, event))
    })
}

/// Column `at` of the live rows, decoded to its Arrow type.
pub fn decoded(def: &TableDef, at: usize, live: &[Option<RowView>]) -> Result<ArrayRef> {
    let dt = def.schema.field(at).data_type();
    decode_column(&def.layout, at, dt, live).map_err(|e| Error::CorruptStore {
        path: def.name.clone(),
        detail: e,
    })
}

/// Columns `ats` of the live rows as JSON text (transformed where `steps` says).
fn json_text(
    live: &[Option<RowView>],
    def: &TableDef,
    ats: &[usize],
    steps: &[Option<&Vec<Step>>],
) -> Text {
    let k = ats.len();
    let mut buf = String::with_capacity(live.len() * k * 12);
    let mut spans = Vec::with_capacity(live.len() * k);
    for row in live {
        for (j, &at) in ats.iter().enumerate() {
            let start = buf.len() as u32;
            match (steps[j], row) {
                (Some(chain), _) => {
                    let x = row.map_or(f32::NAN, |v| v.f32(at));
                    let y = chain.iter().fold(x, |x, s| s.apply(x));
                    float(&mut buf, y as f64, true);
                }
                (None, Some(v)) if !v.is_null(at) => cell(&mut buf, v, at, def.layout.types[at]),
                (None, _) => buf.push_str("null"),
            }
            spans.push((start, buf.len() as u32));
        }
    }
    Text {
        positions: Vec::new(),
        buf,
        spans,
    }
}

/// A column through its fitted steps, as float32 (what `get_feature_vectors` gives).
pub fn transformed(col: &ArrayRef, steps: &[Step], name: &str) -> Result<ArrayRef, Reject> {
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
