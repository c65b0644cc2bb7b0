//! The workload in its cgroup: starting it there, recording the containers it starts, and
//! turning what the kernel side aggregated into a [`crate::trace::Trace`].
pub mod attach;
pub mod cap_checks;
pub mod cgroup;
pub mod command;
pub mod compose;
pub mod containers;
pub mod elf_imports;
pub mod files;
pub mod identified;
pub mod image_events;
pub mod ld_cache;
pub mod live_facts;
pub mod oci_bundle;
pub mod process;
pub mod spawn;
pub mod to_trace;
