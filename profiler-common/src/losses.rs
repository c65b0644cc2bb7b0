//! Indices of the per-CPU loss counters. Anything counted here means the trace is incomplete.

/// A syscall number outside [`SYSCALL_SLOTS`](crate::SYSCALL_SLOTS) (or negative).
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
