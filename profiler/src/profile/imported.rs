//! Coverage beyond the training run: the syscalls each recorded program imports (its ELF
//! import tables, read at record time by `recording::elf_imports`) that the recording never
//! saw it make. A generated profile denies them; the program says in advance that it may
//! make them (nginx's `kill` for `-s reload`, a `shutdown` on a bad request). This file
//! decides which programs say something useful (not interpreters, which import nearly
//! everything), what the summary and `coverage.json` list, and which of them
//! `--include-imported` may add to a profile (never the dangerous ones unless named).
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::arch::Arch;
use crate::trace::image::{ImageInfo, ImportTable, Imports};

/// What `--include-imported` does with the syscalls it adds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeAction {
    /// `SCMP_ACT_LOG`: allowed, and logged to the audit log, where production shows which
    /// of them it needed.
    Log,
    /// `SCMP_ACT_ALLOW`.
    Allow,
}

impl IncludeAction {
    pub fn seccomp_action(self) -> &'static str {
        match self {
            IncludeAction::Log => "SCMP_ACT_LOG",
            IncludeAction::Allow => "SCMP_ACT_ALLOW",
        }
    }
}

/// Which imported syscalls go into a profile (`--include-imported`, `--include-imported-from`,
/// `--include-imported-syscall`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncludeImported {
    /// `None`: imports stay out of the profile (the default).
    pub action: Option<IncludeAction>,
    /// Only the imports of these executables (paths as recorded); empty: every program that
    /// is not an interpreter.
    pub from: Vec<String>,
    /// Dangerous syscalls to include all the same when imported.
    pub dangerous_allowed: Vec<String>,
}

/// Syscalls `--include-imported` never adds unless named with `--include-imported-syscall`:
/// each grants what a confined service should not have by accident (kernel code and memory,
/// other processes, mounts and namespaces, the machine's clock and power, io_uring's unseen
/// operations), and most programs import them for a rarely used option, not their job.
pub const DANGEROUS: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "process_madvise",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "mount",
    "umount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "keyctl",
    "add_key",
    "request_key",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "settimeofday",
    "clock_settime",
    "clock_adjtime",
    "adjtimex",
    "stime",
    "sethostname",
    "setdomainname",
    "iopl",
    "ioperm",
    "modify_ldt",
    "vm86",
    "vm86old",
    "uselib",
    "open_by_handle_at",
    "name_to_handle_at",
    "lookup_dcookie",
    "nfsservctl",
    "vhangup",
    "fanotify_init",
    // Its argument decides what it does (ADDR_NO_RANDOMIZE turns ASLR off): Docker's profile
    // allows only a few values, and a recorded one gets an argument rule.
    "personality",
];

/// Program names (without a version suffix) of interpreters and language runtimes: what
/// they import is what their language offers, not what the script they run does.
const RUNTIMES: &[&str] = &[
    "python", "pypy", "node", "nodejs", "deno", "bun", "java", "perl", "ruby", "php", "php-fpm",
    "php-cgi", "lua", "luajit", "tclsh", "wish", "Rscript", "R", "erl", "beam.smp", "escript",
    "elixir", "dotnet", "mono", "guile", "racket", "sbcl", "ocaml", "gawk", "awk", "mawk", "sh",
    "bash", "dash", "zsh", "ksh", "mksh", "fish", "busybox",
];

/// A program that imports at least this share of its architecture's syscall table is taken
/// for a runtime whatever its name (python3 imports some 140 of x86_64's 360; a service some
/// 30 to 90).
const RUNTIME_SHARE: f64 = 1.0 / 3.0;

/// Why `path` is taken for an interpreter or runtime, or `None`.
pub fn runtime_reason(path: &str, imports: &Imports) -> Option<String> {
    let base = path.rsplit('/').next().unwrap_or(path);
    let stem = base.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    if RUNTIMES.contains(&stem) || RUNTIMES.contains(&base) {
        return Some(format!("interpreter ({base})"));
    }
    let arch = imports.arch?;
    let own = imports.objects.get(path).map_or(0, |s| s.len());
    let table = (0..profiler_common::SYSCALL_SLOTS as u32)
        .filter(|nr| arch.syscall_name(*nr).is_some())
        .count();
    (table > 0 && own as f64 >= RUNTIME_SHARE * table as f64)
        .then(|| format!("runtime (imports {own} of {table} {arch} syscalls itself)"))
}

/// One program's imports beside what the recording saw.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct ProgramCoverage {
    pub import_table: ImportTable,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub arch: Option<Arch>,
    /// Set for interpreters and runtimes, which are kept out of the summary and of
    /// `--include-imported` (unless named with `--include-imported-from`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime: Option<String>,
    /// The executable and the libraries read for it.
    pub objects: Vec<String>,
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub missing_libraries: BTreeSet<String>,
    /// Syscalls it imports that the recording never saw, with the objects importing each.
    pub imported_only: BTreeMap<String, Vec<String>>,
}

/// Per executable (path as recorded), its imports against `seen` (per architecture, the
/// syscalls the profile was made from). Executables without an analysis are left out.
pub fn programs(
    image: &ImageInfo,
    seen: &BTreeMap<Arch, BTreeSet<String>>,
) -> BTreeMap<String, ProgramCoverage> {
    let empty = BTreeSet::new();
    image
        .executable_files
        .iter()
        .filter_map(|(path, file)| {
            let imports = file.imports.as_ref()?;
            let seen = imports.arch.and_then(|a| seen.get(&a)).unwrap_or(&empty);
            let imported_only = imports
                .syscalls()
                .into_iter()
                .filter(|(name, _)| !seen.contains(*name))
                .map(|(name, objects)| {
                    (
                        name.to_owned(),
                        objects.into_iter().map(str::to_owned).collect(),
                    )
                })
                .collect();
            Some((
                path.clone(),
                ProgramCoverage {
                    import_table: imports.table,
                    arch: imports.arch,
                    runtime: runtime_reason(path, imports),
                    objects: imports.objects.keys().cloned().collect(),
                    missing_libraries: imports.missing_libraries.clone(),
                    imported_only,
                },
            ))
        })
        .collect()
}

/// Per architecture, the syscalls `--include-imported` adds, each with the executables
/// whose imports brought it in. `allowed` says whether the profile already has a rule for a
/// name (seen, always allowed, or answered otherwise, like clone3's ENOSYS): those are not
/// touched.
pub fn to_include(
    programs: &BTreeMap<String, ProgramCoverage>,
    include: &IncludeImported,
    allowed: &dyn Fn(&str) -> bool,
) -> BTreeMap<Arch, BTreeMap<String, BTreeSet<String>>> {
    let mut out: BTreeMap<Arch, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
    if include.action.is_none() {
        return out;
    }
    for (path, p) in programs {
        let named = include.from.iter().any(|f| f == path);
        if !include.from.is_empty() && !named {
            continue;
        }
        // An interpreter only when asked for by name.
        if p.runtime.is_some() && !named {
            continue;
        }
        let Some(arch) = p.arch else { continue };
        for name in p.imported_only.keys() {
            if allowed(name) {
                continue;
            }
            if DANGEROUS.contains(&name.as_str())
                && !include.dangerous_allowed.iter().any(|d| d == name)
            {
                continue;
            }
            out.entry(arch)
                .or_default()
                .entry(name.clone())
                .or_default()
                .insert(path.clone());
        }
    }
    out
}

/// A path as the summary prints it: control characters escaped, so a file name the workload
/// chose cannot rewrite the terminal's lines.
fn printable(path: &str) -> String {
    path.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Where a syscall stands in a generated profile.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InProfile {
    /// No rule names it: the default action (EPERM, kill) answers.
    Denied,
    /// Added by `--include-imported` with this action.
    Included(IncludeAction),
    /// Allowed or answered for another reason (seen, always allowed, an ENOSYS fallback).
    Otherwise,
}

/// The comment of the rules `--include-imported` adds starts so.
pub const COMMENT_PREFIX: &str = "imported by ";

/// The summary lines: per program that is not a runtime, what it imports that the
/// recording never saw and `state` says the profile denies or adds through
/// `--include-imported`; a line per program without an import table; one line naming the
/// runtimes left out.
pub fn summary_lines(
    programs: &BTreeMap<String, ProgramCoverage>,
    state: &dyn Fn(&str) -> InProfile,
) -> Vec<String> {
    /// A line names at most this many syscalls, and at most this many lines are about
    /// programs (a script running twenty tools): coverage.json has them all.
    const MAX_NAMES: usize = 12;
    const MAX_LINES: usize = 8;
    let list = |names: &[&str]| {
        let shown = names
            .iter()
            .take(MAX_NAMES)
            .copied()
            .collect::<Vec<_>>()
            .join(", ");
        if names.len() > MAX_NAMES {
            format!("{shown} and {} more", names.len() - MAX_NAMES)
        } else {
            shown
        }
    };
    let mut lines = Vec::new();
    let mut runtimes = Vec::new();
    for (path, p) in programs {
        let path = &printable(path);
        match p.import_table {
            ImportTable::None => {
                lines.push(format!(
                    "no import table (statically linked): its syscalls cannot be read ahead ({path})"
                ));
                continue;
            }
            ImportTable::Unreadable => continue,
            ImportTable::Dynamic => {}
        }
        if p.runtime.is_some() {
            runtimes.push(path.rsplit('/').next().unwrap_or(path).to_owned());
            continue;
        }
        let of = |s: InProfile| -> Vec<&str> {
            p.imported_only
                .keys()
                .map(String::as_str)
                .filter(|n| state(n) == s)
                .collect()
        };
        let denied = of(InProfile::Denied);
        if !denied.is_empty() {
            lines.push(format!(
                "imported, never called during recording: {} ({path})",
                list(&denied)
            ));
        }
        for (action, how) in [
            (IncludeAction::Log, "logged"),
            (IncludeAction::Allow, "allowed"),
        ] {
            let added = of(InProfile::Included(action));
            if !added.is_empty() {
                lines.push(format!(
                    "imported, never called during recording, {how} by --include-imported: {} ({path})",
                    list(&added)
                ));
            }
        }
    }
    if lines.len() > MAX_LINES {
        let more = lines.len() - (MAX_LINES - 1);
        lines.truncate(MAX_LINES - 1);
        lines.push(format!("{more} more programs: see coverage.json"));
    }
    if !runtimes.is_empty() {
        runtimes.sort();
        runtimes.dedup();
        lines.push(format!(
            "interpreters, whose imports say little about the script: {} (see coverage.json)",
            runtimes.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::image::ExecutableFile;

    fn image(entries: &[(&str, &[&str])]) -> ImageInfo {
        let mut image = ImageInfo::default();
        for (path, names) in entries {
            let mut objects = BTreeMap::new();
            objects.insert(
                path.to_string(),
                names.iter().map(|s| s.to_string()).collect(),
            );
            image.executable_files.insert(
                path.to_string(),
                ExecutableFile {
                    imports: Some(Imports {
                        table: ImportTable::Dynamic,
                        arch: Some(Arch::X86_64),
                        objects,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        image
    }

    #[test]
    fn the_summary_stays_short() {
        let paths: Vec<String> = (0..20).map(|i| format!("/usr/bin/tool{i:02}")).collect();
        let entries: Vec<(&str, &[&str])> =
            paths.iter().map(|p| (p.as_str(), &["kill"][..])).collect();
        let lines = summary_lines(&programs(&image(&entries), &BTreeMap::new()), &|_| {
            InProfile::Denied
        });
        assert_eq!(lines.len(), 8, "{lines:?}");
        assert!(lines[6].ends_with("(/usr/bin/tool06)"), "{lines:?}");
        assert_eq!(lines[7], "13 more programs: see coverage.json");
    }

    #[test]
    fn control_characters_in_paths_are_escaped() {
        let img = image(&[("/srv/a\n  imports:       fake\x1b[2K", &["kill"])]);
        let lines = summary_lines(&programs(&img, &BTreeMap::new()), &|_| InProfile::Denied);
        assert_eq!(lines.len(), 1);
        assert!(
            !lines[0].contains('\n') && !lines[0].contains('\x1b'),
            "{lines:?}"
        );
        assert!(
            lines[0].ends_with("(/srv/a\\n  imports:       fake\\u{1b}[2K)"),
            "{lines:?}"
        );
    }

    #[test]
    fn interpreters_by_name_and_by_share() {
        let i = Imports {
            arch: Some(Arch::X86_64),
            ..Default::default()
        };
        for p in [
            "/usr/bin/python3",
            "/usr/bin/python3.11",
            "/usr/bin/perl5.36.0",
            "/bin/sh",
        ] {
            assert!(runtime_reason(p, &i).is_some(), "{p}");
        }
        assert!(runtime_reason("/usr/sbin/nginx", &i).is_none());
        // 200 syscall names imported by the executable itself: a runtime whatever its name.
        let many: BTreeSet<String> = (0..400u32)
            .filter_map(|nr| Arch::X86_64.syscall_name(nr))
            .take(200)
            .collect();
        let i = Imports {
            arch: Some(Arch::X86_64),
            objects: BTreeMap::from([("/opt/vm".to_owned(), many)]),
            ..Default::default()
        };
        assert!(runtime_reason("/opt/vm", &i).is_some());
    }

    #[test]
    fn dangerous_ones_only_when_named_and_runtimes_only_when_asked_for() {
        let img = image(&[
            ("/srv/app", &["kill", "shutdown", "ptrace", "read"]),
            ("/usr/bin/python3", &["mkdir", "kill"]),
        ]);
        let seen = BTreeMap::from([(Arch::X86_64, BTreeSet::from(["read".to_owned()]))]);
        let progs = programs(&img, &seen);
        assert_eq!(
            progs["/srv/app"].imported_only.keys().collect::<Vec<_>>(),
            ["kill", "ptrace", "shutdown"]
        );
        let mut include = IncludeImported {
            action: Some(IncludeAction::Log),
            ..Default::default()
        };
        let none_allowed = |_: &str| false;
        let got = to_include(&progs, &include, &none_allowed);
        assert_eq!(
            got[&Arch::X86_64].keys().collect::<Vec<_>>(),
            ["kill", "shutdown"]
        );
        assert_eq!(
            got[&Arch::X86_64]["kill"],
            BTreeSet::from(["/srv/app".to_owned()])
        );
        include.dangerous_allowed = vec!["ptrace".into()];
        include.from = vec!["/usr/bin/python3".into()];
        let got = to_include(&progs, &include, &none_allowed);
        assert_eq!(
            got[&Arch::X86_64].keys().collect::<Vec<_>>(),
            ["kill", "mkdir"]
        );
        // Nothing without an action.
        include.action = None;
        assert!(to_include(&progs, &include, &none_allowed).is_empty());
        let lines = summary_lines(&progs, &|n| {
            if n == "ptrace" {
                InProfile::Otherwise
            } else {
                InProfile::Denied
            }
        });
        assert_eq!(
            lines,
            [
                "imported, never called during recording: kill, shutdown (/srv/app)",
                "interpreters, whose imports say little about the script: python3 (see coverage.json)"
            ]
        );
    }
}
