//! The `sched_process_exec` tracepoint (`sched_process_exec_btf`, else
//! `sched_process_exec_raw`) and `sched_process_fork` (`sched_process_fork_btf`, only when
//! userspace knows the pid offsets).
use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_get_current_uid_gid, generated::bpf_send_signal},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use profiler_common::{
    CONTENT_KEY, EVENT_EXEC_KILLED, EVENT_EXEC_OK, EVENT_FORK, PHASE_RUNTIME, PHASE_WORKLOAD,
};

use crate::{
    enforce::enforcing,
    events::emit,
    globals::{ENFORCE, EXEC_FILE_PATH, TASK_PID_OFFSET, TASK_TGID_OFFSET},
    maps::{ALLOWED_INODES, EXEC_VERDICT},
    record::{current_cgroup_id, find_record},
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

/// Whether the profile allows the file to be executed.
#[inline(always)]
fn file_allowed(file: [u64; 2], content: [u64; 2]) -> bool {
    unsafe { ALLOWED_INODES.get(file) }.is_some()
        || (content[0] != 0 && unsafe { ALLOWED_INODES.get(content) }.is_some())
}

#[inline(always)]
fn on_exec(bprm: *const u8) {
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
        let identity = executed_file(bprm);
        let [dev, ino] = identity.map(|i| i.0).unwrap_or([0, 0]);
        let [size, mtime] = identity.map(|i| i.1).unwrap_or([0, 0]);
        // (see profiler_common::ExecOk for the layout)
        emit(
            EVENT_EXEC_OK,
            phase as usize,
            [
                uid_gid,
                dev | (mtime & 0xffff_ffff) << 32,
                ino,
                size & !CONTENT_KEY,
            ],
            0,
            0,
            0,
        );
        if unsafe { core::ptr::read_volatile(&ENFORCE) } != 0 {
            // Judged by the file the kernel executed where its identity is known, and by the
            // absolute path asked for at sys_enter (a second thread can rewrite that between
            // the probe's read and the kernel's own, so it cannot let an unlisted file run;
            // it tells the names of one multi-call file apart).
            let tid = bpf_get_current_pid_tgid() as u32;
            let path_refused = unsafe { EXEC_VERDICT.get(tid) }.is_some_and(|v| *v == 1);
            let killed = match identity {
                Some((file, content)) => {
                    enforcing(record, phase as usize) && !file_allowed(file, content)
                        || path_refused
                }
                None => path_refused,
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
    on_exec(ctx.arg(2));
    0
}

/// raw_tp `sched_process_exec`, for kernels without BTF.
#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(_ctx: RawTracePointContext) -> i32 {
    on_exec(core::ptr::null());
    0
}

/// tp_btf `sched_process_fork(struct task_struct *parent, struct task_struct *child)`: a new
/// process inherits its parent's working directory, which path resolution needs.
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork_btf(ctx: BtfTracePointContext) -> i32 {
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
    emit(EVENT_FORK, phase, [parent, tgid as u64, 0, 0], 0, 0, 0);
    0
}
