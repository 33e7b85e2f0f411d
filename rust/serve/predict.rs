//! `POST /v1/predict/{model}`: the model's input matrix read as `/v1/features` reads a
//! float32 matrix (with the transforms fitted on the model's training snapshot), then
//! one ONNX Runtime call, all in Rust.
//!
//! The model runs through [`super::onnx`]: the `onnxruntime` wheel's shared library
//! (its path comes with the plan), as `fs.predictor(model).predict` runs it, so the
//! predictions are the same floats. A session is built per model version on first use,
//! after the file's SHA-256 matches the registry's, and kept with the plan; [`preload`]
//! builds them when a plan is installed, so first requests do not pay for it.
//!
//! A view's categorical encodings and on-demand features are part of the input as
//! in `/v1/features` (the body's `"request"` fields feed the on-demand functions);
//! a model's raw `request_features` are read from the same `"request"` object and
//! appended as float32, converted as the Python predictor converts them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{reply, Resp};
use super::lookup;
use super::onnx;
use super::plan::Model;
use super::respond::{entities, now};
use super::{Loaded, Reject, State};

/// Sessions by (model, version), per plan.
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<(String, i64), Shared>>);

/// A model and its sessions (one per request running it at the same time).
type Shared = Arc<onnx::Model>;

fn session(loaded: &Loaded, m: &Model) -> Result<Shared, Reject> {
    let key = (m.name.clone(), m.version);
    if let Some(s) = loaded
        .sessions
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(&key)
    {
        return Ok(Arc::clone(s));
    }
    let lib = loaded.plan.onnxruntime.as_deref().ok_or_else(|| {
        Reject::new(
            501,
            "no ONNX Runtime library was found (install the onnxruntime wheel)",
        )
    })?;
    let bytes = std::fs::read(&m.path).map_err(|e| {
        Reject::new(
            500,
            format!(
                "model '{}' v{}: cannot read {} ({e})",
                m.name, m.version, m.path
            ),
        )
    })?;
    let digest: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if digest != m.sha256 {
        return Err(Reject::new(
            500,
            format!(
                "model '{}' v{}: {} is corrupt (its SHA-256 differs from the registered one); \
                 register the model again",
                m.name, m.version, m.path
            ),
        ));
    }
    let s = onnx::Model::load(lib, &bytes, 1)
        .map_err(|e| Reject::new(500, format!("model '{}' v{}: {e}", m.name, m.version)))?;
    let s = Arc::new(s);
    loaded
        .sessions
        .0
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(key, Arc::clone(&s));
    Ok(s)
}

/// Builds the session of every model the plan can serve, on a thread of its own, so
/// the first request for a model does not wait for its file's SHA-256 and its
/// session (tens of milliseconds). A model that fails to load is left to its first
/// request, which reports why.
pub fn preload(loaded: &Arc<Loaded>) -> Option<std::thread::JoinHandle<()>> {
    let servable = loaded.plan.models.iter().any(|m| m.unservable.is_none());
    if !servable || loaded.plan.onnxruntime.is_none() {
        return None;
    }
    let loaded = Arc::clone(loaded);
    std::thread::Builder::new()
        .name("pitstop-serve-models".into())
        .spawn(move || {
            for m in loaded.plan.models.iter().filter(|m| m.unservable.is_none()) {
                let _ = session(&loaded, m);
            }
        })
        .ok()
}

/// `{model}` or `{model}/v{n}`.
fn model_ref<'a>(loaded: &'a Loaded, tail: &str) -> Result<&'a Model, Reject> {
    let (name, version) = super::http::name_version(tail);
    loaded.plan.model(name, version).ok_or_else(|| {
        let mut known: Vec<String> = loaded
            .plan
            .models
            .iter()
            .map(|m| format!("{} v{}", m.name, m.version))
            .collect();
        known.sort();
        Reject::new(
            404,
            format!("no model '{tail}' (models: {})", known.join(", ")),
        )
    })
}

pub fn predict(state: &State, tail: &str, body: &Value) -> Result<Resp, Reject> {
    let loaded = state.loaded();
    let m = model_ref(&loaded, tail)?;
    if let Some(why) = &m.unservable {
        return Err(Reject::new(
            501,
            format!(
                "model '{}' v{} cannot be served here: {why}; use fs.predictor(...).predict",
                m.name, m.version
            ),
        ));
    }
    let view = loaded
        .plan
        .views
        .iter()
        .find(|v| v.name == m.input_view)
        .ok_or_else(|| {
            Reject::new(
                503,
                format!("model '{}': its input plan is missing", m.name),
            )
        })?;
    let Value::Object(map) = body else {
        return Err(Reject::bad(
            "the body must be a JSON object like {\"entities\": {\"user_id\": [1, 2]}}",
        ));
    };
    for k in map.keys() {
        if !matches!(k.as_str(), "entities" | "now" | "request") {
            return Err(Reject::bad(format!(
                "unknown field '{k}'; the body takes \"entities\", \"now\" and \"request\" \
                 (fields of on-demand features)"
            )));
        }
    }
    let features: Vec<usize> = (0..view.features.len()).collect();
    let keys = lookup::required_keys(view, &features);
    let ents_v = map
        .get("entities")
        .ok_or_else(|| Reject::bad("the body lacks \"entities\", e.g. {\"user_id\": [1, 2]}"))?;
    let ents = entities(ents_v, &keys, state.cfg.max_batch)?;
    let at = now(map.get("now"))?;
    let request = super::respond::request_fields(map.get("request"))?;
    let d = super::derived::Derive {
        cache: &loaded.cache,
        handler: state.on_demand.as_ref(),
        request: request.as_deref(),
    };
    let x = super::derived::matrix(&state.store, view, &features, &ents, at, &d)?;
    let (n, d) = (ents.n, features.len());
    let (x, d) = with_request(m, view, x, n, d, map.get("request"))?;
    let logging = state.log.is_some();
    let logged_x = if logging { x.clone() } else { Vec::new() };
    let y = if n == 0 {
        Vec::new()
    } else {
        session(&loaded, m)?
            .run(&x, n, d)
            .map_err(|e| Reject::new(500, format!("model '{}': {e}", m.name)))?
    };
    if logging && n > 0 {
        state.log(|| super::LogEntry {
            model: m.name.clone(),
            version: m.version,
            entities: ents_v.to_string(),
            x: logged_x,
            n,
            d,
            y: y.clone(),
        });
    }
    let mut out = String::with_capacity(64 + 16 * n);
    out.push_str("{\"model\":");
    super::respond::push_str(&mut out, &m.name);
    out.push_str(&format!(",\"version\":{},\"predictions\":[", m.version));
    for (i, v) in y.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        super::text::float(&mut out, *v as f64, true); // null when not finite
    }
    out.push_str("]}");
    Ok(reply(200, "application/json", out))
}

/// `x` (rows × `d`) with the model's raw request features appended to each row: the
/// body's `"request"` fields, one value per entity (a plain value for one entity), as
/// the Python predictor converts them to float32 (a column of integers straight from
/// int64, anything else through float64; true/false 1/0; null NaN).
fn with_request(
    m: &Model,
    view: &super::plan::View,
    x: Vec<f32>,
    n: usize,
    d: usize,
    request: Option<&Value>,
) -> Result<(Vec<f32>, usize), Reject> {
    let names = &m.request_features;
    // For the error messages only.
    let listed = || {
        names
            .iter()
            .map(|f| format!("'{f}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let given = request.filter(|r| !r.is_null());
    if names.is_empty() {
        if given.is_some() && view.on_demand.is_none() {
            return Err(Reject::bad(format!(
                "model '{}' takes no request features; leave \"request\" out",
                m.name
            )));
        }
        return Ok((x, d));
    }
    let Some(Value::Object(req)) = given else {
        return Err(Reject::bad(format!(
            "model '{}' needs request features [{}]: send \"request\": {{\"{}\": [...]}} \
             with one value per entity",
            m.name,
            listed(),
            names[0]
        )));
    };
    let mut cols = Vec::with_capacity(names.len());
    for name in names {
        let v = req.get(name).ok_or_else(|| {
            Reject::bad(format!(
                "\"request\" lacks '{name}' (model '{}' takes request features [{}])",
                m.name,
                listed()
            ))
        })?;
        let one = std::slice::from_ref(v);
        let values = match v {
            Value::Array(a) => a.as_slice(),
            _ if n == 1 => one,
            _ => &[],
        };
        let col = request_column(values).ok_or_else(|| {
            Reject::bad(format!(
                "request feature '{name}' must be a list of numbers (true/false and null \
                 allowed), one per entity; got {v}"
            ))
        })?;
        if col.len() != n {
            return Err(Reject::bad(format!(
                "request feature '{name}' has {} values for {n} entities",
                col.len()
            )));
        }
        cols.push(col);
    }
    let w = d + cols.len();
    let mut out = vec![0f32; n * w];
    for r in 0..n {
        out[r * w..r * w + d].copy_from_slice(&x[r * d..(r + 1) * d]);
        for (j, c) in cols.iter().enumerate() {
            out[r * w + d + j] = c[r];
        }
    }
    Ok((out, w))
}

/// One request column as float32, the way a pyarrow column of these JSON values
/// reaches float32 in numpy: integers alone convert from int64 directly; with a
/// float or a null among them, through float64 (pyarrow makes them doubles, or
/// numpy turns an integer column with nulls into float64); booleans are 1 and 0
/// (null NaN). None for anything else (strings, objects, booleans mixed with numbers).
fn request_column(values: &[Value]) -> Option<Vec<f32>> {
    if values.iter().any(Value::is_boolean) {
        return values
            .iter()
            .map(|v| match v {
                Value::Bool(b) => Some(f32::from(*b)),
                Value::Null => Some(f32::NAN),
                _ => None,
            })
            .collect();
    }
    let ints = values.iter().all(|v| v.is_i64() || v.is_u64());
    values
        .iter()
        .map(|v| match v {
            Value::Null => Some(f32::NAN),
            Value::Number(x) if ints => x
                .as_i64()
                .map(|i| i as f32)
                .or_else(|| x.as_u64().map(|u| u as f32)),
            Value::Number(x) => x.as_f64().map(|f| f as f32),
            _ => None,
        })
        .collect()
}
