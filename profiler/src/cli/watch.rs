//! `profiler watch --profile DIR --attach TARGET`: runs next to a workload in production and
//! reports, one JSON line each within a second, what it does that its profile does not
//! allow: a syscall (per architecture), a capability, an exec, a write outside the writable
//! directories, a bind or connect to another port; and a summary line every
//! `--summary-every`. The cost is that of recording: the same in-kernel aggregation, read
//! once a second; nothing per syscall crosses to userspace.
//!
//! It works whether the workload runs unconfined or under its profile in log mode
//! (`SCMP_ACT_LOG` lets the syscall through, so the probes still see it). Under the enforced
//! profile a refused syscall never reaches the tracepoint (seccomp runs first,
//! `syscall_trace_enter()` in kernel/entry/common.c), so only the other kinds are reported.
//!
//! `--promote OUT` then writes the next profile: the old recording plus what production
//! needed (coverage.json says which run saw what), and prints `profiler diff OLD OUT`. The
//! log's last line holds the production trace, so `profiler promote --out OUT DIR LOG…`
//! can do the same later, from logs.
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::cli::attach::{Ended, Session};
use crate::confine::diff::Allowances;
use crate::exit::exit_error;
use crate::kernel::check_privileges;
use crate::profile::image_profile::ImageProfile;
use crate::profile::seccomp::GenerateOptions;
use crate::trace::{Exit, Trace};

pub struct WatchOptions {
    pub profile: PathBuf,
    /// `--attach TARGET`; else `command` is started (and with `containers`, the containers
    /// it starts are watched).
    pub target: Option<String>,
    pub command: Vec<String>,
    pub containers: bool,
    pub log: Option<PathBuf>,
    pub promote: Option<PathBuf>,
    pub duration: Option<Duration>,
    pub summary_every: Duration,
    pub generate: GenerateOptions,
}

/// One thing the workload did that the profile does not allow, as a drift line's fields.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Drift {
    Syscall {
        arch: String,
        name: String,
    },
    /// A syscall the profile allows only for some argument values, made with others
    /// (`socket(arg0 == 10)`: an address family the training never used).
    Arguments {
        arch: String,
        name: String,
        rule: String,
    },
    Capability {
        name: String,
    },
    Exec {
        path: String,
    },
    Write {
        path: String,
    },
    Bind {
        port: u16,
    },
    Connect {
        address: String,
    },
}

impl Drift {
    fn to_json(&self) -> serde_json::Value {
        match self {
            Drift::Syscall { arch, name } => json!({"kind": "syscall", "arch": arch, "name": name}),
            Drift::Arguments { arch, name, rule } => {
                let args = rule
                    .strip_prefix(name.as_str())
                    .unwrap_or(rule)
                    .trim_start_matches('(')
                    .trim_end_matches(')');
                json!({"kind": "syscall", "arch": arch, "name": name, "arguments": args})
            }
            Drift::Capability { name } => json!({"kind": "capability", "name": name}),
            Drift::Exec { path } => json!({"kind": "exec", "path": path}),
            Drift::Write { path } => json!({"kind": "write", "path": path}),
            Drift::Bind { port } => json!({"kind": "bind", "port": port}),
            Drift::Connect { address } => json!({"kind": "connect", "address": address}),
        }
    }
}

fn beneath(path: &str, dirs: &BTreeSet<String>) -> bool {
    dirs.iter()
        .any(|d| d == "/" || path == d || path.starts_with(&format!("{d}/")))
}

/// What `seen` (a trace of production) needs that `old` (the profile's image profile) does
/// not allow, with the profile generator's own rules on both sides.
pub fn drift(
    old: &ImageProfile,
    old_seccomp: &Allowances,
    seen: &Trace,
    options: &GenerateOptions,
) -> BTreeSet<Drift> {
    let now = crate::profile::generate(std::slice::from_ref(seen), options);
    let mut out = BTreeSet::new();
    // Argument values: a rule the new profile needs that the old one has not, for a
    // syscall the old one allows only for some values (whatever its default action says).
    let now_seccomp = Allowances::from_profile(&now.seccomp, &now.capabilities);
    for (arch, rules) in &now_seccomp.argument_rules {
        let old_rules = old_seccomp.argument_rules.get(arch);
        let old_plain = old_seccomp.syscalls.get(arch);
        for rule in rules {
            let name = rule.split('(').next().unwrap_or(rule);
            let known = old_rules.is_some_and(|r| r.contains(rule))
                || old_plain.is_some_and(|p| p.contains(name));
            let syscall_known =
                old_rules.is_some_and(|r| r.iter().any(|x| x.split('(').next() == Some(name)));
            if !known && syscall_known {
                out.insert(Drift::Arguments {
                    arch: arch.clone(),
                    name: name.to_owned(),
                    rule: rule.clone(),
                });
            }
        }
    }
    for (arch, names) in &now.syscalls {
        let before = old.syscalls.get(arch);
        for n in names {
            if !before.is_some_and(|b| b.contains(n)) {
                out.insert(Drift::Syscall {
                    arch: arch.label().to_owned(),
                    name: n.clone(),
                });
            }
        }
    }
    for c in &now.capabilities.add {
        if !old.capabilities.contains(c) {
            out.insert(Drift::Capability { name: c.clone() });
        }
    }
    let known_files: BTreeSet<&String> = old
        .executables
        .keys()
        .chain(old.executable_files.keys())
        .collect();
    for path in seen.image.executables.keys() {
        if !known_files.contains(path) {
            out.insert(Drift::Exec { path: path.clone() });
        }
    }
    for path in seen.image.written_paths.keys() {
        // The workload's own /proc entries are no image writes.
        if !beneath(path, &old.writable_directories)
            && !path.starts_with("/proc/self/")
            && !path.starts_with("/dev/")
        {
            out.insert(Drift::Write { path: path.clone() });
        }
    }
    for p in &seen.image.network.bound_ports {
        if !old.network.bound_ports.contains(p) {
            out.insert(Drift::Bind { port: *p });
        }
    }
    for a in &seen.image.network.connected {
        if !old.network.connected.contains(a) {
            out.insert(Drift::Connect { address: a.clone() });
        }
    }
    out
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

struct Log {
    out: Box<dyn std::io::Write>,
}

impl Log {
    fn line(&mut self, v: &serde_json::Value) {
        if let Ok(mut bytes) = serde_json::to_vec(v) {
            bytes.push(b'\n');
            let _ = self.out.write_all(&bytes);
            let _ = self.out.flush();
        }
    }
}

/// Exit code of `watch` when production needed something the profile does not allow.
pub const EXIT_DRIFT: i32 = 5;

pub fn watch(opts: WatchOptions) -> anyhow::Result<i32> {
    check_privileges("profiler watch")?;
    let old = crate::profile::load_image_profile(&opts.profile)
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
    let old_seccomp =
        Allowances::load(&opts.profile).map_err(|e| exit_error(2, format!("{e:#}")))?;
    let old_trace_path = opts.profile.join(crate::profile::TRACE_FILE);
    if let Some(out) = &opts.promote {
        if !old_trace_path.exists() {
            return Err(exit_error(
                2,
                format!(
                    "--promote needs the recording the profile came from: {} is missing",
                    old_trace_path.display()
                ),
            ));
        }
        crate::profile::out_dir::OutputDir::check(out, opts.generate.follow_symlinks)
            .map_err(|e| exit_error(2, format!("--promote {}: {e:#}", out.display())))?;
    }
    let mut log = Log {
        out: match &opts.log {
            Some(p) => Box::new(
                crate::profile::out_dir::open_log(p, opts.generate.follow_symlinks)
                    .map_err(|e| exit_error(2, format!("--log: {e:#}")))?,
            ),
            None => Box::new(std::io::stdout()),
        },
    };
    let mut session = match &opts.target {
        Some(t) => Session::start(t)?,
        None => Session::command(&opts.command, opts.containers)?,
    };
    eprintln!(
        "profiler: watching {} (cgroup {}) against {}",
        session.target,
        session.attached.cgroup_path,
        opts.profile.display()
    );
    let mut reported: BTreeSet<(String, Drift)> = BTreeSet::new();
    let mut last_summary = Instant::now();
    let started = Instant::now();
    let generate = opts.generate.clone();
    // (cgroup, drift): each container reports its own.
    let check = |session: &mut Session,
                 log: &mut Log,
                 reported: &mut BTreeSet<(String, Drift)>|
     -> anyhow::Result<()> {
        for seen in session.traces(false, Exit::Unknown)? {
            let cgroup = seen.cgroup.path.clone().unwrap_or_default();
            for d in drift(&old, &old_seccomp, &seen, &generate) {
                if reported.insert((cgroup.clone(), d.clone())) {
                    let mut v = d.to_json();
                    v["time"] = json!(unix_time());
                    v["cgroup"] = json!(cgroup);
                    log.line(&v);
                }
            }
        }
        Ok(())
    };
    let summary = |log: &mut Log, reported: &BTreeSet<(String, Drift)>, last: bool| {
        log.line(&json!({
            "kind": "summary",
            "time": unix_time(),
            "watched_seconds": started.elapsed().as_secs_f64(),
            "drift": reported.len(),
            "final": last,
        }));
    };
    let ended = {
        let log = &mut log;
        let reported = &mut reported;
        session.run(opts.duration, Duration::from_secs(1), &mut |s| {
            check(s, log, reported)?;
            if last_summary.elapsed() >= opts.summary_every {
                summary(log, reported, false);
                last_summary = Instant::now();
            }
            Ok(())
        })?
    };
    check(&mut session, &mut log, &mut reported)?;
    let production = session.traces(true, Exit::Unknown)?;
    summary(&mut log, &reported, true);
    // The production traces, for `profiler promote` later.
    let ended = match ended {
        Ended::Exited => "exited",
        Ended::Duration => "duration",
        Ended::Signal => "signal",
    };
    for t in &production {
        log.line(&json!({"kind": "trace", "ended": ended, "trace": serde_json::to_value(t)?}));
    }
    if let Some(out) = &opts.promote {
        // (watch's own exit code says whether there was drift; the diff is printed)
        promote_traces(out, &opts.profile, production, &opts.generate)?;
    }
    // A workload watch started keeps its exit code when it failed.
    let code = session.exit().map(|e| e.as_exit_code()).unwrap_or(0);
    Ok(if code != 0 {
        code
    } else if reported.is_empty() {
        0
    } else {
        EXIT_DRIFT
    })
}

/// Writes OUT: the profile's recording plus the production traces (one union trace as
/// trace.json, coverage.json with each run), and prints `profiler diff OLD OUT`; returns
/// the diff's exit code.
pub fn promote_traces(
    out: &Path,
    old_profile: &Path,
    production: Vec<Trace>,
    options: &GenerateOptions,
) -> anyhow::Result<i32> {
    let old_path = old_profile.join(crate::profile::TRACE_FILE);
    let old = Trace::load(&old_path).map_err(|e| exit_error(2, format!("{e:#}")))?;
    let mut all = vec![old.clone()];
    all.extend(production.iter().cloned());
    let mut names = vec![old_path.display().to_string()];
    names.extend((1..=production.len()).map(|i| format!("production-{i}")));
    let named: Vec<(String, &Trace)> = names.into_iter().zip(all.iter()).collect();
    let mut union = old;
    for t in &production {
        union.union(t);
    }
    let profiles = crate::profile::generate(&all, options);
    let mut files = crate::profile::render(Some(&union), &profiles, out, options);
    files.push(crate::profile::coverage_file(&named, &profiles, options));
    crate::profile::write_atomically(out, &files, options.follow_symlinks)?;
    eprintln!(
        "profiler: promoted {} into {}",
        old_profile.display(),
        out.display()
    );
    crate::cli::diff::diff(old_profile, out, false)
}

/// `profiler promote --out OUT PROFILE WATCH_LOG…`: the production traces from watch logs.
pub fn promote(
    out: &Path,
    profile: &Path,
    logs: &[PathBuf],
    options: &GenerateOptions,
) -> anyhow::Result<i32> {
    let mut traces = Vec::new();
    for log in logs {
        // Line by line: a log of a long watch holds a report per drift, and only its trace
        // lines are kept.
        let file = std::fs::File::open(log)
            .map_err(|e| exit_error(2, format!("{}: {e}", log.display())))?;
        for (i, line) in std::io::BufRead::lines(std::io::BufReader::new(file)).enumerate() {
            let line =
                line.map_err(|e| exit_error(2, format!("{}:{}: {e}", log.display(), i + 1)))?;
            let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| {
                exit_error(
                    2,
                    format!("{}:{}:{}: {e}", log.display(), i + 1, e.column()),
                )
            })?;
            if v["kind"] == "trace" {
                let t: Trace = serde_json::from_value(v["trace"].clone()).map_err(|e| {
                    exit_error(2, format!("{}:{}: the trace: {e}", log.display(), i + 1))
                })?;
                t.validate().map_err(|e| {
                    exit_error(
                        2,
                        format!(
                            "{}:{}: the trace, at {}: {}",
                            log.display(),
                            i + 1,
                            e.pointer,
                            e.message
                        ),
                    )
                })?;
                traces.push(t);
            }
        }
    }
    if traces.is_empty() {
        return Err(exit_error(
            2,
            "no production trace in the logs (watch writes it as the last line)".to_owned(),
        ));
    }
    // The diff's exit code: 1 when the next profile allows more than PROFILE (the CI gate).
    promote_traces(out, profile, traces, options)
}
