//! seccomp profiles in the Docker/Podman JSON format (moby's `types.Seccomp`, which podman
//! and containers/common read too), generated from what was recorded. `confine::seccomp_filter`
//! compiles them with libseccomp.
//!
//! In this format a name in `syscalls[].names` applies to every listed architecture; a name
//! that an architecture lacks is skipped for it (libseccomp resolves names per arch), as moby
//! and runc do.
use std::collections::BTreeSet;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::profile::policy::Observed;

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
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<SeccompArg>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
}

/// What a denied syscall does (`defaultAction`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DefaultAction {
    /// Fail with EPERM (what Docker's own profile does): the program sees
    /// "Operation not permitted" and can report it.
    #[default]
    Errno,
    /// Kill the process (SCMP_ACT_KILL_PROCESS): loudest, nothing runs on past a violation.
    Kill,
    /// Allow but log to the audit log (SCMP_ACT_LOG): a soft first rollout.
    Log,
}

/// How to turn observations into a profile.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    /// Emit argument rules for socket families, clone/unshare namespace flags, personality
    /// and prctl options (and deny clone3 with ENOSYS), like Docker's default profile does.
    pub argument_rules: bool,
    pub default_action: DefaultAction,
    /// Architectures to list besides the ones seen.
    pub extra_arches: Vec<Arch>,
    /// Resource limits are the recorded peaks times this (see `image_profile::limits`).
    pub limit_headroom: f64,
    /// The workload's name in the Kubernetes outputs (default: the container's name, else
    /// the output folder's).
    pub name: Option<String>,
    /// Allow io_uring when the recording used it (refused by default: see [`IO_URING`]).
    pub allow_io_uring: bool,
    /// Follow symbolic links owned by other users on the way to the output folder (refused
    /// by default: see `out_dir`).
    pub follow_symlinks: bool,
    /// Add the syscalls the programs import but the recording never saw (see `imported`).
    pub include_imported: crate::profile::imported::IncludeImported,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            argument_rules: true,
            default_action: DefaultAction::Errno,
            extra_arches: Vec::new(),
            limit_headroom: crate::profile::image_profile::DEFAULT_HEADROOM,
            name: None,
            follow_symlinks: false,
            allow_io_uring: false,
            include_imported: Default::default(),
        }
    }
}

/// Syscalls every profile allows, whether or not the recording saw them, and why:
/// - `exit`, `exit_group`: a process that was killed during the recording never called them,
///   the next run will;
/// - `rt_sigreturn`, `sigreturn` (i386): only called when a signal handler returns, which a
///   recording may not have hit;
/// - `restart_syscall`: the kernel restarts an interrupted sleep through it after a signal;
/// - `clock_gettime`, `clock_gettime64`, `gettimeofday`, `time`, `getcpu`, `clock_getres`:
///   served by the vDSO without entering the kernel, so never recorded, but libc falls back to
///   the real syscall when the vDSO cannot answer (e.g. a clocksource without vDSO support,
///   common on VMs);
/// - `futex`, `sched_yield`, `rt_sigsuspend`, `sigsuspend` (i386), `pause`: waiting primitives
///   a program reaches or not depending on timing, not on what it does: glibc takes a futex
///   only when a lock is contended, a shell's `wait` suspends only when its child has not
///   exited yet (seen: busybox sh spinning forever on a failing rt_sigsuspend under a profile
///   recorded when the child was always faster). None of them grants anything.
pub const ALWAYS_ALLOWED: &[&str] = &[
    "futex",
    "sched_yield",
    "rt_sigsuspend",
    "sigsuspend",
    "pause",
    "exit",
    "exit_group",
    "rt_sigreturn",
    "sigreturn",
    "restart_syscall",
    "clock_gettime",
    "clock_gettime64",
    "gettimeofday",
    "time",
    "getcpu",
    "clock_getres",
];

/// Newer syscalls that libc tries first and falls back from on ENOSYS, with their older
/// siblings. A profile recorded where libc used an older sibling denies the newer one with
/// ENOSYS (never EPERM, which libc reports as a failure), so a newer libc on the same image
/// falls back instead of breaking.
pub const NEWER_SIBLINGS: &[(&str, &[&str])] = &[
    ("openat2", &["openat", "open"]),
    (
        "statx",
        &[
            "newfstatat",
            "fstat",
            "stat",
            "lstat",
            "fstatat64",
            "fstat64",
            "stat64",
            "lstat64",
        ],
    ),
    ("clone3", &["clone", "fork", "vfork"]),
    ("faccessat2", &["faccessat", "access"]),
    ("fchmodat2", &["fchmodat", "chmod"]),
    ("epoll_pwait2", &["epoll_pwait", "epoll_wait"]),
    ("close_range", &["close"]),
    ("copy_file_range", &["sendfile", "sendfile64", "splice"]),
    ("preadv2", &["preadv"]),
    ("pwritev2", &["pwritev"]),
    ("rseq", &["set_robust_list"]),
    ("futex_waitv", &["futex"]),
];

/// io_uring's syscalls. io_uring is a syscall multiplexer that seccomp cannot see into: a
/// ring set up for one NOP can then open, create, connect and remove through operations that
/// never enter the matching syscalls (io_uring/opdef.c), so a profile allowing io_uring
/// allows far more than was recorded. Generated profiles refuse it unless asked
/// (`--allow-io-uring`); Docker's default profile refuses it too (moby#46762).
pub const IO_URING: &[&str] = &["io_uring_setup", "io_uring_enter", "io_uring_register"];

/// ENOSYS, the errno of a syscall the kernel does not have.
pub const ENOSYS: u32 = 38;

/// CLONE_NEWTIME | CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
/// | CLONE_NEWPID | CLONE_NEWNET (include/uapi/linux/sched.h): the flags that create
/// namespaces. Docker's default profile masks the same bits (without CLONE_NEWTIME).
pub const CLONE_NAMESPACE_FLAGS: u64 = 0x0000_0080
    | 0x0002_0000
    | 0x0200_0000
    | 0x0400_0000
    | 0x0800_0000
    | 0x1000_0000
    | 0x2000_0000
    | 0x4000_0000;

fn arg_eq(value: u64) -> SeccompArg {
    SeccompArg {
        index: 0,
        value,
        value_two: 0,
        op: "SCMP_CMP_EQ".into(),
    }
}

fn rule(
    names: &[&str],
    action: &str,
    errno: Option<u32>,
    args: Vec<SeccompArg>,
    comment: &str,
) -> SyscallRule {
    SyscallRule {
        names: names.iter().map(|s| s.to_string()).collect(),
        action: action.to_owned(),
        errno_ret: errno,
        args,
        comment: Some(comment.to_owned()),
    }
}

/// Where `name` stands in `profile` (the first rule naming it decides, as in libseccomp's
/// view of a Docker profile, which has one action per syscall and argument set).
pub fn in_profile(profile: &DockerSeccomp, name: &str) -> crate::profile::imported::InProfile {
    use crate::profile::imported::{COMMENT_PREFIX, InProfile};
    let Some(rule) = profile
        .syscalls
        .iter()
        .find(|r| r.names.iter().any(|n| n == name))
    else {
        return InProfile::Denied;
    };
    if rule
        .comment
        .as_deref()
        .is_some_and(|c| c.starts_with(COMMENT_PREFIX))
    {
        return InProfile::Included(if rule.action == "SCMP_ACT_LOG" {
            crate::profile::imported::IncludeAction::Log
        } else {
            crate::profile::imported::IncludeAction::Allow
        });
    }
    InProfile::Otherwise
}

/// Lets the sealing entrypoint run under `profile`: the syscalls it makes before it
/// executes the container's own entrypoint, where the profile does not allow them yet
/// (`prctl` only for `PR_SET_NO_NEW_PRIVS`, which only takes privileges away).
pub fn allow_sealing(profile: &mut DockerSeccomp) {
    let unconditional = |p: &DockerSeccomp, n: &str| {
        p.syscalls.iter().any(|r| {
            r.action == "SCMP_ACT_ALLOW" && r.args.is_empty() && r.names.iter().any(|x| x == n)
        })
    };
    let mut missing: Vec<&str> = Vec::new();
    for n in profiler_seal::SYSCALLS {
        if unconditional(profile, n) {
            continue;
        }
        if *n == "prctl" {
            profile.syscalls.push(rule(
                &["prctl"],
                "SCMP_ACT_ALLOW",
                None,
                vec![arg_eq(libc::PR_SET_NO_NEW_PRIVS as u64)],
                "PR_SET_NO_NEW_PRIVS, for profiler-seal (the sealing entrypoint)",
            ));
        } else {
            missing.push(n);
        }
    }
    if !missing.is_empty() {
        profile.syscalls.push(rule(
            &missing,
            "SCMP_ACT_ALLOW",
            None,
            vec![],
            "made by profiler-seal, the sealing entrypoint (landlock.json), before it runs the workload",
        ));
    }
}

/// An argument comparison (`syscalls[].args[]`), the same shape in Docker's and the OCI
/// format.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SeccompArg {
    pub index: u32,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
    pub op: String,
}

/// The allow-list profile for what was observed.
pub fn docker_profile(observed: &Observed, options: &GenerateOptions) -> DockerSeccomp {
    let mut arches: BTreeSet<Arch> = observed.syscalls.keys().copied().collect();
    arches.extend(options.extra_arches.iter().copied());
    if arches.is_empty() {
        arches.insert(Arch::X86_64);
    }
    let architectures = arches.iter().map(|a| a.seccomp_name().to_owned()).collect();
    let seen: BTreeSet<String> = observed.syscalls.values().flatten().cloned().collect();
    let mut names: BTreeSet<String> = seen.clone();
    names.extend(ALWAYS_ALLOWED.iter().map(|s| s.to_string()));
    let mut rules = Vec::new();
    let args = &observed.arguments;
    if !options.allow_io_uring && IO_URING.iter().any(|n| names.contains(*n)) {
        for n in IO_URING {
            names.remove(*n);
        }
        rules.push(rule(
            IO_URING,
            "SCMP_ACT_ERRNO",
            Some(DEFAULT_ERRNO),
            vec![],
            "recorded, but refused: seccomp cannot see the operations io_uring carries (profiler --allow-io-uring allows it)",
        ));
    }

    if options.argument_rules {
        // i386's socketcall(2) carries the real arguments in memory, where seccomp cannot
        // look: a socket family rule would not hold for it, so i386 keeps plain socket rules.
        let families_filterable = !arches.contains(&Arch::I386);
        for (name, families) in [
            ("socket", &args.socket_families),
            ("socketpair", &args.socketpair_families),
        ] {
            if names.contains(name) && families_filterable && !families.is_empty() {
                names.remove(name);
                for f in families {
                    rules.push(rule(
                        &[name],
                        "SCMP_ACT_ALLOW",
                        None,
                        vec![arg_eq(*f as u64)],
                        &family_comment(*f),
                    ));
                }
            }
        }
        // clone3 is answered with ENOSYS below, so a recorded clone3 needs its fallback:
        // glibc's pthread_create and posix_spawn try clone3 first and fall back to clone
        // only on ENOSYS (sysdeps/unix/sysv/linux/clone-internal.c). The kernel side counts
        // clone3's flags (read from its struct clone_args) as clone's, so the fallback gets
        // the same namespace rule. Without this, a program that only ever made threads dies
        // at its first pthread_create ("can't start new thread").
        let clone3_recorded = names.contains("clone3");
        for (name, flags, needed) in [
            ("clone", args.clone_flags, clone3_recorded),
            ("unshare", args.unshare_flags, false),
        ] {
            if names.remove(name) || needed {
                let allowed_ns = flags.unwrap_or(0) & CLONE_NAMESPACE_FLAGS;
                let mask = CLONE_NAMESPACE_FLAGS & !allowed_ns;
                rules.push(rule(
                    &[name],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![SeccompArg { index: 0, value: mask, value_two: 0, op: "SCMP_CMP_MASKED_EQ".into() }],
                    &format!("{name} without namespace flags other than {allowed_ns:#x} (seen while recording)"),
                ));
            }
        }
        // clone3 passes its flags in memory: it cannot be filtered by argument. Like
        // Docker's profile, answer ENOSYS so libc falls back to clone, which is filtered;
        // only where clone is allowed, so the ENOSYS always leaves a working fallback (a
        // profile that allows neither denies both, like any unrecorded call).
        names.remove("clone3");
        let clone_allowed = rules.iter().any(|r| r.names.iter().any(|n| n == "clone"));
        if clone_allowed {
            rules.push(rule(
                &["clone3"],
                "SCMP_ACT_ERRNO",
                Some(ENOSYS),
                vec![],
                "ENOSYS: libc falls back to the filtered clone",
            ));
        }
        if names.contains("personality") && !args.personality_other && !args.personality.is_empty()
        {
            names.remove("personality");
            for v in &args.personality {
                rules.push(rule(
                    &["personality"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![arg_eq(*v)],
                    "personality value seen",
                ));
            }
        }
        if names.contains("prctl") && !args.prctl_other && !args.prctl_options.is_empty() {
            names.remove("prctl");
            for o in &args.prctl_options {
                rules.push(rule(
                    &["prctl"],
                    "SCMP_ACT_ALLOW",
                    None,
                    vec![arg_eq(*o as u64)],
                    "prctl option seen",
                ));
            }
        }
    }
    // i386 socketcall/ipc multiplexers: allow the calls seen by their own names; libseccomp
    // (x86) filters the multiplexer on its call-number argument for each of them.
    if arches.contains(&Arch::I386) {
        for call in &args.socketcall_calls {
            if let Some(n) = SOCKETCALL_NAMES
                .get(*call as usize)
                .filter(|n| !n.is_empty())
            {
                names.insert(n.to_string());
            }
        }
        for call in &args.ipc_calls {
            if let Some((_, n)) = IPC_NAMES.iter().find(|(c, _)| c == call) {
                names.insert(n.to_string());
            }
        }
        if !args.socketcall_calls.is_empty() {
            names.remove("socketcall");
        }
        if !args.ipc_calls.is_empty() {
            names.remove("ipc");
        }
    }
    // What the programs import but the recording never saw, when asked for: before the
    // newer-sibling answers, so an added `stat` gets its `statx` fallback like a seen one.
    add_imported(observed, options, &names, &mut rules);
    for (newer, olders) in NEWER_SIBLINGS {
        if !names.contains(*newer)
            && !rules.iter().any(|r| r.names.iter().any(|n| n == newer))
            && olders
                .iter()
                .any(|o| names.contains(*o) || rules.iter().any(|r| r.names.iter().any(|n| n == o)))
        {
            rules.push(rule(
                &[newer],
                "SCMP_ACT_ERRNO",
                Some(ENOSYS),
                vec![],
                "newer sibling of a recorded syscall: ENOSYS so libc falls back",
            ));
        }
    }
    let mut syscalls = vec![SyscallRule {
        names: names.into_iter().collect(),
        action: "SCMP_ACT_ALLOW".to_owned(),
        errno_ret: None,
        args: vec![],
        comment: None,
    }];
    syscalls.extend(rules);
    let (default_action, default_errno_ret) = match options.default_action {
        DefaultAction::Errno => ("SCMP_ACT_ERRNO", Some(DEFAULT_ERRNO)),
        DefaultAction::Kill => ("SCMP_ACT_KILL_PROCESS", None),
        DefaultAction::Log => ("SCMP_ACT_LOG", None),
    };
    DockerSeccomp {
        default_action: default_action.to_owned(),
        default_errno_ret,
        architectures,
        syscalls,
    }
}

/// The rules `--include-imported` adds: one per set of executables importing the same
/// syscalls, named in its comment ("imported by /usr/sbin/nginx"). A syscall the profile
/// already has a rule for stays as it is; an unseen `clone` keeps the rule a seen one gets
/// (no namespace flags).
fn add_imported(
    observed: &Observed,
    options: &GenerateOptions,
    names: &BTreeSet<String>,
    rules: &mut Vec<SyscallRule>,
) {
    let Some(action) = options.include_imported.action else {
        return;
    };
    let ruled = |n: &str| names.contains(n) || rules.iter().any(|r| r.names.iter().any(|m| m == n));
    let include =
        crate::profile::imported::to_include(&observed.programs, &options.include_imported, &ruled);
    let mut by_importers: std::collections::BTreeMap<BTreeSet<String>, BTreeSet<String>> =
        Default::default();
    for (name, exes) in include.into_values().flatten() {
        by_importers.entry(exes).or_default().insert(name);
    }
    let mut added: BTreeSet<String> = BTreeSet::new();
    for (exes, syscalls) in by_importers {
        let comment = format!(
            "{}{}",
            crate::profile::imported::COMMENT_PREFIX,
            exes.into_iter().collect::<Vec<_>>().join(", ")
        );
        // A name imported on two architectures by different programs goes in once.
        let syscalls: Vec<String> = syscalls
            .into_iter()
            .filter(|n| added.insert(n.clone()))
            .collect();
        let (clone, plain): (Vec<String>, Vec<String>) = syscalls
            .into_iter()
            .partition(|n| n == "clone" && options.argument_rules);
        if !plain.is_empty() {
            let plain: Vec<&str> = plain.iter().map(String::as_str).collect();
            rules.push(rule(
                &plain,
                action.seccomp_action(),
                None,
                vec![],
                &comment,
            ));
        }
        if !clone.is_empty() {
            rules.push(rule(
                &["clone"],
                action.seccomp_action(),
                None,
                vec![SeccompArg {
                    index: 0,
                    value: CLONE_NAMESPACE_FLAGS,
                    value_two: 0,
                    op: "SCMP_CMP_MASKED_EQ".into(),
                }],
                &format!("{comment}; without namespace flags"),
            ));
        }
    }
}

fn family_comment(family: u32) -> String {
    let name = nix::sys::socket::AddressFamily::from_i32(family as i32)
        .map(|f| format!("{f:?}"))
        .unwrap_or_else(|| family.to_string());
    format!("address family {name} ({family}) seen while recording")
}

/// i386 socketcall(2) call numbers (include/uapi/linux/net.h, SYS_SOCKET = 1 ...), by the
/// names of the direct syscalls libseccomp knows them by.
pub const SOCKETCALL_NAMES: &[&str] = &[
    "",
    "socket",
    "bind",
    "connect",
    "listen",
    "accept",
    "getsockname",
    "getpeername",
    "socketpair",
    "send",
    "recv",
    "sendto",
    "recvfrom",
    "shutdown",
    "setsockopt",
    "getsockopt",
    "sendmsg",
    "recvmsg",
    "accept4",
    "recvmmsg",
    "sendmmsg",
];

/// i386 ipc(2) call numbers (include/uapi/linux/ipc.h) and the direct syscalls' names.
pub const IPC_NAMES: &[(u32, &str)] = &[
    (1, "semop"),
    (2, "semget"),
    (3, "semctl"),
    (4, "semtimedop"),
    (11, "msgsnd"),
    (12, "msgrcv"),
    (13, "msgget"),
    (14, "msgctl"),
    (21, "shmat"),
    (22, "shmdt"),
    (23, "shmget"),
    (24, "shmctl"),
];

impl DockerSeccomp {
    pub fn load(path: &Path) -> anyhow::Result<DockerSeccomp> {
        crate::profile::read_json(path, "seccomp profile")
    }

    /// Whether some rule (or the default action) can let `name` run.
    pub fn may_allow(&self, name: &str) -> bool {
        let permits = |a: &str| matches!(a, "SCMP_ACT_ALLOW" | "SCMP_ACT_LOG");
        match self
            .syscalls
            .iter()
            .find(|r| r.names.iter().any(|n| n == name))
        {
            Some(_) => self
                .syscalls
                .iter()
                .any(|r| permits(&r.action) && r.names.iter().any(|n| n == name)),
            None => permits(&self.default_action),
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).expect("serialises");
        v.push(b'\n');
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observed(names: &[&str]) -> Observed {
        let mut o = Observed::default();
        o.syscalls
            .insert(Arch::X86_64, names.iter().map(|s| s.to_string()).collect());
        o
    }

    fn allowed(p: &DockerSeccomp, name: &str) -> bool {
        p.syscalls
            .iter()
            .any(|r| r.action == "SCMP_ACT_ALLOW" && r.names.iter().any(|n| n == name))
    }

    /// Every ENOSYS answer must leave libc a working fallback in the same profile: for each
    /// newer syscall recorded alone (what a program on a new libc makes), and each older one
    /// recorded alone, with and without argument rules.
    #[test]
    fn every_enosys_answer_leaves_an_allowed_fallback() {
        let mut cases: Vec<Vec<&str>> = Vec::new();
        for (newer, olders) in NEWER_SIBLINGS {
            cases.push(vec![newer]);
            for o in *olders {
                cases.push(vec![o]);
            }
        }
        for case in cases {
            for argument_rules in [true, false] {
                let options = GenerateOptions {
                    argument_rules,
                    ..Default::default()
                };
                let p = docker_profile(&observed(&case), &options);
                for r in p.syscalls.iter().filter(|r| r.errno_ret == Some(ENOSYS)) {
                    for newer in &r.names {
                        let (_, olders) = NEWER_SIBLINGS
                            .iter()
                            .find(|(n, _)| n == newer)
                            .expect("ENOSYS only for known newer siblings");
                        assert!(
                            olders.iter().any(|o| allowed(&p, o)),
                            "recorded {case:?} (argument rules {argument_rules}): {newer} gets ENOSYS \
                             but none of {olders:?} is allowed"
                        );
                    }
                }
            }
        }
    }

    /// `--include-imported allow`: one rule per set of importers, with its reason; an
    /// imported clone keeps the namespace rule, a dangerous import stays out, a recorded
    /// syscall keeps its own rule, and an imported newer sibling is allowed, not ENOSYS.
    #[test]
    fn imported_syscalls_get_their_own_rules() {
        use crate::profile::imported::{IncludeAction, IncludeImported, programs};
        use crate::trace::image::{ExecutableFile, ImageInfo, ImportTable, Imports};
        let mut o = observed(&["read", "stat"]);
        let mut image = ImageInfo::default();
        for (exe, names) in [
            (
                "/srv/app",
                &["read", "kill", "clone", "statx", "io_uring_setup"][..],
            ),
            ("/srv/other", &["kill", "shutdown"][..]),
        ] {
            image.executable_files.insert(
                exe.into(),
                ExecutableFile {
                    imports: Some(Imports {
                        table: ImportTable::Dynamic,
                        arch: Some(Arch::X86_64),
                        objects: [(
                            exe.to_owned(),
                            names.iter().map(|n| n.to_string()).collect(),
                        )]
                        .into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            );
        }
        o.programs = programs(&image, &o.syscalls);
        let options = GenerateOptions {
            include_imported: IncludeImported {
                action: Some(IncludeAction::Allow),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = docker_profile(&o, &options);
        let by = |comment: &str| -> Vec<&SyscallRule> {
            p.syscalls
                .iter()
                .filter(|r| r.comment.as_deref() == Some(comment))
                .collect()
        };
        let app = by("imported by /srv/app");
        assert_eq!(app.len(), 1, "{p:#?}");
        assert_eq!(app[0].names, ["statx"]);
        let clone = by("imported by /srv/app; without namespace flags");
        assert_eq!(clone[0].args[0].value, CLONE_NAMESPACE_FLAGS);
        let both = by("imported by /srv/app, /srv/other");
        assert_eq!(both[0].names, ["kill"]);
        assert_eq!(by("imported by /srv/other")[0].names, ["shutdown"]);
        assert!(
            !p.syscalls
                .iter()
                .any(|r| r.names.iter().any(|n| n == "io_uring_setup"))
        );
        // read was recorded: in the one allow rule, nowhere else.
        assert_eq!(
            p.syscalls
                .iter()
                .filter(|r| r.names.iter().any(|n| n == "read"))
                .count(),
            1
        );
        // Without the option, nothing of it.
        let plain = docker_profile(&o, &GenerateOptions::default());
        assert!(!plain.syscalls.iter().any(|r| {
            r.comment
                .as_deref()
                .is_some_and(|c| c.starts_with("imported"))
        }));
        assert!(!allowed(&plain, "kill"));
    }

    /// A program that only made threads recorded clone3: clone3 gets ENOSYS (its flags are
    /// in memory), so clone must be allowed, under the same namespace rule.
    #[test]
    fn recorded_clone3_allows_clone_without_namespace_flags() {
        let mut o = observed(&["clone3", "futex"]);
        // CLONE_VM|CLONE_FS|CLONE_FILES|CLONE_SIGHAND|CLONE_THREAD|... as pthread_create sets.
        o.arguments.clone_flags = Some(0x3d0f00);
        let p = docker_profile(&o, &GenerateOptions::default());
        let clone: Vec<&SyscallRule> = p.syscalls.iter().filter(|r| r.names == ["clone"]).collect();
        assert_eq!(clone.len(), 1, "{p:?}");
        assert_eq!(clone[0].action, "SCMP_ACT_ALLOW");
        assert_eq!(clone[0].args[0].op, "SCMP_CMP_MASKED_EQ");
        assert_eq!(clone[0].args[0].value, CLONE_NAMESPACE_FLAGS);
        assert!(
            p.syscalls
                .iter()
                .any(|r| r.names == ["clone3"] && r.errno_ret == Some(ENOSYS))
        );
    }
}
