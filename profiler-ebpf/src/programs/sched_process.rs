//! The `sched_process_exec` tracepoint (`sched_process_exec_btf`, else
//! `sched_process_exec_raw`) and `sched_process_fork` (`sched_process_fork_btf`, only when
//! userspace knows the pid offsets).
use aya_ebpf::{
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        generated::{bpf_get_current_task_btf, bpf_send_signal},
    },
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use profiler_common::{
    CONTENT_KEY, EVENT_AUX_LEN, EVENT_EXEC_KILLED, EVENT_EXEC_OK, EVENT_FORK, EXEC_GROUPS_KNOWN,
    EXEC_PATH_LISTED, EXEC_PATH_UNKNOWN, PHASE_RUNTIME, PHASE_WORKLOAD,
};

use crate::{
    enforce::enforcing,
    events::{emit, emit_raw},
    globals::{
        ENFORCE, EXEC_FILE_PATH, EXEC_GROUPS_PATH, TASK_PID_OFFSET, TASK_REAL_CRED_OFFSET,
        TASK_START_BOOTTIME_OFFSET, TASK_TGID_OFFSET,
    },
    maps::{ALLOWED_INODES, EXEC_VERDICT},
    record::{bump_epoch, current_cgroup_id, find_record},
};

/// An exec after the runtime loaded the seccomp filter is the container's entrypoint: the
/// workload starts. Execs before the filter load stay in the set-up phase: runc, for one,
/// re-executes itself from a sealed memfd inside the container's cgroup
/// (libcontainer/nsenter/cloned_binary.c) long before it starts the entrypoint.
/// What identifies the file an exec ran: `bprm->file` (fs/exec.c; after a `#!` script,
/// binfmt_script swaps in the interpreter's file), read through BTF pointers: its
/// `[s_dev, i_ino]` and its content key `[CONTENT_KEY | i_size, i_mtime_sec]` (zero where
/// the kernel has no `i_mtime_sec`). None where the offsets are unknown.
#[inline(always)]
fn executed_file(bprm: *const u8) -> Option<([u64; 2], [u64; 2])> {
    let path = unsafe { core::ptr::read_volatile(&EXEC_FILE_PATH) };
    if path[0] == 0 || bprm.is_null() {
        return None;
    }
    unsafe {
        let file = *(bprm.add(path[0] as usize) as *const *const u8);
        let inode = *(file.add(path[1] as usize) as *const *const u8);
        let ino = *(inode.add(path[2] as usize) as *const u64);
        let sb = *(inode.add(path[3] as usize) as *const *const u8);
        let dev = *(sb.add(path[4] as usize) as *const u32);
        let content = if path[6] != 0 {
            let size = *(inode.add(path[5] as usize) as *const u64);
            let mtime = *(inode.add(path[6] as usize) as *const u64);
            [CONTENT_KEY | size, mtime]
        } else {
            [0, 0]
        };
        Some(([dev as u64, ino], content))
    }
}

/// The current task's supplementary groups as an EXEC_OK's `aux`
/// ([`profiler_common::EXEC_GROUPS_KNOWN`]), from `real_cred->group_info`: what
/// /proc/PID/status prints as `Groups:` (fs/proc/array.c `task_state()`, through
/// `get_task_cred()`), without userspace reading that file at every exec. All zero where
/// the offsets are unknown. The groups at the exec: a `setgroups` after it, with no exec
/// following, is not seen here (nor was it reliably by the /proc read, made whenever the
/// drain came).
#[inline(always)]
fn supplementary_groups() -> [u8; EVENT_AUX_LEN] {
    let mut words = [0u32; EVENT_AUX_LEN / 4];
    let cred_offset = unsafe { core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET) } as usize;
    let path = unsafe { core::ptr::read_volatile(&EXEC_GROUPS_PATH) };
    if cred_offset != 0 && path[0] != 0 {
        unsafe {
            let task = bpf_get_current_task_btf() as *const u8;
            let cred = *(task.add(cred_offset) as *const *const u8);
            let info = if cred.is_null() {
                core::ptr::null()
            } else {
                *(cred.add(path[0] as usize) as *const *const u8)
            };
            // A load through a BTF pointer that faults reads 0: no `group_info` is no word
            // on the groups (userspace then reads /proc), never "none".
            if info.is_null() {
                return [0; EVENT_AUX_LEN];
            }
            let count = *(info.add(path[1] as usize) as *const i32);
            let gid = |i: usize| *(info.add(path[2] as usize + 4 * i) as *const u32);
            words[0] = EXEC_GROUPS_KNOWN | (count as u32 & !EXEC_GROUPS_KNOWN);
            // `gid[]` is a flexible array: the verifier allows loads past the struct into it
            // (kernel/bpf/btf.c, `btf_struct_walk`), each at a constant offset, so one by
            // one; none past `count`, which would read the next object's memory.
            macro_rules! take {
                ($($i:literal)*) => {$(
                    if ($i as i32) < count {
                        words[1 + $i] = gid($i);
                    }
                )*};
            }
            take!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14);
        }
    }
    unsafe { core::mem::transmute::<[u32; EVENT_AUX_LEN / 4], [u8; EVENT_AUX_LEN]>(words) }
}

/// Whether the profile allows the file to be executed, given what the path asked for said
/// (`EXEC_PATH_*`): a listed absolute path passes with the very file or, for a container
/// image's file, its content key; no usable path only with the very file; an unlisted
/// absolute path never.
#[inline(always)]
fn file_allowed(file: [u64; 2], content: [u64; 2], path: u8) -> bool {
    let exact = unsafe { ALLOWED_INODES.get(file) }.is_some();
    match path {
        EXEC_PATH_LISTED => {
            exact || (content[0] != 0 && unsafe { ALLOWED_INODES.get(content) }.is_some())
        }
        EXEC_PATH_UNKNOWN => exact,
        _ => false,
    }
}

#[inline(always)]
fn on_exec(bprm: *const u8, old_pid: u32) {
    // Read first, on one path: the verifier searches vmlinux BTF for the load from the
    // trusted `bprm` at each visit (see cgroup.rs), and each branch before it would be
    // another visit (BENCHMARKS.md, M23). Every exec on the host pays these few loads.
    let identity = executed_file(bprm);
    let cgroup_id = current_cgroup_id();
    if let Some(record) = find_record(cgroup_id) {
        let phase = unsafe {
            (*record).awaiting_exec = 0;
            if (*record).phase == PHASE_RUNTIME as u32 {
                (*record).phase = PHASE_WORKLOAD as u32;
            }
            (*record).phase
        };
        crate::diagnostics::debug!(&(), "exec in cgroup {}, phase {}", cgroup_id, phase);
        let uid_gid = bpf_get_current_uid_gid();
        let [dev, ino] = identity.map(|i| i.0).unwrap_or([0, 0]);
        let [size, mtime] = identity.map(|i| i.1).unwrap_or([0, 0]);
        // (see profiler_common::ExecOk for the layout)
        emit_raw(
            EVENT_EXEC_OK,
            phase as usize,
            [
                uid_gid,
                dev | (mtime & 0xffff_ffff) << 32,
                ino,
                size & !CONTENT_KEY,
            ],
            &supplementary_groups(),
        );
        if unsafe { core::ptr::read_volatile(&ENFORCE) } != 0 {
            // Judged by the file the kernel executed where its identity is known, and by the
            // absolute path asked for at sys_enter (a second thread can rewrite that between
            // the probe's read and the kernel's own, so it cannot let an unlisted file run;
            // it tells the names of one multi-call file apart).
            // The verdict was kept under the id of the thread that called execve, which
            // is `old_pid` here: after a non-leader thread's exec, de_thread() has given it
            // the leader's id (fs/exec.c). Taken out, so a later exec never sees it.
            let path = unsafe { EXEC_VERDICT.get(old_pid) }
                .copied()
                .unwrap_or(EXEC_PATH_UNKNOWN);
            let _ = EXEC_VERDICT.remove(old_pid);
            let killed = enforcing(record, phase as usize)
                && match identity {
                    Some((file, content)) => !file_allowed(file, content, path),
                    // Without BTF only the path is known: only a listed one passes.
                    None => path != EXEC_PATH_LISTED,
                };
            if killed {
                // The new program has not run a single instruction yet: SIGKILL is taken
                // on the way back to user space.
                unsafe { bpf_send_signal(9) };
                emit(EVENT_EXEC_KILLED, phase as usize, [dev, ino, 0, 0], 0, 0, 0);
            }
        }
    }
}

/// tp_btf `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
/// (include/trace/events/sched.h): fires once an exec has succeeded.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(ctx: BtfTracePointContext) -> i32 {
    let old_pid: i32 = ctx.arg(1);
    on_exec(ctx.arg(2), old_pid as u32);
    0
}

/// raw_tp `sched_process_exec`, for kernels without BTF.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(ctx: RawTracePointContext) -> i32 {
    // raw_tp args: (struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
    let old_pid: u64 = ctx.arg(1);
    on_exec(core::ptr::null(), old_pid as u32);
    0
}

/// tp_btf `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: a new
/// process inherits its parent's working directory, which path resolution needs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork_btf(ctx: BtfTracePointContext) -> i32 {
    // The child may run on a dead task's kernel stack, whose register frame address a
    // CPU's syscall cache still holds: out of date before the child can run.
    bump_epoch();
    let (pid_off, tgid_off) = unsafe {
        (
            core::ptr::read_volatile(&TASK_PID_OFFSET) as usize,
            core::ptr::read_volatile(&TASK_TGID_OFFSET) as usize,
        )
    };
    if pid_off == 0 || tgid_off == 0 {
        return 0;
    }
    let Some(record) = find_record(current_cgroup_id()) else {
        return 0;
    };
    let child: *const u8 = ctx.arg(1);
    let (pid, tgid) = unsafe {
        (
            *(child.add(pid_off) as *const i32),
            *(child.add(tgid_off) as *const i32),
        )
    };
    if pid != tgid {
        return 0; // a thread
    }
    let parent = (bpf_get_current_pid_tgid() >> 32) as u64;
    let phase = unsafe { (*record).phase } as usize;
    // When the child started, as /proc/PID/stat gives it (fs/proc/array.c: field 22 is
    // `start_boottime`, set in copy_process() before this tracepoint): with the pid, what
    // names the process for good; userspace need not read /proc for it. A scalar field:
    // no BTF name search in the verifier.
    let start_off = unsafe { core::ptr::read_volatile(&TASK_START_BOOTTIME_OFFSET) } as usize;
    let started = if start_off == 0 {
        0
    } else {
        unsafe { *(child.add(start_off) as *const u64) }
    };
    emit(
        EVENT_FORK,
        phase,
        [parent, tgid as u64, started, 0],
        0,
        0,
        0,
    );
    0
}
