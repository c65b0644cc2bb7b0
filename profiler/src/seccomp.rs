//! seccomp profiles in the Docker/Podman JSON format (moby's `types.Seccomp`, which podman
//! and containers/common read too), and compiling them with libseccomp for `profiler run`.
//!
//! In this format a name in `syscalls[].names` applies to every listed architecture; a name
//! that an architecture lacks is skipped for it (libseccomp resolves names per arch), as moby
//! and runc do.
use std::collections::BTreeSet;
use std::path::Path;

use anyhow::{Context as _, bail};
use libseccomp::{ScmpAction, ScmpFilterContext, ScmpSyscall};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::trace::Observed;

/// `EPERM`: what a denied syscall returns, so programs report "Operation not permitted".
pub const DEFAULT_ERRNO: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DockerSeccomp {
    pub default_action: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub default_errno_ret: Option<u32>,
    #[serde(default)]
    pub architectures: Vec<String>,
    pub syscalls: Vec<SyscallRule>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SyscallRule {
    pub names: Vec<String>,
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errno_ret: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// The allow-list profile for what was observed.
pub fn docker_profile(observed: &Observed) -> DockerSeccomp {
    let architectures = observed
        .syscalls
        .keys()
        .map(|a| a.seccomp_name().to_owned())
        .collect();
    let names: BTreeSet<String> = observed.syscalls.values().flatten().cloned().collect();
    DockerSeccomp {
        default_action: "SCMP_ACT_ERRNO".to_owned(),
        default_errno_ret: Some(DEFAULT_ERRNO),
        architectures,
        syscalls: vec![SyscallRule {
            names: names.into_iter().collect(),
            action: "SCMP_ACT_ALLOW".to_owned(),
            errno_ret: None,
            comment: None,
        }],
    }
}

impl DockerSeccomp {
    pub fn load(path: &Path) -> anyhow::Result<DockerSeccomp> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read seccomp profile {}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: invalid seccomp profile: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serialises");
        v.push(b'\n');
        v
    }

    /// Compiles the profile the way runc does (libseccomp, names resolved per architecture,
    /// unknown names skipped). Returns the filter and the names libseccomp did not know.
    pub fn compile(&self) -> anyhow::Result<(ScmpFilterContext, Vec<String>)> {
        let default = parse_action(&self.default_action, self.default_errno_ret)?;
        let mut filter = ScmpFilterContext::new(default)?;
        // The native arch is in a new filter; keep it only if the profile lists it.
        let mut arches = Vec::new();
        for name in &self.architectures {
            let arch = Arch::from_seccomp_name(name)
                .with_context(|| format!("unsupported architecture {name:?} in seccomp profile"))?;
            arches.push(arch);
            filter.add_arch(arch.scmp())?;
        }
        if !arches.contains(&Arch::X86_64) {
            filter.remove_arch(Arch::X86_64.scmp())?;
        }
        let mut unknown = Vec::new();
        for rule in &self.syscalls {
            let action = parse_action(&rule.action, rule.errno_ret.or(self.default_errno_ret))?;
            for name in &rule.names {
                let known_somewhere = arches
                    .iter()
                    .any(|a| ScmpSyscall::from_name_by_arch(name, a.scmp()).is_ok());
                if !known_somewhere {
                    unknown.push(name.clone());
                    continue;
                }
                let sc = ScmpSyscall::from_name(name)
                    .or_else(|_| {
                        arches
                            .iter()
                            .find_map(|a| ScmpSyscall::from_name_by_arch(name, a.scmp()).ok())
                            .context("unresolvable")
                    })
                    .with_context(|| format!("syscall {name}"))?;
                filter
                    .add_rule(action, sc)
                    .with_context(|| format!("adding seccomp rule for {name}"))?;
            }
        }
        Ok((filter, unknown))
    }
}

fn parse_action(name: &str, errno: Option<u32>) -> anyhow::Result<ScmpAction> {
    Ok(match name {
        "SCMP_ACT_ALLOW" => ScmpAction::Allow,
        "SCMP_ACT_ERRNO" => ScmpAction::Errno(errno.unwrap_or(DEFAULT_ERRNO) as i32),
        "SCMP_ACT_KILL" | "SCMP_ACT_KILL_THREAD" => ScmpAction::KillThread,
        "SCMP_ACT_KILL_PROCESS" => ScmpAction::KillProcess,
        "SCMP_ACT_LOG" => ScmpAction::Log,
        "SCMP_ACT_TRAP" => ScmpAction::Trap,
        other => bail!("unsupported seccomp action {other:?}"),
    })
}
