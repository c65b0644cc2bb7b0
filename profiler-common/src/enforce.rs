//! `profiler enforce`.

/// `ENFORCE` global: 0 off, 1 every recorded cgroup, 2 only the containers found below the
/// recording cgroup (not the engine's CLI that started them).
pub const ENFORCE_ALL: u32 = 1;
pub const ENFORCE_CONTAINERS: u32 = 2;
