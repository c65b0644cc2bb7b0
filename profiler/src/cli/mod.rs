//! The verbs: each orchestrates the stages below it and holds no stage logic of its own.
pub mod attach;
pub mod bench;
pub mod diff;
pub mod generate;
pub mod kubernetes;
pub mod merge;
pub mod oci_hook;
pub mod record;
pub mod watch;
