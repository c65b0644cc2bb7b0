//! The load-time globals: `.rodata` that userspace sets with `override_global` before loading
//! (`profiler/src/kernel/mod.rs`), by these names. .rodata is frozen at load, so the verifier
//! sees each value as a constant and drops the branches it rules out. Read them with
//! `core::ptr::read_volatile`, or the compiler folds in the zero they are declared with.

/// Level in the cgroup2 hierarchy of the recording cgroups (`<root>/profiler/rec-*`), set by
/// userspace at load time. 0 disables discovery of descendant cgroups.
#[unsafe(no_mangle)]
pub(crate) static RECORDING_LEVEL: i32 = 0;

/// The record table's size, as userspace made the `RECORDS` map
/// (`profiler_common::RECORD_SLOTS` or `RECORD_SLOTS_ONE_CGROUP`): the slots a cgroup id's
/// probe sequence wraps in.
#[unsafe(no_mangle)]
pub(crate) static RECORD_TABLE_SLOTS: u32 = profiler_common::RECORD_SLOTS;

/// Byte offset of `real_cred` in `struct task_struct`, read by userspace from the kernel's BTF
/// at load time (aya has no CO-RE for Rust programs). 0: unknown, the comparison is skipped.
/// .rodata is frozen at load, so the verifier sees a constant offset into a BTF object.
#[unsafe(no_mangle)]
pub(crate) static TASK_REAL_CRED_OFFSET: u32 = 0;

/// Byte offsets to read the current task's cgroup2 id without a helper call:
/// `task_struct.cgroups` -> `css_set.dfl_cgrp` -> `cgroup.kn` -> `kernfs_node.id`, the path
/// `bpf_get_current_cgroup_id()` takes (kernel/bpf/helpers.c, `cgroup_id(task_dfl_cgroup())`).
/// Read from the kernel's BTF at load time; all 0 (unknown): use the helper.
#[unsafe(no_mangle)]
pub(crate) static CGROUP_ID_PATH: [u32; 4] = [0; 4];

/// Byte offset of `cgroup.level` (from BTF at load time); 0: unknown.
#[unsafe(no_mangle)]
pub(crate) static CGROUP_LEVEL_OFFSET: u32 = 0;

/// Byte offsets of `cgroup.root` and of `cgroup_root.hierarchy_id` (from BTF at load time):
/// which hierarchy a cgroup is in. The default (cgroup2) hierarchy's id is 0, the one
/// /proc/PID/cgroup prints as `0::` (kernel/cgroup/cgroup.c, `proc_cgroup_show()`).
/// [0, _]: unknown.
#[unsafe(no_mangle)]
pub(crate) static CGROUP_HIERARCHY_PATH: [u32; 2] = [0; 2];

/// Byte offsets to walk up from a cgroup to its parent: `cgroup.self.parent` (the parent
/// cgroup's `self`, null at the root; kernel/cgroup/cgroup.c, `cgroup_parent()`),
/// `cgroup_subsys_state.cgroup` (back from a `self` to its cgroup) and `cgroup.self`. From
/// BTF at load time; [0, ..]: unknown.
#[unsafe(no_mangle)]
pub(crate) static CGROUP_PARENT_PATH: [u32; 3] = [0; 3];

/// `profiler enforce`: ENFORCE_ALL / ENFORCE_CONTAINERS, 0 when recording.
#[unsafe(no_mangle)]
pub(crate) static ENFORCE: u32 = 0;

/// Byte offsets of `task_struct.pid` and `task_struct.tgid` (from BTF at load time), to tell
/// a new process from a new thread in sched_process_fork. 0: no fork events.
#[unsafe(no_mangle)]
pub(crate) static TASK_PID_OFFSET: u32 = 0;
#[unsafe(no_mangle)]
pub(crate) static TASK_TGID_OFFSET: u32 = 0;
/// Byte offset of `task_struct.start_boottime` (from BTF at load time), for the fork
/// event; 0: unknown (never the first member).
#[unsafe(no_mangle)]
pub(crate) static TASK_START_BOOTTIME_OFFSET: u32 = 0;

/// Byte offset of `io_kiocb.opcode` (from BTF at load time); 0: unknown (never the first
/// member), no io_uring operations recorded.
#[unsafe(no_mangle)]
pub(crate) static IO_KIOCB_OPCODE_OFFSET: u32 = 0;

/// Byte offsets to the identity of the file an exec ran, from `sched_process_exec`'s
/// `struct linux_binprm *`: `linux_binprm.file`, `file.f_inode`, `inode.i_ino`,
/// `inode.i_sb`, `super_block.s_dev`, `inode.i_size`, `inode.i_mtime_sec` (from BTF at load
/// time). The first 0: unknown, execs are judged by the path asked for instead; the last 0:
/// no content key (kernels before 6.7 keep mtime in a timespec64).
#[unsafe(no_mangle)]
pub(crate) static EXEC_FILE_PATH: [u32; 7] = [0; 7];

/// Byte offsets to the exec'ing task's supplementary groups from its `real_cred`:
/// `cred.group_info`, `group_info.ngroups`, `group_info.gid` (include/linux/cred.h; from BTF
/// at load time). The first 0: unknown, userspace reads /proc/PID/status instead.
#[unsafe(no_mangle)]
pub(crate) static EXEC_GROUPS_PATH: [u32; 3] = [0; 3];

/// Non-zero when the syscall hook will cache each task's record slot (userspace attaches the
/// fork and cgroup-move hooks that keep that cache right): the cache's misses then read the
/// cgroup id with the helpers instead of four loads through BTF pointers. Each such load
/// costs the verifier a search of all of vmlinux BTF by name (kernel/bpf/btf.c,
/// `btf_nested_type_is_trusted`), start-up time (BENCHMARKS.md, M15).
#[unsafe(no_mangle)]
pub(crate) static CGROUP_BY_HELPER: u32 = 0;
