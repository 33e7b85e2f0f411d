//! The serving plan: what the server knows of the registry, resolved by Python
//! (`python/pitstop/serve.py`) and handed over as JSON at start and on every registry
//! change. Rust never reads SQLite: the registry's rules (latest versions, fitted
//! transforms, on-demand functions, checksums) stay in one place, and the request
//! path only sees this plain description.

use std::collections::HashMap;

use serde_json::Value;

use crate::agg::serve::lags_ns;
use crate::agg::{Closed, Op};
use crate::error::{Error, Result};
use crate::online::read::RowsPlan;
use crate::transform::categories::{Categories, Encoder};
use crate::transform::Step;

/// What a selection reads: the rows of a feature group, or an aggregation's state.
#[derive(Debug)]
pub enum Source {
    /// Feature group columns `columns` (stored names), rows older than `ttl_ns` expired.
    Group {
        columns: Vec<String>,
        ttl_ns: Option<i64>,
    },
    /// One aggregation spec per output: (op, value column, lag range).
    Aggregation {
        specs: Vec<(Op, Option<usize>, (i64, i64))>,
    },
}

/// One feature group or aggregation a view reads.
#[derive(Debug)]
pub struct Selection {
    /// The online table (`<group>__v<N>` and the like; Python names it).
    pub table: String,
    /// The table resolved once for reads of whole rows (again after it is dropped or
    /// re-created), so a request does not look its definition up.
    pub rows: RowsPlan,
    /// (request key name, table key column) pairs.
    pub on: Vec<(String, String)>,
    /// Output names, one per column / spec.
    pub outputs: Vec<String>,
    pub source: Source,
}

/// One feature view version.
#[derive(Debug)]
pub struct View {
    pub name: String,
    pub version: i64,
    /// The request's key names.
    pub keys: Vec<String>,
    /// Every output feature, in the view's (the model's) order.
    pub features: Vec<String>,
    /// feature -> its Arrow type as text, for `/v1/registry`.
    pub types: HashMap<String, String>,
    pub selections: Vec<Selection>,
    /// Features the server cannot compute (on-demand Python functions, categorical
    /// encoders), with the reason.
    pub python_only: HashMap<String, String>,
    /// Fitted numeric transforms per feature, applied in Rust ([`crate::transform`]).
    pub transforms: HashMap<String, Vec<Step>>,
    /// Per feature (by its index in `features`): (selection, output) that reads it.
    pub source: Vec<Option<(usize, usize)>>,
    /// Feature name -> its index in `features`.
    pub index: HashMap<String, usize>,
    /// Categorical features encoded in Rust (`label_encoder`, `one_hot`).
    pub encoders: Vec<Encoded>,
    /// Per feature: (encoder, output slot) when it is an encoded column.
    pub encoded: Vec<Option<(usize, usize)>>,
    /// The on-demand features, computed by Python functions (see [`OnDemand`]).
    pub on_demand: Option<OnDemand>,
}

/// A categorical feature and its fitted encoder: the raw column is read as a group
/// column is, then encoded into `names` (the view's features it becomes).
#[derive(Debug)]
pub struct Encoded {
    /// (selection, output) that reads the raw column.
    pub source: (usize, usize),
    pub encoder: Encoder,
    pub names: Vec<String>,
}

/// A view's on-demand features: the view's features `0..first` are their inputs (the
/// looked-up ones, as the float32 a model reads, before transforms), `outputs` (the
/// features from `first` on) come back from the on-demand handler (Python) given the
/// request's `request` fields.
#[derive(Debug)]
pub struct OnDemand {
    pub first: usize,
    pub outputs: Vec<String>,
    /// The request fields the functions read.
    pub request: Vec<String>,
}

/// A registered model the server can run.
#[derive(Debug)]
pub struct Model {
    pub name: String,
    pub version: i64,
    pub view: String,
    pub view_version: i64,
    pub path: String,
    pub sha256: String,
    pub inputs: Vec<String>,
    /// The hidden view (`model:<name>:v<N>`) holding its input plan: the view's
    /// features with the transforms fitted on the model's snapshot.
    pub input_view: String,
    /// Raw request columns the model takes after its view's features (the body's
    /// `"request"` fields, as float32).
    pub request_features: Vec<String>,
    /// Why the server cannot run it (features only Python computes, ...).
    pub unservable: Option<String>,
}

/// The whole plan: views by (name, version), the latest version of each name.
#[derive(Debug, Default)]
pub struct Plan {
    pub views: Vec<View>,
    pub latest: HashMap<String, i64>,
    pub models: Vec<Model>,
    /// The ONNX Runtime shared library of the onnxruntime wheel, if installed.
    pub onnxruntime: Option<String>,
    /// What Python could not resolve (a view whose group is gone, ...): name -> why.
    pub broken: HashMap<String, String>,
    /// Whether any view has on-demand features (else no request calls Python).
    pub on_demand: bool,
}

fn bad(what: &str) -> Error {
    Error::InvalidArgument(format!("serving plan: {what}"))
}

fn s(v: &Value, k: &str) -> Result<String> {
    v.get(k)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| bad(&format!("'{k}' must be a string")))
}

fn i(v: &Value, k: &str) -> Result<i64> {
    v.get(k)
        .and_then(Value::as_i64)
        .ok_or_else(|| bad(&format!("'{k}' must be an integer")))
}

fn strings(v: &Value, k: &str) -> Result<Vec<String>> {
    v.get(k)
        .and_then(Value::as_array)
        .ok_or_else(|| bad(&format!("'{k}' must be a list")))?
        .iter()
        .map(|x| {
            x.as_str()
                .map(str::to_string)
                .ok_or_else(|| bad(&format!("'{k}' must hold strings")))
        })
        .collect()
}

fn string_map(v: &Value, k: &str) -> Result<HashMap<String, String>> {
    match v.get(k) {
        None | Some(Value::Null) => Ok(HashMap::new()),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(a, b)| {
                Ok((
                    a.clone(),
                    b.as_str()
                        .ok_or_else(|| bad(&format!("'{k}' must map to strings")))?
                        .to_string(),
                ))
            })
            .collect(),
        _ => Err(bad(&format!("'{k}' must be an object"))),
    }
}

fn selection(v: &Value) -> Result<Selection> {
    let on = v
        .get("on")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'on' must be a list of [spine, key] pairs"))?
        .iter()
        .map(|p| match p.as_array().map(Vec::as_slice) {
            Some([a, b]) => match (a.as_str(), b.as_str()) {
                (Some(a), Some(b)) => Ok((a.to_string(), b.to_string())),
                _ => Err(bad("'on' pairs must be strings")),
            },
            _ => Err(bad("'on' must be a list of [spine, key] pairs")),
        })
        .collect::<Result<Vec<_>>>()?;
    let outputs = strings(v, "outputs")?;
    let source = match s(v, "kind")?.as_str() {
        "group" => Source::Group {
            columns: strings(v, "columns")?,
            ttl_ns: v.get("ttl_ns").and_then(Value::as_i64),
        },
        "aggregation" => {
            let closed = match s(v, "closed")?.as_str() {
                "left" => Closed::Left,
                "right" => Closed::Right,
                _ => Closed::Both,
            };
            let specs = v
                .get("specs")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("'specs' must be a list"))?
                .iter()
                .map(|p| {
                    let p = p.as_array().ok_or_else(|| bad("a spec must be a list"))?;
                    let get = |j: usize| p.get(j).cloned().unwrap_or(Value::Null);
                    let k = get(3).as_u64().map(|k| k as usize);
                    let name = get(0);
                    let op = name
                        .as_str()
                        .and_then(|n| Op::parse(n, k))
                        .ok_or_else(|| bad(&format!("unknown aggregation op {name}")))?;
                    let col = get(1).as_u64().map(|c| c as usize);
                    Ok((op, col, lags_ns(get(2).as_i64(), closed)))
                })
                .collect::<Result<Vec<_>>>()?;
            Source::Aggregation { specs }
        }
        other => return Err(bad(&format!("unknown selection kind '{other}'"))),
    };
    let table = s(v, "table")?;
    Ok(Selection {
        rows: RowsPlan::new(&table),
        table,
        on,
        outputs,
        source,
    })
}

fn step(v: &Value) -> Result<Step> {
    let p = v
        .as_array()
        .ok_or_else(|| bad("a transform step is [kind, a, b, edges]"))?;
    let f = |j: usize| p.get(j).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let kind = p.first().and_then(Value::as_str).unwrap_or("");
    let step = match kind {
        "scale" => Step::Scale {
            center: f(1),
            scale: f(2),
        },
        "log1p" => Step::Log1p,
        "clip" => Step::Clip {
            lo: p
                .get(1)
                .and_then(Value::as_f64)
                .unwrap_or(f64::NEG_INFINITY),
            hi: p.get(2).and_then(Value::as_f64).unwrap_or(f64::INFINITY),
        },
        "bucketize" => Step::Bucketize {
            edges: p
                .get(3)
                .and_then(Value::as_array)
                .map(|e| e.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default(),
        },
        "fill_null" => Step::FillNull { value: f(1) },
        other => return Err(bad(&format!("unknown transform step '{other}'"))),
    };
    step.check()?;
    Ok(step)
}

fn view(v: &Value) -> Result<View> {
    let mut transforms = HashMap::new();
    if let Some(Value::Object(m)) = v.get("transforms") {
        for (f, chain) in m {
            let steps = chain
                .as_array()
                .ok_or_else(|| bad("transforms map features to lists of steps"))?
                .iter()
                .map(step)
                .collect::<Result<Vec<_>>>()?;
            transforms.insert(f.clone(), steps);
        }
    }
    let features = strings(v, "features")?;
    let selections: Vec<Selection> = v
        .get("selections")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'selections' must be a list"))?
        .iter()
        .map(selection)
        .collect::<Result<_>>()?;
    let source = features
        .iter()
        .map(|f| {
            selections
                .iter()
                .enumerate()
                .find_map(|(si, sel)| sel.outputs.iter().position(|o| o == f).map(|oi| (si, oi)))
        })
        .collect();
    let index: HashMap<String, usize> = features
        .iter()
        .enumerate()
        .map(|(j, f)| (f.clone(), j))
        .collect();
    let encoders = match v.get("encoders") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(es)) => es
            .iter()
            .map(|e| encoded(e, &selections))
            .collect::<Result<_>>()?,
        Some(_) => return Err(bad("'encoders' must be a list")),
    };
    let mut encoded_at = vec![None; features.len()];
    for (ei, e) in encoders.iter().enumerate() {
        for (slot, name) in e.names.iter().enumerate() {
            let j = *index
                .get(name)
                .ok_or_else(|| bad(&format!("encoded feature '{name}' is not a feature")))?;
            encoded_at[j] = Some((ei, slot));
        }
    }
    let on_demand = match v.get("on_demand") {
        None | Some(Value::Null) => None,
        Some(od) => {
            let outputs = strings(od, "outputs")?;
            let first = outputs
                .first()
                .and_then(|o| index.get(o).copied())
                .ok_or_else(|| bad("on-demand outputs must be features"))?;
            if (0..outputs.len()).any(|j| features.get(first + j) != Some(&outputs[j])) {
                return Err(bad("on-demand outputs must be the view's last features"));
            }
            Some(OnDemand {
                first,
                outputs,
                request: strings(od, "request")?,
            })
        }
    };
    Ok(View {
        encoders,
        encoded: encoded_at,
        on_demand,
        name: s(v, "name")?,
        version: i(v, "version")?,
        keys: strings(v, "keys")?,
        index,
        features,
        types: string_map(v, "types")?,
        selections,
        python_only: string_map(v, "python_only")?,
        transforms,
        source,
    })
}

/// `{"feature", "kind", "type", "categories", "width", "names"}`: a fitted encoder.
fn encoded(v: &Value, selections: &[Selection]) -> Result<Encoded> {
    let feature = s(v, "feature")?;
    let source = selections
        .iter()
        .enumerate()
        .find_map(|(si, sel)| match sel.source {
            Source::Group { .. } => sel
                .outputs
                .iter()
                .position(|o| *o == feature)
                .map(|oi| (si, oi)),
            Source::Aggregation { .. } => None,
        })
        .ok_or_else(|| bad(&format!("encoded feature '{feature}' is read by no group")))?;
    let cats = v
        .get("categories")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("'categories' must be a list"))?;
    let wrong = || {
        bad(&format!(
            "the categories of '{feature}' do not match their type"
        ))
    };
    let categories = match s(v, "type")?.as_str() {
        "string" => Categories::Str(
            cats.iter()
                .map(|c| c.as_str().map(str::to_string).ok_or_else(wrong))
                .collect::<Result<_>>()?,
        ),
        "int64" => Categories::Int(
            cats.iter()
                .map(|c| c.as_i64().ok_or_else(wrong))
                .collect::<Result<_>>()?,
        ),
        "bool" => Categories::Bool(
            cats.iter()
                .map(|c| c.as_bool().ok_or_else(wrong))
                .collect::<Result<_>>()?,
        ),
        other => return Err(bad(&format!("unknown category type '{other}'"))),
    };
    let width = v
        .get("width")
        .and_then(Value::as_u64)
        .ok_or_else(|| bad("'width' must be an integer"))? as usize;
    let names = strings(v, "names")?;
    if names.len() != width {
        return Err(bad(&format!(
            "'{feature}' has {width} columns but {} names",
            names.len()
        )));
    }
    Ok(Encoded {
        source,
        encoder: Encoder::new(&s(v, "kind")?, categories, width)?,
        names,
    })
}

fn model(v: &Value) -> Result<Model> {
    Ok(Model {
        name: s(v, "name")?,
        version: i(v, "version")?,
        view: s(v, "view")?,
        view_version: i(v, "view_version")?,
        path: s(v, "path")?,
        sha256: s(v, "sha256")?,
        inputs: strings(v, "inputs")?,
        input_view: s(v, "input_view")?,
        request_features: match v.get("request_features") {
            None | Some(Value::Null) => Vec::new(),
            Some(_) => strings(v, "request_features")?,
        },
        unservable: v
            .get("unservable")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

impl View {
    /// A model's input plan, not a registered view (see [`Model::input_view`]).
    pub fn hidden(&self) -> bool {
        self.name.starts_with("model:")
    }
}

impl Selection {
    /// The request key names feeding `table_keys` (the online table's key columns,
    /// in key order).
    pub fn spine_for(&self, table_keys: &[String]) -> Result<Vec<String>> {
        table_keys
            .iter()
            .map(|k| {
                self.on
                    .iter()
                    .find(|(_, key)| key == k)
                    .map(|(spine, _)| spine.clone())
                    .ok_or_else(|| Error::StaleCatalog)
            })
            .collect()
    }
}

impl Plan {
    /// Parses the plan Python wrote (see `python/pitstop/serve.py`, `_plan`).
    pub fn from_json(text: &str) -> Result<Plan> {
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        let views: Vec<View> = v
            .get("views")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("'views' must be a list"))?
            .iter()
            .map(view)
            .collect::<Result<_>>()?;
        let mut latest: HashMap<String, i64> = HashMap::new();
        for vw in views.iter().filter(|v| !v.hidden()) {
            let e = latest.entry(vw.name.clone()).or_insert(vw.version);
            *e = (*e).max(vw.version);
        }
        let models = match v.get("models").and_then(Value::as_array) {
            Some(ms) => ms.iter().map(model).collect::<Result<_>>()?,
            None => Vec::new(),
        };
        Ok(Plan {
            on_demand: views.iter().any(|v| v.on_demand.is_some()),
            views,
            latest,
            models,
            onnxruntime: v
                .get("onnxruntime")
                .and_then(Value::as_str)
                .map(str::to_string),
            broken: string_map(&v, "broken")?,
        })
    }

    /// View `name` at `version` (the latest when None).
    pub fn view(&self, name: &str, version: Option<i64>) -> Option<&View> {
        let version = version.or_else(|| self.latest.get(name).copied())?;
        self.views
            .iter()
            .find(|v| v.name == name && v.version == version)
    }

    /// Model `name` at `version` (the latest when None).
    pub fn model(&self, name: &str, version: Option<i64>) -> Option<&Model> {
        self.models
            .iter()
            .filter(|m| m.name == name && version.is_none_or(|v| m.version == v))
            .max_by_key(|m| m.version)
    }
}
