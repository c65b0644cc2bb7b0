//! The `cgroup_attach_task` tracepoint (`cgroup_attach_task_btf`, only when userspace knows
//! the offsets it needs): a task moved out of the recordings.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};
use profiler_common::EVENT_CGROUP_ATTACH;

use crate::{
    events::emit,
    globals::{CGROUP_HIERARCHY_PATH, CGROUP_ID_PATH, CGROUP_PARENT_PATH, TASK_TGID_OFFSET},
    record::{bump_epoch, find_record},
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
    let (id_path, tgid_off, hierarchy, parent) = unsafe {
        (
            core::ptr::read_volatile(&CGROUP_ID_PATH),
            core::ptr::read_volatile(&TASK_TGID_OFFSET) as usize,
            core::ptr::read_volatile(&CGROUP_HIERARCHY_PATH),
            core::ptr::read_volatile(&CGROUP_PARENT_PATH),
        )
    };
    if id_path[0] == 0 || tgid_off == 0 || hierarchy[0] == 0 || parent[0] == 0 {
        return 0;
    }
    let (kn_off, id_off) = (id_path[2] as usize, id_path[3] as usize);
    let (self_parent_off, css_cgroup_off) = (parent[0] as usize, parent[1] as usize);
    let dst: *const u8 = ctx.arg(0);
    let task: *const u8 = ctx.arg(2);
    if dst.is_null() || task.is_null() {
        return 0;
    }
    // Which loads cost start-up: the verifier looks a type name up in all of vmlinux BTF
    // (kernel/bpf/btf.c, `btf_nested_type_is_trusted()`, a linear search) up to four times
    // for each pointer it loads from a trusted or RCU pointer, such as `dst`, and at every
    // visit of that load (kernel/bpf/verifier.c, `check_ptr_to_btf_access()`). A field that
    // is neither tagged `__rcu` nor listed as safe gives a pointer without trust flags (a
    // plain PTR_TO_BTF_ID or PTR_UNTRUSTED, by the same function's branches; a verifier log
    // of this hook taken on 6.18 showed `untrusted_ptr_`), and loads through such a pointer
    // look nothing up (BENCHMARKS.md, M23).
    //
    // So the first load takes `self.cgroup` (`dst` itself: it is listed as RCU-safe for a
    // `cgroup_subsys_state`, not for the `cgroup` it is read from here), and every other
    // load goes through that.
    let dst = unsafe { *(dst.add((parent[2] + parent[1]) as usize) as *const *const u8) };
    let tgid = unsafe { *(task.add(tgid_off) as *const i32) };
    // A load through these pointers that faults reads 0 (the verifier makes them probe
    // loads, `BPF_PROBE_MEM`); none of them is null in a live cgroup, so a null or an id of
    // 0 means offsets that do not fit this kernel. Then the move is reported unresolved
    // (destination 0, flagged): userspace finds the task's cgroup itself, where returning
    // here would let every move go unseen.
    let mut unknown = dst.is_null();
    let mut dst_id = 0;
    if !unknown {
        // Only the default (cgroup2) hierarchy records; moves in the v1 hierarchies of a
        // hybrid host (runc joins every controller's cgroup) are not departures.
        let root = unsafe { *(dst.add(hierarchy[0] as usize) as *const *const u8) };
        if !root.is_null() && unsafe { *(root.add(hierarchy[1] as usize) as *const i32) } != 0 {
            return 0;
        }
        dst_id = unsafe {
            let dst_kn = *(dst.add(kn_off) as *const *const u8);
            *(dst_kn.add(id_off) as *const u64)
        };
        unknown = root.is_null() || dst_id == 0;
    }
    // A move into a recorded cgroup or below one (a container a runtime is setting up, not
    // yet registered: its cgroup may be gone by the time userspace looks) stays recorded.
    let mut css = core::ptr::null();
    if !unknown {
        if find_record(dst_id).is_some() {
            return 0;
        }
        // Up by each cgroup's `self.parent` (a plain pointer, unlike
        // `kernfs_node.__parent`, which is `__rcu`), and back to its cgroup by
        // `cgroup_subsys_state.cgroup`.
        css = unsafe { *(dst.add(self_parent_off) as *const *const u8) };
        for _ in 1..MAX_CGROUP_DEPTH {
            if css.is_null() {
                break;
            }
            let (id, next) = unsafe {
                let cgroup = *(css.add(css_cgroup_off) as *const *const u8);
                let kn = *(cgroup.add(kn_off) as *const *const u8);
                (
                    *(kn.add(id_off) as *const u64),
                    *(cgroup.add(self_parent_off) as *const *const u8),
                )
            };
            // (An unreadable ancestor reads 0, which no record has: the walk goes on up.)
            if find_record(id).is_some() {
                return 0;
            }
            css = next;
        }
    }
    if unknown || !css.is_null() {
        // The verifier needs the walk bounded; a deeper hierarchy is reported as a move
        // out (userspace then checks the destination itself), as is an unreadable one.
        crate::diagnostics::warn!(
            &(),
            "cgroup move not resolved (unreadable: {}, or deeper than {} levels): task {} into cgroup {}",
            unknown as u32,
            MAX_CGROUP_DEPTH,
            tgid,
            dst_id
        );
    }
    // (An id read without knowing the hierarchy could be a v1 one: not passed on.)
    let dst_id = if unknown { 0 } else { dst_id };
    emit(
        EVENT_CGROUP_ATTACH,
        0,
        [dst_id, tgid as u64, unknown as u64, 0],
        0,
        0,
        0,
    );
    0
}
