//! `PROFILER_TIMINGS=1`: prints when each stage of a run ends, in milliseconds since
//! profiler started, to stderr. For finding where start-up and shut-down time goes.
use std::sync::OnceLock;
use std::time::Instant;

static START: OnceLock<Option<Instant>> = OnceLock::new();

/// Starts the clock (called first thing in `main`).
pub fn start() {
    START.get_or_init(|| std::env::var_os("PROFILER_TIMINGS").map(|_| Instant::now()));
}

/// Notes that `stage` just ended.
pub fn mark(stage: &str) {
    if let Some(Some(start)) = START.get() {
        eprintln!(
            "profiler: timing: {:8.1} ms  {stage}",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
}
