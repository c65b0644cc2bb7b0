//! The Landlock side of profiler, in three steps that are each one file:
//!
//! - [`rules`]: what an image profile allows, as a file (`landlock.json`) that does not
//!   depend on the machine it was made on: programs with the identity they were recorded
//!   with, writable directories, TCP ports, scopes, and (for a container) the entrypoint and
//!   command to run once sealed;
//! - [`resolve`]: those rules against the root the workload will run in (the host for
//!   `profiler run`, the container's own root for the sealing entrypoint): what exists, what
//!   the kernel opens to run each program, what changed since the recording;
//! - [`apply`]: the Landlock ruleset (security/landlock/) for that plan, restricted onto the
//!   calling process and everything it executes.
//!
//! `profiler run`/`enforce` use all three in the process that becomes the workload; the
//! `profiler-seal` binary does the same as a container's entrypoint, because Docker and
//! podman have no way to pass a Landlock ruleset to the container they start.
pub mod apply;
pub mod resolve;
pub mod rules;

pub use apply::{ChildRestriction, Outcome, Prepared, apply, prepare, prepare_for_child};
pub use resolve::{Plan, resolve};
pub use rules::{Executable, Rules};

/// Every syscall the sealing binary makes before it executes the workload (x86_64, musl),
/// as `strace -f` shows it (the tests compare this list with strace's). A sealed container
/// runs it under the container's seccomp profile, so that profile must allow these;
/// `prctl` only for `PR_SET_NO_NEW_PRIVS`, and `exit_group` for its failures.
pub const SYSCALLS: &[&str] = &[
    "arch_prctl",
    "brk",
    "close",
    "execve",
    "exit_group",
    "fcntl",
    "fstat",
    "landlock_add_rule",
    "landlock_create_ruleset",
    "landlock_restrict_self",
    "lstat",
    "mmap",
    "mprotect",
    "munmap",
    "open",
    "poll",
    "prctl",
    "read",
    "readlink",
    "rt_sigaction",
    "rt_sigprocmask",
    "set_tid_address",
    "sigaltstack",
    "stat",
    "write",
];
