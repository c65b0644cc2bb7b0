//! The record of one cgroup (which syscalls ran, per phase and architecture, and the
//! deciding arguments of a few) and the table of records the kernel side and userspace share.
use crate::ARCH_COUNT;

/// Syscall numbers are recorded in one byte per number. x86_64 tops out near 470, i386 near
/// 470 and x32's own range ends at 547 (arch/x86/entry/syscalls/syscall_64.tbl), so 1024 slots
/// leave room for a decade of new syscalls. A number outside the table is counted in
/// [`LOSS_SYSCALL_OUT_OF_RANGE`](crate::LOSS_SYSCALL_OUT_OF_RANGE) rather than dropped silently.
pub const SYSCALL_SLOTS: usize = 1024;

/// Phases of a cgroup's life, so a container runtime's own set-up can be told apart from the
/// workload without knowing the runtime's name.
///
/// Before the runtime loads the container's seccomp filter ...
pub const PHASE_SETUP: usize = 0;
/// ... after a seccomp filter was loaded (seccomp(SECCOMP_SET_MODE_FILTER) or
/// prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER)) and before the first exec: these are the
/// runtime's syscalls that the profile must still allow ...
pub const PHASE_RUNTIME: usize = 1;
/// ... and from the first successful exec after that load on: the workload. A cgroup where
/// no filter is loaded (a command profiler started itself) stays in [`PHASE_SETUP`].
pub const PHASE_WORKLOAD: usize = 2;
pub const PHASE_COUNT: usize = 3;

/// A syscall's byte in [`CgroupRecord::syscalls`]: 0 until it is first made, then
/// [`MARK_SEEN`] or, for the few syscalls whose arguments or events are recorded too,
/// [`MARK_SEEN_SPECIAL`]. Userspace reads any non-zero byte as made. The byte says which of
/// the two it is so that, after a syscall's first call, the syscall hook decides with the one
/// load and compare it makes anyway instead of a second table's bit test (BENCHMARKS.md, M22).
pub const MARK_SEEN: u8 = 1;
/// See [`MARK_SEEN`].
pub const MARK_SEEN_SPECIAL: u8 = 3;

/// Argument values of the syscalls whose power depends on an argument, the ones Docker's
/// default profile filters by argument. One byte per value (same reasoning as the syscall
/// bytes: idempotent plain stores).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ArgRecord {
    /// socket(2): address family (arg 0), values 0..63.
    pub socket_families: [u8; 64],
    /// socketpair(2): address family.
    pub socketpair_families: [u8; 64],
    /// clone(2): flag bits (arg 0) that were set, bit i at index i.
    pub clone_flag_bits: [u8; 32],
    /// unshare(2): flag bits that were set.
    pub unshare_flag_bits: [u8; 32],
    /// personality(2): [`PERSONALITY_VALUES`] slots, the last one for any other value.
    pub personality: [u8; 8],
    /// prctl(2): option (arg 0) 0..126; index 127 for any larger option.
    pub prctl_options: [u8; 128],
    /// i386 socketcall(2): call number (arg 0, include/uapi/linux/net.h SYS_*).
    pub socketcall_calls: [u8; 32],
    /// i386 ipc(2): call number (include/uapi/linux/ipc.h SEMOP...).
    pub ipc_calls: [u8; 32],
}

// SAFETY: plain-old-data, `#[repr(C)]`, no padding (the size is asserted next).
#[cfg(feature = "user")]
unsafe impl aya::Pod for ArgRecord {}
const _: () = assert!(core::mem::size_of::<ArgRecord>() == 392);

/// personality(2) values with a slot of their own: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26 and the 0xffffffff query, the values Docker's default profile allows.
pub const PERSONALITY_VALUES: [u64; 5] = [0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// Slot of [`ArgRecord::personality`] for any other value.
pub const PERSONALITY_OTHER: usize = 7;
pub const PRCTL_OTHER: usize = 127;

/// Per recorded cgroup: which syscall numbers ran, per phase and architecture.
///
/// One byte per number instead of one bit: the probe can then mark a number with a plain
/// store ([`MARK_SEEN`], or [`MARK_SEEN_SPECIAL`]: always the same one for a number), which
/// is idempotent, so concurrent CPUs never lose each other's updates (a
/// bit-or would need an atomic read-modify-write), and it first reads the byte so a syscall
/// already seen never dirties the cache line again.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CgroupRecord {
    /// The cgroup2 id this slot of the record table holds, or [`SLOT_FREE`] /
    /// [`SLOT_DELETED`]. Written with compare-and-swap by whoever claims the slot (userspace
    /// for a recording cgroup, the kernel for a cgroup it discovers below one).
    pub cgroup_id: u64,
    /// The recording this cgroup belongs to: its own id for a cgroup profiler created, the
    /// recording cgroup's id for a descendant (a container) the kernel side discovered.
    pub recording_id: u64,
    /// One of the `PHASE_*` values.
    pub phase: u32,
    /// Non-zero until the cgroup's first exec: profiler's own child runs in the cgroup from
    /// its creation (clone3 CLONE_INTO_CGROUP) and its few syscalls before exec are not the
    /// workload's. Only that execve is recorded meanwhile. Right after `phase`, in the same
    /// 8 bytes: the syscall hook reads both with one load and one compare
    /// ([`CgroupRecord::state_offset`]).
    pub awaiting_exec: u32,
    /// Syscalls whose number did not fit [`SYSCALL_SLOTS`] (or was negative).
    pub out_of_range: u64,
    /// Number of seccomp filters loaded in this cgroup.
    pub seccomp_loads: u32,
    pub _reserved: u32,
    pub syscalls: [[[u8; SYSCALL_SLOTS]; ARCH_COUNT]; PHASE_COUNT],
    /// Argument values, per phase.
    pub args: [ArgRecord; PHASE_COUNT],
}

impl CgroupRecord {
    /// Where `phase` and `awaiting_exec` sit together, as one little-endian u64: below
    /// [`PHASE_COUNT`] exactly when the cgroup is past its first exec and its phase is valid.
    pub const fn state_offset() -> usize {
        core::mem::offset_of!(CgroupRecord, phase)
    }
}
const _: () = assert!(
    CgroupRecord::state_offset().is_multiple_of(8)
        && core::mem::offset_of!(CgroupRecord, awaiting_exec) == CgroupRecord::state_offset() + 4
);

// SAFETY: plain-old-data, `#[repr(C)]`, no padding (the size is asserted next).
#[cfg(feature = "user")]
unsafe impl aya::Pod for CgroupRecord {}
const _: () = assert!(
    core::mem::size_of::<CgroupRecord>()
        == SYSCALL_SLOTS * ARCH_COUNT * PHASE_COUNT + 40 + 392 * PHASE_COUNT
);

/// The record table: an array map of [`RECORD_SLOTS`] records, open addressing with linear
/// probing on the cgroup id. An array lookup is a few inlined instructions, a hash-map
/// lookup a call with jhash and a bucket walk, paid by every syscall on the host while a
/// recording runs (BENCHMARKS.md, M1).
pub const RECORD_SLOTS: u32 = 1024;
/// How many consecutive slots a cgroup may land in. cgroup2 ids are kernfs ids handed out
/// in sequence, so the ids of one recording's cgroups fill consecutive slots and probing is
/// rare; beyond this many a cgroup is refused and counted, never dropped silently.
pub const RECORD_PROBES: u32 = 16;
/// A slot that never held a record: all of it is zero. A lookup stops here.
pub const SLOT_FREE: u64 = 0;
/// A slot whose record was collected: a lookup goes on past it; only userspace reuses it.
pub const SLOT_DELETED: u64 = u64::MAX;

/// The table's size when one cgroup alone is recorded (a command without `--containers`,
/// one running workload attached to): its id's whole probe sequence. The full table is
/// 10.7 MB that the kernel zeroes and profiler maps at every start (some 3 ms of start-up,
/// Intel Xeon, BENCHMARKS.md M26).
pub const RECORD_SLOTS_ONE_CGROUP: u32 = RECORD_PROBES;

/// Slot of the `probe`-th try for `cgroup_id` in a table of `slots` (a power of two, at
/// most [`RECORD_SLOTS`]).
#[inline(always)]
pub const fn record_slot(cgroup_id: u64, probe: u32, slots: u32) -> u32 {
    (cgroup_id as u32).wrapping_add(probe) & (slots - 1)
}

// Userspace maps the table and indexes it by `size_of::<CgroupRecord>()`; the kernel's
// array element size is the value size rounded up to 8 (kernel/bpf/arraymap.c).
const _: () = assert!(core::mem::size_of::<CgroupRecord>().is_multiple_of(8));
const _: () = assert!(RECORD_SLOTS.is_power_of_two());
const _: () = assert!(RECORD_SLOTS_ONE_CGROUP.is_power_of_two());

impl CgroupRecord {
    pub const fn zeroed() -> Self {
        Self {
            cgroup_id: SLOT_FREE,
            recording_id: 0,
            phase: PHASE_SETUP as u32,
            seccomp_loads: 0,
            out_of_range: 0,
            awaiting_exec: 0,
            _reserved: 0,
            syscalls: [[[0; SYSCALL_SLOTS]; ARCH_COUNT]; PHASE_COUNT],
            args: [ArgRecord::zeroed(); PHASE_COUNT],
        }
    }
}

impl ArgRecord {
    pub const fn zeroed() -> Self {
        Self {
            socket_families: [0; 64],
            socketpair_families: [0; 64],
            clone_flag_bits: [0; 32],
            unshare_flag_bits: [0; 32],
            personality: [0; 8],
            prctl_options: [0; 128],
            socketcall_calls: [0; 32],
            ipc_calls: [0; 32],
        }
    }
}

/// The record table's epoch (`EPOCH`, a u64 in the programs' `.bss`): every change that can
/// make a task's cached slot wrong (a slot claimed or released, a task moved between cgroups,
/// a new task that may reuse a dead one's kernel stack) adds [`EPOCH_STEP`], and the
/// per-CPU cache of the syscall hook (`TASK_CACHES`) only trusts entries of the current
/// epoch. Bit 0 is [`EPOCH_CACHE_ON`]: userspace sets it once every hook that bumps the
/// epoch is attached; until then (or when one could not be attached) the cache is not used.
/// Userspace changes it through the `profiler_epoch` program ([`EPOCH_OP_ADD`]...).
pub const EPOCH_CACHE_ON: u64 = 1;
/// Bit 1: the cache's [`TaskCacheEntry::enter_depth`] can be trusted, because the hook that
/// forgets it when a task moves to another CPU (`sched_migrate_task`) is attached too.
pub const EPOCH_DEPTHS_ON: u64 = 2;
/// What every change adds to the epoch (bits 0 and 1 are [`EPOCH_CACHE_ON`] and
/// [`EPOCH_DEPTHS_ON`]).
pub const EPOCH_STEP: u64 = 4;

/// What the `profiler_epoch` program does to the epoch with its second argument, told by
/// its first: add, or, and, or nothing (read); it returns the epoch's low 32 bits before.
pub const EPOCH_OP_ADD: u64 = 0;
/// See [`EPOCH_OP_ADD`].
pub const EPOCH_OP_OR: u64 = 1;
/// See [`EPOCH_OP_ADD`].
pub const EPOCH_OP_AND: u64 = 2;
/// See [`EPOCH_OP_ADD`]: a plain read, no write to the line every CPU reads.
pub const EPOCH_OP_READ: u64 = 3;

/// Entries of the per-CPU cache, tried in turn: a CPU that alternates between a few
/// syscall-heavy tasks (a pipe's two ends) keeps all of them.
pub const TASK_CACHE_WAYS: usize = 4;
/// A cached slot meaning "not recorded".
pub const NOT_RECORDED: u32 = u32::MAX;

/// One task's cached record slot. `task` is the address of the task's syscall register
/// frame (`task_pt_regs()`, at the top of its own kernel stack): the one per-task value the
/// `sys_enter` tracepoint hands over without a helper call, unique among live tasks.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct TaskCacheEntry {
    pub task: u64,
    pub epoch: u64,
    pub slot: u32,
    /// For a recorded task: how deep in its kernel stack `sys_enter` ran at its last syscall
    /// on this CPU (bytes from the register frame down to the program's context), 0 when
    /// unknown. Each syscall starts its kernel stack at a random offset
    /// (`CONFIG_RANDOMIZE_KSTACK_OFFSET`, include/linux/randomize_kstack.h, up to 1023 bytes),
    /// the same for everything in that syscall: a capability check's depth less this one is
    /// the depth of its own call path, whatever the offset was. Both ends are on the task's
    /// kernel stack (16 KiB, 32 KiB with KASAN: arch/x86/include/asm/page_64_types.h), so
    /// the difference fits 16 bits.
    pub enter_depth: u16,
    /// The low 16 bits of that syscall's number: it tells a later syscall that never reached
    /// `sys_enter` (seccomp or ptrace stopped it first, kernel/entry/syscall-common.c
    /// `syscall_trace_enter`) from the one the depth was taken in, in most cases.
    pub enter_nr: u16,
}

/// A CPU's cache: [`TASK_CACHE_WAYS`] entries, replaced in turn.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TaskCache {
    pub entries: [TaskCacheEntry; TASK_CACHE_WAYS],
    pub next: u32,
    pub _pad: u32,
}

/// CPUs with a [`TaskCache`] (ids below this): 128 KiB in all, with the padding that keeps
/// each on lines of its own. A CPU with a higher id takes the uncached path, slower and as
/// right.
pub const TASK_CACHE_CPUS: usize = 512;
