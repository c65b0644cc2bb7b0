//! Kernel-side diagnostics through aya-log: one line per loss, at the moment it happens,
//! naming what was lost (the loss counters only say how many, after the recording).
//!
//! Off unless `PROFILER_EBPF_LOG` asks for them: userspace then sets `AYA_LOG_LEVEL` to 0
//! before the load, as a read-only global, so the verifier knows every log branch is never
//! taken and removes it (kernel/bpf/verifier.c, `opt_remove_dead_code`); the syscall path
//! runs the same instructions as without logging. aya-log's macros take a context argument
//! they do not use (aya-log-ebpf-macros 0.2.0, expand.rs: "we may need ctx in the future"),
//! so the call sites pass `&()` and need no program context.
pub(crate) use aya_log_ebpf::{debug, warn};
