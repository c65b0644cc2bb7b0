//! The short report printed after a recording (stderr, so it never mixes with the
//! workload's stdout, and only after the workload has ended).
use std::path::PathBuf;

use crate::profile::Profiles;
use crate::trace::{Audit, Exit, Trace};

pub fn print(trace: &Trace, profiles: &Profiles, written: &[PathBuf]) {
    let mut out = String::new();
    let exit = match trace.workload.exit {
        Exit::Code(c) => format!("exit code {c}"),
        Exit::Signal(s) => format!("killed by signal {s}"),
        Exit::Unknown => "exit status seen by the runtime only".to_owned(),
    };
    out.push_str(&format!(
        "profiler: recorded `{}` ({exit}, {:.2} s)\n",
        trace.workload.command.join(" "),
        trace.workload.duration_ms as f64 / 1000.0
    ));
    let allowed = trace.profile_syscall_names();
    let per_arch: Vec<String> = trace
        .syscalls
        .iter()
        .map(|(arch, list)| {
            let n = allowed.get(arch).map_or(0, |s| s.len());
            if n == list.len() {
                format!("{arch} {n}")
            } else {
                format!(
                    "{arch} {n} (plus {} only in the runtime's set-up)",
                    list.len() - n
                )
            }
        })
        .collect();
    out.push_str(&format!(
        "  syscalls:      {}\n",
        if per_arch.is_empty() {
            "none".into()
        } else {
            per_arch.join(", ")
        }
    ));
    if let Some(path) = trace
        .cgroup
        .path
        .as_deref()
        .filter(|_| trace.cgroup.container)
    {
        out.push_str(&format!(
            "  container:     cgroup {path}, {} seccomp filter load(s) by the runtime\n",
            trace.seccomp_filter_loads
        ));
    }
    if trace.cgroup.attached {
        out.push_str(
            "  attached:      recorded from the moment profiler attached: the start-up was not seen \
             (record --containers from the start to see it)\n",
        );
    }
    if profiles.capabilities.add.is_empty() {
        out.push_str("  capabilities:  none needed\n");
    }
    for (cap, evidence) in &profiles.capabilities.evidence {
        let ev: Vec<String> = evidence
            .iter()
            .take(3)
            .map(|e| {
                format!(
                    "{} ({})",
                    e.syscall.as_deref().unwrap_or("no syscall"),
                    e.checked_by
                )
            })
            .collect();
        out.push_str(&format!("  capability:    {cap}: {}\n", ev.join("; ")));
    }
    for (cap, evidence) in &profiles.capabilities.denied {
        let sys: Vec<&str> = evidence
            .iter()
            .filter_map(|e| e.syscall.as_deref())
            .collect();
        out.push_str(&format!(
            "  denied:        {cap} (not added; asked during {})\n",
            sys.join(", ")
        ));
    }
    let unaudited: u64 = trace
        .capability_checks
        .iter()
        .filter(|c| c.audit == Audit::Noaudit)
        .map(|c| c.count)
        .sum();
    if unaudited > 0 {
        let names: Vec<&String> = profiles.capabilities.ignored_unaudited.keys().collect();
        out.push_str(&format!(
            "  ignored:       {unaudited} unaudited checks ({}), which never need a capability\n",
            names
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    let other: u64 = profiles
        .capabilities
        .ignored_other_credentials
        .values()
        .sum();
    if other > 0 {
        let names: Vec<&str> = profiles
            .capabilities
            .ignored_other_credentials
            .keys()
            .map(String::as_str)
            .collect();
        out.push_str(&format!(
            "  ignored:       {other} checks of credentials other than the workload's ({}; e.g. overlayfs acting as its mounter)\n",
            names.join(", ")
        ));
    }
    let used_io_uring = trace
        .syscall_names()
        .values()
        .any(|names| names.contains("io_uring_setup") || names.contains("io_uring_enter"));
    if used_io_uring {
        let allowed = profiles.seccomp.may_allow("io_uring_setup");
        let ops: Vec<&str> = trace.io_uring_ops.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "  WARNING:       the workload used io_uring ({}); seccomp cannot see the operations it carries (open, \
             connect, mkdir... never enter their syscalls), so {}\n",
            if ops.is_empty() {
                "operations not seen".to_owned()
            } else {
                format!("operations: {}", ops.join(", "))
            },
            if allowed {
                "seccomp.json allows io_uring and with it every such operation (--allow-io-uring)"
            } else {
                "seccomp.json refuses io_uring (EPERM); the program must fall back, or pass --allow-io-uring"
            }
        ));
    }
    let users = &profiles.image.users;
    match crate::profile::image_profile::run_as(&profiles.image) {
        Some(u) => out.push_str(&format!("  user:          ran as {u} throughout (--user {u})\n")),
        None if users.needs_root
            && users.switched_to.is_empty()
            && profiles.capabilities.add.is_empty() =>
        {
            out.push_str(
                "  user:          ran as root but needed no capability: it may run as a non-root user \
                 (--user), if that user can write what it writes\n",
            )
        }
        None => {}
    }
    if trace.workload.leftover_processes > 0 {
        out.push_str(&format!(
            "  leftovers:     {} process(es) still ran when the command exited and were stopped\n",
            trace.workload.leftover_processes
        ));
    }
    // What the programs are known to be able to do that the profile denies (their import
    // tables), so a path the training missed is no surprise in production.
    let state = |n: &str| crate::profile::seccomp::in_profile(&profiles.seccomp, n);
    for line in crate::profile::imported::summary_lines(&profiles.programs, &state) {
        out.push_str(&format!("  imports:       {line}\n"));
    }
    let files: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
    out.push_str(&format!("  wrote:         {}\n", files.join(", ")));
    eprint!("{out}");
}
