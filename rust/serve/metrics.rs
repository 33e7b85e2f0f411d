//! Prometheus counters: requests by route and status, a latency histogram, and the
//! found / missing / expired counts per view. Updated with atomics and short-held
//! mutexes (a few map entries); rendered as Prometheus text on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::online::read::Status;

/// Upper bounds of the latency buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0,
];

#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, u16), u64>>,
    /// Per bucket (and +Inf last): requests at or below its bound.
    hist: [AtomicU64; BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
    statuses: Mutex<BTreeMap<String, [u64; 3]>>,
    pub rejected_busy: AtomicU64,
}

impl Metrics {
    pub fn record(&self, route: &'static str, status: u16, took: Duration) {
        *self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((route, status))
            .or_default() += 1;
        let s = took.as_secs_f64();
        let b = BUCKETS
            .iter()
            .position(|&b| s <= b)
            .unwrap_or(BUCKETS.len());
        self.hist[b].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn statuses(&self, view: &str, status: impl Iterator<Item = Status>) {
        let mut c = [0u64; 3];
        for s in status {
            c[s as usize] += 1;
        }
        let mut m = self.statuses.lock().unwrap_or_else(|e| e.into_inner());
        let e = m.entry(view.to_string()).or_default();
        for j in 0..3 {
            e[j] += c[j];
        }
    }

    pub fn render(&self) -> String {
        let mut out = String::with_capacity(2048);
        out.push_str("# HELP pitstop_requests_total HTTP requests by route and status.\n");
        out.push_str("# TYPE pitstop_requests_total counter\n");
        for ((route, code), n) in self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            let _ = writeln!(
                out,
                "pitstop_requests_total{{route=\"{route}\",code=\"{code}\"}} {n}"
            );
        }
        out.push_str(
            "# HELP pitstop_request_seconds Request latency (handler, body read included).\n",
        );
        out.push_str("# TYPE pitstop_request_seconds histogram\n");
        let mut cum = 0;
        for (i, b) in BUCKETS.iter().enumerate() {
            cum += self.hist[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "pitstop_request_seconds_bucket{{le=\"{b}\"}} {cum}");
        }
        cum += self.hist[BUCKETS.len()].load(Ordering::Relaxed);
        let _ = writeln!(out, "pitstop_request_seconds_bucket{{le=\"+Inf\"}} {cum}");
        let _ = writeln!(
            out,
            "pitstop_request_seconds_sum {}",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "pitstop_request_seconds_count {}",
            self.count.load(Ordering::Relaxed)
        );
        out.push_str(
            "# HELP pitstop_lookups_total Looked-up (entity, selection) pairs by view and status.\n",
        );
        out.push_str("# TYPE pitstop_lookups_total counter\n");
        for (view, c) in self
            .statuses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            for (j, name) in ["found", "missing", "expired"].iter().enumerate() {
                let _ = writeln!(
                    out,
                    "pitstop_lookups_total{{view=\"{view}\",status=\"{name}\"}} {}",
                    c[j]
                );
            }
        }
        out.push_str("# HELP pitstop_rejected_busy_total Requests refused with 503 (overload).\n");
        out.push_str("# TYPE pitstop_rejected_busy_total counter\n");
        let _ = writeln!(
            out,
            "pitstop_rejected_busy_total {}",
            self.rejected_busy.load(Ordering::Relaxed)
        );
        out
    }
}
