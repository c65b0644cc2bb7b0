//! Every map of the object. Userspace finds them by name (`RECORDS`, `CAP_CHECKS`...), so the
//! names are part of the interface; the load-time globals are in [`crate::globals`].
use aya_ebpf::{
    bindings::{BPF_F_MMAPABLE, BPF_F_NO_PREALLOC},
    btf_maps::StackTrace,
    macros::{btf_map, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray, RingBuf},
};
use profiler_common::{
    CapDepthKey, CapDepthPath, CapKey, CgroupRecord, DIRECT_NOAUDIT_FUNCTIONS, ExecPath,
    LOSS_COUNTERS, RECORD_SLOTS, TASK_CACHE_CPUS, TaskCache,
};

use crate::capabilities::CapPath;

/// The io_uring operations each recorded cgroup submitted: bit `op` of the value is
/// `IORING_OP_<op>` (include/uapi/linux/io_uring.h; fewer than 64 exist). Keyed by cgroup id.
#[map]
pub(crate) static IO_URING_OPS: HashMap<u64, u64> = HashMap::with_max_entries(1024, 0);

/// The recorded cgroups, an open-addressed table (see `profiler_common::RECORD_SLOTS`).
/// Mappable so userspace can claim and release slots with compare-and-swap on the same
/// memory the programs use.
#[map]
pub(crate) static RECORDS: Array<CgroupRecord> =
    Array::with_max_entries(RECORD_SLOTS, BPF_F_MMAPABLE);

/// The record table's epoch (see `profiler_common::EPOCH_STEP`). A global in `.bss`, not a
/// map of its own: the syscall hook reads it with one load from an address the verifier
/// fills in (`BPF_PSEUDO_MAP_VALUE`) instead of an inlined map lookup, a dozen instructions
/// on every syscall of the host (BENCHMARKS.md, M22). aya creates `.bss` without
/// `BPF_F_MMAPABLE` and a map update would not be atomic with the kernel's own bumps, so
/// userspace changes it through the `profiler_epoch` program. A line of its own: every CPU
/// reads it at every syscall, and the caches below are written as often.
pub(crate) static mut EPOCH: EpochLine = EpochLine {
    _before: [0; 64],
    value: 0,
    _after: [0; 56],
};

/// 64 bytes on either side keep any neighbour off the epoch's cache line, whatever the
/// alignment: a `.bss` value starts where the kernel's `struct bpf_array` puts its values
/// (kernel/bpf/arraymap.c; 312 bytes into it here), not on a line of its own, so alignment
/// within `.bss` would not be alignment in memory.
#[repr(C)]
pub(crate) struct EpochLine {
    _before: [u8; 64],
    pub(crate) value: u64,
    _after: [u8; 56],
}

/// Per CPU, by its id, the record slots of the tasks that last made syscalls there (see
/// `crate::record::cached_record`). A global array rather than a per-CPU map for the same
/// reason as [`EPOCH`]: the CPU's id is an inlined per-CPU load (kernel/bpf/verifier.c
/// inlines `bpf_get_smp_processor_id` on x86-64), an array index is a shift, where a
/// per-CPU array lookup is again a dozen instructions.
pub(crate) static mut TASK_CACHES: [CpuTaskCache; TASK_CACHE_CPUS] = unsafe { core::mem::zeroed() };

/// One CPU's [`TaskCache`], 64 bytes clear of its neighbours' (see [`EpochLine`]): each CPU
/// writes its own at every recorded syscall, and a line shared with another CPU's would
/// move between them. 256 bytes in all: the index is a shift, not a multiply.
#[repr(C)]
pub(crate) struct CpuTaskCache {
    _before: [u8; 64],
    pub(crate) cache: TaskCache,
    _after: [u8; 256 - 64 - size_of::<TaskCache>()],
}
const _: () = assert!(size_of::<CpuTaskCache>() == 256 && size_of::<TaskCache>() <= 128);

// The capability maps are not preallocated: a run fills a few hundred entries of 16384,
// and preallocating them took 1 ms of start-up each (strace -T of BPF_MAP_CREATE, AMD
// EPYC); an insert takes its element from the kernel's BPF allocator instead
// (kernel/bpf/hashtab.c, `alloc_htab_elem`, bpf_mem_alloc), and inserts are rare.
#[map]
pub(crate) static CAP_CHECKS: HashMap<CapKey, u64> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Whole kernel stacks of capability checks, innermost [`CAP_STACK_DEPTH`] frames. The
/// kernel preallocates every element (kernel/bpf/stackmap.c, `prealloc_elems_and_freelist`):
/// at the default 127 frames 8 MB zeroed at each start-up (~2.5 ms, perf, AMD EPYC). The
/// deepest check stacks seen are some 20 frames; the function that makes a check unaudited
/// is always among the innermost.
#[btf_map]
pub(crate) static CAP_STACKS: StackTrace<8192, 0, CAP_STACK_DEPTH> = StackTrace::new();

/// Frames [`CAP_STACKS`] keeps per stack.
const CAP_STACK_DEPTH: usize = 48;

/// Capability checks by call path, to walk and store each path's whole stack once instead of
/// per check (a full `bpf_get_stackid` costs about twice the top frames, BENCHMARKS.md M5;
/// a process checks CAP_SYS_ADMIN on nearly every mmap). Checks share a path when their
/// innermost frames are equal; the stored stack is then one of the paths that begin so, and every
/// `CAP_REWALK_EVERY`th check walks again (`crate::capabilities`).
#[map]
pub(crate) static CAP_PATHS: HashMap<CapKey, CapPath> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Capability checks known by their depth below `sys_enter`, counted here without a walk
/// once the depth's first walk showed an unaudited direct caller (`crate::capabilities`).
#[map]
pub(crate) static CAP_DEPTHS: HashMap<CapDepthKey, CapDepthPath> =
    HashMap::with_max_entries(16384, BPF_F_NO_PREALLOC);

/// Kernel text ranges `[start, end)` of `profiler_common::DIRECT_NOAUDIT_FUNCTIONS`, entry
/// `i` for function `i`; userspace writes them once it has read /proc/kallsyms (all zero
/// until then: every check walks its stack).
#[map]
pub(crate) static DIRECT_NOAUDIT: Array<[u64; 2]> =
    Array::with_max_entries(DIRECT_NOAUDIT_FUNCTIONS.len() as u32, 0);

#[map]
static LOSSES: PerCpuArray<u64> = PerCpuArray::with_max_entries(LOSS_COUNTERS, 0);

/// Rare events (execs, writes, endpoints, user switches) for the image profile; drained by
/// userspace while the workload runs. Losses are counted in LOSS_EVENTS.
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);
const EVENTS_BYTES: u32 = 1 << 20;
/// Fill level from which each event wakes the reader up.
pub(crate) const EVENTS_WAKEUP_BYTES: u64 = EVENTS_BYTES as u64 / 4;

/// Executables the profile allows (paths as the workload passes them to execve).
#[map]
pub(crate) static ALLOWED_EXECS: HashMap<ExecPath, u8> = HashMap::with_max_entries(4096, 0);

/// Files the profile allows to be executed, by identity: `[s_dev, i_ino]` (the kernel's
/// device encoding) for a file on this machine, or `[CONTENT_KEY | i_size, i_mtime_sec]` for
/// a file of a container image, whose device and inode depend on how the engine stores the
/// image (a new overlay device with every container; a copied root for a plain bundle),
/// while size and mtime come with the image.
#[map]
pub(crate) static ALLOWED_INODES: HashMap<[u64; 2], u8> = HashMap::with_max_entries(4096, 0);

/// Per thread: whether its last exec attempt was of a program the profile does not allow.
#[map]
pub(crate) static EXEC_VERDICT: LruHashMap<u32, u8> = LruHashMap::with_max_entries(16384, 0);

/// A zeroed path buffer per CPU (a map key must be fully initialised).
#[map]
pub(crate) static PATH_SCRATCH: PerCpuArray<ExecPath> = PerCpuArray::with_max_entries(1, 0);

#[inline(always)]
pub(crate) fn count_loss(index: u32) {
    if let Some(counter) = LOSSES.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, so a plain increment is exact.
        unsafe { *counter += 1 };
    }
}
