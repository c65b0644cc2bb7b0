//! The image profile held in the kernel with Landlock (security/landlock/): what seccomp
//! cannot say, because it sees syscall numbers and not their objects.
//!
//! - **Execute** only the recorded programs, their ELF loaders (`PT_INTERP`, which the kernel
//!   opens for execution itself, fs/binfmt_elf.c) and the interpreters of recorded scripts
//!   (`#!`, fs/binfmt_script.c). A copy of an allowed program at another path, or a program
//!   downloaded at run time, cannot run; nor one replaced since the recording (its content
//!   hash differs).
//! - **Write, create, remove, rename, truncate** only beneath the writable directories (and
//!   a few device files: /dev/null, terminals, /dev/shm). Reads are left open.
//! - **TCP bind and connect** only to the recorded ports (Landlock ABI 4).
//! - **Scopes** (ABI 6): abstract unix sockets and signals stay inside the workload, unless
//!   the recording shows it crossing them.
//!
//! Landlock also checks what io_uring opens and creates, and writes to cgroupfs (a
//! workload cannot write its pid into another cgroup's `cgroup.procs`), so those two ways
//! around the recording close too. Rules the running kernel cannot enforce are dropped
//! (best effort) and the outcome says so.
//!
//! This file turns an image profile into the machine-independent [`Rules`]; the
//! `profiler-seal` crate resolves them against the root the workload runs in and applies
//! them, in `profiler run`/`enforce` and, inside a container, as its sealing entrypoint.
pub use profiler_seal::{Outcome, Plan, Rules};

use crate::profile::image_profile::ImageProfile;

/// The plan for an image profile on this machine (the host's root).
pub fn plan(profile: &ImageProfile) -> Plan {
    profiler_seal::resolve(&crate::profile::landlock::rules(profile, &[], &[]))
}

/// Restricts the current process (and what it execs) to `plan`.
pub fn apply(plan: &Plan) -> anyhow::Result<Outcome> {
    profiler_seal::apply(plan).map_err(|e| anyhow::anyhow!(e))
}
