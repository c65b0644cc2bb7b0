//! `profiler diff OLD NEW`: what NEW allows that OLD does not, and the reverse, as a CI gate.
//!
//! Either side is a profile folder (seccomp.json + capabilities.json, as written by record,
//! generate or merge) or a trace.json (turned into a profile with the default options). Exit
//! code: 0 when NEW needs nothing OLD does not allow, 1 when it needs more, 2 on error.
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use crate::arch::Arch;
use crate::profile::capabilities::CapabilityProfile;
use crate::profile::seccomp::{DockerSeccomp, GenerateOptions, SyscallRule};
use crate::profile::{self, TRACE_FILE};
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
    /// The default action lets unlisted syscalls run (ALLOW, LOG, or an action this gate
    /// does not know, which it must not take for a denial).
    pub default_permits: bool,
    /// Per architecture: syscalls a rule denies (ERRNO, KILL, TRAP, TRACE).
    pub denied: BTreeMap<String, BTreeSet<String>>,
    /// capabilities.json drops ALL before adding.
    pub drops_all: bool,
    /// From image-profile.json, where the folder has one (None: not compared): the
    /// programs, the ports bound, the addresses connected to.
    pub image: Option<ImageAllowances>,
}

/// What an image profile allows, in comparable pieces.
#[derive(Debug, Default)]
pub struct ImageAllowances {
    /// The paths programs were run by.
    pub executables: BTreeSet<String>,
    /// The files those were (a link's target: /usr/bin/python3 -> python3.11).
    pub files: BTreeSet<String>,
    pub bind_ports: BTreeSet<String>,
    pub connects: BTreeSet<String>,
    pub writable: BTreeSet<String>,
}

impl ImageAllowances {
    fn from_image(p: &crate::profile::image_profile::ImageProfile) -> ImageAllowances {
        ImageAllowances {
            executables: p.executables.keys().cloned().collect(),
            files: p.executable_files.keys().cloned().collect(),
            bind_ports: p.network.bound_ports.iter().map(u16::to_string).collect(),
            connects: p.network.connected.iter().cloned().collect(),
            writable: p.writable_directories.iter().cloned().collect(),
        }
    }
}

/// Actions that stop the syscall from running.
fn denies(action: &str) -> bool {
    matches!(
        action,
        "SCMP_ACT_ERRNO"
            | "SCMP_ACT_KILL"
            | "SCMP_ACT_KILL_THREAD"
            | "SCMP_ACT_KILL_PROCESS"
            | "SCMP_ACT_TRAP"
            | "SCMP_ACT_TRACE"
    )
}

impl Allowances {
    /// Whether `name` runs unconditionally on `arch` (listed, or by the default action).
    fn allows(&self, arch: &str, name: &str) -> bool {
        self.syscalls.get(arch).is_some_and(|s| s.contains(name))
            || (self.default_permits && !self.denied.get(arch).is_some_and(|d| d.contains(name)))
    }
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
        let (seccomp, caps, image) = if path.is_dir() {
            let image = path
                .join(profile::IMAGE_PROFILE_FILE)
                .exists()
                .then(|| profile::load_image_profile(path))
                .transpose()?
                .map(|p| ImageAllowances::from_image(&p));
            (
                profile::load_seccomp(path)?,
                profile::load_capabilities(path)?,
                image,
            )
        } else {
            let trace = Trace::load(path)?;
            let options = GenerateOptions::default();
            let p = profile::generate(std::slice::from_ref(&trace), &options);
            let image = crate::profile::image_profile::image_profile(
                &p.image,
                p.syscalls.clone(),
                &p.capabilities,
                options.limit_headroom,
            );
            (
                p.seccomp,
                p.capabilities,
                Some(ImageAllowances::from_image(&image)),
            )
        };
        let mut a = Allowances::from_profile(&seccomp, &caps);
        a.image = image;
        Ok(a)
    }

    pub fn from_profile(seccomp: &DockerSeccomp, caps: &CapabilityProfile) -> Allowances {
        let mut a = Allowances {
            architectures: seccomp.architectures.iter().cloned().collect(),
            default_action: seccomp.default_action.clone(),
            default_permits: !denies(&seccomp.default_action),
            capabilities: caps.add.iter().cloned().collect(),
            drops_all: caps.drop.iter().any(|d| d == "ALL"),
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
                if denies(&rule.action) && rule.args.is_empty() {
                    for arch in &arches {
                        a.denied
                            .entry(arch.clone())
                            .or_default()
                            .insert(name.clone());
                    }
                }
                // An action the gate does not know counts as allowing (fail closed).
                let action = if denies(&rule.action) {
                    rule.action.as_str()
                } else {
                    "SCMP_ACT_ALLOW"
                };
                match (action, rule.args.is_empty()) {
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
                    (other, _) => {
                        a.errno_rules.insert(format!("{name} → {other}"));
                    }
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
    /// From the image profiles, when both sides have one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub executables: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub bind_ports: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub connects: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub writable: Vec<String>,
}

impl Side {
    fn is_empty(&self) -> bool {
        self.architectures.is_empty()
            && self.syscalls.is_empty()
            && self.argument_rules.is_empty()
            && self.errno_rules.is_empty()
            && self.capabilities.is_empty()
            && self.executables.is_empty()
            && self.bind_ports.is_empty()
            && self.connects.is_empty()
            && self.writable.is_empty()
    }

    fn image(&mut self, a: Option<&ImageAllowances>, b: Option<&ImageAllowances>) {
        if let (Some(a), Some(b)) = (a, b) {
            // Programs compare by the files they were (canonical paths: /bin/ls and
            // /usr/bin/ls are one program) where both sides know them, else by path.
            let known: BTreeSet<String> = b.executables.union(&b.files).cloned().collect();
            self.executables = if !a.files.is_empty() && !b.files.is_empty() {
                minus(&a.files, &known)
            } else {
                minus(&a.executables, &known)
            };
            self.bind_ports = minus(&a.bind_ports, &b.bind_ports);
            self.connects = minus(&a.connects, &b.connects);
            // A folder writable in A that B's writable folders do not contain.
            self.writable = a
                .writable
                .iter()
                .filter(|d| {
                    !b.writable
                        .iter()
                        .any(|w| w == "/" || *d == w || d.starts_with(&format!("{w}/")))
                })
                .cloned()
                .collect();
        }
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
    /// OLD's capabilities.json dropped ALL and NEW's does not.
    pub drops_all_lost: bool,
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
    // An argument rule, or a listed syscall, is covered by the other side allowing the
    // syscall whatever its arguments (listed, or through a permissive default action).
    fn covered_by(side: &Allowances) -> impl Fn(&str, &str) -> bool + '_ {
        move |arch: &str, rule: &str| {
            let name = rule.split('(').next().unwrap_or(rule);
            side.allows(arch, name)
        }
    }
    let mut added = Side {
        architectures: minus(&new.architectures, &old.architectures),
        syscalls: per_arch(&new.syscalls, &old.syscalls, covered_by(old)),
        argument_rules: per_arch(&new.argument_rules, &old.argument_rules, covered_by(old)),
        errno_rules: minus(&new.errno_rules, &old.errno_rules),
        capabilities: minus(&new.capabilities, &old.capabilities),
        ..Default::default()
    };
    added.image(new.image.as_ref(), old.image.as_ref());
    // Under a permissive default, what OLD denied by name and NEW no longer does now runs.
    if new.default_permits {
        for (arch, names) in &old.denied {
            let freed: Vec<String> = names
                .iter()
                .filter(|n| new.allows(arch, n) && !old.allows(arch, n))
                .map(|n| format!("{n} (by defaultAction)"))
                .collect();
            if !freed.is_empty() {
                added
                    .syscalls
                    .entry(arch.clone())
                    .or_default()
                    .extend(freed);
            }
        }
    }
    let mut removed = Side {
        architectures: minus(&old.architectures, &new.architectures),
        syscalls: per_arch(&old.syscalls, &new.syscalls, covered_by(new)),
        argument_rules: per_arch(&old.argument_rules, &new.argument_rules, covered_by(new)),
        errno_rules: minus(&old.errno_rules, &new.errno_rules),
        capabilities: minus(&old.capabilities, &new.capabilities),
        ..Default::default()
    };
    removed.image(old.image.as_ref(), new.image.as_ref());
    // The gate: NEW needs more when anything runs under it that did not under OLD. A default
    // action that lets unlisted syscalls run, where OLD's did not, is the largest such step.
    let needs_more = !added.architectures.is_empty()
        || !added.syscalls.is_empty()
        || !added.argument_rules.is_empty()
        || !added.capabilities.is_empty()
        || !added.executables.is_empty()
        || !added.bind_ports.is_empty()
        || !added.connects.is_empty()
        || !added.writable.is_empty()
        || (new.default_permits && !old.default_permits)
        || (old.drops_all && !new.drops_all);
    let default_action = (old.default_action != new.default_action)
        .then(|| (old.default_action.clone(), new.default_action.clone()));
    Diff {
        added,
        removed,
        needs_more,
        default_action,
        drops_all_lost: old.drops_all && !new.drops_all,
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
        for e in &side.executables {
            out.push_str(&format!("{sign} executable {e:?}\n"));
        }
        for p in &side.bind_ports {
            out.push_str(&format!("{sign} bind port {p}\n"));
        }
        for c in &side.connects {
            out.push_str(&format!("{sign} connect {c:?}\n"));
        }
        for w in &side.writable {
            out.push_str(&format!("{sign} writable {w:?}\n"));
        }
    };
    section("+", &d.added);
    section("-", &d.removed);
    if let Some((o, n)) = &d.default_action {
        out.push_str(&format!("~ defaultAction {o} → {n}\n"));
    }
    if d.drops_all_lost {
        out.push_str("+ capabilities.json no longer drops ALL\n");
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

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: &str, drop_all: bool) -> Allowances {
        let seccomp: DockerSeccomp = serde_json::from_str(json).unwrap();
        let caps = CapabilityProfile {
            schema: String::new(),
            drop: if drop_all { vec!["ALL".into()] } else { vec![] },
            add: vec![],
            evidence: Default::default(),
            denied: Default::default(),
            ignored_unaudited: Default::default(),
            notes: Default::default(),
            ignored_other_credentials: Default::default(),
            unclassified: Default::default(),
        };
        Allowances::from_profile(&seccomp, &caps)
    }

    const OLD: &str = r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
        "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#;

    /// The CI gate fails closed: anything under which more runs "needs more".
    #[test]
    fn a_more_permissive_profile_always_needs_more() {
        let old = profile(OLD, true);
        assert!(!diff(&old, &profile(OLD, true)).needs_more);
        for (new, why) in [
            (
                r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"syscalls":[]}"#,
                "allow-all",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_LOG","architectures":["SCMP_ARCH_X86_64"],"syscalls":[]}"#,
                "log-all",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_NOTIFY","architectures":["SCMP_ARCH_X86_64"],"syscalls":[]}"#,
                "unknown default",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["read","write","ptrace"],"action":"SCMP_ACT_LOG"}]}"#,
                "a LOG rule",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["read","write","mount"],"action":"SCMP_ACT_WHATEVER"}]}"#,
                "an unknown rule action",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"}]}"#,
                "another architecture",
            ),
            (
                r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["socket"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":16,"op":"SCMP_CMP_EQ"}]}]}"#,
                "an argument rule",
            ),
        ] {
            assert!(diff(&old, &profile(new, true)).needs_more, "{why}");
        }
        assert!(
            diff(&old, &profile(OLD, false)).needs_more,
            "capabilities no longer dropped"
        );
    }

    #[test]
    fn under_a_permissive_default_a_lost_denial_needs_more() {
        let old = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["ptrace","mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
            true,
        );
        let new = profile(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
            true,
        );
        let d = diff(&old, &new);
        assert!(d.needs_more);
        assert_eq!(d.added.syscalls["x86_64"], ["ptrace (by defaultAction)"]);
        // The reverse takes a permission away: nothing more is needed.
        assert!(!diff(&new, &old).needs_more);
        // A permissive OLD covers what a stricter NEW lists.
        assert!(!diff(&old, &profile(OLD, true)).needs_more);
    }
}
