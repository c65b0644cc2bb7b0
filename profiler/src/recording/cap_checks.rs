//! Capability checks: from the kernel's aggregated keys to trace entries, each classified
//! audited or unaudited.
//!
//! The `capability:cap_capable` tracepoint (security/commoncap.c, `cap_capable()`) fires for
//! every check, but it does not carry the `opts` argument, so it cannot say whether the check
//! was made with `CAP_OPT_NOAUDIT`. Unaudited checks are the kernel asking "would you have
//! it?" to pick a behaviour, not to allow an operation: `cap_vm_enough_memory()` asks for
//! CAP_SYS_ADMIN on every mmap/brk to size overcommit headroom, `ptrace_may_access()` asks
//! for CAP_SYS_PTRACE when /proc decides what to show, and so on. Such checks must never
//! reach a whitelist (CAP_SYS_ADMIN would be in every profile).
//!
//! The robust signal is the kernel call stack, taken in the probe with `bpf_get_stackid`:
//! every unaudited check passes through one of the few kernel functions that pass
//! `CAP_OPT_NOAUDIT` (kernel/capability.c: `has_ns_capability_noaudit`,
//! `has_capability_noaudit`, `ns_capable_noaudit`; security/commoncap.c:
//! `cap_vm_enough_memory`; kernel/ksyms_common.c: `kallsyms_show_value`), all of them
//! exported or called out of line, so they appear as frames. The syscall context alone would
//! not do: the same `mmap` that makes an unaudited CAP_SYS_ADMIN check can make an audited
//! CAP_IPC_LOCK one. Where the fexit fallback is used the opts are read directly and the stack
//! is only evidence.
use std::collections::BTreeMap;

use profiler_common::{
    CAP_FLAG_GRANTED, CAP_FLAG_NO_SYSCALL, CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN,
    CAP_FLAG_OTHER_CRED, CAP_FLAG_PHASE_SHIFT, CapKey,
};

use crate::arch::Arch;
use crate::kernel::kallsyms::{Kallsyms, UNKNOWN_FRAME};
use crate::trace::capability::capability_name;
use crate::trace::{Audit, CapabilityCheck, Phase, SyscallRef};

/// Kernel functions that make their capability check with CAP_OPT_NOAUDIT.
const NOAUDIT_FUNCTIONS: &[&str] = &[
    "has_ns_capability_noaudit",
    "has_capability_noaudit",
    "ns_capable_noaudit",
    "cap_vm_enough_memory",
    "security_vm_enough_memory_mm",
    "__vm_enough_memory",
    "kallsyms_show_value",
];

/// Frames of the tracing machinery and of the check itself, skipped when naming the caller.
fn is_plumbing(function: &str) -> bool {
    function.starts_with("bpf_")
        || function.starts_with("__bpf_")
        || function.starts_with("__traceiter_")
        || function.starts_with("perf_")
        || function.starts_with("trace_")
        || matches!(
            function,
            "cap_capable" | "security_capable" | "ns_capable_common"
        )
}

fn function_of(frame: &str) -> &str {
    frame.split('+').next().unwrap_or(frame)
}

/// Decides audited/unaudited for one check, with the reason.
pub fn classify(flags: u32, stack: &[String]) -> (Audit, String) {
    if flags & CAP_FLAG_OPTS_KNOWN != 0 {
        return if flags & CAP_FLAG_NOAUDIT != 0 {
            (
                Audit::Noaudit,
                "cap_capable() was called with CAP_OPT_NOAUDIT".to_owned(),
            )
        } else {
            (
                Audit::Audited,
                "cap_capable() was called without CAP_OPT_NOAUDIT".to_owned(),
            )
        };
    }
    if let Some(f) = stack
        .iter()
        .map(|f| function_of(f))
        .find(|f| NOAUDIT_FUNCTIONS.contains(f) || f.ends_with("_noaudit"))
    {
        return (
            Audit::Noaudit,
            format!("checked by {f}(), which passes CAP_OPT_NOAUDIT"),
        );
    }
    if stack.is_empty() {
        return (
            Audit::Audited,
            "no kernel stack was recorded; treated as audited to be safe".to_owned(),
        );
    }
    if stack.iter().all(|f| f == UNKNOWN_FRAME) {
        return (
            Audit::Unclassified,
            "the kernel stack could not be symbolised (kernel addresses hidden): audited or not cannot be told"
                .to_owned(),
        );
    }
    let caller = stack
        .iter()
        .map(|f| function_of(f))
        .find(|f| !is_plumbing(f))
        .unwrap_or("?");
    (
        Audit::Audited,
        format!("checked by {caller}() with auditing"),
    )
}

/// Turns the kernel's aggregated keys into trace entries.
pub fn checks_from_kernel(
    raw: Vec<(CapKey, u64, Vec<u64>, u64)>,
    kallsyms: Option<&Kallsyms>,
    cred_check_enabled: bool,
) -> Vec<CapabilityCheck> {
    type Key = (
        String,
        u32,
        bool,
        Phase,
        Option<bool>,
        Option<SyscallRef>,
        Vec<String>,
    );
    let mut merged: BTreeMap<Key, (u64, u32, u64)> = BTreeMap::new();
    for (key, count, ips, by_depth) in raw {
        let mut stack: Vec<String> = match kallsyms {
            Some(k) => ips.iter().map(|ip| k.symbolize(*ip)).collect(),
            None => ips.iter().map(|_| UNKNOWN_FRAME.to_owned()).collect(),
        };
        // Drop the frames of the probe and the tracepoint machinery: the stack starts at
        // cap_capable(), the function the kernel checks in.
        if let Some(start) = stack.iter().position(|f| function_of(f) == "cap_capable") {
            stack.drain(..start);
        }
        let syscall = if key.flags & CAP_FLAG_NO_SYSCALL != 0 {
            None
        } else {
            let arch = Arch::from_slot(key.arch as usize).unwrap_or(Arch::X86_64);
            let nr = key.syscall_nr as u32;
            Some(SyscallRef {
                arch,
                nr,
                name: arch.display_name(nr),
            })
        };
        let granted = key.flags & CAP_FLAG_GRANTED != 0;
        let phase = Phase::from_index(((key.flags >> CAP_FLAG_PHASE_SHIFT) & 0xff) as usize)
            .unwrap_or(Phase::Workload);
        let own_credentials = match (
            key.flags & CAP_FLAG_OPTS_KNOWN,
            key.flags & CAP_FLAG_OTHER_CRED,
        ) {
            (0, 0) if cred_check_enabled => Some(true),
            (0, _) if cred_check_enabled => Some(false),
            _ => None,
        };
        let e = merged
            .entry((
                capability_name(key.cap),
                key.cap,
                granted,
                phase,
                own_credentials,
                syscall,
                stack,
            ))
            .or_insert((0, key.flags, 0));
        e.0 += count;
        e.2 += by_depth;
    }
    merged
        .into_iter()
        .map(
            |(
                (capability, number, granted, phase, own_credentials, syscall, kernel_stack),
                (count, flags, counted_by_depth),
            )| {
                let (audit, audit_reason) = classify(flags, &kernel_stack);
                CapabilityCheck {
                    capability,
                    number,
                    granted,
                    phase,
                    own_credentials,
                    audit,
                    audit_reason,
                    syscall,
                    count,
                    counted_by_depth,
                    kernel_stack,
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| format!("{f}+0x10")).collect()
    }

    #[test]
    fn memory_accounting_check_is_unaudited() {
        let (audit, reason) = classify(
            CAP_FLAG_GRANTED,
            &stack(&[
                "cap_capable",
                "security_vm_enough_memory_mm",
                "do_brk_flags",
                "__do_sys_brk",
            ]),
        );
        assert_eq!(audit, Audit::Noaudit);
        assert!(reason.contains("security_vm_enough_memory_mm"));
        let (audit, _) = classify(
            0,
            &stack(&[
                "cap_capable",
                "security_capable",
                "ns_capable_noaudit",
                "ptrace_has_cap",
            ]),
        );
        assert_eq!(audit, Audit::Noaudit);
    }

    #[test]
    fn ordinary_check_is_audited_and_names_the_caller() {
        let (audit, reason) = classify(
            CAP_FLAG_GRANTED,
            &stack(&[
                "cap_capable",
                "security_capable",
                "capable_wrt_inode_uidgid",
                "setattr_prepare",
            ]),
        );
        assert_eq!(audit, Audit::Audited);
        assert!(reason.contains("capable_wrt_inode_uidgid"), "{reason}");
        // No stack: assume it matters.
        assert_eq!(classify(0, &[]).0, Audit::Audited);
    }

    #[test]
    fn fexit_opts_decide_when_known() {
        let s = stack(&["cap_capable", "capable_wrt_inode_uidgid"]);
        assert_eq!(
            classify(CAP_FLAG_OPTS_KNOWN | CAP_FLAG_NOAUDIT, &s).0,
            Audit::Noaudit
        );
        assert_eq!(
            classify(
                CAP_FLAG_OPTS_KNOWN,
                &stack(&["cap_capable", "ns_capable_noaudit"])
            )
            .0,
            Audit::Audited
        );
    }
}
