//! Phase timings on stderr when `PITSTOP_TRACE=1`: where a slow call spends its time
//! and memory (resident and peak resident MiB after each phase, from
//! `/proc/self/status` where it exists), without a profiler. Off by default; costs one
//! atomic load per phase. Each line also gives the process's CPU time in the phase.

use std::sync::OnceLock;
use std::time::Instant;

fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("PITSTOP_TRACE").is_some_and(|v| v != "0"))
}

/// Runs `f`, printing `pitstop: <name> <ms>` when tracing is on, then when the phase
/// started (ms since the process's first traced phase: phases on other threads that
/// overlap it show as overlapping spans).
pub fn phase<T>(name: &str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    let start = Instant::now();
    let cpu = cpu_ms();
    let out = f();
    eprintln!(
        "pitstop: {name:<24} {:>9.2} ms  cpu {:>8.1} ms  at {:>9.1} ms{}",
        start.elapsed().as_secs_f64() * 1e3,
        cpu_ms() - cpu,
        (start - epoch).as_secs_f64() * 1e3,
        memory()
    );
    out
}

/// The CPU time of the whole process (every thread, user and system) in ms: on a
/// busy machine a phase's CPU time says more than its wall time.
#[cfg(unix)]
fn cpu_ms() -> f64 {
    // SAFETY: getrusage only writes the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) } != 0 {
        return 0.0;
    }
    let ms = |t: libc::timeval| t.tv_sec as f64 * 1e3 + t.tv_usec as f64 / 1e3;
    ms(u.ru_utime) + ms(u.ru_stime)
}

#[cfg(not(unix))]
fn cpu_ms() -> f64 {
    0.0
}

/// `  rss <MiB> peak <MiB>` from `/proc/self/status`, or nothing.
fn memory() -> String {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return String::new();
    };
    let kib = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
    };
    match (kib("VmRSS:"), kib("VmHWM:")) {
        (Some(rss), Some(peak)) => format!("  rss {:>6} peak {:>6} MiB", rss >> 10, peak >> 10),
        _ => String::new(),
    }
}
