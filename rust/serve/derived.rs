//! Features derived from looked-up ones, served like any other feature:
//!
//! - **Categorical encodings** (`label_encoder`, `one_hot`, fitted on a training
//!   split): the raw column is read as a group column is (missing, expired and null
//!   alike are a missing value) and encoded in Rust by [`crate::transform::categories`],
//!   the function training rows and the Python predictor go through.
//! - **On-demand features** (the view's Python functions): the view's features before
//!   the first on-demand one are looked up as the float32 a model reads, before
//!   transforms ([`prepared::matrix_of`] `raw`), and handed with the request's
//!   `"request"` fields (JSON text) to the handler Python started the server with
//!   (`python/pitstop/serve.py`, `OnDemandHandler`), which runs the functions as
//!   `fs.get_feature_vectors` does and returns their outputs in their declared types;
//!   the fitted transforms then apply here. Training computes the same functions
//!   from the same float32 inputs, so a model sees the same bits.
//!
//! The handler takes the GIL, so requests that need it run on tokio's blocking
//! threads (`http.rs`) and wait for each other; other views never call Python.
//!
//! Cost: encodings add one hash lookup per entity and category column; on-demand
//! features add the lookup of their inputs, one Python call (tens of µs plus the
//! functions themselves) and O(entities × outputs) conversions.

use std::sync::Arc;

use arrow_array::{Array, ArrayRef, Float32Array};
use arrow_schema::DataType;

use super::lookup::{self, decoded, group_rows, Entities, Part};
use super::matrix::{self as prepared, MatrixCache};
use super::plan::{Source, View};
use super::Reject;
use crate::online::read::{RowsPlan, Status};
use crate::online::{Keys, OnlineStore};
use crate::transform::categories::Encoder;

/// The on-demand handler: (view key `name@version`, the input matrix row-major,
/// rows, columns, the request's `"request"` object as JSON) -> the on-demand outputs
/// in the plan's order, one value per row; a refusal (bad request fields, a function
/// that fails) as a [`Reject`].
pub type OnDemandFn =
    Arc<dyn Fn(&str, &[f32], usize, usize, &str) -> Result<Vec<ArrayRef>, Reject> + Send + Sync>;

/// What deriving features needs besides the store: the prepared reads, the handler
/// (None: the server was started without one) and the request's fields.
pub struct Derive<'a> {
    pub cache: &'a MatrixCache,
    pub handler: Option<&'a OnDemandFn>,
    pub request: Option<&'a str>,
}

/// Whether `features` include an on-demand one.
pub fn wants_on_demand(view: &View, features: &[usize]) -> bool {
    view.on_demand
        .as_ref()
        .is_some_and(|od| features.iter().any(|&f| f >= od.first))
}

/// Whether any of `features` is derived (encoded or on-demand).
pub fn any(view: &View, features: &[usize]) -> bool {
    wants_on_demand(view, features) || features.iter().any(|&f| view.encoded[f].is_some())
}

/// The on-demand outputs for input matrix `x` (rows × `od.first`).
fn outputs(view: &View, x: &[f32], n: usize, d: &Derive) -> Result<Vec<ArrayRef>, Reject> {
    let Some(od) = &view.on_demand else {
        return Ok(Vec::new());
    };
    let handler = d.handler.ok_or_else(|| {
        Reject::new(
            501,
            format!(
                "feature view '{}': on-demand features {:?} need the server started from \
                 Python (pitstop serve / fs.serve)",
                view.name, od.outputs
            ),
        )
    })?;
    let request = d.request.ok_or_else(|| {
        Reject::bad(format!(
            "feature view '{}' computes {:?} from request fields; send them as \
             \"request\": {{{}}} (one value per entity)",
            view.name,
            od.outputs,
            od.request
                .iter()
                .map(|r| format!("\"{r}\": [...]"))
                .collect::<Vec<_>>()
                .join(", ")
        ))
    })?;
    let key = format!("{}@{}", view.name, view.version);
    let outs = handler(&key, x, n, od.first, request)?;
    if outs.len() != od.outputs.len() || outs.iter().any(|a| a.len() != n) {
        return Err(Reject::new(
            500,
            format!(
                "the on-demand handler of '{}' returned {} columns for {} outputs of {n} rows",
                view.name,
                outs.len(),
                od.outputs.len()
            ),
        ));
    }
    Ok(outs)
}

/// Per encoder among `features`, the (slot of its output, response position) pairs
/// asked for, in the order the encoders first appear.
pub fn encoded_slots(view: &View, features: &[usize]) -> Vec<(usize, Vec<(usize, usize)>)> {
    lookup::grouped(features, |f| view.encoded[f])
}

/// The categorical `column` of the table of `rows` for `keys`, encoded into `m` (resized to rows ×
/// `encoder.width()`, row-major), as a group column is read (missing, expired and null
/// alike are a missing value); each row's status and event time.
#[allow(clippy::too_many_arguments)]
pub fn encode_rows(
    store: &OnlineStore,
    rows: &RowsPlan,
    keys: &Keys,
    column: &String,
    ttl_ns: Option<i64>,
    now_ns: i64,
    encoder: &Encoder,
    m: &mut Vec<f32>,
) -> crate::error::Result<(Vec<Status>, Vec<Option<i64>>)> {
    let w = encoder.width();
    m.clear();
    m.resize(keys.len() * w, 0.0);
    let ((), status, event) = group_rows(
        store,
        rows,
        keys,
        &[column],
        ttl_ns,
        now_ns,
        |live, def, ats| {
            let a = decoded(def, ats[0], live)?;
            encoder.encode(a.as_ref(), column, m, w, 0)
        },
    )?;
    Ok((status, event))
}

/// Typed parts (see [`lookup::typed`]) of the encoded and on-demand features among
/// `features`.
pub fn typed_parts(
    store: &OnlineStore,
    view: &View,
    features: &[usize],
    ents: &Entities,
    now_ns: i64,
    d: &Derive,
) -> Result<Vec<Part>, Reject> {
    let n = ents.n;
    let mut parts = Vec::new();
    let mut m = Vec::new();
    for (ei, slots) in encoded_slots(view, features) {
        let e = &view.encoders[ei];
        let sel = &view.selections[e.source.0];
        let Source::Group { columns, ttl_ns } = &sel.source else {
            continue; // the plan only lets group columns be encoded
        };
        let spine = lookup::spine(store, sel)?;
        let values = ents.values(&spine, &sel.table)?;
        let keys = Keys::Values {
            arity: spine.len(),
            values: &values,
        };
        let w = e.encoder.width();
        let column = &columns[e.source.1];
        let (status, event) = encode_rows(
            store, &sel.rows, &keys, column, *ttl_ns, now_ns, &e.encoder, &mut m,
        )?;
        let columns = slots
            .iter()
            .map(|&(slot, pos)| {
                let col: Float32Array = (0..n).map(|r| Some(m[r * w + slot])).collect();
                (pos, Arc::new(col) as ArrayRef)
            })
            .collect();
        parts.push(Part {
            columns,
            text: None,
            status,
            event,
        });
    }
    if let Some(od) = view
        .on_demand
        .as_ref()
        .filter(|_| wants_on_demand(view, features))
    {
        let inputs: Vec<usize> = (0..od.first).collect();
        let x = prepared::matrix_of(store, d.cache, view, &inputs, ents, now_ns, true)?;
        let outs = outputs(view, &x, n, d)?;
        let mut columns = Vec::new();
        for (pos, &f) in features.iter().enumerate().filter(|(_, &f)| f >= od.first) {
            let name = &view.features[f];
            let col = match view.transforms.get(name) {
                Some(steps) => lookup::transformed(&outs[f - od.first], steps, name)?,
                None => Arc::clone(&outs[f - od.first]),
            };
            columns.push((pos, col));
        }
        parts.push(Part {
            columns,
            text: None,
            status: vec![Status::Found; n],
            event: vec![None; n],
        });
    }
    Ok(parts)
}

/// The float32 matrix of `features` (see [`prepared::matrix`]), on-demand ones
/// included: the view's whole input is built (lookups, outputs), transformed as a
/// model's input is, and the requested columns taken from it.
pub fn matrix(
    store: &OnlineStore,
    view: &View,
    features: &[usize],
    ents: &Entities,
    now_ns: i64,
    d: &Derive,
) -> Result<Vec<f32>, Reject> {
    let Some(od) = view
        .on_demand
        .as_ref()
        .filter(|_| wants_on_demand(view, features))
    else {
        return prepared::matrix(store, d.cache, view, features, ents, now_ns);
    };
    let (n, first, width) = (ents.n, od.first, view.features.len());
    let inputs: Vec<usize> = (0..first).collect();
    let x = prepared::matrix_of(store, d.cache, view, &inputs, ents, now_ns, true)?;
    let outs = outputs(view, &x, n, d)?;
    let mut full = vec![f32::NAN; n * width];
    for r in 0..n {
        full[r * width..r * width + first].copy_from_slice(&x[r * first..(r + 1) * first]);
    }
    for (j, a) in outs.iter().enumerate() {
        let f = arrow_cast::cast(a, &DataType::Float32)
            .map_err(|e| Reject::new(500, format!("on-demand feature '{}': {e}", od.outputs[j])))?;
        let f = f
            .as_any()
            .downcast_ref::<Float32Array>()
            .expect("cast to Float32");
        for r in 0..n {
            full[r * width + first + j] = if f.is_null(r) { f32::NAN } else { f.value(r) };
        }
    }
    let steps: Vec<_> = view
        .features
        .iter()
        .enumerate()
        .flat_map(|(j, name)| {
            view.transforms
                .get(name)
                .into_iter()
                .flatten()
                .map(move |s| (j, s.clone()))
        })
        .collect();
    crate::transform::apply(&mut full, width, &steps)?;
    let k = features.len();
    let mut out = vec![0f32; n * k];
    for r in 0..n {
        for (j, &f) in features.iter().enumerate() {
            out[r * k + j] = full[r * width + f];
        }
    }
    Ok(out)
}
