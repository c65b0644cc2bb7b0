//! Capability checks, aggregated in the kernel by [`CapKey`].

/// The check was granted (`cap_capable` returned 0).
pub const CAP_FLAG_GRANTED: u32 = 1;
/// The check happened outside any syscall (`orig_ax` of the task's user frame was -1).
pub const CAP_FLAG_NO_SYSCALL: u32 = 2;
/// The fexit fallback saw `CAP_OPT_NOAUDIT` in the opts argument (include/linux/security.h).
pub const CAP_FLAG_NOAUDIT: u32 = 4;
/// The fexit fallback knows the audit flag exactly ([`CAP_FLAG_NOAUDIT`] is meaningful).
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
    /// The innermost frames (return addresses; the tracepoint machinery's come first), also the
    /// identity of the call path: checks with the same frames share one walk of the whole
    /// stack. When the stack map could not take the stack, these still show who asked.
    pub top_frames: [u64; CAP_TOP_FRAMES],
}

// SAFETY: plain-old-data, `#[repr(C)]`, no padding (the size is asserted next).
#[cfg(feature = "user")]
unsafe impl aya::Pod for CapKey {}
const _: () = assert!(core::mem::size_of::<CapKey>() == 32 + 8 * CAP_TOP_FRAMES);

/// Key of the capability checks known by their depth below `sys_enter` (`CAP_DEPTHS`): one
/// entry per (cgroup, capability, outcome, syscall, call-path depth).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CapDepthKey {
    pub cgroup_id: u64,
    pub cap: u32,
    /// As [`CapKey::flags`].
    pub flags: u32,
    pub syscall_nr: i64,
    pub arch: u32,
    /// Bytes between `sys_enter`'s context and the check's, on the same kernel stack.
    pub depth: u32,
}

/// What `CAP_DEPTHS` holds for one [`CapDepthKey`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CapDepthPath {
    /// [`CAP_DEPTH_NOT_ENOUGH`] once a check of this depth was not a direct unaudited one;
    /// else the first walk's stack.
    pub stack_id: i32,
    /// Checks of this depth seen (the walks' schedule).
    pub hits: u32,
    /// The stack the `counted` checks are charged to: the first walk's (every sample since
    /// showed, in its innermost frames, the same kind of caller, see
    /// `DIRECT_NOAUDIT_FUNCTIONS`).
    pub counted_stack_id: i32,
    pub _pad: u32,
    /// Checks counted here rather than in `CAP_CHECKS` (those not walked), all of them with
    /// the stack of [`CapDepthPath::counted_stack_id`].
    pub counted: u64,
}

/// [`CapDepthPath::stack_id`] of a depth whose checks are not all direct unaudited ones:
/// they are told apart by their innermost frames instead.
pub const CAP_DEPTH_NOT_ENOUGH: i32 = -2;

// SAFETY: plain-old-data, `#[repr(C)]`, no padding (the sizes are asserted next).
#[cfg(feature = "user")]
unsafe impl aya::Pod for CapDepthKey {}
#[cfg(feature = "user")]
unsafe impl aya::Pod for CapDepthPath {}
const _: () = assert!(core::mem::size_of::<CapDepthKey>() == 32);
const _: () = assert!(core::mem::size_of::<CapDepthPath>() == 24);

/// How many innermost frames [`CapKey::top_frames`] holds: the tracepoint machinery
/// (bpf_trace_run...; the probe's own call site is skipped), then cap_capable and its callers, deep enough to reach the function that
/// decides whether the check is audited (ns_capable_noaudit, security_vm_enough_memory_mm...).
pub const CAP_TOP_FRAMES: usize = 8;

/// Kernel functions whose text ranges userspace writes into the `DIRECT_NOAUDIT` map (entry
/// `i` for function `i`, `[start, end)` from /proc/kallsyms; zero until known). The first is
/// `cap_capable()` itself; the others call it directly, with CAP_OPT_NOAUDIT, and for nothing
/// else (security/commoncap.c `cap_vm_enough_memory()`, reached from security/security.c
/// `security_vm_enough_memory_mm()`, which is the frame the stacks on this project's kernels
/// show above cap_capable): the check every mmap, brk and exec makes, most of all checks a
/// workload causes. A check whose stack shows cap_capable called
/// from one of these is unaudited whatever else the stack holds, so the probe may count
/// further checks of the same call path without walking the stack again (see
/// `profiler-ebpf/src/capabilities.rs`).
pub const DIRECT_NOAUDIT_FUNCTIONS: [&str; 3] = [
    "cap_capable",
    "security_vm_enough_memory_mm",
    "cap_vm_enough_memory",
];
