//! `POST /get-online-features` in the request and response shapes of Feast's Python
//! feature server, so a Feast client (or benchmark) switches by changing the URL:
//!
//! ```text
//! {"features": ["view:feature", ...] | "feature_service": "view",
//!  "entities": {"driver_id": [1001, 1002]}, "full_feature_names": false}
//! -> {"metadata": {"feature_names": ["driver_id", "conv_rate", ...]},
//!     "results": [{"values": [...], "statuses": ["PRESENT", ...],
//!                  "event_timestamps": ["2021-12-31T23:00:00Z", ...]}, ...]}
//! ```
//! Entity columns come first (as sent, status `PRESENT`, time 1970-01-01), then one
//! result per feature in the request's order. A Feast "feature view" is a pitstop view
//! (its latest version); a feature service is served as the view of that name.
//! Statuses: `PRESENT`, `NOT_FOUND`, `OUTSIDE_MAX_AGE` (pitstop's found / missing /
//! expired). Values are the stored values (Feast's own typed JSON values too).

use std::fmt::Write;

use serde_json::Value;

use super::http::{reply, Resp};
use super::lookup::{self, Part};
use super::respond::{entities, feature_list, push_str};
use super::{Reject, State};
use crate::online::read::Status;

/// `YYYY-MM-DDTHH:MM:SSZ` of ns since the epoch (Howard Hinnant's civil_from_days).
pub fn iso(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn feast_status(s: Status) -> &'static str {
    match s {
        Status::Found => "PRESENT",
        Status::Missing => "NOT_FOUND",
        Status::Expired => "OUTSIDE_MAX_AGE",
    }
}

/// A view and its requested features (None: all, for a feature service).
type ViewRefs = (String, Option<Vec<String>>);

/// `view:feature` references grouped by view, in first-seen order.
fn refs(body: &serde_json::Map<String, Value>) -> Result<Vec<ViewRefs>, Reject> {
    let mut out: Vec<ViewRefs> = Vec::new();
    match (body.get("features"), body.get("feature_service")) {
        (Some(Value::Array(items)), None) => {
            for it in items {
                let r = it.as_str().ok_or_else(|| {
                    Reject::bad(format!(
                        "'features' must hold \"view:feature\" strings; got {it}"
                    ))
                })?;
                let (v, f) = r.split_once(':').ok_or_else(|| {
                    Reject::bad(format!("feature reference '{r}' is not \"view:feature\""))
                })?;
                match out.iter_mut().find(|(n, _)| n == v) {
                    Some((_, Some(fs))) => fs.push(f.to_string()),
                    _ => out.push((v.to_string(), Some(vec![f.to_string()]))),
                }
            }
        }
        (None, Some(Value::String(s))) => out.push((s.clone(), None)),
        _ => return Err(Reject::bad(
            "give either \"features\": [\"view:feature\", ...] or \"feature_service\": \"name\"",
        )),
    }
    Ok(out)
}

pub fn feast(state: &State, body: &Value) -> Result<Resp, Reject> {
    let Value::Object(map) = body else {
        return Err(Reject::bad(
            "the body must be a JSON object like {\"features\": [\"view:feature\"], \"entities\": {...}}",
        ));
    };
    let full = map
        .get("full_feature_names")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let ents_v = map
        .get("entities")
        .ok_or_else(|| Reject::bad("the body lacks \"entities\""))?;
    let Value::Object(ents_map) = ents_v else {
        return Err(Reject::bad("'entities' must be an object of key columns"));
    };
    let loaded = state.loaded();
    let now = super::respond::now(None)?;
    // Entity columns first, as sent.
    let names: Vec<String> = ents_map.keys().cloned().collect();
    let all = entities(ents_v, &names, state.cfg.max_batch)?;
    let n = all.n;
    let mut header: Vec<String> = names.clone();
    let mut results = String::with_capacity(256 + n * 64);
    results.push('[');
    let epoch = iso(0);
    for (i, k) in names.iter().enumerate() {
        if i > 0 {
            results.push(',');
        }
        results.push_str("{\"values\":[");
        let raw = ents_map[k]
            .as_array()
            .cloned()
            .unwrap_or_else(|| vec![ents_map[k].clone()]);
        for (r, v) in raw.iter().enumerate() {
            if r > 0 {
                results.push(',');
            }
            results.push_str(&v.to_string());
        }
        results.push_str("],\"statuses\":[");
        push_repeat(&mut results, "\"PRESENT\"", n);
        results.push_str("],\"event_timestamps\":[");
        push_repeat(&mut results, &format!("\"{epoch}\""), n);
        results.push_str("]}");
    }
    for (vname, feats) in refs(map)? {
        let view = loaded
            .plan
            .view(&vname, None)
            .filter(|v| !v.hidden())
            .ok_or_else(|| {
                Reject::new(
                    404,
                    format!("no feature view '{vname}' (see GET /v1/registry)"),
                )
            })?;
        let wanted = feats.map(|f| Value::Array(f.into_iter().map(Value::String).collect()));
        let features = feature_list(view, wanted.as_ref())?;
        let keys = lookup::required_keys(view, &features);
        let ents = entities(ents_v, &keys, state.cfg.max_batch)?;
        let mut parts: Vec<Part> = lookup::typed(&state.store, view, &features, &ents, now, true)?;
        if super::derived::any(view, &features) {
            let d = super::derived::Derive {
                cache: &loaded.cache,
                handler: None, // Feast's request has no request fields
                request: None,
            };
            parts.extend(super::derived::typed_parts(
                &state.store,
                view,
                &features,
                &ents,
                now,
                &d,
            )?);
        }
        state.metrics.statuses(
            &view.name,
            parts.iter().flat_map(|p| p.status.iter().copied()),
        );
        let mut at = vec![(0, 0); features.len()];
        for (p, part) in parts.iter().enumerate() {
            for (c, pos) in part.positions().into_iter().enumerate() {
                at[pos] = (p, c);
            }
        }
        for (j, &(p, c)) in at.iter().enumerate() {
            let f = &view.features[features[j]];
            header.push(if full {
                format!("{}__{f}", view.name)
            } else {
                f.clone()
            });
            let part = &parts[p];
            results.push_str(",{\"values\":[");
            for r in 0..n {
                if r > 0 {
                    results.push(',');
                }
                part.write(&mut results, c, r);
            }
            results.push_str("],\"statuses\":[");
            for r in 0..n {
                if r > 0 {
                    results.push(',');
                }
                let _ = write!(results, "\"{}\"", feast_status(part.status[r]));
            }
            results.push_str("],\"event_timestamps\":[");
            for r in 0..n {
                if r > 0 {
                    results.push(',');
                }
                let t = match (part.status[r], part.event[r]) {
                    (Status::Missing, _) | (_, None) => epoch.clone(),
                    (_, Some(e)) => iso(e),
                };
                let _ = write!(results, "\"{t}\"");
            }
            results.push_str("]}");
        }
    }
    results.push(']');
    let mut out = String::with_capacity(results.len() + 64);
    out.push_str("{\"metadata\":{\"feature_names\":[");
    for (i, h) in header.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_str(&mut out, h);
    }
    out.push_str("]},\"results\":");
    out.push_str(&results);
    out.push('}');
    Ok(reply(200, "application/json", out))
}

fn push_repeat(out: &mut String, item: &str, n: usize) {
    for r in 0..n {
        if r > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn iso_times() {
        assert_eq!(super::iso(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::iso(1_640_991_600_000_000_000),
            "2021-12-31T23:00:00Z"
        );
        assert_eq!(super::iso(951_868_800_000_000_000), "2000-03-01T00:00:00Z");
    }
}
