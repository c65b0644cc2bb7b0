//! Turning what the kernel side aggregated for one cgroup, and the events it streamed, into
//! a [`Trace`].
use anyhow::Context as _;
use profiler_common::Event;

use crate::kernel::Collected;
use crate::kernel::kallsyms::Kallsyms;
use crate::recording::cap_checks::checks_from_kernel;
use crate::trace::{
    ArgumentValues, CgroupInfo, Host, Losses, Phase, Probes as ProbeInfo, SyscallEntry,
    TRACE_SCHEMA, Trace, Workload,
};

/// What every trace of one recording shares, to turn collected kernel data into traces.
pub struct TraceContext {
    recorded_at_unix: u64,
    workload: Workload,
    host: Host,
    probes: ProbeInfo,
    cred_check: bool,
    kallsyms: Option<std::sync::Arc<Kallsyms>>,
}

impl TraceContext {
    pub fn new(
        recorded_at_unix: u64,
        workload: Workload,
        syscall_hook: String,
        cap_hook: Option<String>,
        cred_check: bool,
        kallsyms: Option<std::sync::Arc<Kallsyms>>,
    ) -> anyhow::Result<TraceContext> {
        let uname = nix::sys::utsname::uname().context("uname")?;
        Ok(TraceContext {
            recorded_at_unix,
            workload,
            host: Host {
                kernel: uname.release().to_string_lossy().into_owned(),
                machine: uname.machine().to_string_lossy().into_owned(),
            },
            probes: ProbeInfo {
                syscalls: syscall_hook,
                capabilities: cap_hook,
            },
            cred_check,
            kallsyms,
        })
    }

    /// Builds the trace of one cgroup; `events` are the ring-buffer events (all cgroups: the
    /// ones of this cgroup are picked), `cwd` where its first process started.
    pub fn trace(
        &self,
        c: Collected,
        path: Option<String>,
        container: bool,
        events: &[Event],
        cwd: &std::path::Path,
        resources: crate::trace::image::Resources,
    ) -> Trace {
        let cgroup_id = c.cgroup_id;
        let events_lost = c.events_lost;
        let mut trace = Trace {
            schema: TRACE_SCHEMA.to_owned(),
            profiler_version: env!("CARGO_PKG_VERSION").to_owned(),
            recorded_at_unix: self.recorded_at_unix,
            host: self.host.clone(),
            workload: self.workload.clone(),
            probes: self.probes.clone(),
            cgroup: CgroupInfo {
                path,
                id: c.cgroup_id,
                container,
                container_info: None,
                attached: false,
            },
            seccomp_filter_loads: c.seccomp_loads,
            arguments: c
                .args
                .iter()
                .filter_map(|(p, a)| Some((Phase::from_index(*p)?, argument_values(a))))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            syscalls: c
                .syscalls
                .iter()
                .map(|(arch, nrs)| {
                    let entries = nrs
                        .iter()
                        .map(|(nr, phases)| SyscallEntry {
                            nr: *nr,
                            name: arch.display_name(*nr),
                            phases: phases
                                .iter()
                                .filter_map(|p| Phase::from_index(*p))
                                .collect(),
                        })
                        .collect();
                    (*arch, entries)
                })
                .collect(),
            io_uring_ops: io_uring_op_names(c.io_uring_ops),
            capability_checks: checks_from_kernel(
                c.cap_checks,
                self.kallsyms.as_deref(),
                self.cred_check,
            ),
            losses: Losses {
                syscalls_out_of_range: c.out_of_range,
                capability_map_full: c.cap_map_full,
                capability_stack_missing: c.cap_stack_missing,
                cgroup_map_full: c.cgroup_map_full,
            },
            image: Default::default(),
        };
        let mut builder = crate::recording::image_events::Builder::new(cwd.to_path_buf())
            .skipping_setup(trace.filter_loaded_before_exec());
        for e in events.iter().filter(|e| e.cgroup_id == cgroup_id) {
            let _ = builder.event(e);
        }
        trace.image = builder.finish(events_lost, resources);
        trace
    }
}

/// The kernel's per-value bytes as sets of values.
pub fn argument_values(a: &profiler_common::ArgRecord) -> ArgumentValues {
    let set = |bytes: &[u8]| -> std::collections::BTreeSet<u32> {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, _)| i as u32)
            .collect()
    };
    let mask = |bytes: &[u8]| -> Option<u64> {
        let bits = set(bytes);
        // clone/unshare with no flag at all still marks nothing: treat "called" as seen when
        // any byte is set; a flags value of 0 is indistinguishable and allowed anyway.
        (!bits.is_empty()).then(|| bits.iter().fold(0u64, |m, b| m | (1 << b)))
    };
    let personality_slots = set(&a.personality);
    ArgumentValues {
        socket_families: set(&a.socket_families),
        socketpair_families: set(&a.socketpair_families),
        clone_flags: mask(&a.clone_flag_bits),
        unshare_flags: mask(&a.unshare_flag_bits),
        personality: personality_slots
            .iter()
            .filter_map(|s| {
                profiler_common::PERSONALITY_VALUES
                    .get(*s as usize)
                    .copied()
            })
            .collect(),
        personality_other: personality_slots.contains(&(profiler_common::PERSONALITY_OTHER as u32)),
        prctl_options: set(&a.prctl_options)
            .into_iter()
            .filter(|o| *o != profiler_common::PRCTL_OTHER as u32)
            .collect(),
        prctl_other: a.prctl_options[profiler_common::PRCTL_OTHER] != 0,
        socketcall_calls: set(&a.socketcall_calls),
        ipc_calls: set(&a.ipc_calls),
    }
}

/// `IORING_OP_*` names by number (include/uapi/linux/io_uring.h, `enum io_uring_op`, as of
/// Linux 6.15); later ones are named by number.
const IO_URING_OPS: &[&str] = &[
    "NOP",
    "READV",
    "WRITEV",
    "FSYNC",
    "READ_FIXED",
    "WRITE_FIXED",
    "POLL_ADD",
    "POLL_REMOVE",
    "SYNC_FILE_RANGE",
    "SENDMSG",
    "RECVMSG",
    "TIMEOUT",
    "TIMEOUT_REMOVE",
    "ACCEPT",
    "ASYNC_CANCEL",
    "LINK_TIMEOUT",
    "CONNECT",
    "FALLOCATE",
    "OPENAT",
    "CLOSE",
    "FILES_UPDATE",
    "STATX",
    "READ",
    "WRITE",
    "FADVISE",
    "MADVISE",
    "SEND",
    "RECV",
    "OPENAT2",
    "EPOLL_CTL",
    "SPLICE",
    "PROVIDE_BUFFERS",
    "REMOVE_BUFFERS",
    "TEE",
    "SHUTDOWN",
    "RENAMEAT",
    "UNLINKAT",
    "MKDIRAT",
    "SYMLINKAT",
    "LINKAT",
    "MSG_RING",
    "FSETXATTR",
    "SETXATTR",
    "FGETXATTR",
    "GETXATTR",
    "SOCKET",
    "URING_CMD",
    "SEND_ZC",
    "SENDMSG_ZC",
    "READ_MULTISHOT",
    "WAITID",
    "FUTEX_WAIT",
    "FUTEX_WAKE",
    "FUTEX_WAITV",
    "FIXED_FD_INSTALL",
    "FTRUNCATE",
    "BIND",
    "LISTEN",
    "RECV_ZC",
    "EPOLL_WAIT",
];

/// The operations whose bits are set.
fn io_uring_op_names(bits: u64) -> std::collections::BTreeSet<String> {
    (0..64)
        .filter(|op| bits & (1u64 << op) != 0)
        .map(|op| {
            IO_URING_OPS
                .get(op)
                .map(|n| n.to_string())
                .unwrap_or_else(|| format!("op_{op}"))
        })
        .collect()
}
