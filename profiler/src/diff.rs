//! `profiler diff OLD NEW`: what NEW allows that OLD does not, and the reverse, as a CI gate.
//!
//! Either side is a profile folder (seccomp.json + capabilities.json, as written by record,
//! generate or merge) or a trace.json (turned into a profile with the default options). Exit
//! code: 0 when NEW needs nothing OLD does not allow, 1 when it needs more, 2 on error.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::Context as _;
use serde::Serialize;

use crate::arch::Arch;
use crate::capabilities::CapabilityProfile;
use crate::output::{self, CAPABILITIES_FILE, SECCOMP_FILE, TRACE_FILE};
use crate::seccomp::{DockerSeccomp, GenerateOptions, SyscallRule};
use crate::trace::Trace;

/// What one profile allows, in comparable pieces.
#[derive(Debug, Default)]
pub struct Allowances {
    pub architectures: BTreeSet<String>,
    /// Per architecture: syscalls allowed whatever their arguments.
    pub syscalls: BTreeMap<String, BTreeSet<String>>,
    /// Per architecture: syscalls allowed for some argument values only, as
    /// `name(arg0 == 2)`.
    pub argument_rules: BTreeMap<String, BTreeSet<String>>,
    /// Syscalls answered with an errno other than the default (e.g. ENOSYS), as `name → errno`.
    pub errno_rules: BTreeSet<String>,
    pub capabilities: BTreeSet<String>,
    pub default_action: String,
}

fn describe_rule(rule: &SyscallRule, name: &str) -> String {
    let conds: Vec<String> = rule
        .args
        .iter()
        .map(|a| match a.op.as_str() {
            "SCMP_CMP_MASKED_EQ" => {
                format!("arg{} & {:#x} == {:#x}", a.index, a.value, a.value_two)
            }
            "SCMP_CMP_EQ" => format!("arg{} == {}", a.index, a.value),
            "SCMP_CMP_NE" => format!("arg{} != {}", a.index, a.value),
            other => format!("arg{} {other} {}", a.index, a.value),
        })
        .collect();
    format!("{name}({})", conds.join(", "))
}

impl Allowances {
    /// Reads a profile folder, or a trace file.
    pub fn load(path: &Path) -> anyhow::Result<Allowances> {
        let (seccomp, caps) = if path.is_dir() {
            let seccomp = DockerSeccomp::load(&path.join(SECCOMP_FILE))?;
            let caps_path = path.join(CAPABILITIES_FILE);
            let caps: CapabilityProfile = serde_json::from_str(
                &std::fs::read_to_string(&caps_path)
                    .with_context(|| format!("cannot read {}", caps_path.display()))?,
            )
            .map_err(|e| {
                anyhow::anyhow!("{}:{}:{}: {e}", caps_path.display(), e.line(), e.column())
            })?;
            (seccomp, caps)
        } else {
            let trace = Trace::load(path)?;
            let p = output::generate(std::slice::from_ref(&trace), &GenerateOptions::default());
            (p.seccomp, p.capabilities)
        };
        Ok(Allowances::from_profile(&seccomp, &caps))
    }

    pub fn from_profile(seccomp: &DockerSeccomp, caps: &CapabilityProfile) -> Allowances {
        let mut a = Allowances {
            architectures: seccomp.architectures.iter().cloned().collect(),
            default_action: seccomp.default_action.clone(),
            capabilities: caps.add.iter().cloned().collect(),
            ..Default::default()
        };
        // In this format a name applies to every listed architecture.
        let arches: Vec<String> = seccomp
            .architectures
            .iter()
            .map(|n| {
                Arch::from_seccomp_name(n)
                    .map(|a| a.label().to_owned())
                    .unwrap_or_else(|| n.clone())
            })
            .collect();
        for rule in &seccomp.syscalls {
            for name in &rule.names {
                match (rule.action.as_str(), rule.args.is_empty()) {
                    ("SCMP_ACT_ALLOW" | "SCMP_ACT_LOG", true) => {
                        for arch in &arches {
                            a.syscalls
                                .entry(arch.clone())
                                .or_default()
                                .insert(name.clone());
                        }
                    }
                    ("SCMP_ACT_ALLOW" | "SCMP_ACT_LOG", false) => {
                        for arch in &arches {
                            a.argument_rules
                                .entry(arch.clone())
                                .or_default()
                                .insert(describe_rule(rule, name));
                        }
                    }
                    ("SCMP_ACT_ERRNO", _) => {
                        a.errno_rules
                            .insert(format!("{name} → errno {}", rule.errno_ret.unwrap_or(1)));
                    }
                    _ => {}
                }
            }
        }
        a
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Side {
    pub architectures: Vec<String>,
    pub syscalls: BTreeMap<String, Vec<String>>,
    pub argument_rules: BTreeMap<String, Vec<String>>,
    pub errno_rules: Vec<String>,
    pub capabilities: Vec<String>,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.architectures.is_empty()
            && self.syscalls.is_empty()
            && self.argument_rules.is_empty()
            && self.errno_rules.is_empty()
            && self.capabilities.is_empty()
    }
}

#[derive(Debug, Serialize)]
pub struct Diff {
    /// In NEW, not in OLD.
    pub added: Side,
    /// In OLD, not in NEW.
    pub removed: Side,
    /// Whether NEW needs something OLD does not allow (the CI gate).
    pub needs_more: bool,
    pub default_action: Option<(String, String)>,
}

fn minus(a: &BTreeSet<String>, b: &BTreeSet<String>) -> Vec<String> {
    a.difference(b).cloned().collect()
}

fn per_arch(
    a: &BTreeMap<String, BTreeSet<String>>,
    b: &BTreeMap<String, BTreeSet<String>>,
    covered: impl Fn(&str, &str) -> bool,
) -> BTreeMap<String, Vec<String>> {
    let empty = BTreeSet::new();
    a.iter()
        .map(|(arch, names)| {
            let other = b.get(arch).unwrap_or(&empty);
            let only: Vec<String> = names
                .iter()
                .filter(|n| !other.contains(*n) && !covered(arch, n))
                .cloned()
                .collect();
            (arch.clone(), only)
        })
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

pub fn diff(old: &Allowances, new: &Allowances) -> Diff {
    // An argument rule is covered by the other side allowing the syscall whatever its
    // arguments.
    fn covered_by(side: &Allowances) -> impl Fn(&str, &str) -> bool + '_ {
        move |arch: &str, rule: &str| {
            let name = rule.split('(').next().unwrap_or(rule);
            side.syscalls.get(arch).is_some_and(|s| s.contains(name))
        }
    }
    let added = Side {
        architectures: minus(&new.architectures, &old.architectures),
        syscalls: per_arch(&new.syscalls, &old.syscalls, |_, _| false),
        argument_rules: per_arch(&new.argument_rules, &old.argument_rules, covered_by(old)),
        errno_rules: minus(&new.errno_rules, &old.errno_rules),
        capabilities: minus(&new.capabilities, &old.capabilities),
    };
    let removed = Side {
        architectures: minus(&old.architectures, &new.architectures),
        syscalls: per_arch(&old.syscalls, &new.syscalls, |_, _| false),
        argument_rules: per_arch(&old.argument_rules, &new.argument_rules, covered_by(new)),
        errno_rules: minus(&old.errno_rules, &new.errno_rules),
        capabilities: minus(&old.capabilities, &new.capabilities),
    };
    let needs_more = !added.architectures.is_empty()
        || !added.syscalls.is_empty()
        || !added.argument_rules.is_empty()
        || !added.capabilities.is_empty();
    let default_action = (old.default_action != new.default_action)
        .then(|| (old.default_action.clone(), new.default_action.clone()));
    Diff {
        added,
        removed,
        needs_more,
        default_action,
    }
}

pub fn render_text(d: &Diff) -> String {
    let mut out = String::new();
    let mut section = |sign: &str, side: &Side| {
        for a in &side.architectures {
            out.push_str(&format!("{sign} architecture {a}\n"));
        }
        for (arch, names) in &side.syscalls {
            out.push_str(&format!("{sign} {arch} syscalls: {}\n", names.join(" ")));
        }
        for (arch, rules) in &side.argument_rules {
            out.push_str(&format!(
                "{sign} {arch} argument rules: {}\n",
                rules.join("; ")
            ));
        }
        for r in &side.errno_rules {
            out.push_str(&format!("{sign} {r}\n"));
        }
        for c in &side.capabilities {
            out.push_str(&format!("{sign} capability {c}\n"));
        }
    };
    section("+", &d.added);
    section("-", &d.removed);
    if let Some((o, n)) = &d.default_action {
        out.push_str(&format!("~ defaultAction {o} → {n}\n"));
    }
    if d.added.is_empty() && d.removed.is_empty() && d.default_action.is_none() {
        out.push_str("no differences\n");
    }
    out.push_str(if d.needs_more {
        "NEW needs more than OLD allows\n"
    } else {
        "NEW needs nothing more than OLD allows\n"
    });
    out
}

/// Looks for a trace in a profile folder, for `merge`.
pub fn trace_in(path: &Path) -> std::path::PathBuf {
    if path.is_dir() {
        path.join(TRACE_FILE)
    } else {
        path.to_path_buf()
    }
}
