//! `capabilities.json`: the capability whitelist made from a trace's classified checks, with
//! the evidence for each capability.
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::trace::{Audit, CapabilityCheck};

/// `capabilities.json`. Only `add` is required to read one back (`profiler run`), so a
/// hand-written `{"add": [...]}` works too.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct CapabilityProfile {
    #[serde(default)]
    pub schema: String,
    /// Drop everything, then add these: `--cap-drop ALL --cap-add ...`.
    #[serde(default)]
    pub drop: Vec<String>,
    pub add: Vec<String>,
    /// Why each added capability is needed.
    #[serde(default)]
    pub evidence: BTreeMap<String, Vec<Evidence>>,
    /// Audited checks that failed during recording: the workload asked and coped without it.
    /// Not added; listed so a person can decide.
    #[serde(default)]
    pub denied: BTreeMap<String, Vec<Evidence>>,
    /// Unaudited checks (never needed), with counts, kept for transparency.
    #[serde(default)]
    pub ignored_unaudited: BTreeMap<String, u64>,
    /// For capabilities whose need depends on the environment more than on the program: what
    /// decides it, so a person can judge whether the target environment needs it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
    /// Checks of credentials other than the workload's own (overlayfs acting as its mounter,
    /// another task's), with counts: the workload's capabilities do not decide them.
    #[serde(default)]
    pub ignored_other_credentials: BTreeMap<String, u64>,
    /// Checks that could not be classified (kernel addresses hidden): not added, since a
    /// guess would put CAP_SYS_ADMIN into every whitelist; a person must decide.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unclassified: BTreeMap<String, Vec<Evidence>>,
}

pub const CAPABILITIES_SCHEMA: &str = "profiler.dev/capabilities/v1";

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Clone)]
pub struct Evidence {
    pub syscall: Option<String>,
    pub checked_by: String,
    pub count: u64,
}

/// Capabilities whose need is decided by the environment (sysctls, rlimits, file ownership)
/// as much as by the program.
fn environment_note(cap: &str) -> Option<&'static str> {
    Some(match cap {
        "CAP_NET_BIND_SERVICE" => {
            "needed to bind ports below net.ipv4.ip_unprivileged_port_start (1024 by default); Docker sets it \
             to 0 inside containers, where this capability is then not needed (podman and Kubernetes keep \
             1024: podman-run.txt and kubernetes.yaml set the sysctl instead)"
        }
        "CAP_NET_RAW" => {
            "raw and packet sockets; ICMP echo also works without it through ping sockets when the group is in \
             net.ipv4.ping_group_range (Docker sets 0 2147483647 in containers)"
        }
        "CAP_IPC_LOCK" => {
            "locking memory beyond RLIMIT_MEMLOCK: raising that limit removes the need"
        }
        "CAP_SYS_RESOURCE" => {
            "exceeding resource limits (RLIMIT_*, quotas): higher limits remove the need"
        }
        "CAP_SYS_NICE" => {
            "raising priority or real-time scheduling beyond RLIMIT_NICE/RLIMIT_RTPRIO"
        }
        "CAP_DAC_OVERRIDE" | "CAP_DAC_READ_SEARCH" | "CAP_FOWNER" | "CAP_CHOWN" => {
            "decided by the owners and modes of the files touched: files owned by the workload's user need none"
        }
        "CAP_SETUID" | "CAP_SETGID" => {
            "switching users: a workload started as its final user needs neither"
        }
        _ => return None,
    })
}

pub fn whitelist(checks: &[CapabilityCheck]) -> CapabilityProfile {
    let mut evidence: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    let mut denied: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    let mut ignored: BTreeMap<String, u64> = BTreeMap::new();
    let mut other_creds: BTreeMap<String, u64> = BTreeMap::new();
    let mut unclassified: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    for c in checks {
        if c.audit == Audit::Noaudit {
            *ignored.entry(c.capability.clone()).or_default() += c.count;
            continue;
        }
        if c.audit == Audit::Unclassified {
            unclassified
                .entry(c.capability.clone())
                .or_default()
                .push(Evidence {
                    syscall: c.syscall.as_ref().map(|s| format!("{}/{}", s.arch, s.name)),
                    checked_by: c.audit_reason.clone(),
                    count: c.count,
                });
            continue;
        }
        // access()/faccessat() check through an override copy of the caller's own
        // credentials (fs/open.c, access_override_creds()): their answer still depends on
        // the workload's capabilities, so they count.
        let access_family = c
            .syscall
            .as_ref()
            .is_some_and(|s| matches!(s.name.as_str(), "access" | "faccessat" | "faccessat2"));
        if c.own_credentials == Some(false) && !access_family {
            *other_creds.entry(c.capability.clone()).or_default() += c.count;
            continue;
        }
        let ev = Evidence {
            syscall: c.syscall.as_ref().map(|s| format!("{}/{}", s.arch, s.name)),
            checked_by: c.audit_reason.clone(),
            count: c.count,
        };
        let target = if c.granted {
            &mut evidence
        } else {
            &mut denied
        };
        let list = target.entry(c.capability.clone()).or_default();
        if let Some(existing) = list
            .iter_mut()
            .find(|e| e.syscall == ev.syscall && e.checked_by == ev.checked_by)
        {
            existing.count += ev.count;
        } else {
            list.push(ev);
        }
    }
    let add: BTreeSet<String> = evidence.keys().cloned().collect();
    denied.retain(|k, _| !add.contains(k));
    let notes = add
        .iter()
        .chain(denied.keys())
        .filter_map(|c| environment_note(c).map(|n| (c.clone(), n.to_owned())))
        .collect();
    CapabilityProfile {
        schema: CAPABILITIES_SCHEMA.to_owned(),
        drop: vec!["ALL".to_owned()],
        add: add.into_iter().collect(),
        evidence,
        denied,
        ignored_unaudited: ignored,
        notes,
        ignored_other_credentials: other_creds,
        unclassified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::Phase;

    #[test]
    fn whitelist_takes_granted_audited_checks_only() {
        let check = |cap: &str, granted, audit| CapabilityCheck {
            capability: cap.into(),
            number: 0,
            granted,
            phase: Phase::Workload,
            own_credentials: Some(true),
            audit,
            audit_reason: "r".into(),
            syscall: None,
            count: 1,
            counted_by_depth: 0,
            kernel_stack: vec![],
        };
        let p = whitelist(&[
            check("CAP_CHOWN", true, Audit::Audited),
            check("CAP_SYS_ADMIN", true, Audit::Noaudit),
            check("CAP_NET_ADMIN", false, Audit::Audited),
        ]);
        assert_eq!(p.add, vec!["CAP_CHOWN"]);
        assert!(p.denied.contains_key("CAP_NET_ADMIN"));
        assert_eq!(p.ignored_unaudited.get("CAP_SYS_ADMIN"), Some(&1));
    }
}
