//! profiler: record what a workload does with eBPF and turn it into security profiles.
//!
//! One folder per stage. A stage imports only from the floors below it, never from a later
//! stage, and nothing imports `cli`:
//!
//! ```text
//! cli/        verbs that orchestrate the stages: record, generate, merge, serve/hook
//! confine/    proof and enforcement: run under a profile, enforce an image profile, diff
//! profile/    renderers, one file per output format; the profile folder and its writing
//! recording/  the workload in its cgroup, containers, and kernel data turned into a Trace
//! kernel/     the eBPF object: hooks and their fallbacks, BTF offsets, maps, kallsyms
//! trace/      the model (trace.json): what a recording saw
//! arch.rs, exit.rs, private_dir.rs, timings.rs   vocabulary and host utilities
//! ```
pub mod arch;
pub mod cli;
pub mod confine;
pub mod exit;
pub mod kernel;
pub mod private_dir;
pub mod profile;
pub mod recording;
pub mod timings;
pub mod trace;
