//! The image profile held in the kernel with Landlock (security/landlock/): what seccomp
//! cannot say, because it sees syscall numbers and not their objects.
//!
//! - **Execute** only the recorded programs, their ELF loaders (`PT_INTERP`, which the kernel
//!   opens for execution itself, fs/binfmt_elf.c) and the interpreters of recorded scripts
//!   (`#!`, fs/binfmt_script.c). A copy of an allowed program at another path, or a program
//!   downloaded at run time, cannot run.
//! - **Write, create, remove, rename, truncate** only beneath the writable directories (and
//!   a few device files: /dev/null, terminals, /dev/shm). Reads are left open.
//! - **TCP bind and connect** only to the recorded ports (Landlock ABI 4).
//! - **Scopes** (ABI 6): abstract unix sockets and signals stay inside the workload, unless
//!   the recording shows it crossing them.
//!
//! Landlock also checks what io_uring opens and creates, and writes to cgroupfs (a
//! workload cannot write its pid into another cgroup's `cgroup.procs`), so those two ways
//! around the recording close too. Rules the running kernel cannot enforce are dropped
//! (best effort) and the outcome says so.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use landlock::{
    ABI, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

use crate::profile::image_profile::ImageProfile;

/// The newest ABI this code knows what to ask of; older kernels get what they have.
const ABI_WANTED: ABI = ABI::V6;

/// What the ruleset will allow, from an image profile.
#[derive(Debug, Default)]
pub struct Plan {
    pub executables: BTreeSet<PathBuf>,
    pub writable: BTreeSet<PathBuf>,
    pub bind_ports: BTreeSet<u16>,
    pub connect_ports: BTreeSet<u16>,
    pub scope_abstract_unix: bool,
    pub scope_signals: bool,
    /// What the plan had to widen or leave out, and why.
    pub notes: Vec<String>,
}

/// The ELF interpreter (`PT_INTERP`) of an executable, if it is a dynamic ELF file.
fn elf_interpreter(data: &[u8]) -> Option<PathBuf> {
    use object::read::elf::{FileHeader as _, ProgramHeader as _};
    let header = object::elf::FileHeader64::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    for ph in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            let s = std::str::from_utf8(interp).ok()?;
            return Some(PathBuf::from(s.trim_end_matches('\0')));
        }
    }
    // 32-bit executables name theirs the same way.
    let header = object::elf::FileHeader32::<object::Endianness>::parse(data).ok()?;
    let endian = header.endian().ok()?;
    for ph in header.program_headers(endian, data).ok()? {
        if let Ok(Some(interp)) = ph.interpreter(endian, data) {
            let s = std::str::from_utf8(interp).ok()?;
            return Some(PathBuf::from(s.trim_end_matches('\0')));
        }
    }
    None
}

/// The interpreter of a `#!` script.
fn script_interpreter(data: &[u8]) -> Option<PathBuf> {
    let rest = data.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    line.split_whitespace().next().map(PathBuf::from)
}

/// The program and what the kernel itself opens to run it (loader, script interpreter),
/// followed a few levels deep.
fn with_what_it_needs(program: &Path, out: &mut BTreeSet<PathBuf>) {
    let mut pending = vec![program.to_path_buf()];
    for _ in 0..4 {
        let Some(p) = pending.pop() else { break };
        if !out.insert(p.clone()) {
            continue;
        }
        // The first bytes are enough for a shebang and for the ELF program headers of any
        // ordinary executable.
        let Ok(data) = read_head(&p, 64 * 1024) else {
            continue;
        };
        if let Some(i) = elf_interpreter(&data).or_else(|| script_interpreter(&data)) {
            pending.push(i);
        }
    }
}

fn read_head(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut f = std::fs::File::open(path)?;
    let mut buf = vec![0u8; limit];
    let mut n = 0;
    while n < limit {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    buf.truncate(n);
    Ok(buf)
}

/// Whether the file at `path` is not the one the recording saw executed there (a binary
/// replaced or downloaded since): identity first (device, inode, size, mtime), the content
/// hash when any of them differs. Says why, or None when it is the same file or the
/// recording has no identity for it (older profiles).
fn drift(profile: &ImageProfile, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    let canonical = std::fs::canonicalize(path).ok()?;
    let recorded = profile
        .executable_files
        .get(&canonical.display().to_string())?;
    let meta = std::fs::metadata(&canonical).ok()?;
    if (meta.dev(), meta.ino(), meta.len(), meta.mtime())
        == (recorded.dev, recorded.inode, recorded.size, recorded.mtime)
    {
        return None;
    }
    let now = std::fs::read(&canonical)
        .map(|d| crate::recording::live_facts::sha256_hex(&d))
        .ok()?;
    (now != recorded.sha256).then(|| {
        format!(
            "{} changed since the recording (sha256 {} then, {} now): not executable",
            path.display(),
            &recorded.sha256[..12],
            &now[..12]
        )
    })
}

/// The port of a recorded address (`AF_INET 127.0.0.1:8080`, `AF_INET6 [::1]:80`).
fn port_of(address: &str) -> Option<u16> {
    let rest = address
        .strip_prefix("AF_INET ")
        .or_else(|| address.strip_prefix("AF_INET6 "))?;
    rest.rsplit(':').next()?.parse().ok().filter(|p| *p != 0)
}

/// Device files nearly every program writes (or ioctls, for terminals); the rest of /dev
/// (disks above all) stays out of reach.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/pts",
    "/dev/shm",
    "/dev/ptmx",
];

/// Whether `path` is absolute and in normal form (no `.`, `..`, empty components): the
/// profile's paths came from a recording a hostile workload may have shaped.
fn normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
        || path == "/"
}

/// Whether the way to `path` goes through a symbolic link inside one of the `writable`
/// directories: the workload could have planted it there (a recorded tool replaced by a link
/// to `/`, a data folder by a link to `/etc`), so it must not decide what a rule covers.
/// System links outside them (`/bin -> usr/bin`, `/var/run -> /run`) are fine.
fn through_planted_link(path: &Path, writable: &BTreeSet<PathBuf>) -> bool {
    let mut prefix = PathBuf::from("/");
    for c in path.components().skip(1) {
        prefix.push(c);
        let is_link = std::fs::symlink_metadata(&prefix)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && writable.iter().any(|w| prefix.starts_with(w)) {
            return true;
        }
    }
    false
}

/// The plan for an image profile: what exists on this machine now, what had to be left out.
pub fn plan(profile: &ImageProfile) -> Plan {
    let mut p = Plan::default();
    let recorded_writable: BTreeSet<PathBuf> = profile
        .writable_directories
        .iter()
        .filter(|d| normal(d))
        .map(PathBuf::from)
        .collect();
    for exe in profile.executables.keys() {
        let path = Path::new(exe);
        if !normal(exe) || !path.exists() {
            p.notes.push(format!(
                "recorded program {exe:?} is not here: not executable"
            ));
            continue;
        }
        if through_planted_link(path, &recorded_writable) {
            p.notes.push(format!(
                "{exe} is reached through a symbolic link inside a writable directory: not executable"
            ));
            continue;
        }
        if let Some(why) = drift(profile, path) {
            p.notes.push(why);
            continue;
        }
        with_what_it_needs(path, &mut p.executables);
    }
    // Execute rules only on regular files (a link or `#!` naming a folder would open all of
    // it).
    p.executables
        .retain(|e| std::fs::metadata(e).map(|m| m.is_file()).unwrap_or(false));
    for dir in &profile.writable_directories {
        if !normal(dir) || dir == "/" {
            p.notes.push(format!(
                "writable directory {dir:?} refused: not a normal absolute path below /"
            ));
            continue;
        }
        let path = PathBuf::from(dir);
        if through_planted_link(&path, &recorded_writable) {
            p.notes.push(format!(
                "{dir} is reached through a symbolic link inside a writable directory: not writable"
            ));
            continue;
        }
        if path.is_dir() {
            p.writable.insert(path);
            continue;
        }
        // A directory the workload makes itself: its parent must allow making it (and so
        // everything beneath); never more than one level up, and never /.
        match path.parent().filter(|a| a.is_dir() && *a != Path::new("/")) {
            Some(parent) => {
                p.notes.push(format!(
                    "{dir} does not exist yet (the workload makes it): writes allowed beneath {} instead",
                    parent.display()
                ));
                p.writable.insert(parent.to_path_buf());
            }
            None => p.notes.push(format!(
                "{dir} does not exist, nor its parent: not writable"
            )),
        }
    }
    for d in DEVICES {
        if Path::new(d).exists() {
            p.writable.insert(PathBuf::from(d));
        }
    }
    // The workload's own /proc entries it wrote (oom_score_adj, its fds), never through
    // /proc/self/root or another magic link.
    for path in profile.written_paths.keys() {
        if let Some(rest) = path.strip_prefix("/proc/self/") {
            let parent = match rest.split_once('/') {
                None => Some("/proc/self"),
                Some(("fd", _)) => Some("/proc/self/fd"),
                _ => None,
            };
            if let Some(parent) = parent {
                p.writable.insert(PathBuf::from(parent));
            }
        }
    }
    p.bind_ports = profile.network.bound_ports.clone();
    p.connect_ports = profile
        .network
        .connected
        .iter()
        .filter_map(|a| port_of(a))
        .collect();
    let unix_abstract = profile
        .network
        .bound
        .iter()
        .chain(profile.network.connected.iter())
        .any(|a| a.starts_with("AF_UNIX @"));
    p.scope_abstract_unix = !unix_abstract;
    if unix_abstract {
        p.notes
            .push("abstract unix sockets not scoped: the workload used one".into());
    }
    let signals = profile.syscalls.values().flatten().any(|n| {
        matches!(
            n.as_str(),
            "kill"
                | "tkill"
                | "tgkill"
                | "rt_sigqueueinfo"
                | "rt_tgsigqueueinfo"
                | "pidfd_send_signal"
        )
    });
    p.scope_signals = !signals;
    if signals {
        p.notes.push(
            "signals not scoped: the workload sends signals and the recording does not say to whom"
                .into(),
        );
    }
    p
}

/// What the kernel enforced.
#[derive(Debug)]
pub struct Outcome {
    pub status: String,
    pub abi: i32,
}

/// Restricts the current process (and what it execs) to `plan`.
pub fn apply(plan: &Plan) -> anyhow::Result<Outcome> {
    let abi = ABI_WANTED;
    let fs_handled = AccessFs::from_write(abi) | AccessFs::Execute;
    let net_handled = AccessNet::BindTcp | AccessNet::ConnectTcp;
    let mut scopes = landlock::BitFlags::<Scope>::empty();
    if plan.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    if plan.scope_signals {
        scopes |= Scope::Signal;
    }
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(fs_handled)?
        .handle_access(net_handled)?;
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create().context("creating the Landlock ruleset")?;
    for exe in &plan.executables {
        if let Ok(fd) = PathFd::new(exe) {
            created = created.add_rule(PathBeneath::new(fd, AccessFs::Execute))?;
        }
    }
    for dir in &plan.writable {
        if let Ok(fd) = PathFd::new(dir) {
            created = created.add_rule(PathBeneath::new(fd, AccessFs::from_write(abi)))?;
        }
    }
    for port in &plan.bind_ports {
        created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
    }
    for port in &plan.connect_ports {
        created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
    }
    let status = created
        .restrict_self()
        .context("applying the Landlock ruleset")?;
    let kernel_abi = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    } as i32;
    Ok(Outcome {
        status: match status.ruleset {
            RulesetStatus::FullyEnforced => "fully enforced".into(),
            RulesetStatus::PartiallyEnforced => {
                "partly enforced (this kernel lacks some of the rules)".into()
            }
            RulesetStatus::NotEnforced => "NOT enforced (no Landlock on this kernel)".into(),
        },
        abi: kernel_abi,
    })
}

impl Plan {
    /// One line per kind of rule, for the user.
    pub fn describe(&self, outcome: &Outcome) -> String {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut out = format!(
            "profiler: landlock (kernel ABI {}, {}):\n  execute:       {} program(s) and their loaders\n  write beneath: {}\n  tcp bind:      {}\n  tcp connect:   {}\n  scoped:        {}\n",
            outcome.abi,
            outcome.status,
            self.executables.len(),
            list(
                self.writable
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect()
            ),
            list(self.bind_ports.iter().map(u16::to_string).collect()),
            list(self.connect_ports.iter().map(u16::to_string).collect()),
            list(
                [
                    self.scope_abstract_unix
                        .then(|| "abstract unix sockets".to_owned()),
                    self.scope_signals.then(|| "signals".to_owned()),
                ]
                .into_iter()
                .flatten()
                .collect()
            ),
        );
        for n in &self.notes {
            out.push_str(&format!("  note:          {n}\n"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_kernel_opens_to_run_a_program_is_found() {
        let mut out = BTreeSet::new();
        with_what_it_needs(Path::new("/bin/sh"), &mut out);
        // A dynamic executable names its loader (glibc's ld-linux on Debian).
        assert!(
            out.iter().any(|p| p.to_string_lossy().contains("ld-linux")),
            "{out:?}"
        );
        assert_eq!(
            script_interpreter(b"#!/usr/bin/python3 -u\nprint(1)\n"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert_eq!(port_of("AF_INET 127.0.0.1:8080"), Some(8080));
        assert_eq!(port_of("AF_INET6 [::1]:443"), Some(443));
        assert_eq!(port_of("AF_UNIX /run/x.sock"), None);
    }
}
