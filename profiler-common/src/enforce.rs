//! `profiler enforce`.

/// `ENFORCE` global: 0 off, 1 every recorded cgroup, 2 only the containers found below the
/// recording cgroup (not the engine's CLI that started them).
pub const ENFORCE_ALL: u32 = 1;
pub const ENFORCE_CONTAINERS: u32 = 2;

/// Tags an allowed-file key as `[CONTENT_KEY | size, mtime]` (a container image's file,
/// by what it came with) rather than `[device, inode]` (a file on this machine). No device
/// number (the kernel's are 32 bits) has this bit.
pub const CONTENT_KEY: u64 = 1 << 63;

/// What the path an exec asked for says, as `EXEC_VERDICT` keeps it between sys_enter and
/// sched_process_exec: a listed absolute path; an absolute path the profile does not list;
/// no usable path (relative, empty as with `execveat(AT_EMPTY_PATH)` of a memfd, or
/// unreadable), for which only the very file (device and inode) can pass.
pub const EXEC_PATH_LISTED: u8 = 0;
pub const EXEC_PATH_UNLISTED: u8 = 1;
pub const EXEC_PATH_UNKNOWN: u8 = 2;
