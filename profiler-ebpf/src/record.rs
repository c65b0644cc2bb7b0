//! The record table on the kernel side: the current task's cgroup id, and the lookup (and, for
//! a cgroup discovered below a recording, the claim) of its slot in [`crate::maps::RECORDS`].
use aya_ebpf::{
    bindings::bpf_func_id::BPF_FUNC_get_smp_processor_id,
    helpers::{
        bpf_get_current_cgroup_id,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_map_lookup_elem,
        },
    },
};
use core::intrinsics::{AtomicOrdering, atomic_and, atomic_cxchg, atomic_or, atomic_xadd};
use profiler_common::{
    CgroupRecord, EPOCH_CACHE_ON, EPOCH_DEPTHS_ON, EPOCH_OP_ADD, EPOCH_OP_AND, EPOCH_OP_OR,
    EPOCH_STEP, LOSS_CGROUP_MAP_FULL, NOT_RECORDED, RECORD_PROBES, RECORD_SLOTS, SLOT_DELETED,
    SLOT_FREE, TASK_CACHE_WAYS, TaskCache, record_slot,
};

use crate::{
    globals::{
        CGROUP_BY_HELPER, CGROUP_ID_PATH, CGROUP_LEVEL_OFFSET, RECORD_TABLE_SLOTS, RECORDING_LEVEL,
    },
    maps::{EPOCH, RECORDS, TASK_CACHES, count_loss},
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

/// The record in the slot `*slot` names. The key is read where it is (`Array::get_ptr_mut`
/// takes it by value and so passes the helper a copy on the stack: a store, a reload that
/// waits for it, and a stack frame; kernel/bpf/verifier.c accepts a map value as the key,
/// `check_helper_mem_access`), and the verifier still inlines the lookup
/// (kernel/bpf/arraymap.c, `array_map_gen_lookup`).
#[inline(always)]
fn record_by_key(slot: *const u32) -> Option<*mut CgroupRecord> {
    // SAFETY: RECORDS is the map (aya's `Array` is its definition, `repr(transparent)`);
    // `slot` points at a u32 in map memory.
    let record = unsafe {
        bpf_map_lookup_elem(
            (&raw const RECORDS) as *mut core::ffi::c_void,
            slot as *const core::ffi::c_void,
        )
    };
    (!record.is_null()).then_some(record as *mut CgroupRecord)
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
    // The two markers are no cgroup's id (ids start at 1; a faulting probe load reads 0):
    // asked for, they would match a free or released slot and hand it out as a record.
    if cgroup_id == SLOT_FREE || cgroup_id == SLOT_DELETED {
        return None;
    }
    for probe in 0..RECORD_PROBES {
        let slot = record_slot(cgroup_id, probe, table_slots());
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

/// The record table's size ([`RECORD_TABLE_SLOTS`]).
#[inline(always)]
fn table_slots() -> u32 {
    unsafe { core::ptr::read_volatile(&RECORD_TABLE_SLOTS) }
}

/// Claims a slot for a cgroup discovered below a recording. Only never-used slots are taken
/// (they are all zero, so the record starts empty); userspace alone reuses deleted ones.
/// Compare-and-swap: two CPUs may discover the same cgroup, or two cgroups wanting the same
/// slot, at once.
#[inline(always)]
fn claim_record(cgroup_id: u64, recording_id: u64) -> Option<(u32, *mut CgroupRecord)> {
    // Never under a marker: an id of 0 from a faulting load would "claim" a free slot by
    // swapping 0 for 0 and leave it free.
    if cgroup_id == SLOT_FREE || cgroup_id == SLOT_DELETED {
        return None;
    }
    for probe in 0..RECORD_PROBES {
        let slot = record_slot(cgroup_id, probe, table_slots());
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

/// Tells every CPU's [`cached_record`] entries out of date.
#[inline(always)]
pub(crate) fn bump_epoch() {
    unsafe {
        atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(&raw mut EPOCH.value, EPOCH_STEP)
    };
}

/// The epoch as the syscall hook compares it.
#[inline(always)]
fn epoch() -> u64 {
    unsafe { core::ptr::read_volatile(&raw const EPOCH.value) }
}

/// Userspace's change to the epoch (`EPOCH_OP_*` with `operand`), atomic with the kernel's
/// bumps; returns the epoch before it.
#[inline(always)]
pub(crate) fn update_epoch(op: u64, operand: u64) -> u64 {
    unsafe {
        let epoch = &raw mut EPOCH.value;
        match op {
            EPOCH_OP_ADD => atomic_xadd::<u64, u64, { AtomicOrdering::SeqCst }>(epoch, operand),
            EPOCH_OP_OR => atomic_or::<u64, u64, { AtomicOrdering::SeqCst }>(epoch, operand),
            EPOCH_OP_AND => atomic_and::<u64, u64, { AtomicOrdering::SeqCst }>(epoch, operand),
            _ => core::ptr::read_volatile(epoch),
        }
    }
}

/// `cpu`'s task cache, None for a CPU beyond [`profiler_common::TASK_CACHE_CPUS`].
#[inline(always)]
fn cpu_cache(cpu: u64) -> Option<*mut TaskCache> {
    unsafe { (*(&raw mut TASK_CACHES)).get_mut(cpu as usize) }.map(|c| &raw mut c.cache)
}

/// `bpf_get_smp_processor_id()`, which the verifier inlines as a per-CPU load on x86-64
/// (kernel/bpf/verifier.c, `do_misc_fixups`). Declared returning u64: aya's binding returns
/// u32, and LLVM then zero-extends again what the 32-bit load already zero-extended, two
/// more instructions on every syscall.
#[inline(always)]
pub(crate) fn this_cpu() -> u64 {
    // SAFETY: the helper's id, called the way aya-ebpf's own bindings call it.
    unsafe {
        let helper: unsafe extern "C" fn() -> u64 =
            core::mem::transmute(BPF_FUNC_get_smp_processor_id as usize);
        helper()
    }
}

/// [`current_record`] from the per-CPU cache, for the syscall hook. `task` identifies the
/// current task: the address of its syscall register frame, which `sys_enter` is handed.
///
/// Reading the cgroup id takes a helper call (`bpf_get_current_task_btf`, not inlined on
/// 6.18) and four dependent loads, then the record table's probe; on this kernel's CPUs a
/// call is dear (AMD's SRSO "safe RET", Intel's return thunks). A hit here is a load of the
/// epoch, a few compares and one inlined map lookup, for every process on the host
/// (BENCHMARKS.md, M14, M22); `cpu`, this CPU's id ([`this_cpu`]), the caller reads before
/// anything else (M24).
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
/// is already running (kernel/trace/bpf_trace.c, `__bpf_trace_run`, `prog->active`); the one
/// writer from another CPU, [`forget_enter_depth`], only clears a depth.
///
/// For a recorded task the entry also keeps `depth`, how deep in the task's kernel stack
/// this syscall's `sys_enter` ran, with the syscall's number `nr`
/// ([`profiler_common::TaskCacheEntry::enter_depth`]), for the capability hook
/// ([`enter_depth`]); stored only there, not for the rest of the host.
///
/// This is the hit: no call, so the hook's own frame saves no registers (the x86-64 JIT
/// pushes the callee-saved ones a function uses, arch/x86/net/bpf_jit_comp.c
/// `detect_reg_usage`); [`current_record_caching`] is the miss.
#[inline(always)]
pub(crate) fn cached_record(cpu: u64, task: u64, depth: u64, nr: impl Fn() -> i64) -> Cached {
    let epoch = epoch();
    let Some(cache) = cpu_cache(cpu) else {
        return Cached::Unknown;
    };
    // No test of `EPOCH_CACHE_ON` first: entries are only made while it is set, and
    // clearing it changes the epoch, so no entry matches while it is clear (nor a never-made
    // one: no register frame is at address 0).
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &mut (*cache).entries[way] };
        if entry.task == task && entry.epoch == epoch {
            // `>=` rather than `== NOT_RECORDED`: the same for every slot made here, and
            // its bound fits the compare's immediate (u32::MAX takes a register load first).
            if entry.slot >= RECORD_SLOTS {
                return Cached::NotRecorded;
            }
            let nr = nr();
            entry.enter_depth = depth as u16;
            entry.enter_nr = nr as u16;
            return match record_by_key(&raw const entry.slot) {
                Some(record) => Cached::Recorded(record, nr),
                None => Cached::NotRecorded,
            };
        }
    }
    Cached::Unknown
}

/// What [`cached_record`] knows of the current task.
pub(crate) enum Cached {
    NotRecorded,
    /// Its record, and the syscall's number.
    Recorded(*mut CgroupRecord, i64),
    /// Not in this CPU's cache: ask [`current_record_caching`].
    Unknown,
}

/// [`current_record`] for a task [`cached_record`] does not know, entered in this CPU's
/// cache when the cache is on. Returns the record and the syscall's number.
#[inline(always)]
pub(crate) fn current_record_caching(
    task: u64,
    depth: u64,
    nr: impl Fn() -> i64,
) -> Option<(*mut CgroupRecord, i64)> {
    // Read before the slot is looked up: a bump during the lookup leaves the entry stale.
    let epoch = epoch();
    let Some(cache) = cpu_cache(this_cpu()).filter(|_| epoch & EPOCH_CACHE_ON != 0) else {
        return current_record().map(|r| (r, nr()));
    };
    let slot = current_record_slot();
    // The number is read only for a recorded task.
    let nr = if slot < 0 { 0 } else { nr() };
    unsafe {
        let way = (*cache).next as usize % TASK_CACHE_WAYS;
        (*cache).next = (*cache).next.wrapping_add(1);
        if let Some(entry) = (*cache).entries.get_mut(way) {
            entry.task = task;
            entry.epoch = epoch;
            entry.slot = if slot < 0 { NOT_RECORDED } else { slot as u32 };
            entry.enter_depth = if slot < 0 { 0 } else { depth as u16 };
            entry.enter_nr = nr as u16;
        }
    }
    record_at(slot).map(|r| (r, nr))
}

/// The depth at which `sys_enter` ran in the current syscall of the task whose register
/// frame is at `task`, as [`cached_record`] kept it on this CPU; None when this CPU
/// does not know it for certain. An entry of this epoch with this frame is the task's own
/// (see [`cached_record`]); its depth is this syscall's if the task entered this
/// syscall on this CPU: it has not run a syscall since (it is still in this one), and a
/// task that moved here from another CPU had its depth here forgotten when it moved
/// (`sched_migrate_task`, [`forget_enter_depth`]), which `EPOCH_DEPTHS_ON` says is attached.
/// `nr` is the current syscall's number (orig_ax): an entry taken in another syscall is not
/// used.
#[inline(always)]
pub(crate) fn enter_depth(task: u64, nr: i64) -> Option<u64> {
    let epoch = epoch();
    if epoch & (EPOCH_CACHE_ON | EPOCH_DEPTHS_ON) != EPOCH_CACHE_ON | EPOCH_DEPTHS_ON {
        return None;
    }
    let cache = cpu_cache(this_cpu())?;
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &(*cache).entries[way] };
        if entry.task == task && entry.epoch == epoch && entry.enter_depth != 0 {
            if entry.enter_nr != nr as u16 {
                return None;
            }
            return Some(entry.enter_depth as u64);
        }
    }
    None
}

/// Forgets the depth `cpu`'s cache holds for the task whose register frame is at `task`,
/// which is being moved to that CPU (kernel/sched/core.c `set_task_cpu()`: the task is not
/// running, so its own `sys_enter` cannot be writing that entry). Its record slot stays.
#[inline(always)]
pub(crate) fn forget_enter_depth(task: u64, cpu: u64) {
    let Some(cache) = cpu_cache(cpu) else {
        return;
    };
    for way in 0..TASK_CACHE_WAYS {
        let entry = unsafe { &mut (*cache).entries[way] };
        if entry.task == task {
            entry.enter_depth = 0;
        }
    }
}
