//! profiler: record what a workload does with eBPF and turn it into security profiles.
//!
//! Stages, one module each:
//! - [`probes`]: loading the eBPF object and the attach strategy per kernel;
//! - [`cgroup`]: the recording cgroup that scopes the kernel side;
//! - [`record`]: running the workload and collecting the aggregated maps;
//! - [`containers`]: recording the containers a command starts;
//! - [`hook`]: recording containers a runtime starts, through an OCI hook;
//! - [`trace`]: the trace model (`trace.json`) every output is generated from;
//! - [`arch`]: syscall architectures and names;
//! - [`capabilities`]: capability checks to a whitelist with evidence;
//! - [`image`]: executables, written paths, network, users (the image profile);
//! - [`live_facts`]: owner, mode and image content of the written directories;
//! - [`compose`]: recording compose stacks (an override file) and their production override;
//! - [`seccomp`]: the Docker seccomp format and its libseccomp compilation;
//! - [`oci`]: the OCI runtime-spec outputs and bundle rewriting for runc/crun;
//! - [`output`]: rendering and atomic writing of a profile folder;
//! - [`deploy`]: image-profile.json, docker flags, Kubernetes and SPO outputs;
//! - [`run`]: enforcing a profile folder on a command (the proof);
//! - [`enforce`]: holding a workload to its image profile (drift is killed or reported);
//! - [`merge`] and [`diff`]: unions with coverage, and the CI gate.
pub mod arch;
pub mod capabilities;
pub mod cgroup;
pub mod compose;
pub mod containers;
pub mod deploy;
pub mod diff;
pub mod enforce;
pub mod hook;
pub mod image;
pub mod launch;
pub mod live_facts;
pub mod merge;
pub mod oci;
pub mod out_dir;
pub mod output;
pub mod private_dir;
pub mod probes;
pub mod record;
pub mod record_table;
pub mod run;
pub mod seccomp;
pub mod summary;
pub mod timings;
pub mod trace;
pub mod workload;
