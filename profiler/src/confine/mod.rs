//! Proof and enforcement: a command run under a profile folder (`run`), a workload held to
//! its image profile (`enforce`), and the CI gate between two profiles (`diff`).
pub mod diff;
pub mod enforce;
pub mod landlock;
pub mod run;
pub mod seccomp_filter;
