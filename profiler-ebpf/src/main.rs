//! Kernel side of profiler.
//!
//! Everything is aggregated here, in maps keyed by the cgroup2 id of the recorded workload:
//! no event is streamed per syscall. A syscall of a process outside every recorded cgroup costs
//! reading its cgroup id and one slot of an array.
//!
//! Programs (userspace picks one per hook, see `profiler/src/probes.rs`):
//! - `sys_enter_btf` (tp_btf) or `sys_enter_raw` (raw_tp): marks the syscall number, per
//!   architecture, in the cgroup's [`CgroupRecord`].
//! - `cap_capable_btf` (tp_btf on the `capability:cap_capable` tracepoint, Linux 6.14+) or
//!   `cap_capable_fexit` (fexit on `cap_capable()`, for kernels that allow fexit and lack the
//!   tracepoint): aggregates capability checks with their outcome, syscall and kernel stack.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_uid_gid,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes,
        generated::{
            bpf_get_current_ancestor_cgroup_id, bpf_get_current_task_btf, bpf_get_stack,
            bpf_send_signal, bpf_task_pt_regs,
        },
    },
    macros::{btf_tracepoint, fexit, map, raw_tracepoint},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf, StackTrace},
    programs::{BtfTracePointContext, FExitContext, RawTracePointContext, tracing::StackIdContext},
};
use core::intrinsics::{AtomicOrdering, atomic_cxchg};
use profiler_common::{
    ARCH_I386, ARCH_X32, ARCH_X86_64, CAP_FLAG_GRANTED, CAP_FLAG_NO_SYSCALL, CAP_FLAG_NOAUDIT,
    CAP_FLAG_OPTS_KNOWN, CAP_FLAG_OTHER_CRED, CAP_FLAG_PHASE_SHIFT, CAP_TOP_FRAMES, CapKey,
    CgroupRecord, LOSS_CAP_MAP_FULL, LOSS_CAP_STACK, LOSS_CGROUP_MAP_FULL, LOSS_COUNTERS,
    LOSS_SYSCALL_OUT_OF_RANGE, NR_X86_64_PRCTL, NR_X86_64_SECCOMP, PERSONALITY_OTHER,
    PERSONALITY_VALUES, PHASE_RUNTIME, PHASE_SETUP, PHASE_WORKLOAD, PR_SET_SECCOMP, PRCTL_OTHER,
    PT_REGS_BX_OFFSET, PT_REGS_CS_OFFSET, PT_REGS_DI_OFFSET, PT_REGS_DX_OFFSET,
    PT_REGS_ORIG_AX_OFFSET, PT_REGS_SI_OFFSET, RECORD_PROBES, RECORD_SLOTS, SECCOMP_MODE_FILTER,
    SECCOMP_SET_MODE_FILTER, SLOT_FREE, SYSCALL_SLOTS, USER32_CS, X32_SYSCALL_BIT, nr, record_slot,
};

use profiler_common::{
    ENFORCE_CONTAINERS, EVENT_AUX_LEN, EVENT_BIND, EVENT_CGROUP_ATTACH, EVENT_CHDIR, EVENT_CONNECT,
    EVENT_EXEC_ATTEMPT, EVENT_EXEC_KILLED, EVENT_EXEC_OK, EVENT_FCHDIR, EVENT_FORK, EVENT_LISTEN,
    EVENT_SETID, EVENT_SOCKET, EVENT_WRITE, Event, ExecPath, LOSS_EVENTS, PT_REGS_CX_OFFSET,
    PT_REGS_R10_OFFSET,
};

/// The recorded cgroups, an open-addressed table (see `profiler_common::RECORD_SLOTS`).
/// Mappable so userspace can claim and release slots with compare-and-swap on the same
/// memory the programs use.
#[map]
static RECORDS: Array<CgroupRecord> = Array::with_max_entries(RECORD_SLOTS, BPF_F_MMAPABLE);

/// Level in the cgroup2 hierarchy of the recording cgroups (`<root>/profiler/rec-*`), set by
/// userspace at load time. 0 disables discovery of descendant cgroups.
#[unsafe(no_mangle)]
static RECORDING_LEVEL: i32 = 0;

/// Byte offset of `real_cred` in `struct task_struct`, read by userspace from the kernel's BTF
/// at load time (aya has no CO-RE for Rust programs). 0: unknown, the comparison is skipped.
/// .rodata is frozen at load, so the verifier sees a constant offset into a BTF object.
#[unsafe(no_mangle)]
static TASK_REAL_CRED_OFFSET: u32 = 0;

/// Byte offsets to read the current task's cgroup2 id without a helper call:
/// `task_struct.cgroups` -> `css_set.dfl_cgrp` -> `cgroup.kn` -> `kernfs_node.id`, the path
/// `bpf_get_current_cgroup_id()` takes (kernel/bpf/helpers.c, `cgroup_id(task_dfl_cgroup())`).
/// Read from the kernel's BTF at load time; all 0 (unknown): use the helper.
#[unsafe(no_mangle)]
static CGROUP_ID_PATH: [u32; 4] = [0; 4];

/// Byte offset of `cgroup.level` (from BTF at load time); 0: unknown.
#[unsafe(no_mangle)]
static CGROUP_LEVEL_OFFSET: u32 = 0;

/// Byte offset of `cgroup.root` (from BTF at load time); 0: unknown.
#[unsafe(no_mangle)]
static CGROUP_ROOT_OFFSET: u32 = 0;

/// Byte offsets of `cgroup_subsys_state.parent` (usable on a `struct cgroup`, whose first
/// member is its `self` css, include/linux/cgroup-defs.h) and `cgroup_subsys_state.cgroup`
/// (back from the parent css to its cgroup); a `parent` offset of 0: unknown.
#[unsafe(no_mangle)]
static CSS_PARENT_OFFSET: [u32; 2] = [0; 2];

/// How far up from a destination cgroup a recording is looked for.
const MAX_CGROUP_DEPTH: usize = 16;

#[map]
static CAP_CHECKS: HashMap<CapKey, u64> = HashMap::with_max_entries(16384, 0);

#[map]
static CAP_STACKS: StackTrace = StackTrace::with_max_entries(8192, 0);

/// A kernel path already walked: the stack id its walk gave, and how often it was seen since.
#[repr(C)]
#[derive(Clone, Copy)]
struct CapPath {
    stack_id: i32,
    hits: u32,
}

/// Capability checks by call path, to walk and store each path's whole stack once instead of
/// per check (`bpf_get_stackid` ~3.5 us here, the top frames ~1.5 us; a process checks
/// CAP_SYS_ADMIN on nearly every mmap). Checks share a path when their innermost frames are
/// equal; the stored stack is then one of the paths that begin so, and every
/// `CAP_REWALK_EVERY`th check walks again.
#[map]
static CAP_PATHS: HashMap<CapKey, CapPath> = HashMap::with_max_entries(16384, 0);
const CAP_REWALK_EVERY: u32 = 64;

#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_COUNTERS, 0);

/// Rare events (execs, writes, endpoints, user switches) for the image profile; drained by
/// userspace while the workload runs. Losses are counted in LOSS_EVENTS.
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
const EVENTS_BYTES: u32 = 1 << 20;
/// Fill level from which each event wakes the reader up.
const EVENTS_WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;

/// `profiler enforce`: ENFORCE_ALL / ENFORCE_CONTAINERS, 0 when recording.
#[unsafe(no_mangle)]
static ENFORCE: u32 = 0;

/// Executables the profile allows (paths as the workload passes them to execve).
#[map]
static ALLOWED_EXECS: HashMap<ExecPath, u8> = HashMap::with_max_entries(4096, 0);

/// Per thread: whether its last exec attempt was of a program the profile does not allow.
#[map]
static EXEC_VERDICT: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// A zeroed path buffer per CPU (a map key must be fully initialised).
#[map]
static PATH_SCRATCH: PerCpuArray<ExecPath> = PerCpuArray::with_max_entries(1, 0);

/// Byte offsets of `task_struct.pid` and `task_struct.tgid` (from BTF at load time), to tell
/// a new process from a new thread in sched_process_fork. 0: no fork events.
#[unsafe(no_mangle)]
static TASK_PID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
static TASK_TGID_OFFSET: u32 = 0;

/// `include/linux/security.h`: the opts bit that says "do not audit this check".
const CAP_OPT_NOAUDIT: u32 = 1 << 1;

#[inline(always)]
fn count_loss(index: u32) {
    if let Some(counter) = LOSSES.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, so a plain increment is exact.
        unsafe { *counter += 1 };
    }
}

/// Splits the raw syscall id into (architecture slot, number).
///
/// x32 syscalls enter through the 64-bit path with `__X32_SYSCALL_BIT` set in the number
/// (arch/x86/entry/syscall_64.c, `do_syscall_x32`). Compat i386 syscalls enter from a 32-bit
/// code segment, so the saved `cs` is `__USER32_CS`. The one case this misses is a 64-bit
/// process issuing `int $0x80` from 64-bit code (the kernel treats it as i386 through
/// TS_COMPAT); that is recorded as x86_64.
#[inline(always)]
fn classify(id: i64, cs: u64) -> (usize, i64) {
    if id >= 0 && (id as u64) & X32_SYSCALL_BIT != 0 {
        (ARCH_X32, ((id as u64) & !X32_SYSCALL_BIT) as i64)
    } else if cs == USER32_CS {
        (ARCH_I386, id)
    } else {
        (ARCH_X86_64, id)
    }
}

#[inline(always)]
fn mark_syscall(record: *mut CgroupRecord, phase: usize, arch: usize, nr: i64) {
    // `get_mut` instead of indexing: a failed bounds check must not become a panic call,
    // which the verifier rejects.
    let slot = if (0..SYSCALL_SLOTS as i64).contains(&nr) {
        unsafe { (*record).syscalls.get_mut(phase) }
            .and_then(|p| p.get_mut(arch))
            .and_then(|row| row.get_mut(nr as usize))
    } else {
        None
    };
    let Some(slot) = slot else {
        unsafe { (*record).out_of_range += 1 };
        count_loss(LOSS_SYSCALL_OUT_OF_RANGE);
        return;
    };
    // Read before writing: after the first call of a number this is a read-only hit and the
    // cache line stays shared between CPUs.
    if *slot == 0 {
        *slot = 1;
    }
}

/// The current task's cgroup2 id, on the syscall path. Every syscall on the host pays for
/// this while a recording runs, and the helper call was the largest part of that cost
/// (measured: ~12 ns of the probe's ~16 ns over a do-nothing program); four loads through
/// BTF pointers cost less. The rare hooks use [`current_cgroup_id`]: the verifier looks a
/// type name up in all of vmlinux BTF for every such load it checks
/// (kernel/bpf/verifier.c, `btf_nested_type_is_trusted`), ~1 ms of start-up each.
///
/// Also returns the `struct cgroup` (null when the helper had to be used), for
/// [`below_recording_level`].
#[inline(always)]
fn current_cgroup_id_fast() -> (u64, *const u8) {
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
/// and a second lookup (measured: +23 ns on every syscall of the host without it).
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
fn current_cgroup_id() -> u64 {
    unsafe { bpf_get_current_cgroup_id() }
}

/// The record of `cgroup_id`. For a cgroup that is not recorded (every other process on the
/// host) this is usually one probe that finds a free slot.
#[inline(always)]
fn find_record(cgroup_id: u64) -> Option<*mut CgroupRecord> {
    for probe in 0..RECORD_PROBES {
        let record = RECORDS.get_ptr_mut(record_slot(cgroup_id, probe))?;
        let id = unsafe { core::ptr::read_volatile(&raw const (*record).cgroup_id) };
        if id == cgroup_id {
            return Some(record);
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
fn claim_record(cgroup_id: u64, recording_id: u64) -> Option<*mut CgroupRecord> {
    for probe in 0..RECORD_PROBES {
        let record = RECORDS.get_ptr_mut(record_slot(cgroup_id, probe))?;
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
                return Some(record);
            }
            (false, current) if current == cgroup_id => return Some(record),
            (false, _) => {}
        }
    }
    count_loss(LOSS_CGROUP_MAP_FULL);
    None
}

/// The record of the current cgroup, creating it when the cgroup is a descendant of a
/// recording cgroup seen for the first time (a container created under the recording cgroup
/// by a runtime): the kernel registers it at its very first syscall, so nothing a container
/// does is missed however fast it starts and stops.
#[inline(always)]
fn current_record() -> Option<*mut CgroupRecord> {
    let (cgroup_id, cgroup) = current_cgroup_id_fast();
    if let Some(record) = find_record(cgroup_id) {
        return Some(record);
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

#[inline(always)]
fn mark(slots: &mut [u8], index: u64) {
    if let Some(slot) = slots.get_mut(index as usize)
        && *slot == 0
    {
        *slot = 1;
    }
}

#[inline(always)]
fn mark_bits(slots: &mut [u8; 32], flags: u64) {
    for (bit, slot) in slots.iter_mut().enumerate() {
        if flags & (1 << bit) != 0 {
            *slot = 1;
        }
    }
}

/// Records the argument that decides what the syscall may do, for the few syscalls whose
/// power depends on it (see `profiler_common::ArgRecord`). `a0` is the first argument of the
/// syscall's own ABI: `di` on the 64-bit entry, `bx` on the compat one.
#[inline(always)]
fn record_args(record: *mut CgroupRecord, phase: usize, arch: usize, nr: i64, a0: u64) {
    let Some(args) = (unsafe { (*record).args.get_mut(phase) }) else {
        return;
    };
    if arch == ARCH_I386 {
        match nr {
            nr::I386_SOCKET => mark(&mut args.socket_families, a0),
            nr::I386_SOCKETPAIR => mark(&mut args.socketpair_families, a0),
            nr::I386_CLONE => mark_bits(&mut args.clone_flag_bits, a0),
            nr::CLONE3 => mark_clone3_flags(args, a0),
            nr::I386_UNSHARE => mark_bits(&mut args.unshare_flag_bits, a0),
            nr::I386_PERSONALITY => mark_personality(args, a0),
            nr::I386_PRCTL => mark(&mut args.prctl_options, a0.min(PRCTL_OTHER as u64)),
            nr::I386_SOCKETCALL => mark(&mut args.socketcall_calls, a0),
            nr::I386_IPC => mark(&mut args.ipc_calls, a0 & 0xffff),
            _ => {}
        }
    } else {
        match nr {
            nr::X86_64_SOCKET => mark(&mut args.socket_families, a0),
            nr::X86_64_SOCKETPAIR => mark(&mut args.socketpair_families, a0),
            nr::X86_64_CLONE => mark_bits(&mut args.clone_flag_bits, a0),
            nr::CLONE3 => mark_clone3_flags(args, a0),
            nr::X86_64_UNSHARE => mark_bits(&mut args.unshare_flag_bits, a0),
            nr::X86_64_PERSONALITY => mark_personality(args, a0),
            NR_X86_64_PRCTL => mark(&mut args.prctl_options, a0.min(PRCTL_OTHER as u64)),
            _ => {}
        }
    }
}

/// clone3(2) passes its flags in memory (`struct clone_args`, whose first member is the u64
/// `flags`, include/uapi/linux/sched.h), where seccomp cannot look: the generated profile
/// answers clone3 with ENOSYS and allows libc's fallback, clone(2), filtered on its flags
/// argument. glibc's fallback passes the same flags, so they count as clone's.
#[inline(always)]
fn mark_clone3_flags(args: &mut profiler_common::ArgRecord, clone_args: u64) {
    if let Ok(flags) = unsafe { bpf_probe_read_user(clone_args as *const u64) } {
        mark_bits(&mut args.clone_flag_bits, flags);
    }
}

#[inline(always)]
fn mark_personality(args: &mut profiler_common::ArgRecord, value: u64) {
    let value = value & 0xffff_ffff;
    let mut slot = PERSONALITY_OTHER;
    for (i, v) in PERSONALITY_VALUES.iter().enumerate() {
        if *v == value {
            slot = i;
        }
    }
    mark(&mut args.personality, slot as u64);
}

const AT_FDCWD: u64 = -100i64 as u64;

/// Whether `profiler enforce` judges this exec (decided only for execs, not every syscall).
/// In container mode, neither the engine's own CLI (the recording cgroup itself) nor the
/// runtime's set-up is judged: runc re-executes itself from a memfd inside the container's
/// cgroup before it loads the filter. From the filter load on, every exec (the entrypoint's
/// first) is the container's.
#[inline(always)]
fn enforcing(record: *mut CgroupRecord, phase: usize) -> bool {
    let enforce = unsafe { core::ptr::read_volatile(&ENFORCE) };
    enforce != 0
        && (enforce != ENFORCE_CONTAINERS
            || (phase != PHASE_SETUP && unsafe { (*record).recording_id != current_cgroup_id() }))
}

/// Remembers, for this thread, whether the program it is about to exec is in the profile;
/// the verdict is carried out in sched_process_exec, once the exec has succeeded.
#[inline(always)]
fn judge_exec(path: u64) {
    let Some(buf) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // Zeroed 8 bytes at a time (32 stores, not 256): the key must be fully initialised.
    let words = buf as *mut u64;
    for i in 0..(profiler_common::EVENT_PATH_LEN / 8) {
        unsafe { *words.add(i) = 0 };
    }
    let buf = unsafe { &mut *buf };
    if unsafe { bpf_probe_read_user_str_bytes(path as *const u8, buf) }.is_err() {
        return;
    }
    let allowed = unsafe { ALLOWED_EXECS.get(*buf) }.is_some();
    let tid = bpf_get_current_pid_tgid() as u32;
    let _ = EXEC_VERDICT.insert(tid, if allowed { 0 } else { 1 }, 0);
}
/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND (include/uapi/asm-generic/fcntl.h).
const OPEN_WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000;

/// Puts one event in the ring buffer: `path` (a user pointer, may be 0) is read as a string
/// into `data`, `aux` likewise into `aux`; `sockaddr` (with its length) instead reads raw
/// bytes into `data`.
/// What one event carries besides its kind and phase.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventSpec {
    args: [u64; 4],
    /// User pointer to a path (or a sockaddr when `sockaddr_len` > 0), 0 for none.
    path: u64,
    /// User pointer to a second string (argv[0]), 0 for none.
    aux: u64,
    sockaddr_len: u64,
}

#[inline(always)]
fn emit(kind: u32, phase: usize, args: [u64; 4], path: u64, aux: u64, sockaddr_len: u64) {
    emit_spec(
        kind,
        phase as u64,
        &EventSpec {
            args,
            path,
            aux,
            sockaddr_len,
        },
    );
}

/// A BPF subprogram (BPF calls take at most five arguments, hence the struct): verified
/// without being inlined at every call site.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn emit_spec(kind: u32, phase: u64, spec: *const EventSpec) -> i32 {
    if spec.is_null() {
        return 0;
    }
    let EventSpec {
        args,
        path,
        aux,
        sockaddr_len,
    } = unsafe { *spec };
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_loss(LOSS_EVENTS);
        return 0;
    };
    let e = entry.as_mut_ptr();
    let pid_tgid = bpf_get_current_pid_tgid();
    unsafe {
        (*e).cgroup_id = current_cgroup_id();
        (*e).kind = kind;
        (*e).pid = (pid_tgid >> 32) as u32;
        (*e).tid = pid_tgid as u32;
        (*e).phase = phase as u32;
        (*e).args = args;
        (*e).data[0] = 0;
        (*e).aux[0] = 0;
        if path != 0 {
            if sockaddr_len > 0 {
                // Constant sizes keep the verifier's work small: sockaddr_in (16),
                // sockaddr_in6 (28), anything else (sockaddr_un: 110).
                let data = &mut (*e).data;
                let _ = if sockaddr_len <= 16 {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..16])
                } else if sockaddr_len <= 28 {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..28])
                } else {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..110])
                };
            } else {
                let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut (*e).data);
            }
        }
        if aux != 0 {
            let aux_buf = &mut (*e).aux;
            let _ = bpf_probe_read_user_str_bytes(aux as *const u8, &mut aux_buf[..EVENT_AUX_LEN]);
        }
    }
    // Waking the reader for every event costs more than the event (an epoll wake-up and a
    // context switch each: measured ~70 ms of profiler CPU over a make -j2 of 200 files).
    // The reader drains on a timer (`EVENT_DRAIN_INTERVAL_MS`) and is woken only once a
    // quarter of the buffer is used, long before it can fill. `profiler enforce` reports
    // violations as they happen, so it keeps a wake-up per event.
    let enforcing = unsafe { core::ptr::read_volatile(&ENFORCE) } != 0;
    let flags = if enforcing || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    entry.submit(flags as u64);
    0
}

/// The rare syscalls the image profile is made of (x86_64 numbers). a = di, si, dx, r10.
#[inline(always)]
fn emit_events(record: *mut CgroupRecord, phase: usize, nr: i64, a: [u64; 4], compat: bool) {
    // Each event is described first and emitted at one of two call sites (the verifier checks
    // `emit` once per site and path: measured 76 ms at start with twenty sites, 64 ms now).
    // (kind, args, user pointer, aux pointer, sockaddr length)
    type Spec = (u32, [u64; 4], u64, u64, u64);
    let write =
        |dirfd: u64, path: u64| -> Spec { (EVENT_WRITE, [nr as u64, dirfd, 0, 0], path, 0, 0) };
    let (first, second): (Option<Spec>, Option<Spec>) = match nr {
        nr::X86_64_EXECVE | nr::X86_64_EXECVEAT => {
            let (dirfd, path, argv) = if nr == nr::X86_64_EXECVE {
                (AT_FDCWD, a[0], a[1])
            } else {
                (a[0], a[1], a[2])
            };
            // argv[0]: a pointer of the process's own width.
            let argv0 = match (argv, compat) {
                (0, _) => 0,
                (_, true) => unsafe { bpf_probe_read_user(argv as *const u32) }.unwrap_or(0) as u64,
                (_, false) => unsafe { bpf_probe_read_user(argv as *const u64) }.unwrap_or(0),
            };
            if enforcing(record, phase) {
                judge_exec(path);
            }
            (
                Some((EVENT_EXEC_ATTEMPT, [dirfd, 0, 0, 0], path, argv0, 0)),
                None,
            )
        }
        nr::X86_64_OPEN if a[1] & OPEN_WRITE_FLAGS != 0 => (
            Some((EVENT_WRITE, [nr as u64, AT_FDCWD, a[1], 0], a[0], 0, 0)),
            None,
        ),
        nr::X86_64_OPENAT2 => {
            // openat2(dirfd, path, struct open_how *how, size): the flags are how->flags, the
            // first u64 of the struct (include/uapi/linux/openat2.h).
            let flags = unsafe { bpf_probe_read_user(a[2] as *const u64) }.unwrap_or(0);
            if flags & OPEN_WRITE_FLAGS != 0 {
                (
                    Some((EVENT_WRITE, [nr as u64, a[0], flags, 0], a[1], 0, 0)),
                    None,
                )
            } else {
                (None, None)
            }
        }
        nr::X86_64_OPENAT if a[2] & OPEN_WRITE_FLAGS != 0 => (
            Some((EVENT_WRITE, [nr as u64, a[0], a[2], 0], a[1], 0, 0)),
            None,
        ),
        nr::X86_64_CREAT
        | nr::X86_64_MKDIR
        | nr::X86_64_RMDIR
        | nr::X86_64_UNLINK
        | nr::X86_64_TRUNCATE
        | nr::X86_64_MKNOD => (Some(write(AT_FDCWD, a[0])), None),
        nr::X86_64_MKDIRAT | nr::X86_64_UNLINKAT | nr::X86_64_MKNODAT => {
            (Some(write(a[0], a[1])), None)
        }
        nr::X86_64_RENAME => (Some(write(AT_FDCWD, a[0])), Some(write(AT_FDCWD, a[1]))),
        nr::X86_64_RENAMEAT | nr::X86_64_RENAMEAT2 => {
            (Some(write(a[0], a[1])), Some(write(a[2], a[3])))
        }
        nr::X86_64_LINK | nr::X86_64_SYMLINK => (Some(write(AT_FDCWD, a[1])), None),
        nr::X86_64_LINKAT => (Some(write(a[2], a[3])), None),
        nr::X86_64_SYMLINKAT => (Some(write(a[1], a[2])), None),
        nr::X86_64_CHDIR => (Some((EVENT_CHDIR, [0; 4], a[0], 0, 0)), None),
        nr::X86_64_FCHDIR => (Some((EVENT_FCHDIR, [a[0], 0, 0, 0], 0, 0, 0)), None),
        nr::X86_64_BIND | nr::X86_64_CONNECT => {
            let kind = if nr == nr::X86_64_BIND {
                EVENT_BIND
            } else {
                EVENT_CONNECT
            };
            (Some((kind, [a[0], a[2], 0, 0], a[1], 0, a[2].max(1))), None)
        }
        nr::X86_64_LISTEN => (Some((EVENT_LISTEN, [a[0], a[1], 0, 0], 0, 0, 0)), None),
        nr::X86_64_SOCKET => (Some((EVENT_SOCKET, [a[0], a[1], a[2], 0], 0, 0, 0)), None),
        nr::X86_64_SETUID
        | nr::X86_64_SETGID
        | nr::X86_64_SETREUID
        | nr::X86_64_SETREGID
        | nr::X86_64_SETRESUID
        | nr::X86_64_SETRESGID => (
            Some((EVENT_SETID, [nr as u64, a[0], a[1], a[2]], 0, 0, 0)),
            None,
        ),
        _ => (None, None),
    };
    if let Some((kind, args, ptr, aux, len)) = first {
        emit(kind, phase, args, ptr, aux, len);
    }
    if let Some((kind, args, ptr, aux, len)) = second {
        emit(kind, phase, args, ptr, aux, len);
    }
}

/// An i386 syscall that produces events, as the x86_64 syscall taking the same arguments in
/// the same order; `a` is ebx, ecx, edx, esi (zero-extended by the compat entry). File
/// descriptors are sign-extended (AT_FDCWD is -100), pointers are not.
#[inline(always)]
fn i386_event_form(nr: i64, a: [u64; 4]) -> Option<(i64, [u64; 4])> {
    let fd = |v: u64| v as u32 as i32 as i64 as u64;
    let [a0, a1, a2, a3] = a;
    Some(match nr {
        nr::I386_EXECVE => (nr::X86_64_EXECVE, a),
        nr::I386_EXECVEAT => (nr::X86_64_EXECVEAT, [fd(a0), a1, a2, a3]),
        nr::I386_OPEN => (nr::X86_64_OPEN, a),
        nr::I386_OPENAT => (nr::X86_64_OPENAT, [fd(a0), a1, a2, a3]),
        nr::I386_OPENAT2 => (nr::X86_64_OPENAT2, [fd(a0), a1, a2, a3]),
        nr::I386_CREAT => (nr::X86_64_CREAT, a),
        nr::I386_MKDIR => (nr::X86_64_MKDIR, a),
        nr::I386_MKDIRAT => (nr::X86_64_MKDIRAT, [fd(a0), a1, a2, a3]),
        nr::I386_RMDIR => (nr::X86_64_RMDIR, a),
        nr::I386_UNLINK => (nr::X86_64_UNLINK, a),
        nr::I386_UNLINKAT => (nr::X86_64_UNLINKAT, [fd(a0), a1, a2, a3]),
        nr::I386_RENAME => (nr::X86_64_RENAME, a),
        nr::I386_RENAMEAT => (nr::X86_64_RENAMEAT, [fd(a0), a1, fd(a2), a3]),
        nr::I386_RENAMEAT2 => (nr::X86_64_RENAMEAT2, [fd(a0), a1, fd(a2), a3]),
        nr::I386_LINK => (nr::X86_64_LINK, a),
        nr::I386_LINKAT => (nr::X86_64_LINKAT, [fd(a0), a1, fd(a2), a3]),
        nr::I386_SYMLINK => (nr::X86_64_SYMLINK, a),
        nr::I386_SYMLINKAT => (nr::X86_64_SYMLINKAT, [a0, fd(a1), a2, a3]),
        nr::I386_MKNOD => (nr::X86_64_MKNOD, a),
        nr::I386_MKNODAT => (nr::X86_64_MKNODAT, [fd(a0), a1, a2, a3]),
        nr::I386_TRUNCATE | nr::I386_TRUNCATE64 => (nr::X86_64_TRUNCATE, a),
        nr::I386_CHDIR => (nr::X86_64_CHDIR, a),
        nr::I386_FCHDIR => (nr::X86_64_FCHDIR, [fd(a0), a1, a2, a3]),
        nr::I386_SOCKET => (nr::X86_64_SOCKET, a),
        nr::I386_BIND => (nr::X86_64_BIND, [fd(a0), a1, a2, a3]),
        nr::I386_CONNECT => (nr::X86_64_CONNECT, [fd(a0), a1, a2, a3]),
        nr::I386_LISTEN => (nr::X86_64_LISTEN, [fd(a0), a1, a2, a3]),
        nr::I386_SOCKETCALL => {
            // socketcall(call, args): the arguments are an array of 32-bit values in memory.
            let call_args = unsafe { bpf_probe_read_user(a1 as *const [u32; 3]) }.ok()?;
            let [b0, b1, b2] = call_args.map(|v| v as u64);
            match a0 {
                nr::SYS_SOCKET => (nr::X86_64_SOCKET, [b0, b1, b2, 0]),
                nr::SYS_BIND => (nr::X86_64_BIND, [fd(b0), b1, b2, 0]),
                nr::SYS_CONNECT => (nr::X86_64_CONNECT, [fd(b0), b1, b2, 0]),
                nr::SYS_LISTEN => (nr::X86_64_LISTEN, [fd(b0), b1, b2, 0]),
                _ => return None,
            }
        }
        nr::I386_SETUID16 | nr::I386_SETUID32 => (nr::X86_64_SETUID, a),
        nr::I386_SETGID16 | nr::I386_SETGID32 => (nr::X86_64_SETGID, a),
        nr::I386_SETREUID16 | nr::I386_SETREUID32 => (nr::X86_64_SETREUID, a),
        nr::I386_SETREGID16 | nr::I386_SETREGID32 => (nr::X86_64_SETREGID, a),
        nr::I386_SETRESUID16 | nr::I386_SETRESUID32 => (nr::X86_64_SETRESUID, a),
        nr::I386_SETRESGID16 | nr::I386_SETRESGID32 => (nr::X86_64_SETRESGID, a),
        _ => return None,
    })
}

#[inline(always)]
fn on_sys_enter(record: *mut CgroupRecord, id: i64, cs: u64, regs: [u64; 6]) {
    let [di, si, dx, bx, r10, cx] = regs;
    let (arch, nr) = classify(id, cs);
    // profiler's child before it execs the workload (see `CgroupRecord::awaiting_exec`).
    if unsafe { (*record).awaiting_exec } != 0 && (arch, nr) != (ARCH_X86_64, nr::X86_64_EXECVE) {
        return;
    }
    let phase = unsafe { (*record).phase } as usize;
    mark_syscall(record, phase, arch, nr);
    record_args(
        record,
        phase,
        arch,
        nr,
        if arch == ARCH_I386 { bx } else { di },
    );
    // Events come from both 64-bit and 32-bit processes, told in x86_64 terms. (x32 has its
    // own numbers for a few of these; it cannot run on this project's kernels.)
    let event_form = if arch == ARCH_X86_64 {
        Some((nr, [di, si, dx, r10], false))
    } else if arch == ARCH_I386 {
        i386_event_form(nr, [bx, cx, dx, si]).map(|(n, a)| (n, a, true))
    } else {
        None
    };
    if let Some((nr, a, compat)) = event_form {
        emit_events(record, phase, nr, a, compat);
    }
    // A seccomp filter being loaded before the first exec is the runtime locking the
    // container down: what follows until the exec must be allowed by the profile. The filter
    // pointer must be set: libseccomp probes which flags the kernel supports with
    // seccomp(SECCOMP_SET_MODE_FILTER, flag, NULL), which loads nothing (EFAULT).
    if arch == ARCH_X86_64
        && ((nr == NR_X86_64_SECCOMP && di == SECCOMP_SET_MODE_FILTER && dx != 0)
            || (nr == NR_X86_64_PRCTL
                && di == PR_SET_SECCOMP
                && si == SECCOMP_MODE_FILTER
                && dx != 0))
    {
        unsafe {
            (*record).seccomp_loads += 1;
            if phase == PHASE_SETUP {
                (*record).phase = PHASE_RUNTIME as u32;
            }
        }
    }
}

/// tp_btf `sys_enter(struct pt_regs *regs, long id)` (include/trace/events/syscalls.h).
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    // Filter first: for every process that is not recorded this is the only work done.
    let Some(record) = current_record() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let id: i64 = ctx.arg(1);
    // `regs` is a BTF pointer: direct loads, no bpf_probe_read_kernel (refused under lockdown).
    let load = |off: usize| unsafe { *(regs.add(off) as *const u64) };
    let cs = load(PT_REGS_CS_OFFSET);
    let args = [
        load(PT_REGS_DI_OFFSET),
        load(PT_REGS_SI_OFFSET),
        load(PT_REGS_DX_OFFSET),
        load(PT_REGS_BX_OFFSET),
        load(PT_REGS_R10_OFFSET),
        load(PT_REGS_CX_OFFSET),
    ];
    on_sys_enter(record, id, cs, args);
    0
}

/// The cost floor for benchmarks (`profiler bench-floor`): attached to the same tracepoint,
/// does nothing. What every sys_enter program costs every syscall on the host just by being
/// there; the recording program's own work is measured against it.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// raw_tp `sys_enter` for kernels without BTF. The register frame has to be read with
/// bpf_probe_read_kernel here; if that is refused the syscall is still recorded, as x86_64
/// unless the x32 bit says otherwise.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(ctx: RawTracePointContext) -> i32 {
    let Some(record) = current_record() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let id: i64 = ctx.arg(1);
    let read =
        |off: usize| unsafe { bpf_probe_read_kernel(regs.add(off) as *const u64) }.unwrap_or(0);
    let args = [
        read(PT_REGS_DI_OFFSET),
        read(PT_REGS_SI_OFFSET),
        read(PT_REGS_DX_OFFSET),
        read(PT_REGS_BX_OFFSET),
        read(PT_REGS_R10_OFFSET),
        read(PT_REGS_CX_OFFSET),
    ];
    on_sys_enter(record, id, read(PT_REGS_CS_OFFSET), args);
    0
}

/// An exec after the runtime loaded the seccomp filter is the container's entrypoint: the
/// workload starts. Execs before the filter load stay in the set-up phase: runc, for one,
/// re-executes itself from a sealed memfd inside the container's cgroup
/// (libcontainer/nsenter/cloned_binary.c) long before it starts the entrypoint.
#[inline(always)]
fn on_exec() {
    let cgroup_id = current_cgroup_id();
    if let Some(record) = find_record(cgroup_id) {
        let phase = unsafe {
            (*record).awaiting_exec = 0;
            if (*record).phase == PHASE_RUNTIME as u32 {
                (*record).phase = PHASE_WORKLOAD as u32;
            }
            (*record).phase
        };
        let uid_gid = bpf_get_current_uid_gid();
        emit(
            EVENT_EXEC_OK,
            phase as usize,
            [uid_gid & 0xffff_ffff, uid_gid >> 32, 0, 0],
            0,
            0,
            0,
        );
        let tid = bpf_get_current_pid_tgid() as u32;
        if unsafe { core::ptr::read_volatile(&ENFORCE) } != 0
            && let Some(verdict) = unsafe { EXEC_VERDICT.get(tid) }
            && *verdict == 1
        {
            // The new program has not run a single instruction yet: SIGKILL is taken on
            // the way back to user space.
            unsafe { bpf_send_signal(9) };
            emit(EVENT_EXEC_KILLED, phase as usize, [0; 4], 0, 0, 0);
        }
    }
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

/// tp_btf `cgroup_attach_task(struct cgroup *dst_cgrp, const char *path, struct
/// task_struct *task, bool threadgroup)` (include/trace/events/cgroup.h), fired once a task
/// has moved (kernel/cgroup/cgroup.c, cgroup_attach_task()): by then the task's old cgroup is
/// gone from it, so every move into a cgroup that is not recorded is reported, with the
/// task, and userspace tells whether the task was a workload's. Moves are rare (container
/// starts, cgroup managers); the hot path is untouched.
#[btf_tracepoint(function = "cgroup_attach_task")]
pub fn cgroup_attach_task_btf(ctx: BtfTracePointContext) -> i32 {
    let (path, tgid_off, root_off, [parent_off, css_cgroup_off]) = unsafe {
        (
            core::ptr::read_volatile(&CGROUP_ID_PATH),
            core::ptr::read_volatile(&TASK_TGID_OFFSET) as usize,
            core::ptr::read_volatile(&CGROUP_ROOT_OFFSET) as usize,
            core::ptr::read_volatile(&CSS_PARENT_OFFSET),
        )
    };
    // (`css.cgroup` is the css's first member, at offset 0: only `parent` says "unknown".)
    if path[0] == 0 || tgid_off == 0 || root_off == 0 || parent_off == 0 {
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
    let (dst_id, tgid) = unsafe {
        let kn = *(dst.add(path[2] as usize) as *const *const u8);
        (
            *(kn.add(path[3] as usize) as *const u64),
            *(task.add(tgid_off) as *const i32),
        )
    };
    // A move into a recorded cgroup or below one (a container a runtime is setting up, not
    // yet registered: its cgroup may be gone by the time userspace looks) stays recorded.
    let mut cgroup = dst;
    for _ in 0..MAX_CGROUP_DEPTH {
        let id = unsafe {
            let kn = *(cgroup.add(path[2] as usize) as *const *const u8);
            *(kn.add(path[3] as usize) as *const u64)
        };
        if find_record(id).is_some() {
            return 0;
        }
        let parent_css = unsafe { *(cgroup.add(parent_off as usize) as *const *const u8) };
        if parent_css.is_null() {
            break;
        }
        cgroup = unsafe { *(parent_css.add(css_cgroup_off as usize) as *const *const u8) };
        if cgroup.is_null() {
            break;
        }
    }
    emit(EVENT_CGROUP_ATTACH, 0, [dst_id, tgid as u64, 0, 0], 0, 0, 0);
    0
}

/// tp_btf `sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)`
/// (include/trace/events/sched.h): fires once an exec has succeeded.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec_btf(_ctx: BtfTracePointContext) -> i32 {
    on_exec();
    0
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(_ctx: RawTracePointContext) -> i32 {
    on_exec();
    0
}

/// Records one capability check. `opts_flags` carries what the hook knows about CAP_OPT_*.
#[inline(always)]
fn record_cap_check<C: StackIdContext>(ctx: &C, cap: i32, ret: i32, opts_flags: u32) {
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
    let (arch, nr) = classify(syscall_nr, cs);
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
                Err(_) => {
                    count_loss(LOSS_CAP_STACK);
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
            }
        }
    }
}

/// tp_btf `cap_capable(const struct cred *cred, struct user_namespace *target_ns,
/// const struct user_namespace *capable_ns, int cap, int ret)`
/// (include/trace/events/capability.h). The tracepoint does not carry the opts, so whether
/// the check was audited is decided in userspace from the stack.
#[btf_tracepoint(function = "cap_capable")]
pub fn cap_capable_btf(ctx: BtfTracePointContext) -> i32 {
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    let cred: *const u8 = ctx.arg(0);
    let mut flags = 0;
    let offset = unsafe { core::ptr::read_volatile(&TASK_REAL_CRED_OFFSET) } as usize;
    if offset != 0 {
        let real_cred = unsafe {
            let task = bpf_get_current_task_btf() as *const u8;
            *(task.add(offset) as *const *const u8)
        };
        if real_cred != cred {
            flags |= CAP_FLAG_OTHER_CRED;
        }
    }
    record_cap_check(&ctx, cap, ret, flags);
    0
}

/// fexit `int cap_capable(const struct cred *cred, struct user_namespace *ns, int cap,
/// unsigned int opts)` (security/commoncap.c), for kernels without the tracepoint. Here the
/// opts are known, so CAP_OPT_NOAUDIT is exact.
#[fexit(function = "cap_capable")]
pub fn cap_capable_fexit(ctx: FExitContext) -> i32 {
    let cap: i32 = ctx.arg(2);
    let opts: u32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    let mut flags = CAP_FLAG_OPTS_KNOWN;
    if opts & CAP_OPT_NOAUDIT != 0 {
        flags |= CAP_FLAG_NOAUDIT;
    }
    record_cap_check(&ctx, cap, ret, flags);
    0
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
