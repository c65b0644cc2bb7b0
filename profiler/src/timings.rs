//! `PROFILER_TIMINGS=1`: prints when each stage of a run ends, in milliseconds since
//! profiler started, to stderr, with the CPU time profiler's own threads have used so far
//! (its children's not included). For finding where start-up and shut-down time goes, and
//! what profiler itself takes from the workload while it runs.
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
        let cpu_ms = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)
            .map(|u| {
                let ms = |t: nix::sys::time::TimeVal| {
                    t.tv_sec() as f64 * 1000.0 + t.tv_usec() as f64 / 1000.0
                };
                ms(u.user_time()) + ms(u.system_time())
            })
            .unwrap_or(f64::NAN);
        eprintln!(
            "profiler: timing: {:8.1} ms  (cpu {cpu_ms:7.1} ms)  {stage}",
            start.elapsed().as_secs_f64() * 1000.0
        );
    }
}

/// Whether `PROFILER_TIMINGS` is set.
pub fn enabled() -> bool {
    matches!(START.get(), Some(Some(_)))
}
