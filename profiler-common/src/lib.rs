//! Types shared by the eBPF programs (`profiler-ebpf`) and userspace (`profiler`).
//!
//! Every type here is `#[repr(C)]` with explicit fields and no implicit padding, so the kernel
//! side and userspace agree byte for byte and the verifier never sees uninitialised padding in
//! a map key. With the `user` feature they implement `aya::Pod` so userspace can read the maps.
#![no_std]

/// Syscall numbers are recorded in one byte per number. x86_64 tops out near 470, i386 near
/// 470 and x32's own range ends at 547 (arch/x86/entry/syscalls/syscall_64.tbl), so 1024 slots
/// leave room for a decade of new syscalls. A number outside the table is counted in
/// [`LOSS_SYSCALL_OUT_OF_RANGE`] rather than dropped silently.
pub const SYSCALL_SLOTS: usize = 1024;

/// Architecture slots of [`CgroupRecord::syscalls`].
pub const ARCH_X86_64: usize = 0;
/// 32-bit compat entry (int 0x80 / sysenter / syscall from a 32-bit code segment).
pub const ARCH_I386: usize = 1;
/// x32: 64-bit entry with `__X32_SYSCALL_BIT` set in the syscall number.
pub const ARCH_X32: usize = 2;
pub const ARCH_COUNT: usize = 3;

/// arch/x86/include/uapi/asm/unistd.h
pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;
/// arch/x86/include/asm/segment.h: `__USER32_CS` is GDT entry 4, RPL 3.
pub const USER32_CS: u64 = 0x23;
/// Byte offset of `cs` in x86_64 `struct pt_regs` (arch/x86/include/asm/ptrace.h; it is the
/// user-visible register frame layout, so it does not move between kernel versions).
pub const PT_REGS_CS_OFFSET: usize = 136;
/// Byte offset of `orig_ax` in x86_64 `struct pt_regs` (same header).
pub const PT_REGS_ORIG_AX_OFFSET: usize = 120;

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

/// personality(2) values with a slot of their own: PER_LINUX, PER_LINUX32, UNAME26,
/// PER_LINUX32|UNAME26 and the 0xffffffff query, the values Docker's default profile allows.
pub const PERSONALITY_VALUES: [u64; 5] = [0, 0x8, 0x20000, 0x20008, 0xffff_ffff];
/// Slot of [`ArgRecord::personality`] for any other value.
pub const PERSONALITY_OTHER: usize = 7;
pub const PRCTL_OTHER: usize = 127;

/// Per recorded cgroup: which syscall numbers ran, per phase and architecture.
///
/// One byte per number instead of one bit: the probe can then mark a number with a plain
/// store of 1, which is idempotent, so concurrent CPUs never lose each other's updates (a
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
    /// Number of seccomp filters loaded in this cgroup.
    pub seccomp_loads: u32,
    /// Syscalls whose number did not fit [`SYSCALL_SLOTS`] (or was negative).
    pub out_of_range: u64,
    /// Non-zero until the cgroup's first exec: profiler's own child runs in the cgroup from
    /// its creation (clone3 CLONE_INTO_CGROUP) and its few syscalls before exec are not the
    /// workload's. Only that execve is recorded meanwhile.
    pub awaiting_exec: u32,
    pub _reserved: u32,
    pub syscalls: [[[u8; SYSCALL_SLOTS]; ARCH_COUNT]; PHASE_COUNT],
    /// Argument values, per phase.
    pub args: [ArgRecord; PHASE_COUNT],
}

/// The record table: an array map of [`RECORD_SLOTS`] records, open addressing with linear
/// probing on the cgroup id. An array lookup is a few inlined instructions, a hash-map
/// lookup a call with jhash and a bucket walk: measured here, ~1 ns against ~28 ns, paid by
/// every syscall on the host while a recording runs.
pub const RECORD_SLOTS: u32 = 1024;
/// How many consecutive slots a cgroup may land in. cgroup2 ids are kernfs ids handed out
/// in sequence, so the ids of one recording's cgroups fill consecutive slots and probing is
/// rare; beyond this many a cgroup is refused and counted, never dropped silently.
pub const RECORD_PROBES: u32 = 16;
/// A slot that never held a record: all of it is zero. A lookup stops here.
pub const SLOT_FREE: u64 = 0;
/// A slot whose record was collected: a lookup goes on past it; only userspace reuses it.
pub const SLOT_DELETED: u64 = u64::MAX;

/// Slot of the `probe`-th try for `cgroup_id`.
#[inline(always)]
pub const fn record_slot(cgroup_id: u64, probe: u32) -> u32 {
    (cgroup_id as u32).wrapping_add(probe) & (RECORD_SLOTS - 1)
}

// Userspace maps the table and indexes it by `size_of::<CgroupRecord>()`; the kernel's
// array element size is the value size rounded up to 8 (kernel/bpf/arraymap.c).
const _: () = assert!(core::mem::size_of::<CgroupRecord>().is_multiple_of(8));
const _: () = assert!(RECORD_SLOTS.is_power_of_two());

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

/// Syscall numbers whose arguments are recorded, x86_64 (also x32's common numbers) and
/// i386 (arch/x86/entry/syscalls/syscall_{64,32}.tbl).
pub mod nr {
    pub const X86_64_SOCKET: i64 = 41;
    pub const X86_64_SOCKETPAIR: i64 = 53;
    pub const X86_64_CLONE: i64 = 56;
    /// clone3: 435 in both tables (syscalls added after 4.20 share numbers across arches).
    pub const CLONE3: i64 = 435;
    pub const X86_64_PERSONALITY: i64 = 135;
    pub const X86_64_UNSHARE: i64 = 272;
    pub const I386_SOCKETCALL: i64 = 102;
    pub const I386_IPC: i64 = 117;
    pub const I386_CLONE: i64 = 120;
    pub const I386_PERSONALITY: i64 = 136;
    pub const I386_PRCTL: i64 = 172;
    pub const I386_UNSHARE: i64 = 310;
    pub const I386_SOCKET: i64 = 359;
    pub const I386_SOCKETPAIR: i64 = 360;

    // x86_64 syscalls that produce events.
    pub const X86_64_OPEN: i64 = 2;
    pub const X86_64_CONNECT: i64 = 42;
    pub const X86_64_BIND: i64 = 49;
    pub const X86_64_LISTEN: i64 = 50;
    pub const X86_64_EXECVE: i64 = 59;
    pub const X86_64_TRUNCATE: i64 = 76;
    pub const X86_64_CHDIR: i64 = 80;
    pub const X86_64_FCHDIR: i64 = 81;
    pub const X86_64_RENAME: i64 = 82;
    pub const X86_64_MKDIR: i64 = 83;
    pub const X86_64_RMDIR: i64 = 84;
    pub const X86_64_CREAT: i64 = 85;
    pub const X86_64_LINK: i64 = 86;
    pub const X86_64_UNLINK: i64 = 87;
    pub const X86_64_SYMLINK: i64 = 88;
    pub const X86_64_SETUID: i64 = 105;
    pub const X86_64_SETGID: i64 = 106;
    pub const X86_64_SETREUID: i64 = 113;
    pub const X86_64_SETREGID: i64 = 114;
    pub const X86_64_SETRESUID: i64 = 117;
    pub const X86_64_SETRESGID: i64 = 119;
    pub const X86_64_MKNOD: i64 = 133;
    pub const X86_64_OPENAT: i64 = 257;
    pub const X86_64_MKDIRAT: i64 = 258;
    pub const X86_64_MKNODAT: i64 = 259;
    pub const X86_64_UNLINKAT: i64 = 263;
    pub const X86_64_RENAMEAT: i64 = 264;
    pub const X86_64_LINKAT: i64 = 265;
    pub const X86_64_SYMLINKAT: i64 = 266;
    pub const X86_64_RENAMEAT2: i64 = 316;
    pub const X86_64_EXECVEAT: i64 = 322;
    pub const X86_64_OPENAT2: i64 = 437;

    // i386 syscalls that produce events (arch/x86/entry/syscalls/syscall_32.tbl), each
    // reported as the x86_64 syscall with the same arguments.
    pub const I386_LINK: i64 = 9;
    pub const I386_UNLINK: i64 = 10;
    pub const I386_EXECVE: i64 = 11;
    pub const I386_CHDIR: i64 = 12;
    pub const I386_MKNOD: i64 = 14;
    pub const I386_OPEN: i64 = 5;
    pub const I386_CREAT: i64 = 8;
    pub const I386_SETUID16: i64 = 23;
    pub const I386_RENAME: i64 = 38;
    pub const I386_MKDIR: i64 = 39;
    pub const I386_RMDIR: i64 = 40;
    pub const I386_SETGID16: i64 = 46;
    pub const I386_SETREUID16: i64 = 70;
    pub const I386_SETREGID16: i64 = 71;
    pub const I386_SYMLINK: i64 = 83;
    pub const I386_TRUNCATE: i64 = 92;
    pub const I386_FCHDIR: i64 = 133;
    pub const I386_SETRESUID16: i64 = 164;
    pub const I386_SETRESGID16: i64 = 170;
    pub const I386_TRUNCATE64: i64 = 193;
    pub const I386_SETREUID32: i64 = 203;
    pub const I386_SETREGID32: i64 = 204;
    pub const I386_SETRESUID32: i64 = 208;
    pub const I386_SETRESGID32: i64 = 210;
    pub const I386_SETUID32: i64 = 213;
    pub const I386_SETGID32: i64 = 214;
    pub const I386_OPENAT: i64 = 295;
    pub const I386_MKDIRAT: i64 = 296;
    pub const I386_MKNODAT: i64 = 297;
    pub const I386_UNLINKAT: i64 = 301;
    pub const I386_RENAMEAT: i64 = 302;
    pub const I386_LINKAT: i64 = 303;
    pub const I386_SYMLINKAT: i64 = 304;
    pub const I386_RENAMEAT2: i64 = 353;
    pub const I386_EXECVEAT: i64 = 358;
    pub const I386_BIND: i64 = 361;
    pub const I386_CONNECT: i64 = 362;
    pub const I386_LISTEN: i64 = 363;
    pub const I386_OPENAT2: i64 = 437;
    /// socketcall(2) call numbers (include/uapi/linux/net.h).
    pub const SYS_SOCKET: u64 = 1;
    pub const SYS_BIND: u64 = 2;
    pub const SYS_CONNECT: u64 = 3;
    pub const SYS_LISTEN: u64 = 4;
}

/// Byte offset of `cx` in x86_64 `struct pt_regs`: the second argument of an i386 syscall.
pub const PT_REGS_CX_OFFSET: usize = 88;

/// Byte offset of `bx` in x86_64 `struct pt_regs`: the first argument of an i386 syscall.
pub const PT_REGS_BX_OFFSET: usize = 40;
/// Byte offset of `r10` (the fourth argument of an x86_64 syscall).
pub const PT_REGS_R10_OFFSET: usize = 56;

/// Byte offsets of the first two syscall arguments (`di`, `si`) in x86_64 `struct pt_regs`.
pub const PT_REGS_DI_OFFSET: usize = 112;
pub const PT_REGS_SI_OFFSET: usize = 104;
/// ... and of the third (`dx`).
pub const PT_REGS_DX_OFFSET: usize = 96;
/// x86_64 syscall numbers the probe watches to find the seccomp filter load
/// (arch/x86/entry/syscalls/syscall_64.tbl) and their arguments (include/uapi/linux/).
pub const NR_X86_64_PRCTL: i64 = 157;
pub const NR_X86_64_SECCOMP: i64 = 317;
pub const PR_SET_SECCOMP: u64 = 22;
pub const SECCOMP_MODE_FILTER: u64 = 2;
pub const SECCOMP_SET_MODE_FILTER: u64 = 1;

/// The check was granted (`cap_capable` returned 0).
pub const CAP_FLAG_GRANTED: u32 = 1;
/// The check happened outside any syscall (`orig_ax` of the task's user frame was -1).
pub const CAP_FLAG_NO_SYSCALL: u32 = 2;
/// The kprobe fallback saw `CAP_OPT_NOAUDIT` in the opts argument (include/linux/security.h).
pub const CAP_FLAG_NOAUDIT: u32 = 4;
/// The kprobe fallback knows the audit flag exactly ([`CAP_FLAG_NOAUDIT`] is meaningful).
pub const CAP_FLAG_OPTS_KNOWN: u32 = 8;
/// The check was made with credentials other than the task's own (`cred` argument !=
/// `current->real_cred`): under `override_creds()` (overlayfs acting with its mounter's
/// credentials, nfsd, access()'s real-uid copy...) or on behalf of another task.
pub const CAP_FLAG_OTHER_CRED: u32 = 16;
/// Bits 8..16 of the flags hold the cgroup's phase (`PHASE_*`) at the time of the check.
pub const CAP_FLAG_PHASE_SHIFT: u32 = 8;

/// Key of the capability-check aggregation map: one entry per distinct
/// (cgroup, capability, outcome, syscall, kernel stack).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapKey {
    pub cgroup_id: u64,
    pub cap: u32,
    pub flags: u32,
    /// Syscall number during which the check happened, as seen in the task's `orig_ax`.
    pub syscall_nr: i64,
    /// One of the `ARCH_*` slots.
    pub arch: u32,
    /// Id in the kernel stack-trace map, or negative when the stack could not be taken.
    pub stack_id: i32,
    /// The innermost frames (return addresses; the probe's own two come first), also the
    /// identity of the call path: checks with the same frames share one walk of the whole
    /// stack. When the stack map could not take the stack, these still show who asked.
    pub top_frames: [u64; CAP_TOP_FRAMES],
}

/// How many innermost frames [`CapKey::top_frames`] holds: the probe's program and
/// bpf_trace_run, then cap_capable and five callers, deep enough to reach the function that
/// decides whether the check is audited (ns_capable_noaudit, security_vm_enough_memory_mm...).
pub const CAP_TOP_FRAMES: usize = 8;

/// Rare events, streamed through a ring buffer (execs, file writes, network endpoints, user
/// switches). Never the syscall record itself: a flood of events can only lose events, which
/// are counted, never a syscall.
pub const EVENT_PATH_LEN: usize = 256;
/// How often userspace drains the event ring buffer without being woken: the programs wake
/// it only when the buffer fills up (a wake-up per event costs more than the event).
pub const EVENT_DRAIN_INTERVAL_MS: u64 = 50;
pub const EVENT_AUX_LEN: usize = 64;

/// execve/execveat entered: `data` = filename as passed, `aux` = argv[0], args[0] = dirfd.
pub const EVENT_EXEC_ATTEMPT: u32 = 1;
/// An exec succeeded (sched_process_exec): args[0] = uid, args[1] = gid.
pub const EVENT_EXEC_OK: u32 = 2;
/// A path was opened for writing, created, removed or renamed: args[0] = syscall number,
/// args[1] = dirfd, args[2] = open flags; `data` = path as passed.
pub const EVENT_WRITE: u32 = 3;
/// chdir: `data` = path.
pub const EVENT_CHDIR: u32 = 4;
/// fchdir: args[0] = fd.
pub const EVENT_FCHDIR: u32 = 5;
/// A new process: args[0] = parent tgid, args[1] = child tgid.
pub const EVENT_FORK: u32 = 6;
/// bind/connect: args[0] = fd, args[1] = address length; `data` = the sockaddr bytes.
pub const EVENT_BIND: u32 = 7;
pub const EVENT_CONNECT: u32 = 8;
/// listen: args[0] = fd, args[1] = backlog.
pub const EVENT_LISTEN: u32 = 9;
/// setuid family: args[0] = syscall number, args[1..4] = the ids.
pub const EVENT_SETID: u32 = 10;
/// socket: args[0..3] = family, type, protocol.
pub const EVENT_SOCKET: u32 = 11;
/// `profiler enforce` killed a program that an exec started and the profile does not list
/// (the path is in this thread's preceding EVENT_EXEC_ATTEMPT).
pub const EVENT_EXEC_KILLED: u32 = 12;
/// A task was moved into a cgroup that is not recorded (any on the host): args[0] = the
/// destination cgroup id, args[1] = the task's tgid. Userspace decides whether the task was
/// the workload's (then the recording lost it).
pub const EVENT_CGROUP_ATTACH: u32 = 13;

/// Key of the allowed-executables map of `profiler enforce`: the path as passed to execve,
/// NUL-padded.
pub type ExecPath = [u8; EVENT_PATH_LEN];

/// `ENFORCE` global: 0 off, 1 every recorded cgroup, 2 only the containers found below the
/// recording cgroup (not the engine's CLI that started them).
pub const ENFORCE_ALL: u32 = 1;
pub const ENFORCE_CONTAINERS: u32 = 2;

#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub cgroup_id: u64,
    pub kind: u32,
    /// Process (tgid) and thread id.
    pub pid: u32,
    pub tid: u32,
    pub phase: u32,
    pub args: [u64; 4],
    pub data: [u8; EVENT_PATH_LEN],
    pub aux: [u8; EVENT_AUX_LEN],
}

/// Indices of the per-CPU loss counters. Anything counted here means the trace is incomplete.
pub const LOSS_SYSCALL_OUT_OF_RANGE: u32 = 0;
/// The capability aggregation map was full.
pub const LOSS_CAP_MAP_FULL: u32 = 1;
/// `bpf_get_stackid` failed (stack map full or collision); the check is kept without a stack.
pub const LOSS_CAP_STACK: u32 = 2;
/// The map of recorded cgroups was full when a new container cgroup appeared.
pub const LOSS_CGROUP_MAP_FULL: u32 = 3;
/// The event ring buffer was full.
pub const LOSS_EVENTS: u32 = 4;
pub const LOSS_COUNTERS: u32 = 5;

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain-old-data, `#[repr(C)]`, no padding (sizes are asserted below).
    unsafe impl aya::Pod for super::CgroupRecord {}
    unsafe impl aya::Pod for super::ArgRecord {}
    unsafe impl aya::Pod for super::Event {}
    unsafe impl aya::Pod for super::CapKey {}
}

const _: () = assert!(core::mem::size_of::<ArgRecord>() == 392);
const _: () = assert!(core::mem::size_of::<Event>() == 56 + EVENT_PATH_LEN + EVENT_AUX_LEN);
const _: () = assert!(
    core::mem::size_of::<CgroupRecord>()
        == SYSCALL_SLOTS * ARCH_COUNT * PHASE_COUNT + 40 + 392 * PHASE_COUNT
);
const _: () = assert!(core::mem::size_of::<CapKey>() == 32 + 8 * CAP_TOP_FRAMES);
