//! The `cgroup_attach_task` tracepoint (`cgroup_attach_task_btf`, only when userspace knows
//! the offsets it needs): a task moved out of the recordings.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use profiler_common::EVENT_CGROUP_ATTACH;

use crate::{
    events::emit,
    globals::{CGROUP_ID_PATH, CGROUP_ROOT_OFFSET, KN_PARENT_OFFSET, TASK_TGID_OFFSET},
    record::{bump_epoch, current_cgroup_id_fast, find_record},
};

/// How far up from a destination cgroup a recording is looked for.
const MAX_CGROUP_DEPTH: usize = 16;

/// tp_btf `cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct
/// task_struct *task, bool threadgroup)` (include/trace/events/cgroup.h), fired once a task
/// has moved (kernel/cgroup/cgroup.c, cgroup_attach_task()): by then the task's old cgroup is
/// gone from it, so every move into a cgroup that is not recorded is reported, with the
/// task, and userspace tells whether the task was a workload's. Moves are rare (container
/// starts, cgroup managers); the hot path is untouched.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task_btf(ctx: BtfTracePointContext) -> i32 {
    // Whatever moved where, the syscall hook's cached slots may now be wrong.
    bump_epoch();
    let (path, tgid_off, root_off, kn_parent_off) = unsafe {
        (
            core::ptr::read_volatile(&CGROUP_ID_PATH),
            core::ptr::read_volatile(&TASK_TGID_OFFSET) as usize,
            core::ptr::read_volatile(&CGROUP_ROOT_OFFSET) as usize,
            core::ptr::read_volatile(&KN_PARENT_OFFSET) as usize,
        )
    };
    if path[0] == 0 || tgid_off == 0 || root_off == 0 || kn_parent_off == 0 {
        return 0;
    }
    let dst: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    if dst.is_null() || task.is_null() {
        return 0;
    }
    // Only the default (cgroup2) hierarchy records; moves in the v1 hierarchies of a hybrid
    // host (runc joins every controller's cgroup) are not departures. The default
    // hierarchy's root is the one of the current task's default cgroup.
    let (_, current_dfl) = current_cgroup_id_fast();
    if current_dfl.is_null() {
        return 0;
    }
    let same_hierarchy = unsafe {
        *(dst.add(root_off) as *const usize) == *(current_dfl.add(root_off) as *const usize)
    };
    if !same_hierarchy {
        return 0;
    }
    let (dst_kn, tgid) = unsafe {
        (
            *(dst.add(path[2] as usize) as *const *const u8),
            *(task.add(tgid_off) as *const i32),
        )
    };
    let dst_id = unsafe { *(dst_kn.add(path[3] as usize) as *const u64) };
    // A move into a recorded cgroup or below one (a container a runtime is setting up, not
    // yet registered: its cgroup may be gone by the time userspace looks) stays recorded.
    // Walked up by the cgroups' directory nodes: one pointer load a level (each costs the
    // verifier a search of the kernel's BTF, BENCHMARKS.md M15).
    let mut kn = dst_kn;
    let mut reached_root = false;
    for _ in 0..MAX_CGROUP_DEPTH {
        let id = unsafe { *(kn.add(path[3] as usize) as *const u64) };
        if find_record(id).is_some() {
            return 0;
        }
        kn = unsafe { *(kn.add(kn_parent_off) as *const *const u8) };
        if kn.is_null() {
            reached_root = true;
            break;
        }
    }
    if !reached_root {
        // The verifier needs the walk bounded; a deeper hierarchy is reported as a move
        // out (userspace then checks the destination itself).
        crate::diagnostics::warn!(
            &(),
            "cgroup walk cut short after {} levels: task {} into cgroup {}",
            MAX_CGROUP_DEPTH,
            tgid,
            dst_id
        );
    }
    emit(EVENT_CGROUP_ATTACH, 0, [dst_id, tgid as u64, 0, 0], 0, 0, 0);
    0
}
