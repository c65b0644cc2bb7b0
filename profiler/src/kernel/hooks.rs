//! The kernel hooks profiler attaches, as data: for each hook what it is for, whether a
//! recording can do without it, when it applies, and its candidate programs in order of
//! preference. The loader's verify list, the attach loop, the attach-target BTF, and the
//! "which programs are ours" check all derive from [`HOOKS`]; the eBPF side has one file
//! per row (`profiler-ebpf/src/programs/`).
//!
//! Why these candidates: `tp_btf` programs read kernel structures through BTF pointers
//! directly, where `bpf_probe_read_kernel` may be refused (lockdown); `raw_tp` is the
//! fallback on kernels without BTF; `fexit` on `cap_capable()` serves kernels older than the
//! `capability:cap_capable` tracepoint (6.14), where the kernel lets fexit load.
use std::os::fd::AsFd as _;

use anyhow::Context as _;
use aya::Btf;
use aya::Ebpf;
use aya::programs::{BtfTracePoint, FExit, RawTracePoint};

use crate::kernel::record_table::EpochProgram;

/// One way of attaching a program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attach {
    /// (program, tracepoint): `tp_btf`, needs kernel BTF.
    TpBtf(&'static str, &'static str),
    /// (program, tracepoint): `raw_tp`.
    RawTp(&'static str, &'static str),
    /// (program, kernel function): `fexit`, needs kernel BTF.
    FExit(&'static str, &'static str),
}

impl Attach {
    pub fn program(self) -> &'static str {
        match self {
            Attach::TpBtf(p, _) | Attach::RawTp(p, _) | Attach::FExit(p, _) => p,
        }
    }

    /// How trace.json and messages name it: `tp_btf/sys_enter`.
    pub fn label(self) -> String {
        match self {
            Attach::TpBtf(_, t) => format!("tp_btf/{t}"),
            Attach::RawTp(_, t) => format!("raw_tp/{t}"),
            Attach::FExit(_, f) => format!("fexit/{f}"),
        }
    }

    /// The BTF type it attaches to (name, kind), for the attach-target BTF.
    pub fn btf_target(self) -> Option<(String, u32)> {
        match self {
            Attach::TpBtf(_, t) => Some((format!("btf_trace_{t}"), BTF_KIND_TYPEDEF)),
            Attach::FExit(_, f) => Some((f.to_owned(), BTF_KIND_FUNC)),
            Attach::RawTp(..) => None,
        }
    }
}

/// BTF kinds (include/uapi/linux/btf.h).
pub const BTF_KIND_PTR: u32 = 2;
pub const BTF_KIND_TYPEDEF: u32 = 8;
pub const BTF_KIND_FUNC: u32 = 12;

/// What a hook is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Point {
    /// Every syscall of a recorded cgroup (the profile's substance).
    Syscalls,
    /// Execs: where a cgroup's workload starts, and what it runs.
    Exec,
    /// Forks: children inherit their parent's working directory (path resolution).
    Fork,
    /// Tasks moved between cgroups: a workload leaving its recording.
    CgroupMove,
    /// Capability checks.
    Capabilities,
    /// io_uring operations submitted (what a ring does that seccomp cannot see).
    IoUring,
    /// Tasks moved to another CPU: lets the capability hook know a check's call path by its
    /// stack depth instead of walking the stack (a speed-up only).
    Migrations,
}

/// One kernel hook.
pub struct Hook {
    pub point: Point,
    /// A recording cannot go on without it.
    pub required: bool,
    /// Needs `task_struct.pid`/`tgid` offsets from BTF (the program reads another task).
    pub needs_task_offsets: bool,
    /// In order of preference.
    pub candidates: &'static [Attach],
}

pub const HOOKS: &[Hook] = &[
    Hook {
        point: Point::Syscalls,
        required: true,
        needs_task_offsets: false,
        candidates: &[
            Attach::TpBtf("sys_enter_btf", "sys_enter"),
            Attach::RawTp("sys_enter_raw", "sys_enter"),
        ],
    },
    Hook {
        point: Point::Exec,
        required: true,
        needs_task_offsets: false,
        candidates: &[
            Attach::TpBtf("sched_process_exec_btf", "sched_process_exec"),
            Attach::RawTp("sched_process_exec_raw", "sched_process_exec"),
        ],
    },
    Hook {
        point: Point::Fork,
        required: false,
        needs_task_offsets: true,
        candidates: &[Attach::TpBtf(
            "sched_process_fork_btf",
            "sched_process_fork",
        )],
    },
    Hook {
        point: Point::CgroupMove,
        required: false,
        needs_task_offsets: true,
        candidates: &[Attach::TpBtf(
            "cgroup_attach_task_btf",
            "cgroup_attach_task",
        )],
    },
    Hook {
        point: Point::Capabilities,
        required: false,
        needs_task_offsets: false,
        candidates: &[
            Attach::TpBtf("cap_capable_btf", "cap_capable"),
            Attach::FExit("cap_capable_fexit", "cap_capable"),
        ],
    },
    Hook {
        point: Point::IoUring,
        required: false,
        needs_task_offsets: false,
        candidates: &[Attach::TpBtf(
            "io_uring_submit_req_btf",
            "io_uring_submit_req",
        )],
    },
    Hook {
        point: Point::Migrations,
        required: false,
        needs_task_offsets: false,
        candidates: &[Attach::TpBtf(
            "sched_migrate_task_btf",
            "sched_migrate_task",
        )],
    },
];

/// The benchmarks' do-nothing program on the syscall tracepoint (not a recording's hook).
pub const FLOOR: Attach = Attach::TpBtf("sys_enter_floor", "sys_enter");

/// Every BTF type a program attaches to.
pub fn btf_targets() -> Vec<(String, u32)> {
    let mut out: Vec<(String, u32)> = HOOKS
        .iter()
        .flat_map(|h| h.candidates.iter())
        .chain(std::iter::once(&FLOOR))
        .filter_map(|a| a.btf_target())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// The preferred `tp_btf` program of every hook that applies, to verify ahead on threads.
pub fn preferred_btf_programs(task_offsets: bool) -> Vec<(&'static str, &'static str)> {
    HOOKS
        .iter()
        .filter(|h| task_offsets || !h.needs_task_offsets)
        .filter_map(|h| match h.candidates.first() {
            Some(Attach::TpBtf(p, t)) => Some((*p, *t)),
            _ => None,
        })
        .collect()
}

/// Attaches the first candidate of `hook` that works; returns its label, or why each failed.
pub fn attach_first<'b>(
    ebpf: &mut Ebpf,
    btf_for: impl Fn(Attach) -> Option<&'b Btf>,
    hook: &Hook,
) -> Result<String, Vec<String>> {
    let mut errors = Vec::new();
    for &candidate in hook.candidates {
        match attach(ebpf, btf_for(candidate), candidate) {
            Ok(()) => return Ok(candidate.label()),
            Err(e) => errors.push(format!("{}: {e:#}", candidate.label())),
        }
    }
    Err(errors)
}

pub fn attach(ebpf: &mut Ebpf, btf: Option<&Btf>, how: Attach) -> anyhow::Result<()> {
    let program = ebpf
        .program_mut(how.program())
        .with_context(|| format!("program {} missing from the eBPF object", how.program()))?;
    match how {
        Attach::TpBtf(_, tracepoint) => {
            let btf = btf.context(
                "no BTF id for this target (kernel without BTF, or without this tracepoint or function)",
            )?;
            let prog: &mut BtfTracePoint = program.try_into()?;
            if prog.fd().is_err() {
                // Not loaded by `verify_in_parallel` (or it failed there): load now, for the
                // error.
                prog.load(tracepoint, btf)?;
            }
            prog.attach()?;
        }
        Attach::RawTp(_, tracepoint) => {
            let prog: &mut RawTracePoint = program.try_into()?;
            prog.load()?;
            prog.attach(tracepoint)?;
        }
        Attach::FExit(_, function) => {
            let btf = btf.context(
                "no BTF id for this target (kernel without BTF, or without this tracepoint or function)",
            )?;
            let prog: &mut FExit = program.try_into()?;
            prog.load(function, btf)?;
            prog.attach()?;
        }
    }
    Ok(())
}

/// The programs by the time the verifier takes over them, longest first (serial loads, AMD
/// EPYC, 6.18: sys_enter 7.5 ms, cap_capable 5, cgroup_attach_task 3.6, sched_process_exec
/// 2.5, sched_process_fork 1, io_uring_submit_req 0.7, sched_migrate_task 0.2). Unlisted
/// ones go last.
const VERIFY_ORDER: &[&str] = &[
    "sys_enter_btf",
    "cap_capable_btf",
    "cgroup_attach_task_btf",
    "sched_process_exec_btf",
    "sched_process_fork_btf",
    "io_uring_submit_req_btf",
    "sched_migrate_task_btf",
];

/// Loads `tp_btf` programs, (program, tracepoint) pairs, on as many threads as there are
/// CPUs: the verifier runs in the loading thread (`cargo xtask bench --only startup`
/// measures start-up). Each thread takes the next program, longest first, so the longest
/// one starts at once instead of sharing a CPU with all the others (BENCHMARKS.md, M23).
/// Failures are left for [`attach`] to retry and report.
pub fn verify_in_parallel(ebpf: &mut Ebpf, btf: &Btf, wanted: &[(&str, &str)]) {
    let mut programs: Vec<(usize, &str, &mut BtfTracePoint)> = ebpf
        .programs_mut()
        .filter_map(|(name, program)| {
            let (_, tracepoint) = wanted.iter().find(|(p, _)| *p == name)?;
            let rank = VERIFY_ORDER
                .iter()
                .position(|p| *p == name)
                .unwrap_or(VERIFY_ORDER.len());
            Some((
                rank,
                *tracepoint,
                <&mut BtfTracePoint>::try_from(program).ok()?,
            ))
        })
        .collect();
    programs.sort_by_key(|(rank, _, _)| *rank);
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(programs.len());
    let queue = std::sync::Mutex::new(programs.into_iter());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    // The lock is held only to take the next program, not while it loads.
                    let next = queue.lock().map(|mut q| q.next());
                    let Ok(Some((_, tracepoint, program))) = next else {
                        break;
                    };
                    let _ = program.load(tracepoint, btf);
                    crate::timings::mark(&format!("verified: {tracepoint}"));
                }
            });
        }
    });
}

/// The program userspace changes the record table's epoch with (see `record_table`), loaded
/// and never attached, as a descriptor of its own for the record table to keep.
pub fn load_epoch_program(ebpf: &mut Ebpf) -> anyhow::Result<EpochProgram> {
    let program: &mut RawTracePoint = ebpf
        .program_mut(EPOCH_PROGRAM)
        .with_context(|| format!("program {EPOCH_PROGRAM} missing from the eBPF object"))?
        .try_into()?;
    program
        .load()
        .with_context(|| format!("loading {EPOCH_PROGRAM} failed"))?;
    let fd = program.fd()?.as_fd().try_clone_to_owned()?;
    EpochProgram::new(fd)
}

/// See [`load_epoch_program`].
pub const EPOCH_PROGRAM: &str = "profiler_epoch";

/// Names of this project's programs currently loaded in the kernel (by anyone).
pub fn loaded_profiler_programs() -> Vec<String> {
    // The kernel keeps the first 15 bytes of a program's name (BPF_OBJ_NAME_LEN - 1).
    let ours: Vec<&str> = HOOKS
        .iter()
        .flat_map(|h| h.candidates.iter())
        .chain(std::iter::once(&FLOOR))
        .map(|a| a.program())
        .chain(std::iter::once(EPOCH_PROGRAM))
        .map(|p| &p[..p.len().min(15)])
        .collect();
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| p.name_as_str().map(str::to_owned))
        .filter(|n| ours.iter().any(|o| n.starts_with(o)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_hook_has_candidates_and_names_are_unique() {
        let mut names: Vec<&str> = HOOKS
            .iter()
            .flat_map(|h| h.candidates.iter().map(|a| a.program()))
            .chain(std::iter::once(FLOOR.program()))
            .collect();
        assert!(HOOKS.iter().all(|h| !h.candidates.is_empty()));
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n, "a program appears twice");
    }
}
