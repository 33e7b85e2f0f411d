//! Requests in, responses out: the JSON request of `/v1/features/{view}` checked
//! field by field (every problem a 400 that names it), and the three response forms
//! (JSON, Arrow IPC stream, little-endian float32), plus `/v1/registry`.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use hyper::header::HeaderValue;
use serde_json::Value;

use super::http::{reply, Resp};
use super::lookup::{Entities, Part};
use super::plan::{Plan, View};
use super::Reject;
use crate::online::KeyValue;

/// The response form a client asked for with `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Arrow,
    Float32,
}

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

impl Format {
    pub fn from_accept(accept: Option<&HeaderValue>) -> Format {
        let a = accept.and_then(|v| v.to_str().ok()).unwrap_or("");
        if a.contains(ARROW_STREAM) {
            Format::Arrow
        } else if a.contains("application/octet-stream") {
            Format::Float32
        } else {
            Format::Json
        }
    }
}

/// A checked feature request.
pub struct FeatureRequest {
    /// Indices into the view's features, in the response's order.
    pub features: Vec<usize>,
    pub ents: Entities,
    pub now_ns: i64,
    /// The `"request"` fields of on-demand features, as JSON text.
    pub request: Option<String>,
}

/// One key value: an integer, a string or null.
fn key_value(name: &str, v: &Value) -> Result<KeyValue, Reject> {
    match v {
        Value::Null => Ok(KeyValue::Null),
        Value::String(s) => Ok(KeyValue::Str(s.clone())),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Ok(KeyValue::Int(i as i128)),
            (None, Some(u)) => Ok(KeyValue::Int(u as i128)),
            _ => Err(Reject::bad(format!(
                "key '{name}' holds the number {n}; keys are integers or strings"
            ))),
        },
        other => Err(Reject::bad(format!(
            "key '{name}' holds {other}; keys are integers or strings (a list of them for \
             several entities)"
        ))),
    }
}

/// `{"user_id": [1, 2]}` (or one value per key for one entity) -> entities.
pub fn entities(obj: &Value, keys: &[String], max_batch: usize) -> Result<Entities, Reject> {
    let Value::Object(map) = obj else {
        return Err(Reject::bad(
            "'entities' must be an object of key columns, e.g. {\"user_id\": [1, 2]}",
        ));
    };
    let mut columns = HashMap::new();
    let mut n = None;
    for k in keys {
        let col = match map.get(k) {
            None => {
                return Err(Reject::bad(format!(
                    "entities lack key '{k}'; this view is keyed by {keys:?}"
                )))
            }
            Some(Value::Array(items)) => {
                if items.len() > max_batch {
                    return Err(Reject::new(
                        413,
                        format!(
                            "{} entities in one request; at most {max_batch} (--max-batch)",
                            items.len()
                        ),
                    ));
                }
                items
                    .iter()
                    .map(|v| key_value(k, v))
                    .collect::<Result<Vec<_>, _>>()?
            }
            Some(v) => vec![key_value(k, v)?],
        };
        match n {
            None => n = Some(col.len()),
            Some(m) if m != col.len() => {
                return Err(Reject::bad(format!(
                    "key '{k}' has {} values but another key has {m}; give one value per \
                     entity for every key",
                    col.len()
                )))
            }
            _ => {}
        }
        columns.insert(k.clone(), col);
    }
    Ok(Entities {
        n: n.unwrap_or(0),
        columns,
    })
}

/// The requested features (all when None) as indices, each servable here.
pub fn feature_list(view: &View, req: Option<&Value>) -> Result<Vec<usize>, Reject> {
    let names: Vec<&str> = match req {
        None | Some(Value::Null) => view.features.iter().map(String::as_str).collect(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().ok_or_else(|| {
                    Reject::bad(format!("'features' must be a list of names; got {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(Reject::bad(format!(
                "'features' must be a list of names; got {other}"
            )))
        }
    };
    let mut out = Vec::with_capacity(names.len());
    let mut unservable = Vec::new();
    let all = matches!(req, None | Some(Value::Null));
    for (j, name) in names.into_iter().enumerate() {
        let found = if all {
            Some(j)
        } else {
            view.index.get(name).copied()
        };
        let Some(i) = found else {
            return Err(Reject::bad(format!(
                "feature view '{}' v{} has no feature '{name}' (features: {:?})",
                view.name, view.version, view.features
            )));
        };
        if !view.python_only.is_empty() {
            if let Some(why) = view.python_only.get(name) {
                unservable.push(format!("'{name}' ({why})"));
            }
        }
        out.push(i);
    }
    if !unservable.is_empty() {
        let servable: Vec<&String> = view
            .features
            .iter()
            .filter(|f| !view.python_only.contains_key(*f))
            .collect();
        return Err(Reject::new(
            501,
            format!(
                "feature view '{}' has features the server does not compute: {}; request \
                 the others with \"features\": {servable:?}, or use fs.get_feature_vectors",
                view.name,
                unservable.join(", ")
            ),
        ));
    }
    Ok(out)
}

/// `now`: RFC 3339 text, or seconds since the epoch; default the current time.
pub fn now(v: Option<&Value>) -> Result<i64, Reject> {
    let bad = |v: &Value| {
        Reject::bad(format!(
            "'now' must be an RFC 3339 time ('2026-11-30T12:00:00Z') or seconds since the \
             epoch; got {v}"
        ))
    };
    match v {
        None | Some(Value::Null) => Ok(crate::online::now_ns()),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|s| s.abs() < 9.2e9)
            .map(|s| (s * 1e9) as i64)
            .ok_or_else(|| bad(v.expect("some"))),
        Some(Value::String(s)) => parse_rfc3339(s).ok_or_else(|| bad(v.expect("some"))),
        Some(other) => Err(bad(other)),
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.frac][Z|±HH:MM]` (no zone: UTC) as ns since the epoch.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !(b[10] == b'T' || b[10] == b' ') {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        let mut padded: String = digits.chars().take(9).collect();
        while padded.len() < 9 {
            padded.push('0');
        }
        frac_ns = padded.parse().ok()?;
    }
    let offset_s = match &s[i..] {
        "" | "Z" | "z" => 0,
        tz if tz.len() == 6 && (tz.starts_with('+') || tz.starts_with('-')) => {
            let oh = num(i + 1..i + 3)?;
            let om = num(i + 4..i + 6)?;
            let sign = if tz.starts_with('-') { -1 } else { 1 };
            sign * (oh * 3600 + om * 60)
        }
        _ => return None,
    };
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// The request of `/v1/features/{view}`, checked.
pub fn request(view: &View, body: &Value, max_batch: usize) -> Result<FeatureRequest, Reject> {
    let Value::Object(map) = body else {
        return Err(Reject::bad(
            "the body must be a JSON object like {\"entities\": {\"user_id\": [1, 2]}}",
        ));
    };
    for k in map.keys() {
        if !matches!(k.as_str(), "entities" | "features" | "now" | "request") {
            return Err(Reject::bad(format!(
                "unknown field '{k}'; the body takes \"entities\", \"features\", \"now\" \
                 and \"request\" (fields of on-demand features)"
            )));
        }
    }
    let ents = map
        .get("entities")
        .ok_or_else(|| Reject::bad("the body lacks \"entities\", e.g. {\"user_id\": [1, 2]}"))?;
    let features = feature_list(view, map.get("features"))?;
    let keys = super::lookup::required_keys(view, &features);
    Ok(FeatureRequest {
        ents: entities(ents, &keys, max_batch)?,
        features,
        now_ns: now(map.get("now"))?,
        request: request_fields(map.get("request"))?,
    })
}

/// The `"request"` object (fields of on-demand features) as JSON text; its fields
/// are checked by the on-demand handler, against the view's declared types.
pub fn request_fields(v: Option<&Value>) -> Result<Option<String>, Reject> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(o @ Value::Object(_)) => Ok(Some(o.to_string())),
        Some(other) => Err(Reject::bad(format!(
            "'request' must be an object of request fields, e.g. {{\"amount\": [12.5]}}; \
             got {other}"
        ))),
    }
}

/// Appends value `i` of `a` as JSON (null for a null or non-finite number).
pub fn write_value(out: &mut String, a: &dyn Array, i: usize) {
    if a.is_null(i) {
        out.push_str("null");
        return;
    }
    macro_rules! int {
        ($t:ty) => {{
            let _ = write!(out, "{}", a.as_primitive::<$t>().value(i));
        }};
    }
    macro_rules! float {
        ($t:ty, $single:expr) => {{
            let v = a.as_primitive::<$t>().value(i);
            super::text::float(out, v as f64, $single)
        }};
    }
    match a.data_type() {
        DataType::Int8 => int!(Int8Type),
        DataType::Int16 => int!(Int16Type),
        DataType::Int32 => int!(Int32Type),
        DataType::Int64 => int!(Int64Type),
        DataType::UInt8 => int!(UInt8Type),
        DataType::UInt16 => int!(UInt16Type),
        DataType::UInt32 => int!(UInt32Type),
        DataType::UInt64 => int!(UInt64Type),
        DataType::Float32 => float!(Float32Type, true),
        DataType::Float64 => float!(Float64Type, false),
        DataType::Boolean => out.push_str(if a.as_boolean().value(i) {
            "true"
        } else {
            "false"
        }),
        DataType::Utf8 => push_str(out, a.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => push_str(out, a.as_string::<i64>().value(i)),
        _ => {
            let opts = arrow_cast::display::FormatOptions::default();
            match arrow_cast::display::ArrayFormatter::try_new(a, &opts) {
                Ok(f) => push_str(out, &f.value(i).to_string()),
                Err(_) => out.push_str("null"),
            }
        }
    }
}

/// A JSON string literal.
pub fn push_str(out: &mut String, s: &str) {
    out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
}

/// Per response position: (part index, column index in the part).
fn columns_of(parts: &[Part], width: usize) -> Vec<(usize, usize)> {
    let mut at = vec![(0, 0); width];
    for (p, part) in parts.iter().enumerate() {
        for (c, pos) in part.positions().into_iter().enumerate() {
            at[pos] = (p, c);
        }
    }
    at
}

pub fn json(view: &View, features: &[usize], n: usize, parts: &[Part]) -> Resp {
    let at = columns_of(parts, features.len());
    let mut out = String::with_capacity(64 + n * features.len() * 24);
    out.push_str("{\"view\":");
    push_str(&mut out, &view.name);
    let _ = write!(out, ",\"version\":{},\"features\":[", view.version);
    for (j, &f) in features.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        push_str(&mut out, &view.features[f]);
    }
    out.push_str("],\"values\":[");
    for r in 0..n {
        out.push_str(if r > 0 { ",[" } else { "[" });
        for (j, &(p, c)) in at.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            parts[p].write(&mut out, c, r);
        }
        out.push(']');
    }
    out.push_str("],\"status\":[");
    for r in 0..n {
        out.push_str(if r > 0 { ",[" } else { "[" });
        for (j, &(p, _)) in at.iter().enumerate() {
            if j > 0 {
                out.push(',');
            }
            out.push('"');
            out.push_str(parts[p].status[r].name());
            out.push('"');
        }
        out.push(']');
    }
    out.push_str("]}");
    reply(200, "application/json", out)
}

/// The features as typed columns, then `<feature>__status` per feature.
pub fn arrow(view: &View, features: &[usize], n: usize, parts: &[Part]) -> Result<Resp, Reject> {
    let at = columns_of(parts, features.len());
    let mut fields = Vec::with_capacity(2 * features.len());
    let mut arrays: Vec<ArrayRef> = Vec::with_capacity(2 * features.len());
    for (j, &(p, c)) in at.iter().enumerate() {
        let a = &parts[p].columns[c].1;
        fields.push(Field::new(
            &view.features[features[j]],
            a.data_type().clone(),
            true,
        ));
        arrays.push(Arc::clone(a));
    }
    for (j, &(p, _)) in at.iter().enumerate() {
        fields.push(Field::new(
            format!("{}__status", view.features[features[j]]),
            DataType::Utf8,
            false,
        ));
        let s: StringArray = (0..n).map(|r| Some(parts[p].status[r].name())).collect();
        arrays.push(Arc::new(s));
    }
    let internal = |e: arrow_schema::ArrowError| Reject::new(500, format!("arrow: {e}"));
    let schema = Arc::new(Schema::new(fields));
    let batch = if arrays.is_empty() {
        RecordBatch::try_new_with_options(
            Arc::clone(&schema),
            arrays,
            &arrow_array::RecordBatchOptions::new().with_row_count(Some(n)),
        )
    } else {
        RecordBatch::try_new(Arc::clone(&schema), arrays)
    }
    .map_err(internal)?;
    let mut w = arrow_ipc::writer::StreamWriter::try_new(Vec::new(), &schema).map_err(internal)?;
    w.write(&batch).map_err(internal)?;
    w.finish().map_err(internal)?;
    Ok(reply(200, ARROW_STREAM, w.into_inner().map_err(internal)?))
}

/// Row-major little-endian float32; the shape in `x-pitstop-shape: rows,cols`.
pub fn float32(view: &View, features: &[usize], n: usize, m: &[f32]) -> Resp {
    let mut bytes = Vec::with_capacity(m.len() * 4);
    for v in m {
        bytes.extend_from_slice(&v.to_le_bytes());
    }
    let mut r = reply(200, "application/octet-stream", bytes);
    let shape = format!("{n},{}", features.len());
    let names: Vec<&str> = features
        .iter()
        .map(|&f| view.features[f].as_str())
        .collect();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&shape) {
        h.insert("x-pitstop-shape", v);
    }
    if let Ok(v) = HeaderValue::from_str(&serde_json::to_string(&names).unwrap_or_default()) {
        h.insert("x-pitstop-features", v);
    }
    r
}

/// `/v1/registry`: views (keys, features and their types, what the server cannot
/// compute) and models.
pub fn registry(plan: &Plan) -> String {
    let views: Vec<Value> = plan
        .views
        .iter()
        .filter(|v| !v.hidden())
        .map(|v| {
            serde_json::json!({
                "name": v.name,
                "version": v.version,
                "latest": plan.latest.get(&v.name) == Some(&v.version),
                "keys": v.keys,
                "features": v.features.iter().map(|f| serde_json::json!({
                    "name": f,
                    "type": v.types.get(f),
                    "served": !v.python_only.contains_key(f),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let models: Vec<Value> = plan
        .models
        .iter()
        .map(|m| {
            serde_json::json!({
                "name": m.name, "version": m.version, "view": m.view,
                "view_version": m.view_version, "inputs": m.inputs,
            })
        })
        .collect();
    serde_json::json!({"views": views, "models": models, "unservable": plan.broken}).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339("1970-01-02T00:00:01.5Z"),
            Some(86_401_500_000_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-30T12:00:00+01:00"),
            parse_rfc3339("2026-11-30T11:00:00")
        );
        assert_eq!(
            parse_rfc3339("2000-03-01T00:00:00Z"),
            Some(951_868_800_000_000_000)
        );
        for bad in [
            "",
            "2026-13-01T00:00:00Z",
            "2026-11-30",
            "2026-11-30T12:00:00+1",
            "x".repeat(30).as_str(),
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }

    #[test]
    fn constant_checks() {
        let v: Value = serde_json::json!({"user_id": [1, "a", null]});
        let e = entities(&v, &["user_id".into()], 10).unwrap();
        assert_eq!(e.n, 3);
        assert_eq!(e.columns["user_id"][1], KeyValue::Str("a".into()));
        assert_eq!(
            entities(&v, &["user_id".into()], 2).err().unwrap().status,
            413
        );
        let bad: Value = serde_json::json!({"user_id": [1.5]});
        assert_eq!(
            entities(&bad, &["user_id".into()], 10)
                .err()
                .unwrap()
                .status,
            400
        );
        let lacks: Value = serde_json::json!({"other": [1]});
        assert!(entities(&lacks, &["user_id".into()], 10)
            .err()
            .unwrap()
            .msg
            .contains("lack key 'user_id'"));
    }
}
