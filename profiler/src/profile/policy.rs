//! Which parts of a trace a profile must allow: the phases behind a container runtime, the
//! runtime's own asynchronous syscalls, and the union of several traces. The seccomp
//! generator's own rules (always-allowed syscalls, newer siblings) are in `seccomp`.
use std::collections::{BTreeMap, BTreeSet};

use crate::arch::Arch;
use crate::trace::{ArgumentValues, CapabilityCheck, Phase, Trace};

/// Syscalls a container runtime's own language runtime makes at moments it does not choose:
/// runc's Go scheduler and garbage collector park and wake threads (futex, nanosleep,
/// sched_yield, epoll_pwait for the netpoller), preempt them with signals (tgkill,
/// rt_sigreturn, sigaltstack, rt_sigprocmask) and return memory (madvise, munmap, mmap).
/// Whether one of them lands after the runtime loaded the filter or just before is timing:
/// a recording sees it before, the next run needs it after (a missing futex crashes
/// `runc init`, ../shared/platform.md; a missing one hung podman containers under load in
/// this project's tests). So every profile of a container behind a runtime allows them;
/// none of them grants anything the workload could not do with the syscalls it already has.
pub const RUNTIME_ASYNC_SYSCALLS: &[&str] = &[
    "futex",
    "nanosleep",
    "clock_nanosleep",
    "sched_yield",
    "epoll_pwait",
    "epoll_wait",
    "epoll_ctl",
    "tgkill",
    "getpid",
    "gettid",
    "rt_sigreturn",
    "rt_sigprocmask",
    "sigaltstack",
    "madvise",
    "mmap",
    "munmap",
    "restart_syscall",
];

impl Trace {
    /// The capability checks the workload's whitelist is made from: everything for a command
    /// profiler started; for a container, the checks after the runtime's exec of the
    /// entrypoint began (the runtime's own set-up, e.g. setuid or capset in runc before it
    /// drops privileges, runs with privileges the container never gets), including the checks
    /// made by that exec itself, which runs with the container's final capabilities.
    pub fn profile_capability_checks(&self) -> impl Iterator<Item = &CapabilityCheck> {
        let after_filter = self.filter_loaded_before_exec();
        self.capability_checks.iter().filter(move |c| {
            !after_filter
                || c.phase == Phase::Workload
                || c.syscall
                    .as_ref()
                    .is_some_and(|s| s.name == "execve" || s.name == "execveat")
                    && c.phase == Phase::Runtime
        })
    }

    /// Argument values the profile must allow: the union over the phases whose syscalls the
    /// profile allows.
    pub fn profile_arguments(&self) -> ArgumentValues {
        let after_filter = self.filter_loaded_before_exec();
        let mut out = ArgumentValues::default();
        for (phase, values) in &self.arguments {
            if !after_filter || *phase != Phase::Setup {
                out.union(values);
            }
        }
        out
    }

    /// Syscall names the profile must allow, per architecture: everything from the point a
    /// runtime loads the filter (or, without a runtime filter, everything: the command was
    /// started by profiler, whose filter goes in right before the exec), plus, behind a
    /// container runtime, its [`RUNTIME_ASYNC_SYSCALLS`] whether or not this recording caught
    /// them (an OCI-hook recording starts after much of the runtime's set-up, and under load
    /// the Go runtime's timing moves them across the filter load).
    pub fn profile_syscall_names(&self) -> BTreeMap<Arch, BTreeSet<String>> {
        let after_filter = self.filter_loaded_before_exec();
        self.syscalls
            .iter()
            .map(|(arch, entries)| {
                let mut names: BTreeSet<String> = entries
                    .iter()
                    .filter(|e| !after_filter || e.phases.iter().any(|p| *p != Phase::Setup))
                    .map(|e| e.name.clone())
                    .collect();
                if after_filter && *arch == Arch::X86_64 {
                    names.extend(RUNTIME_ASYNC_SYSCALLS.iter().map(|s| s.to_string()));
                }
                (*arch, names)
            })
            .filter(|(_, names): &(Arch, BTreeSet<String>)| !names.is_empty())
            .collect()
    }
}

/// The union of several traces, as the generators see it.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub syscalls: BTreeMap<Arch, BTreeSet<String>>,
    pub arguments: ArgumentValues,
    pub capability_checks: Vec<CapabilityCheck>,
    pub runs: usize,
    /// Each executable's imports against the syscalls seen (see `imported`).
    pub programs: BTreeMap<String, crate::profile::imported::ProgramCoverage>,
}

impl Observed {
    pub fn from_traces(traces: &[Trace]) -> Observed {
        let mut observed = Observed::default();
        for trace in traces {
            observed.runs += 1;
            observed.arguments.union(&trace.profile_arguments());
            for (arch, names) in trace.profile_syscall_names() {
                observed.syscalls.entry(arch).or_default().extend(names);
            }
            observed
                .capability_checks
                .extend(trace.profile_capability_checks().cloned());
        }
        let mut image = crate::trace::image::ImageInfo::default();
        for trace in traces {
            for (path, file) in &trace.image.executable_files {
                image
                    .executable_files
                    .entry(path.clone())
                    .or_insert_with(|| file.clone());
            }
        }
        observed.programs = crate::profile::imported::programs(&image, &observed.syscalls);
        observed
    }
}
