//! Types shared by the eBPF programs (`profiler-ebpf`) and userspace (`profiler`).
//!
//! Every type here is `#[repr(C)]` with explicit fields and no implicit padding, so the kernel
//! side and userspace agree byte for byte and the verifier never sees uninitialised padding in
//! a map key. With the `user` feature they implement `aya::Pod` so userspace can read the maps.
//!
//! One module per topic, all re-exported here (`profiler_common::X`): [`nr`] stays a module
//! of its own.
#![no_std]

mod arch;
mod caps;
mod enforce;
mod events;
mod losses;
pub mod nr;
mod record;
mod regs;

pub use arch::*;
pub use caps::*;
pub use enforce::*;
pub use events::*;
pub use losses::*;
pub use nr::{
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER, SECCOMP_SET_MODE_FILTER, X86_64_PRCTL as NR_X86_64_PRCTL,
    X86_64_SECCOMP as NR_X86_64_SECCOMP,
};
pub use record::*;
pub use regs::*;
