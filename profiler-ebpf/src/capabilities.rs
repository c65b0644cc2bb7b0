//! Capability checks, aggregated by (cgroup, capability, outcome, syscall, kernel stack) in
//! [`crate::maps::CAP_CHECKS`]; each kernel call path's whole stack is walked once
//! ([`crate::maps::CAP_PATHS`]).
//!
//! Walking is what a check costs: `bpf_get_stack` is 85% of this program's time (perf,
//! BENCHMARKS.md M18), some 5 µs a check, and a root build checks CAP_SYS_ADMIN on nearly
//! every mmap, brk and exec. So a check's call path is recognised without walking where
//! that is safe:
//! - **By depth** ([`crate::maps::CAP_DEPTHS`]), for a check inside a syscall whose
//!   `sys_enter` kept its stack depth ([`crate::record::enter_depth`]): how much deeper than
//!   `sys_enter` the check runs names its path within that syscall. Paths of equal depth
//!   differ only in return addresses (`ns_capable()` and `ns_capable_noaudit()` are
//!   twins), so a depth counts its checks without walking only once a walk showed
//!   `cap_capable()` called directly by a function that makes only unaudited checks
//!   ([`profiler_common::DIRECT_NOAUDIT_FUNCTIONS`]), and only until a sample's innermost
//!   frames show anything else (a sample takes those frames alone: what is above the direct
//!   caller cannot make the check audited). Another path that happened to share the depth
//!   could thus only be counted as unaudited, never the reverse: the capability set errs
//!   towards too few (which the proof run shows), not too many. One map lookup per check.
//! - **By its innermost frames**, otherwise: walked on every check (about half the cost of
//!   a whole walk), they name the path ([`crate::maps::CAP_PATHS`]).
use aya_ebpf::{
    EbpfContext,
    bindings::BPF_NOEXIST,
    helpers::generated::{bpf_get_current_task_btf, bpf_get_stack, bpf_task_pt_regs},
    programs::tracing::StackIdContext,
};
use profiler_common::{
    CAP_DEPTH_NOT_ENOUGH, CAP_FLAG_GRANTED, CAP_FLAG_NO_SYSCALL, CAP_FLAG_OTHER_CRED,
    CAP_FLAG_PHASE_SHIFT, CAP_TOP_FRAMES, CapDepthKey, CapDepthPath, CapKey,
    DIRECT_NOAUDIT_FUNCTIONS, LOSS_CAP_MAP_FULL, LOSS_CAP_STACK, PT_REGS_CS_OFFSET,
    PT_REGS_CX_OFFSET, PT_REGS_IP_OFFSET,
};

use crate::{
    globals::TASK_REAL_CRED_OFFSET,
    maps::{CAP_CHECKS, CAP_DEPTHS, CAP_PATHS, CAP_STACKS, DIRECT_NOAUDIT, count_loss},
    record::{current_cgroup_id, enter_depth, find_record},
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
/// [`crate::maps::CAP_PATHS`]); a depth's checks are sampled (their innermost frames
/// taken) as often, and at its 2nd, 4th, 8th... check before that.
const CAP_REWALK_EVERY: u32 = 64;

/// `include/linux/security.h`: the opts bit that says "do not audit this check".
pub(crate) const CAP_OPT_NOAUDIT: u32 = 1 << 1;

/// The deepest a check can run below its syscall's `sys_enter`: x86_64 kernel stacks are
/// 16 KiB (32 KiB with KASAN, arch/x86/include/asm/page_64_types.h).
const MAX_PATH_DEPTH: u64 = 32 << 10;

type TopFrames = [u64; CAP_TOP_FRAMES];

/// What [`count_by_depth`] did with a check.
enum ByDepth {
    /// Counted in its depth's entry: done.
    Counted,
    /// Walked (the depth's first check): count it with this stack.
    Walked(i32),
    /// The depth does not name the path: its innermost frames must.
    Unknown,
}

/// Records one capability check. `opts_flags` carries what the hook knows about CAP_OPT_*;
/// `checked_cred` is the cred the check was made against, where the hook knows it (null
/// otherwise), to tell a check of another cred than the task's own (`CAP_FLAG_OTHER_CRED`).
#[inline(always)]
pub(crate) fn record_cap_check<C: StackIdContext + EbpfContext>(
    ctx: &C,
    cap: i32,
    ret: i32,
    opts_flags: u32,
    checked_cred: *const u8,
) {
    let cgroup_id = current_cgroup_id();
    let Some(record) = find_record(cgroup_id) else {
        return;
    };
    let phase = unsafe { (*record).phase };
    // Only a recorded task gets here, and the task is taken once: on AMD's SRSO "safe RET"
    // each helper's return is among this program's dearest instructions (perf, AMD EPYC
    // 2026-12-03).
    let task = unsafe { bpf_get_current_task_btf() } as *const u8;
    let mut flags = opts_flags | (phase << CAP_FLAG_PHASE_SHIFT);
    let cred_offset = unsafe { core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET) } as usize;
    if !checked_cred.is_null() && cred_offset != 0 {
        // Compared, never followed. The one load through a BTF pointer here, after the
        // return above, so the verifier visits it once (its vmlinux BTF searches, M27).
        let real_cred = unsafe { *(task.add(cred_offset) as *const *const u8) };
        if real_cred != checked_cred {
            flags |= CAP_FLAG_OTHER_CRED;
        }
    }
    // The syscall this check belongs to: the user register frame at the top of the task's
    // kernel stack holds the syscall number in orig_ax (-1 outside a syscall, e.g. in an
    // interrupt). bpf_task_pt_regs returns a BTF pointer, so plain loads work under lockdown.
    let (regs, syscall_nr, cs, syscall_frame) = unsafe {
        let regs = bpf_task_pt_regs(task as *mut _) as *const u8;
        let load = |off: usize| *(regs.add(off) as *const u64);
        (
            regs,
            crate::syscalls::syscall_number(regs),
            load(PT_REGS_CS_OFFSET),
            load(PT_REGS_IP_OFFSET) == load(PT_REGS_CX_OFFSET),
        )
    };
    if ret == 0 {
        flags |= CAP_FLAG_GRANTED;
    }
    if syscall_nr < 0 {
        flags |= CAP_FLAG_NO_SYSCALL;
    }
    let (arch, nr) = split_arch(syscall_nr, cs);
    // The innermost frames, once taken (`bpf_get_stack` writes all of the buffer, zero
    // past the frames it found: kernel/bpf/stackmap.c `__bpf_get_stack`). Not zeroed before:
    // the most common check, counted by its depth, never takes them, and zeroing them (or
    // the whole key) was a call of the object's `memset` at every check (perf, AMD EPYC
    // 2026-12-03: ~7% of this program's samples).
    let mut top = core::mem::MaybeUninit::<TopFrames>::uninit();
    let mut have_top = false;
    // An exception's frame (a page fault growing the stack) has orig_ax >= 0 too: only a
    // syscall's own frame has ip == cx, and only it follows a `sys_enter`.
    let mut by_depth = ByDepth::Unknown;
    if syscall_nr >= 0
        && syscall_frame
        && let Some(depth) = path_depth(ctx, regs, syscall_nr)
    {
        let depth_key = CapDepthKey {
            cgroup_id,
            cap: cap as u32,
            flags,
            syscall_nr: nr,
            arch: arch as u32,
            depth: depth as u32,
        };
        by_depth = count_by_depth(ctx, &depth_key, &mut top, &mut have_top);
    }
    let walked = match by_depth {
        ByDepth::Counted => return,
        ByDepth::Walked(id) => Some(id),
        ByDepth::Unknown => None,
    };
    // The kernel stack tells which kernel path asked (userspace classifies unaudited checks
    // from it). Identical stacks share one id, so this stays small.
    let mut key = CapKey {
        cgroup_id,
        cap: cap as u32,
        flags,
        syscall_nr: nr,
        arch: arch as u32,
        stack_id: 0,
        top_frames: {
            if !have_top {
                zero_frames(top.as_mut_ptr());
            }
            // SAFETY: taken by `take_top_frames` where `have_top` says so, zeroed otherwise.
            unsafe { top.assume_init() }
        },
    };
    let stack_id = walked.unwrap_or_else(|| stack_by_top_frames(ctx, &mut key));
    key.stack_id = stack_id;
    if stack_id >= 0 {
        // The stack says it all; one key per stack whichever way it was found.
        zero_frames(&raw mut key.top_frames);
    }
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

/// Zeroes `frames` with one store a frame. An array of zeroes is a call of the object's
/// `memset` (LLVM), which compiler_builtins makes a byte at a time for this target: 64
/// iterations each time it runs, and the verifier walks them for every state that reaches
/// the call (BENCHMARKS.md, M29).
/// Volatile stores are neither merged into a `memset` nor dropped.
#[inline(always)]
fn zero_frames(frames: *mut TopFrames) {
    for i in 0..CAP_TOP_FRAMES {
        // SAFETY: `frames` points at a whole `TopFrames`, `i` is within it.
        unsafe { core::ptr::write_volatile((frames as *mut u64).add(i), 0) };
    }
}

/// How much deeper than its syscall's `sys_enter` this check runs, when known for certain.
/// Both depths are measured from the register frame (`regs`) to the program's context, the
/// tracepoint's argument array on the kernel stack, so the syscall's random stack offset
/// cancels out.
#[inline(always)]
fn path_depth<C: EbpfContext>(ctx: &C, regs: *const u8, nr: i64) -> Option<u64> {
    let enter = enter_depth(regs as u64, nr)?;
    let depth = (regs as u64).wrapping_sub(ctx.as_ptr() as u64);
    let path = depth.checked_sub(enter)?;
    (path != 0 && path < MAX_PATH_DEPTH).then_some(path)
}

/// A check by its depth (see the module doc). The innermost frames it took, if any, are
/// left in `top` for the caller, and `have_top` set.
#[inline(always)]
fn count_by_depth<C: StackIdContext + EbpfContext>(
    ctx: &C,
    key: &CapDepthKey,
    top: &mut core::mem::MaybeUninit<TopFrames>,
    have_top: &mut bool,
) -> ByDepth {
    if !DIRECT_NOAUDIT.get(0).is_some_and(|range| range[0] != 0) {
        // Userspace has not written the functions' ranges yet.
        return ByDepth::Unknown;
    }
    if let Some(path) = CAP_DEPTHS.get_ptr_mut(*key) {
        let (stack_id, hits) = unsafe { ((*path).stack_id, (*path).hits.wrapping_add(1)) };
        if stack_id == CAP_DEPTH_NOT_ENOUGH {
            return ByDepth::Unknown;
        }
        unsafe { (*path).hits = hits };
        let due = if hits < CAP_REWALK_EVERY {
            hits & hits.wrapping_sub(1) == 0
        } else {
            hits % CAP_REWALK_EVERY == 0
        };
        if !due {
            unsafe { (*path).counted += 1 };
            return ByDepth::Counted;
        }
        // A sample: is this check, too, cap_capable called directly by an unaudited caller?
        // Its innermost frames say; the whole stack is not walked again (the frames above
        // that caller cannot make the check audited, and the depth's checks are charged to
        // its first walk's stack anyway): one unwind a sample instead of two.
        *have_top = take_top_frames(ctx, top.as_mut_ptr());
        if !*have_top || !direct_noaudit(unsafe { top.assume_init_ref() }) {
            unsafe { (*path).stack_id = CAP_DEPTH_NOT_ENOUGH };
            return ByDepth::Unknown;
        }
        unsafe { (*path).counted += 1 };
        return ByDepth::Counted;
    }
    *have_top = take_top_frames(ctx, top.as_mut_ptr());
    if !*have_top {
        return ByDepth::Unknown;
    }
    let top = unsafe { top.assume_init_ref() };
    if !direct_noaudit(top) {
        // BPF_ANY: this overrides a direct entry another CPU made meanwhile (its counted
        // checks stay counted: a first entry has none yet).
        let _ = CAP_DEPTHS.insert(
            *key,
            CapDepthPath {
                stack_id: CAP_DEPTH_NOT_ENOUGH,
                hits: 1,
                counted_stack_id: -1,
                _pad: 0,
                counted: 0,
            },
            0,
        );
        return ByDepth::Unknown;
    }
    let id = walk_stack(ctx);
    if id >= 0 {
        let path = CapDepthPath {
            stack_id: id,
            hits: 1,
            counted_stack_id: id,
            _pad: 0,
            counted: 0,
        };
        // BPF_NOEXIST: never over an entry another CPU made meanwhile (it may have ended
        // the depth, or counted checks already).
        let _ = CAP_DEPTHS.insert(*key, path, BPF_NOEXIST as u64);
    }
    ByDepth::Walked(id)
}

/// Whether `top` shows `cap_capable()` called by one of the
/// [`profiler_common::DIRECT_NOAUDIT_FUNCTIONS`] (their ranges in [`DIRECT_NOAUDIT`]).
#[inline(always)]
fn direct_noaudit(top: &TopFrames) -> bool {
    let within = |i: u32, ip: u64| match DIRECT_NOAUDIT.get(i) {
        Some(range) => range[0] != 0 && range[0] <= ip && ip < range[1],
        None => false,
    };
    for i in 0..CAP_TOP_FRAMES - 1 {
        if within(0, top[i]) {
            let caller = top[i + 1];
            return (1..DIRECT_NOAUDIT_FUNCTIONS.len() as u32).any(|f| within(f, caller));
        }
    }
    false
}

/// The innermost frames into `top`; false if the kernel gave none. The kernel writes all of
/// `top` either way (zero past the frames it found, or all zero on an error:
/// kernel/bpf/stackmap.c `__bpf_get_stack`), so it is initialised after this call.
#[inline(always)]
fn take_top_frames<C: EbpfContext>(ctx: &C, top: *mut TopFrames) -> bool {
    let len = core::mem::size_of::<TopFrames>() as u32;
    // Skip 1: the first frame is where in this program the helper was called, and the
    // program calls it from several places (kernel/bpf/stackmap.c, BPF_F_SKIP_FIELD_MASK).
    unsafe { bpf_get_stack(ctx.as_ptr(), top.cast(), len, 1) > 0 }
}

/// The whole stack, into [`CAP_STACKS`]: its id, or -1 (counted as a loss).
#[inline(always)]
fn walk_stack<C: StackIdContext>(ctx: &C) -> i32 {
    // Skip 1, as in `take_top_frames`.
    match ctx.get_stackid(&CAP_STACKS, 1) {
        Ok(id) => id as i32,
        Err(e) => {
            count_loss(LOSS_CAP_STACK);
            crate::diagnostics::warn!(&(), "capability check stack not stored: error {}", e);
            -1
        }
    }
}

/// The stack id of a check known by its innermost frames (taken here unless `key` already
/// holds them), walked whole once per path and on every [`CAP_REWALK_EVERY`]th check.
#[inline(always)]
fn stack_by_top_frames<C: StackIdContext + EbpfContext>(ctx: &C, key: &mut CapKey) -> i32 {
    let have_top = key.top_frames[0] != 0 || take_top_frames(ctx, &raw mut key.top_frames);
    // With stack id 0 the key names the path (the check and its innermost frames).
    if have_top && let Some(path) = CAP_PATHS.get_ptr_mut(*key) {
        unsafe {
            (*path).hits += 1;
            if (*path).hits % CAP_REWALK_EVERY != 0 {
                return (*path).stack_id;
            }
        }
    }
    let id = walk_stack(ctx);
    if have_top && id >= 0 {
        let _ = CAP_PATHS.insert(
            *key,
            CapPath {
                stack_id: id,
                hits: 1,
            },
            0,
        );
    }
    id
}
