//! Capability checks, aggregated by (cgroup, capability, outcome, syscall, kernel stack) in
//! [`crate::maps::CAP_CHECKS`]; each kernel call path's whole stack is walked once
//! ([`crate::maps::CAP_PATHS`]).
use aya_ebpf::{
    helpers::generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs},
    programs::tracing::StackIdContext,
};
use profiler_common::{
    CAP_FLAG_GRANTED, CAP_FLAG_NO_SYSCALL, CAP_FLAG_PHASE_SHIFT, CAP_TOP_FRAMES, CapKey,
    LOSS_CAP_MAP_FULL, LOSS_CAP_STACK, PT_REGS_CS_OFFSET, PT_REGS_ORIG_AX_OFFSET,
};

use crate::{
    maps::{CAP_CHECKS, CAP_PATHS, CAP_STACKS, count_loss},
    record::{current_cgroup_id, find_record},
    syscalls::split_arch,
};

/// A kernel path already walked: the stack id its walk gave, and how often it was seen since.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct CapPath {
    stack_id: i32,
    hits: u32,
}

/// Every this many checks of a known path walk its whole stack again (see
/// [`crate::maps::CAP_PATHS`]).
const CAP_REWALK_EVERY: u32 = 64;

/// `include/linux/security.h`: the opts bit that says "do not audit this check".
pub(crate) const CAP_OPT_NOAUDIT: u32 = 1 << 1;

/// Records one capability check. `opts_flags` carries what the hook knows about CAP_OPT_*.
#[inline(always)]
pub(crate) fn record_cap_check<C: StackIdContext>(ctx: &C, cap: i32, ret: i32, opts_flags: u32) {
    let cgroup_id = current_cgroup_id();
    let Some(record) = find_record(cgroup_id) else {
        return;
    };
    let phase = unsafe { (*record).phase };
    // The syscall this check belongs to: the user register frame at the top of the task's
    // kernel stack holds the syscall number in orig_ax (-1 outside a syscall, e.g. in a page
    // fault). bpf_task_pt_regs returns a BTF pointer, so plain loads work under lockdown.
    let (syscall_nr, cs) = unsafe {
        let task = bpf_get_current_task_btf();
        let regs = bpf_task_pt_regs(task) as *const u8;
        (
            *(regs.add(PT_REGS_ORIG_AX_OFFSET) as *const i64),
            *(regs.add(PT_REGS_CS_OFFSET) as *const u64),
        )
    };
    let mut flags = opts_flags | (phase << CAP_FLAG_PHASE_SHIFT);
    if ret == 0 {
        flags |= CAP_FLAG_GRANTED;
    }
    if syscall_nr < 0 {
        flags |= CAP_FLAG_NO_SYSCALL;
    }
    let (arch, nr) = split_arch(syscall_nr, cs);
    // The kernel stack tells which kernel path asked (userspace classifies unaudited checks
    // from it). Identical stacks share one id, so this stays small.
    let mut key = CapKey {
        cgroup_id,
        cap: cap as u32,
        flags,
        syscall_nr: nr,
        arch: arch as u32,
        stack_id: 0,
        top_frames: [0; CAP_TOP_FRAMES],
    };
    let top_len = core::mem::size_of::<[u64; CAP_TOP_FRAMES]>() as u32;
    let have_top =
        unsafe { bpf_get_stack(ctx.as_ptr(), (&raw mut key.top_frames).cast(), top_len, 0) } > 0;
    let mut known = None;
    // With stack id 0 the key names the path (the check and its innermost frames).
    if have_top && let Some(path) = CAP_PATHS.get_ptr_mut(key) {
        unsafe {
            (*path).hits += 1;
            if (*path).hits % CAP_REWALK_EVERY != 0 {
                known = Some((*path).stack_id);
            }
        }
    }
    let stack_id = match known {
        Some(id) => id,
        None => {
            let id = match ctx.get_stackid(&CAP_STACKS, 0) {
                Ok(id) => id as i32,
                Err(e) => {
                    count_loss(LOSS_CAP_STACK);
                    crate::diagnostics::warn!(
                        &(),
                        "capability check stack not stored: error {}",
                        e
                    );
                    -1
                }
            };
            if have_top && id >= 0 {
                let _ = CAP_PATHS.insert(
                    key,
                    CapPath {
                        stack_id: id,
                        hits: 1,
                    },
                    0,
                );
            }
            id
        }
    };
    key.stack_id = stack_id;
    match CAP_CHECKS.get_ptr_mut(key) {
        // Not atomic: concurrent checks of the same key on two CPUs may undercount by one;
        // the count is evidence, not a decision input.
        Some(count) => unsafe { *count += 1 },
        None => {
            if CAP_CHECKS.insert(key, 1, 0).is_err() {
                count_loss(LOSS_CAP_MAP_FULL);
                crate::diagnostics::warn!(
                    &(),
                    "capability check map full: a check of capability {} was lost",
                    key.cap
                );
            }
        }
    }
}
