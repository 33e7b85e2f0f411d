//! `pitstop serve`: an HTTP/1.1 server (hyper on a tokio runtime of `workers` threads)
//! that answers feature lookups straight from the store's LMDB environment, with no
//! Python on the request path.
//!
//! **What the server knows.** Python resolves the registry (views, their groups and
//! aggregations, TTLs, fitted transforms, models) into a [`plan::Plan`] and hands it
//! over as JSON at start; a Python thread watches `registry.db` (and its WAL) and hands
//! over a new plan when they change, off the request path ([`Server::set_plan`] swaps
//! an `Arc`). Reading SQLite from Rust was the alternative; it would duplicate the
//! registry's rules (latest versions, checksums, fitted-transform selection) in a
//! second language, for a file that changes a few times a day. Data changes need no
//! plan change: every request reads the newest LMDB snapshot, so rows written by other
//! processes are served at once, and a dropped or re-created table is noticed by its
//! catalog version (prepared matrix reads are re-resolved, see [`matrix`]).
//!
//! **What it serves.** Feature-group columns of every stored type, aggregation
//! features, categorical encodings and on-demand features ([`derived`]), with the
//! view's fitted transforms applied in Rust ([`crate::transform`], the function
//! training rows go through). On-demand features are Python functions: their inputs
//! are looked up here and the functions called through the handler Python started
//! the server with, on a blocking thread; no other request touches Python. Not
//! served (a 501 naming them): non-numeric aggregations, and models registered with
//! raw `request_features`.
//!
//! **Failure behaviour.** Loopback bind by default; an optional bearer token
//! (constant-time compare) guards every route but `/healthz`; bodies over
//! `max_body` bytes and batches over `max_batch` entities are 413; at most
//! `max_inflight` requests are handled at once and the rest get 503 at once (no queue
//! grows: hyper reads a connection's next request only after answering the last);
//! headers and bodies must arrive within `timeout`; a panic in a handler becomes a 500
//! for that request. `stop` stops accepting, lets in-flight requests finish (up to a
//! drain deadline) and joins the runtime thread.
//!
//! **Writes, when asked.** `--ingest` adds `POST /v1/ingest/{group}` and
//! `--log-predictions` logs `/v1/predict` calls; both write through Python
//! (`FeatureGroup.push`, the predictor's Delta log), on threads that serve no lookups.
//!
//! Cost per request: parsing the JSON body, one LMDB read transaction (pooled), one
//! descent per entity per set of tables sharing a key, and writing the response.

pub mod derived;
pub mod feast;
pub mod http;
pub mod lookup;
pub mod matrix;
pub mod metrics;
pub mod onnx;
pub mod plan;
pub mod predict;
pub mod respond;
pub mod spin;
pub mod text;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;

use crate::error::{Error, Result};
use crate::online::OnlineStore;

/// Server options (see `pitstop serve --help`).
#[derive(Clone, Debug)]
pub struct Config {
    pub host: String,
    pub port: u16,
    pub token: Option<String>,
    pub workers: usize,
    pub max_batch: usize,
    pub max_body: usize,
    pub max_inflight: usize,
    pub timeout: Duration,
    /// How long a worker keeps polling for the next request after one before it
    /// parks (zero: park at once); see [`spin`].
    pub spin: Duration,
}

/// `POST /v1/ingest/{group}` when the server takes writes: (group path, body, content
/// type, query) -> (status, JSON body). Python's (`pitstop.streaming.http`): rows go
/// through `FeatureGroup.push`, which also writes the offline table. Called on a
/// blocking thread, never on a worker that serves lookups.
pub type Ingest = Arc<dyn Fn(&str, &[u8], &str, &str) -> (u16, Vec<u8>) + Send + Sync>;

/// Prediction logging (`--log-predictions`): (model, version, the request's entities as
/// JSON, the model input row-major, rows, columns, predictions), handed to Python's
/// prediction log (the Delta table `fs.predictor(..., log=True)` writes) on a thread of
/// its own: a request only queues its entry (and waits when 1,024 are queued, as the
/// Python predictor's log does: nothing is dropped).
pub type LogFn = Arc<dyn Fn(&str, i64, &str, &[f32], usize, usize, &[f32]) + Send + Sync>;

/// One logged prediction call.
pub struct LogEntry {
    pub model: String,
    pub version: i64,
    pub entities: String,
    pub x: Vec<f32>,
    pub n: usize,
    pub d: usize,
    pub y: Vec<f32>,
}

/// Entries waiting for the log thread before a request waits.
const LOG_QUEUE: usize = 1024;

/// A request refused or failed: an HTTP status and a message for the client.
#[derive(Debug)]
pub struct Reject {
    pub status: u16,
    pub msg: String,
}

impl Reject {
    pub fn new(status: u16, msg: impl Into<String>) -> Reject {
        Reject {
            status,
            msg: msg.into(),
        }
    }

    pub fn bad(msg: impl Into<String>) -> Reject {
        Reject::new(400, msg)
    }
}

impl From<Error> for Reject {
    fn from(e: Error) -> Reject {
        let status = match &e {
            Error::InvalidArgument(_)
            | Error::InputType(_)
            | Error::KeyType { .. }
            | Error::KeyTooLong { .. }
            | Error::UnknownFeature { .. } => 400,
            Error::UnknownTable { .. } | Error::StaleCatalog => 503,
            _ => 500,
        };
        let mut msg = e.to_string();
        if matches!(e, Error::UnknownTable { .. }) {
            msg.push_str(" (the view's online table is not written yet, or was dropped)");
        }
        Reject::new(status, msg)
    }
}

/// What every request handler shares: the store, the current plan and its prepared
/// reads, the options and the counters.
pub struct State {
    pub store: Arc<OnlineStore>,
    pub loaded: RwLock<Arc<Loaded>>,
    pub cfg: Config,
    pub metrics: metrics::Metrics,
    pub inflight: std::sync::atomic::AtomicUsize,
    /// The ingest route's handler (None: the route answers 404).
    pub ingest: Option<Ingest>,
    /// The on-demand features' handler (None: they answer 501).
    pub on_demand: Option<derived::OnDemandFn>,
    /// The prediction log's queue (None: not logging); `None` sent on it stops its
    /// thread once every request is answered.
    pub log: Option<std::sync::mpsc::SyncSender<Option<LogEntry>>>,
    /// When requests came last, for the spinning worker.
    pub spin: spin::Spin,
}

/// A plan and the matrix reads prepared under it (dropped with it).
pub struct Loaded {
    pub plan: plan::Plan,
    pub cache: matrix::MatrixCache,
    pub sessions: predict::Sessions,
}

impl Loaded {
    /// `plan` with nothing prepared under it yet.
    fn new(plan: plan::Plan) -> Arc<Loaded> {
        Arc::new(Loaded {
            plan,
            cache: Default::default(),
            sessions: Default::default(),
        })
    }
}

impl State {
    pub fn loaded(&self) -> Arc<Loaded> {
        Arc::clone(&self.loaded.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Queues a prediction for the log, when logging.
    pub fn log(&self, entry: impl FnOnce() -> LogEntry) {
        if let Some(tx) = &self.log {
            let _ = tx.send(Some(entry()));
        }
    }
}

/// A running server.
pub struct Server {
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<Duration>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    log_thread: Mutex<Option<JoinHandle<()>>>,
    /// Threads building model sessions ([`predict::preload`]), joined on stop.
    preloads: Mutex<Vec<JoinHandle<()>>>,
}

impl Server {
    /// Binds `cfg.host:cfg.port` (port 0: any free port, see [`Server::addr`]) and
    /// serves on a runtime of `cfg.workers` threads until [`Server::stop`].
    pub fn start(
        store: Arc<OnlineStore>,
        plan: plan::Plan,
        cfg: Config,
        ingest: Option<Ingest>,
        log: Option<LogFn>,
        on_demand: Option<derived::OnDemandFn>,
    ) -> Result<Server> {
        let at = format!("{}:{}", cfg.host, cfg.port);
        let io = |op: &str, e: std::io::Error| {
            Error::InvalidArgument(format!(
                "cannot {op} {at} ({e}); pick another --port or --host"
            ))
        };
        let listener = std::net::TcpListener::bind((cfg.host.as_str(), cfg.port))
            .map_err(|e| io("listen on", e))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| io("listen on", e))?;
        let addr = listener.local_addr().map_err(|e| io("listen on", e))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cfg.workers.max(1))
            .thread_name("pitstop-serve")
            .enable_all()
            .build()
            .map_err(|e| io("start a runtime for", e))?;
        let (log_tx, log_thread) = match log {
            None => (None, None),
            Some(f) => {
                let (tx, rx) = std::sync::mpsc::sync_channel::<Option<LogEntry>>(LOG_QUEUE);
                let t = std::thread::Builder::new()
                    .name("pitstop-serve-log".into())
                    .spawn(move || {
                        for e in rx.iter().map_while(|e| e) {
                            f(&e.model, e.version, &e.entities, &e.x, e.n, e.d, &e.y);
                        }
                    })
                    .map_err(|e| io("start a thread for", e))?;
                (Some(tx), Some(t))
            }
        };
        let loaded = Loaded::new(plan);
        let preloads = Mutex::new(predict::preload(&loaded).into_iter().collect());
        let state = Arc::new(State {
            store,
            loaded: RwLock::new(loaded),
            cfg,
            metrics: Default::default(),
            inflight: Default::default(),
            ingest,
            on_demand,
            log: log_tx,
            spin: Default::default(),
        });
        let (tx, rx) = tokio::sync::oneshot::channel::<Duration>();
        let st = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("pitstop-serve-main".into())
            .spawn(move || {
                runtime.block_on(accept_loop(st, listener, rx));
                runtime.shutdown_timeout(Duration::from_millis(100));
            })
            .map_err(|e| io("start a thread for", e))?;
        Ok(Server {
            addr,
            state,
            stop: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
            log_thread: Mutex::new(log_thread),
            preloads,
        })
    }

    /// Swaps in a new plan (prepared reads of the old one are dropped with it).
    pub fn set_plan(&self, plan: plan::Plan) {
        let loaded = Loaded::new(plan);
        let preload = predict::preload(&loaded);
        *self.state.loaded.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        let mut preloads = self.preloads.lock().unwrap_or_else(|e| e.into_inner());
        preloads.retain(|t| !t.is_finished());
        preloads.extend(preload);
    }

    /// Stops accepting, lets in-flight requests finish for up to `drain`, and joins the
    /// server thread. Idempotent.
    pub fn stop(&self, drain: Duration) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(drain);
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = t.join();
        }
        // Every request is answered: the log's thread writes what is queued, then
        // stops at the `None` that ends its queue.
        if let Some(t) = (self.log_thread.lock())
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            if let Some(tx) = &self.state.log {
                let _ = tx.send(None);
            }
            let _ = t.join();
        }
        // Sessions still being built (ONNX Runtime must not be mid-load at exit).
        let preloads =
            std::mem::take(&mut *self.preloads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in preloads {
            let _ = t.join();
        }
    }

    /// Whether the server thread has ended (after [`Server::stop`]).
    pub fn finished(&self) -> bool {
        self.thread
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_none_or(|t| t.is_finished())
    }

    pub fn metrics(&self) -> String {
        self.state.metrics.render()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(1));
    }
}

/// Most connections served at once; beyond it a new connection is closed at once.
const MAX_CONNECTIONS: usize = 4096;

async fn accept_loop(
    state: Arc<State>,
    listener: std::net::TcpListener,
    mut stop: tokio::sync::oneshot::Receiver<Duration>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let graceful = GracefulShutdown::new();
    if !state.cfg.spin.is_zero() {
        tokio::spawn(spin::spinner(Arc::clone(&state)));
    }
    let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let drain = loop {
        tokio::select! {
            d = &mut stop => break d.unwrap_or(Duration::from_secs(1)),
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off, keep serving.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                use std::sync::atomic::Ordering;
                if open.load(Ordering::Relaxed) >= MAX_CONNECTIONS {
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let st = Arc::clone(&state);
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(state.cfg.timeout)
                    .keep_alive(true);
                let conn = builder.serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| http::handle(Arc::clone(&st), req)),
                );
                let conn = graceful.watch(conn);
                let open = Arc::clone(&open);
                open.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let _ = conn.await;
                    open.fetch_sub(1, Ordering::Relaxed);
                });
            }
        }
    };
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(drain) => {}
    }
}
