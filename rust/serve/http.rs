//! Routing, authentication, limits and the request lifecycle: every request is
//! counted, timed and answered; nothing a client sends can take the server down
//! (handlers run under `catch_unwind`, bodies are read with a size and time limit).

use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};
use serde_json::Value;

use super::derived::{self, Derive};
use super::plan::View;
use super::respond::{self, Format};
use super::{lookup, Reject, State};

pub type Resp = Response<Full<Bytes>>;

/// A response with a body and content type.
pub fn reply(status: u16, ctype: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or(hyper::StatusCode::OK);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    r
}

fn error(rej: &Reject) -> Resp {
    let body = serde_json::json!({"error": rej.msg, "status": rej.status}).to_string();
    let mut r = reply(rej.status, "application/json", body);
    if rej.status == 401 {
        r.headers_mut()
            .insert("www-authenticate", HeaderValue::from_static("Bearer"));
    }
    if rej.status == 503 {
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    r
}

/// Compares without an early exit, so the time taken says nothing of where a guess
/// went wrong (the length still shows; a token is a fixed-length secret).
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn authorized(state: &State, req: &Request<Incoming>) -> bool {
    let Some(token) = &state.cfg.token else {
        return true;
    };
    let got = req
        .headers()
        .get(hyper::header::AUTHORIZATION)
        .map(|v| v.as_bytes())
        .unwrap_or(b"");
    let given = got.strip_prefix(b"Bearer ").unwrap_or(b"");
    same(given, token.as_bytes())
}

/// The route of a path, for dispatch and as the metrics label.
fn route(method: &Method, path: &str) -> &'static str {
    let post = method == Method::POST;
    match path {
        "/healthz" => "healthz",
        "/readyz" => "readyz",
        "/metrics" => "metrics",
        "/v1/registry" => "registry",
        "/get-online-features" if post => "feast",
        p if post && p.starts_with("/v1/features/") => "features",
        p if post && p.starts_with("/v1/predict/") => "predict",
        p if post && p.starts_with("/v1/ingest/") => "ingest",
        _ => "other",
    }
}

struct Inflight<'a>(&'a State);

impl Drop for Inflight<'_> {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Resp, Infallible> {
    let start = Instant::now();
    state.spin.touch(true);
    let route = route(req.method(), req.uri().path());
    let resp = respond_to(&state, route, req)
        .await
        .unwrap_or_else(|r| error(&r));
    state.spin.touch(false);
    state
        .metrics
        .record(route, resp.status().as_u16(), start.elapsed());
    Ok(resp)
}

async fn respond_to(
    state: &Arc<State>,
    route: &'static str,
    req: Request<Incoming>,
) -> Result<Resp, Reject> {
    if route != "healthz" && !authorized(state, &req) {
        return Err(Reject::new(
            401,
            "missing or wrong bearer token; send 'Authorization: Bearer <token>'",
        ));
    }
    if state.inflight.fetch_add(1, Ordering::AcqRel) >= state.cfg.max_inflight {
        state.inflight.fetch_sub(1, Ordering::AcqRel);
        state.metrics.rejected_busy.fetch_add(1, Ordering::Relaxed);
        return Err(Reject::new(
            503,
            "the server is at its concurrency limit; retry shortly",
        ));
    }
    let _guard = Inflight(state);
    let path = req.uri().path().to_string();
    let format = Format::from_accept(req.headers().get(hyper::header::ACCEPT));
    if route == "ingest" {
        return ingest(state, &path, req).await;
    }
    let body = match route {
        "features" | "feast" | "predict" => read_body(state, req).await?,
        "other" => {
            return Err(Reject::new(
                404,
                format!(
                    "no route {} {path}; routes: POST /v1/features/{{view}}, POST \
                     /get-online-features, POST /v1/predict/{{model}}, POST \
                     /v1/ingest/{{group}} (with --ingest), GET /healthz, /readyz, /metrics, \
                     /v1/registry",
                    req.method()
                ),
            ))
        }
        _ => Bytes::new(),
    };
    // Handlers are synchronous (microseconds of LMDB reads); a panic is this request's
    // 500, never the server's end. Those that call Python (on-demand features) wait
    // for the GIL on a blocking thread, never on a worker that serves lookups.
    let python = calls_python(state, route, &path);
    let run = move |state: &State| {
        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            dispatch(state, route, &path, format, &body)
        }))
        .unwrap_or_else(|_| Err(Reject::new(500, "internal error (a bug: please report it)")))
    };
    if !python {
        return run(state);
    }
    let st = Arc::clone(state);
    tokio::task::spawn_blocking(move || run(&st))
        .await
        .unwrap_or_else(|_| Err(Reject::new(500, "internal error (a bug: please report it)")))
}

/// Whether a request may call the on-demand handler (its view has on-demand
/// features): false at once when no view of the plan has any, else the view is
/// resolved here, before the handler resolves it again on the thread it runs on.
fn calls_python(state: &State, route: &str, path: &str) -> bool {
    if state.on_demand.is_none() {
        return false;
    }
    let loaded = state.loaded();
    let plan = &loaded.plan;
    if !plan.on_demand {
        return false;
    }
    let view = match route {
        "features" => {
            let (name, version) = name_version(&path["/v1/features/".len()..]);
            plan.view(name, version)
        }
        "predict" => {
            let (name, version) = name_version(&path["/v1/predict/".len()..]);
            plan.model(name, version)
                .and_then(|m| plan.views.iter().find(|v| v.name == m.input_view))
        }
        _ => None,
    };
    view.is_some_and(|v| v.on_demand.is_some())
}

/// `POST /v1/ingest/{group}`: the body handed to the ingest handler (Python, which
/// takes the GIL and writes) on a blocking thread, so lookups keep their workers.
async fn ingest(state: &State, path: &str, req: Request<Incoming>) -> Result<Resp, Reject> {
    let Some(handler) = state.ingest.clone() else {
        return Err(Reject::new(
            404,
            "this server does not take writes; start it with --ingest (fs.serve(ingest=True)) \
             on a writable store",
        ));
    };
    let group = path["/v1/ingest/".len()..].to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let content_type = (req.headers().get(hyper::header::CONTENT_TYPE))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = read_body(state, req).await?;
    let run = move || handler(&group, &body, &content_type, &query);
    match tokio::task::spawn_blocking(run).await {
        Ok((status, json)) => Ok(reply(status, "application/json", json)),
        Err(_) => Err(Reject::new(
            500,
            "internal error in ingest (a bug: please report it)",
        )),
    }
}

async fn read_body(state: &State, req: Request<Incoming>) -> Result<Bytes, Reject> {
    let max = state.cfg.max_body;
    let too_big = || {
        Reject::new(
            413,
            format!("the body is over {max} bytes; send fewer entities per request"),
        )
    };
    if let Some(len) = req.headers().get(hyper::header::CONTENT_LENGTH) {
        if len
            .to_str()
            .ok()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|l| l > max as u64)
        {
            return Err(too_big());
        }
    }
    let collect = Limited::new(req.into_body(), max).collect();
    match tokio::time::timeout(state.cfg.timeout, collect).await {
        Err(_) => Err(Reject::new(408, "the body did not arrive in time")),
        Ok(Err(e))
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            Err(too_big())
        }
        Ok(Err(e)) => Err(Reject::bad(format!("the body could not be read ({e})"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn dispatch(
    state: &State,
    route: &str,
    path: &str,
    format: Format,
    body: &[u8],
) -> Result<Resp, Reject> {
    match route {
        "healthz" => Ok(reply(200, "text/plain", "ok\n")),
        "readyz" => ready(state),
        "metrics" => Ok(reply(
            200,
            "text/plain; version=0.0.4",
            state.metrics.render(),
        )),
        "registry" => Ok(reply(
            200,
            "application/json",
            respond::registry(&state.loaded().plan),
        )),
        "features" => features(state, &path["/v1/features/".len()..], format, body),
        "feast" => super::feast::feast(state, &parse(body)?),
        _ => super::predict::predict(state, &path["/v1/predict/".len()..], &parse(body)?),
    }
}

/// The body as JSON (400 naming the problem otherwise).
pub fn parse(body: &[u8]) -> Result<Value, Reject> {
    serde_json::from_slice(body)
        .map_err(|e| Reject::bad(format!("the body is not valid JSON: {e}")))
}

fn ready(state: &State) -> Result<Resp, Reject> {
    let loaded = state.loaded();
    let env = state
        .store
        .env()
        .map_err(|e| Reject::new(503, format!("the online store is not open: {e}")))?;
    let mut problems: Vec<String> = loaded
        .plan
        .broken
        .iter()
        .map(|(v, why)| format!("{v}: {why}"))
        .collect();
    for v in &loaded.plan.views {
        for s in &v.selections {
            match env.find_table(&s.table) {
                Ok(Some(_)) => {}
                Ok(None) => problems.push(format!(
                    "view '{}' v{}: online table '{}' does not exist (write to its group or \
                     materialize it)",
                    v.name, v.version, s.table
                )),
                Err(e) => problems.push(e.to_string()),
            }
        }
    }
    if problems.is_empty() {
        Ok(reply(200, "application/json", "{\"ready\":true}"))
    } else {
        let body = serde_json::json!({"ready": false, "problems": problems}).to_string();
        Ok(reply(503, "application/json", body))
    }
}

/// `{name}` or `{name}/v{n}` as (name, version).
pub fn name_version(tail: &str) -> (&str, Option<i64>) {
    match tail.rsplit_once("/v") {
        Some((n, v)) => match v.parse::<i64>() {
            Ok(v) => (n, Some(v)),
            Err(_) => (tail, None),
        },
        None => (tail, None),
    }
}

/// `{view}` or `{view}/v{n}`.
fn view_ref<'a>(state_plan: &'a super::plan::Plan, tail: &str) -> Result<&'a View, Reject> {
    let (name, version) = name_version(tail);
    state_plan
        .view(name, version)
        .filter(|v| !v.hidden())
        .ok_or_else(|| {
            let mut known: Vec<String> = state_plan
                .views
                .iter()
                .filter(|v| !v.hidden())
                .map(|v| format!("{} v{}", v.name, v.version))
                .collect();
            known.sort();
            Reject::new(
                404,
                match (version, state_plan.broken.get(name)) {
                    (_, Some(why)) => format!("feature view '{name}' cannot be served: {why}"),
                    (Some(v), None) => format!(
                        "no feature view '{name}' v{v} (views: {})",
                        known.join(", ")
                    ),
                    (None, None) => {
                        format!("no feature view '{name}' (views: {})", known.join(", "))
                    }
                },
            )
        })
}

fn features(state: &State, tail: &str, format: Format, body: &[u8]) -> Result<Resp, Reject> {
    let loaded = state.loaded();
    let view = view_ref(&loaded.plan, tail)?;
    let body = parse(body)?;
    let req = respond::request(view, &body, state.cfg.max_batch)?;
    let d = Derive {
        cache: &loaded.cache,
        handler: state.on_demand.as_ref(),
        request: req.request.as_deref(),
    };
    match format {
        Format::Float32 => {
            let m = derived::matrix(&state.store, view, &req.features, &req.ents, req.now_ns, &d)?;
            Ok(respond::float32(view, &req.features, req.ents.n, &m))
        }
        _ => {
            let json = format == Format::Json;
            let mut parts = lookup::typed(
                &state.store,
                view,
                &req.features,
                &req.ents,
                req.now_ns,
                json,
            )?;
            if derived::any(view, &req.features) {
                parts.extend(derived::typed_parts(
                    &state.store,
                    view,
                    &req.features,
                    &req.ents,
                    req.now_ns,
                    &d,
                )?);
            }
            state.metrics.statuses(
                &view.name,
                parts.iter().flat_map(|p| p.status.iter().copied()),
            );
            if format == Format::Arrow {
                respond::arrow(view, &req.features, req.ents.n, &parts)
            } else {
                Ok(respond::json(view, &req.features, req.ents.n, &parts))
            }
        }
    }
}
