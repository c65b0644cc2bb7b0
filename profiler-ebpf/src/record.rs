//! The record table on the kernel side: the current task's cgroup id, and the lookup (and, for
//! a cgroup discovered below a recording, the claim) of its slot in [`crate::maps::RECORDS`].
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id,
    generated::{
        bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_map_lookup_percpu_elem,
    },
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg, atomic_xadd};
use profiler_common::{
    CgroupRecord, EPOCH_CACHE_ON, EPOCH_DEPTHS_ON, EPOCH_STEP, LOSS_CGROUP_MAP_FULL, NOT_RECORDED,
    RECORD_PROBES, SLOT_FREE, TASK_CACHE_WAYS, TaskCache, record_slot,
};

use crate::{
    globals::{CGROUP_BY_HELPER, CGROUP_ID_PATH, CGROUP_LEVEL_OFFSET, RECORDING_LEVEL},
    maps::{EPOCH, RECORDS, TASK_CACHE, count_loss},
};

/// The current task's cgroup2 id, on the syscall path. Every syscall on the host pays for
/// this while a recording runs, and the helper call was the largest part of that cost
/// (BENCHMARKS.md, M2); four loads through
/// BTF pointers cost less. The rare hooks use [`current_cgroup_id`]: the verifier looks a
/// type name up in all of vmlinux BTF for every such load it checks
/// (kernel/bpf/verifier.c, `btf_nested_type_is_trusted`), start-up time for each
/// (BENCHMARKS.md, M3).
///
/// Also returns the `struct cgroup` (null when the helper had to be used), for
/// [`below_recording_level`].
#[inline(always)]
pub(crate) fn current_cgroup_id_fast() -> (u64, *const u8) {
    let path = unsafe { core::ptr::read_volatile(&CGROUP_ID_PATH) };
    if path[0] == 0 {
        // Without kernel BTF (the raw_tp fallback) the path is unknown. .rodata is frozen,
        // so the verifier drops the other branch and never sees bpf_get_current_task_btf,
        // which needs BTF.
        return (unsafe { bpf_get_current_cgroup_id() }, core::ptr::null());
    }
    unsafe {
        let task = bpf_get_current_task_btf() as *const u8;
        let css_set = *(task.add(path[0] as usize) as *const *const u8);
        let cgroup = *(css_set.add(path[1] as usize) as *const *const u8);
        let kn = *(cgroup.add(path[2] as usize) as *const *const u8);
        (*(kn.add(path[3] as usize) as *const u64), cgroup)
    }
}

/// Whether `cgroup` (a `struct cgroup`, may be null) is deeper in the hierarchy than the
/// recording cgroups, i.e. could be a container below one. Every other process on the host
/// takes this test while containers are recorded: it spares them the ancestor helper call
/// and a second lookup on every syscall of the host (BENCHMARKS.md, M4).
#[inline(always)]
fn below_recording_level(cgroup: *const u8, recording_level: i32) -> bool {
    let offset = unsafe { core::ptr::read_volatile(&CGROUP_LEVEL_OFFSET) } as usize;
    if offset == 0 || cgroup.is_null() {
        return true; // unknown: ask the helper
    }
    // `int level` of struct cgroup (include/linux/cgroup-defs.h): the root is 0.
    unsafe { *(cgroup.add(offset) as *const i32) > recording_level }
}

/// The current task's cgroup2 id, for hooks that run rarely.
#[inline(always)]
pub(crate) fn current_cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}

/// The record of `cgroup_id`. For a cgroup that is not recorded (every other process on the
/// host) this is usually one probe that finds a free slot.
#[inline(always)]
pub(crate) fn find_record(cgroup_id: u64) -> Option<*mut CgroupRecord> {
    record_at(record_slot_of(cgroup_id))
}

/// The record in `slot` as [`record_slot_of`] and [`current_record_slot`] give it.
#[inline(always)]
fn record_at(slot: i64) -> Option<*mut CgroupRecord> {
    if slot < 0 {
        return None;
    }
    RECORDS.get_ptr_mut(slot as u32)
}

/// The slot of `cgroup_id`'s record, -1 for none. A BPF global subprogram (it cannot return
/// the pointer): the verifier checks the probe loop once, not at every place it is used;
/// the cgroup-move hook alone walks 16 levels up with it (start-up, BENCHMARKS.md M15).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn record_slot_of(cgroup_id: u64) -> i64 {
    find_slot(cgroup_id).map_or(-1, |(slot, _)| slot as i64)
}

/// [`find_record`], with the slot's index.
#[inline(always)]
fn find_slot(cgroup_id: u64) -> Option<(u32, *mut CgroupRecord)> {
    for probe in 0..RECORD_PROBES {
        let slot = record_slot(cgroup_id, probe);
        let record = RECORDS.get_ptr_mut(slot)?;
        let id = unsafe { core::ptr::read_volatile(&raw const (*record).cgroup_id) };
        if id == cgroup_id {
            return Some((slot, record));
        }
        if id == SLOT_FREE {
            return None;
        }
    }
    None
}

/// Claims a slot for a cgroup discovered below a recording. Only never-used slots are taken
/// (they are all zero, so the record starts empty); userspace alone reuses deleted ones.
/// Compare-and-swap: two CPUs may discover the same cgroup, or two cgroups wanting the same
/// slot, at once.
#[inline(always)]
fn claim_record(cgroup_id: u64, recording_id: u64) -> Option<(u32, *mut CgroupRecord)> {
    for probe in 0..RECORD_PROBES {
        let slot = record_slot(cgroup_id, probe);
        let record = RECORDS.get_ptr_mut(slot)?;
        // The BPF target has no `AtomicU64::compare_exchange` (Rust marks it without CAS, as
        // BPF before cpu v3 had none); the intrinsic becomes BPF_ATOMIC | BPF_CMPXCHG, which
        // the kernel has had since 5.12 and the verifier allows on map values.
        let (current, swapped) = unsafe {
            atomic_cxchg::<u64, { AtomicOrdering::SeqCst }, { AtomicOrdering::SeqCst }>(
                &raw mut (*record).cgroup_id,
                SLOT_FREE,
                cgroup_id,
            )
        };
        match (swapped, current) {
            (true, _) => {
                unsafe { (*record).recording_id = recording_id };
                // Other CPUs may hold "not recorded" for tasks of this cgroup.
                bump_epoch();
                return Some((slot, record));
            }
            (false, current) if current == cgroup_id => return Some((slot, record)),
            (false, _) => {}
        }
    }
    count_loss(LOSS_CGROUP_MAP_FULL);
    crate::diagnostics::warn!(
        &(),
        "record table full: cgroup {} is not recorded",
        cgroup_id
    );
    None
}

/// The record of the current cgroup, creating it when the cgroup is a descendant of a
/// recording cgroup seen for the first time (a container created under the recording cgroup
/// by a runtime): the kernel registers it at its very first syscall, so nothing a container
/// does is missed however fast it starts and stops.
#[inline(always)]
pub(crate) fn current_record() -> Option<*mut CgroupRecord> {
    record_at(current_record_slot())
}

/// The slot of the current cgroup's record ([`current_record`]), -1 for none. A BPF global
/// subprogram, like [`record_slot_of`]: the syscall hook calls it only when its cache
/// misses.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn current_record_slot() -> i64 {
    current_slot().map_or(-1, |(slot, _)| slot as i64)
}

/// [`current_record`], with the slot's index.
#[inline(always)]
fn current_slot() -> Option<(u32, *mut CgroupRecord)> {
    let (cgroup_id, cgroup) = if unsafe { core::ptr::read_volatile(&CGROUP_BY_HELPER) } != 0 {
        // (No `struct cgroup`: `below_recording_level` then lets the ancestor helper decide.)
        (current_cgroup_id(), core::ptr::null())
    } else {
        current_cgroup_id_fast()
    };
    if let Some(found) = find_slot(cgroup_id) {
        return Some(found);
    }
    // Only processes outside every recorded cgroup get here. Discovery costs one helper
    // call and one lookup, and only for cgroups deeper than the recording cgroups.
    let level = unsafe { core::ptr::read_volatile(&RECORDING_LEVEL) };
    if level <= 0 || !below_recording_level(cgroup, level) {
        return None;
    }
    let recording_id = unsafe { bpf_get_current_ancestor_cgroup_id(level) };
    if recording_id == 0 || recording_id == cgroup_id {
        return None;
    }
    let parent = find_record(recording_id)?;
    if unsafe { (*parent).recording_id } != recording_id {
        // Descendants are keyed to the recording cgroup itself, never to another descendant.
        return None;
    }
    claim_record(cgroup_id, recording_id)
}

/// Tells every CPU's [`current_record_cached`] entries out of date.
#[inline(always)]
pub(crate) fn bump_epoch() {
    if let Some(epoch) = EPOCH.get_ptr_mut(0) {
        unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(epoch, EPOCH_STEP) };
    }
}

/// [`current_record`] through the per-CPU cache, for the syscall hook. `task` identifies the
/// current task: the address of its syscall register frame, which `sys_enter` is handed.
///
/// Reading the cgroup id takes a helper call (`bpf_get_current_task_btf`, not inlined on
/// 6.18) and four dependent loads, then the record table's probe; on this kernel's CPUs a
/// call is dear (AMD's SRSO "safe RET", Intel's return thunks). A hit here is two inlined
/// map lookups and a few compares, for every process on the host (BENCHMARKS.md, M14).
///
/// An entry is right for as long as the epoch it was made in: the task's cgroup changes only
/// by a move (the `cgroup_attach_task` hook bumps the epoch), a slot changes hands only by a
/// claim or a release (the claimer bumps it), and a register frame's address passes to
/// another task only through a new task (the `sched_process_fork` hook bumps it before the
/// child can run, kernel/fork.c `kernel_clone()`). The epoch is read before the slow path, so
/// a bump during it leaves the entry already stale. Tasks made without `kernel_clone()`
/// (io_uring and vhost workers, idle tasks: `copy_process()` directly) never return to user
/// space, so never reach `sys_enter`. One window remains: `cgroup_attach_task()` fires its
/// tracepoint after the move (kernel/cgroup/cgroup.c), so a task moved by another while it
/// runs may have a few syscalls of that moment counted in its old cgroup's record (or not
/// at all, when the old one is not recorded); fexit on `cgroup_migrate()`, which would
/// narrow it, cannot load on this project's kernels. A CPU's entries are never written by two
/// runs at once: the kernel skips a run of a program that starts on a CPU where that program
/// is already running (kernel/trace/bpf_trace.c, `__bpf_trace_run`, `prog->active`).
///
/// For a recorded task the entry also keeps `depth`, how deep in the task's kernel stack
/// this syscall's `sys_enter` ran, with the syscall's number `nr`
/// ([`profiler_common::TaskCacheEntry::enter_depth`]), for the capability hook
/// ([`enter_depth`]); packed only there, not for the rest of the host.
#[inline(always)]
pub(crate) fn current_record_cached(
    task: u64,
    depth: u64,
    nr: impl Fn() -> i64,
) -> Option<*mut CgroupRecord> {
    let epoch = match EPOCH.get_ptr(0) {
        Some(epoch) => unsafe { core::ptr::read_volatile(epoch) },
        None => 0,
    };
    if epoch & EPOCH_CACHE_ON == 0 {
        return current_record();
    }
    let Some(cache) = TASK_CACHE.get_ptr_mut(0) else {
        return current_record();
    };
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &mut (*cache).entries[way] };
        if entry.task == task && entry.epoch == epoch {
            if entry.slot == NOT_RECORDED {
                return None;
            }
            entry.enter_depth = enter_depth_of(depth, nr()) as u32;
            return RECORDS.get_ptr_mut(entry.slot);
        }
    }
    let slot = current_record_slot();
    unsafe {
        let way = (*cache).next as usize % TASK_CACHE_WAYS;
        (*cache).next = (*cache).next.wrapping_add(1);
        if let Some(entry) = (*cache).entries.get_mut(way) {
            entry.task = task;
            entry.epoch = epoch;
            entry.slot = if slot < 0 { NOT_RECORDED } else { slot as u32 };
            entry.enter_depth = if slot < 0 {
                0
            } else {
                enter_depth_of(depth, nr()) as u32
            };
        }
    }
    record_at(slot)
}

/// [`profiler_common::TaskCacheEntry::enter_depth`] for a `sys_enter` that ran `depth` bytes
/// below the register frame, in syscall `nr`; 0 (unknown) for a depth that does not fit.
#[inline(always)]
fn enter_depth_of(depth: u64, nr: i64) -> u64 {
    if depth == 0 || depth > 0xffff {
        return 0;
    }
    depth | ((nr as u64 & 0xffff) << 16)
}

/// The depth at which `sys_enter` ran in the current syscall of the task whose register
/// frame is at `task`, as [`current_record_cached`] kept it on this CPU; None when this CPU
/// does not know it for certain. An entry of this epoch with this frame is the task's own
/// (see [`current_record_cached`]); its depth is this syscall's if the task entered this
/// syscall on this CPU: it has not run a syscall since (it is still in this one), and a
/// task that moved here from another CPU had its depth here forgotten when it moved
/// (`sched_migrate_task`, [`forget_enter_depth`]), which `EPOCH_DEPTHS_ON` says is attached.
/// `nr` is the current syscall's number (orig_ax): an entry taken in another syscall is not
/// used.
#[inline(always)]
pub(crate) fn enter_depth(task: u64, nr: i64) -> Option<u64> {
    let epoch = unsafe { core::ptr::read_volatile(EPOCH.get_ptr(0)?) };
    if epoch & (EPOCH_CACHE_ON | EPOCH_DEPTHS_ON) != EPOCH_CACHE_ON | EPOCH_DEPTHS_ON {
        return None;
    }
    let cache = TASK_CACHE.get_ptr(0)?;
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &(*cache).entries[way] };
        if entry.task == task && entry.epoch == epoch && entry.enter_depth != 0 {
            let packed = entry.enter_depth as u64;
            if packed >> 16 != nr as u64 & 0xffff {
                return None;
            }
            return Some(packed & 0xffff);
        }
    }
    None
}

/// Forgets the depth `cpu`'s cache holds for the task whose register frame is at `task`,
/// which is being moved to that CPU (kernel/sched/core.c `set_task_cpu()`: the task is not
/// running, so its own `sys_enter` cannot be writing that entry). Its record slot stays.
#[inline(always)]
pub(crate) fn forget_enter_depth(task: u64, cpu: u32) {
    let key = 0u32;
    // SAFETY: the map pointer is TASK_CACHE's definition, as aya's own lookups pass it.
    let cache = unsafe {
        bpf_map_lookup_percpu_elem(
            (&raw const TASK_CACHE).cast_mut().cast(),
            (&raw const key).cast(),
            cpu,
        )
    } as *mut TaskCache;
    if cache.is_null() {
        return;
    }
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &mut (*cache).entries[way] };
        if entry.task == task {
            entry.enter_depth = 0;
        }
    }
}
