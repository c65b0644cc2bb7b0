//! Compiling a Docker-format seccomp profile with libseccomp, the way runc does, for
//! `profiler run`.
use anyhow::{Context as _, bail};
use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::arch::Arch;
use crate::profile::seccomp::{DEFAULT_ERRNO, DockerSeccomp};

impl DockerSeccomp {
    /// Compiles the profile the way runc does (libseccomp, names resolved per architecture,
    /// unknown names skipped). Returns the filter and the names libseccomp did not know.
    pub fn compile(&self) -> anyhow::Result<(ScmpFilterContext, Vec<String>)> {
        let default = parse_action(&self.default_action, self.default_errno_ret)?;
        let mut filter = ScmpFilterContext::new(default)?;
        // The native arch is in a new filter; keep it only if the profile lists it.
        let mut arches = Vec::new();
        // Docker and runc apply a profile without `architectures` to the native one
        // (moby profiles/seccomp, libcontainer/seccomp): so does this.
        let listed: Vec<String> = if self.architectures.is_empty() {
            vec![Arch::X86_64.seccomp_name().to_owned()]
        } else {
            self.architectures.clone()
        };
        for name in &listed {
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
                let comparators = rule
                    .args
                    .iter()
                    .map(|a| {
                        if a.index > 5 {
                            bail!(
                                "rule for {name}: argument index {} out of range (a syscall has arguments 0 to 5)",
                                a.index
                            );
                        }
                        let op = match a.op.as_str() {
                            "SCMP_CMP_EQ" => ScmpCompareOp::Equal,
                            "SCMP_CMP_NE" => ScmpCompareOp::NotEqual,
                            "SCMP_CMP_LT" => ScmpCompareOp::Less,
                            "SCMP_CMP_LE" => ScmpCompareOp::LessOrEqual,
                            "SCMP_CMP_GT" => ScmpCompareOp::Greater,
                            "SCMP_CMP_GE" => ScmpCompareOp::GreaterEqual,
                            "SCMP_CMP_MASKED_EQ" => ScmpCompareOp::MaskedEqual(a.value),
                            other => bail!(
                                "rule for {name}: unsupported argument comparison {other:?} (SCMP_CMP_EQ, _NE, _LT, _LE, _GT, _GE, _MASKED_EQ)"
                            ),
                        };
                        let datum = if matches!(op, ScmpCompareOp::MaskedEqual(_)) {
                            a.value_two
                        } else {
                            a.value
                        };
                        Ok(ScmpArgCompare::new(a.index, op, datum))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
                // A rule that does what the default does changes nothing, and libseccomp
                // refuses it (EACCES); runc skips it the same way (libcontainer/seccomp).
                // Checked after its arguments, so a malformed rule is still an error.
                if action == default {
                    continue;
                }
                if comparators.is_empty() {
                    filter.add_rule(action, sc)
                } else {
                    filter.add_rule_conditional(action, sc, &comparators)
                }
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
