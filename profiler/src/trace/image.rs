//! The image profile: what a workload *is* (executables, written paths, network endpoints,
//! users, resources), built from the kernel's rare events (see `profiler_common::Event`).
//!
//! Paths arrive as the workload passed them. Relative ones are resolved against the
//! process's working directory, which is tracked from the same event stream: the recording's
//! start directory (or `/` in a container), inherited at fork, changed by chdir. `..` and `.`
//! are resolved lexically; a path relative to a directory fd other than AT_FDCWD, or after
//! fchdir, cannot be resolved from the stream and is kept apart, marked unresolved.
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Component, Path, PathBuf};

use profiler_common::{
    EVENT_BIND, EVENT_CHDIR, EVENT_CONNECT, EVENT_EXEC_ATTEMPT, EVENT_EXEC_OK, EVENT_FCHDIR,
    EVENT_FORK, EVENT_LISTEN, EVENT_SETID, EVENT_SOCKET, EVENT_WRITE, Event,
};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::trace::Phase;

const AT_FDCWD: i64 = -100;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageInfo {
    /// Programs executed successfully, absolute paths, with the argv[0]s seen.
    pub executables: BTreeMap<String, BTreeSet<String>>,
    /// Exec attempts that failed (e.g. PATH search misses), kept apart.
    pub failed_executables: BTreeSet<String>,
    /// Every path written, created, removed or renamed, with the operations (at most
    /// [`MAX_WRITTEN_PATHS`], the rest folded into `FOLDER/…`, also when read back).
    #[serde(deserialize_with = "bounded_written_paths")]
    pub written_paths: BTreeMap<String, BTreeSet<String>>,
    /// The smallest set of directories that holds every write (pseudo filesystems aside).
    pub writable_directories: BTreeSet<String>,
    /// Writes whose path could not be made absolute (dirfd-relative, after fchdir).
    pub unresolved_writes: BTreeSet<String>,
    /// Writes past [`MAX_WRITTEN_PATHS`], kept only as `FOLDER/…`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub written_paths_folded: u64,
    /// Owner, mode and prior content of each writable directory, as the workload's root
    /// showed it at the first write below it (what a tmpfs or volume over it must keep).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub directories: BTreeMap<String, crate::recording::live_facts::DirectoryFacts>,
    pub network: Network,
    pub users: Users,
    #[serde(default)]
    pub resources: Resources,
    /// Events the ring buffer could not take; non-zero means this section is incomplete.
    pub events_lost: u64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Network {
    /// socket(2) calls as "family/type/protocol", e.g. "AF_INET/SOCK_STREAM/0".
    pub sockets: BTreeSet<String>,
    /// Addresses bound, e.g. "AF_INET 0.0.0.0:8080" or "AF_UNIX /run/app.sock".
    pub bound: BTreeSet<String>,
    /// TCP/UDP ports bound on IPv4/IPv6.
    pub bound_ports: BTreeSet<u16>,
    /// Whether listen(2) was called (the bound stream sockets are servers).
    pub listens: bool,
    /// Destinations connected to.
    pub connected: BTreeSet<String>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Users {
    /// uid:gid each successful exec ran as.
    pub ran_as: BTreeSet<String>,
    /// ids passed to setuid/setgid and friends.
    pub switched_to: BTreeSet<String>,
    /// Whether any program ran as root (uid 0).
    pub needs_root: bool,
    /// Supplementary groups the programs ran with, besides their primary group (a container
    /// user's memberships in the image's /etc/group, which a numeric `--user` drops).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub supplementary_groups: BTreeSet<u32>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Resources {
    /// Peak memory of the cgroup (bytes), when a memory controller was there to say.
    pub peak_memory_bytes: Option<u64>,
    /// Most processes/threads alive at once, as sampled.
    pub peak_tasks: Option<u64>,
}

impl ImageInfo {
    /// Keeps at most [`MAX_WRITTEN_PATHS`] written paths one by one, folding the rest into
    /// `FOLDER/…` entries, as a recording does (a trace from elsewhere may hold millions).
    pub fn fold_written_paths(&mut self) {
        if self.written_paths.len() <= MAX_WRITTEN_PATHS {
            return;
        }
        let all = std::mem::take(&mut self.written_paths);
        for (i, (path, ops)) in all.into_iter().enumerate() {
            if i < MAX_WRITTEN_PATHS {
                self.written_paths.insert(path, ops);
                continue;
            }
            self.written_paths_folded += 1;
            let folded = Path::new(&path)
                .parent()
                .map(|p| p.join(FOLDED).display().to_string())
                .unwrap_or_else(|| format!("/{FOLDED}"));
            self.written_paths.entry(folded).or_default().extend(ops);
        }
    }

    /// Union of several recordings' images (resource peaks: the maximum).
    pub fn union(&mut self, other: &ImageInfo) {
        for (k, v) in &other.executables {
            self.executables
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        self.failed_executables
            .extend(other.failed_executables.iter().cloned());
        for (k, v) in &other.written_paths {
            self.written_paths
                .entry(k.clone())
                .or_default()
                .extend(v.iter().cloned());
        }
        self.fold_written_paths();
        self.writable_directories = writable_directories(self.written_paths.keys());
        for (dir, facts) in &other.directories {
            self.directories
                .entry(dir.clone())
                .or_insert_with(|| facts.clone());
        }
        let writable = &self.writable_directories;
        self.directories.retain(|d, _| writable.contains(d));
        self.unresolved_writes
            .extend(other.unresolved_writes.iter().cloned());
        self.written_paths_folded += other.written_paths_folded;
        let n = &other.network;
        self.network.sockets.extend(n.sockets.iter().cloned());
        self.network.bound.extend(n.bound.iter().cloned());
        self.network
            .bound_ports
            .extend(n.bound_ports.iter().copied());
        self.network.listens |= n.listens;
        self.network.connected.extend(n.connected.iter().cloned());
        self.users.ran_as.extend(other.users.ran_as.iter().cloned());
        self.users
            .switched_to
            .extend(other.users.switched_to.iter().cloned());
        self.users.needs_root |= other.users.needs_root;
        self.users
            .supplementary_groups
            .extend(other.users.supplementary_groups.iter().copied());
        let max = |a: Option<u64>, b: Option<u64>| a.max(b);
        self.resources.peak_memory_bytes = max(
            self.resources.peak_memory_bytes,
            other.resources.peak_memory_bytes,
        );
        self.resources.peak_tasks = max(self.resources.peak_tasks, other.resources.peak_tasks);
        self.events_lost += other.events_lost;
    }
}

/// Reads `written_paths` folding past [`MAX_WRITTEN_PATHS`] as it goes: a trace from
/// elsewhere can hold millions of paths, and memory must stay bounded while reading it.
fn bounded_written_paths<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, BTreeSet<String>>, D::Error> {
    struct Bounded;
    impl<'de> serde::de::Visitor<'de> for Bounded {
        type Value = BTreeMap<String, BTreeSet<String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of paths to operations")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
            while let Some((path, ops)) = m.next_entry::<String, BTreeSet<String>>()? {
                if out.len() < MAX_WRITTEN_PATHS || out.contains_key(&path) {
                    out.entry(path).or_default().extend(ops);
                } else {
                    let folded = Path::new(&path)
                        .parent()
                        .map(|p| p.join(FOLDED).display().to_string())
                        .unwrap_or_else(|| format!("/{FOLDED}"));
                    out.entry(folded).or_default().extend(ops);
                }
            }
            Ok(out)
        }
    }
    d.deserialize_map(Bounded)
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// Decoded events of one cgroup, in order.
pub struct Builder {
    cwd: HashMap<u32, Option<PathBuf>>,
    default_cwd: PathBuf,
    pending_exec: HashMap<u32, (String, String)>,
    skip_setup: bool,
    keep_pending: bool,
    /// Per thread, the last exec that succeeded (for `profiler enforce`).
    pub last_exec: HashMap<u32, String>,
    info: ImageInfo,
}

fn cstr(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|b| *b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Lexical normalisation: `.` dropped, `..` pops (never above `/`).
pub fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
        }
    }
    out
}

/// A dirfd argument: an `int` in a 64-bit register, so AT_FDCWD (-100) may arrive without
/// its sign extension.
fn dirfd(raw: u64) -> i64 {
    raw as u32 as i32 as i64
}

fn syscall_name(nr: u64) -> String {
    Arch::X86_64.display_name(nr as u32)
}

fn sockaddr(bytes: &[u8], len: usize) -> Option<(String, Option<u16>)> {
    let len = len.min(bytes.len());
    if len < 2 {
        return None;
    }
    let family = u16::from_ne_bytes([bytes[0], bytes[1]]) as i32;
    match family {
        libc::AF_INET if len >= 8 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some((format!("AF_INET {ip}:{port}"), Some(port)))
        }
        libc::AF_INET6 if len >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let mut a = [0u8; 16];
            a.copy_from_slice(&bytes[8..24]);
            Some((
                format!("AF_INET6 [{}]:{port}", Ipv6Addr::from(a)),
                Some(port),
            ))
        }
        libc::AF_UNIX => {
            let path = &bytes[2..len];
            if path.first() == Some(&0) {
                Some((format!("AF_UNIX @{}", cstr(&path[1..])), None))
            } else {
                Some((format!("AF_UNIX {}", cstr(path)), None))
            }
        }
        libc::AF_NETLINK => Some(("AF_NETLINK".to_owned(), None)),
        other => Some((format!("family {other}"), None)),
    }
}

fn family_name(f: u64) -> String {
    nix::sys::socket::AddressFamily::from_i32(f as i32)
        .map(|a| format!("AF_{}", format!("{a:?}").to_uppercase()))
        .unwrap_or_else(|| f.to_string())
}

fn type_name(t: u64) -> String {
    // SOCK_NONBLOCK/SOCK_CLOEXEC flags ride along in the type argument.
    match t & 0xf {
        1 => "SOCK_STREAM".into(),
        2 => "SOCK_DGRAM".into(),
        3 => "SOCK_RAW".into(),
        5 => "SOCK_SEQPACKET".into(),
        other => format!("type {other}"),
    }
}

impl Builder {
    pub fn new(default_cwd: PathBuf) -> Builder {
        Builder {
            cwd: HashMap::new(),
            default_cwd,
            pending_exec: HashMap::new(),
            skip_setup: false,
            keep_pending: false,
            last_exec: HashMap::new(),
            info: ImageInfo::default(),
        }
    }

    fn cwd_of(&mut self, pid: u32) -> Option<PathBuf> {
        self.cwd
            .entry(pid)
            .or_insert_with(|| Some(self.default_cwd.clone()))
            .clone()
    }

    /// Absolute path for `path` as passed by `pid` relative to `dirfd`.
    fn resolve(&mut self, pid: u32, dirfd: i64, path: &str) -> Option<String> {
        if path.starts_with('/') {
            return Some(normalize(Path::new(path)).display().to_string());
        }
        if dirfd != AT_FDCWD {
            return None;
        }
        let cwd = self.cwd_of(pid)?;
        Some(normalize(&cwd.join(path)).display().to_string())
    }

    /// Feeds one event; returns the absolute path of a write or exec attempt when it could be
    /// resolved (what `profiler enforce` checks).
    pub fn event(&mut self, e: &Event) -> Option<String> {
        let resolved = match e.kind {
            EVENT_WRITE if !cstr(&e.data).is_empty() => {
                self.resolve(e.pid, dirfd(e.args[1]), &cstr(&e.data))
            }
            EVENT_EXEC_ATTEMPT => self.resolve(e.pid, dirfd(e.args[0]), &cstr(&e.data)),
            _ => None,
        };
        self.apply(e);
        resolved
    }

    /// The path an exec attempt of thread `tid` was for (the last one not yet finished).
    pub fn pending_exec(&self, tid: u32) -> Option<&str> {
        self.pending_exec.get(&tid).map(|(p, _)| p.as_str())
    }

    fn apply(&mut self, e: &Event) {
        let path = cstr(&e.data);
        match e.kind {
            EVENT_FORK => {
                let parent = self.cwd_of(e.args[0] as u32);
                self.cwd.insert(e.args[1] as u32, parent);
            }
            EVENT_CHDIR => {
                let new = self.resolve(e.pid, AT_FDCWD, &path).map(PathBuf::from);
                self.cwd.insert(e.pid, new);
            }
            EVENT_FCHDIR => {
                self.cwd.insert(e.pid, None);
            }
            _ => {}
        }
        let phase = Phase::from_index(e.phase as usize);
        if phase == Some(Phase::Setup) && self.skip_setup {
            return;
        }
        // Behind a container runtime, the id switches between its filter load and the
        // entrypoint's exec are the runtime applying the configured user (runc's
        // setgroups/setgid/setuid in libcontainer/init_linux.go finalizeNamespace), not the
        // workload changing users: the user the entrypoint runs as is in its EXEC_OK.
        if e.kind == EVENT_SETID && phase == Some(Phase::Runtime) && self.skip_setup {
            return;
        }
        if e.kind == EVENT_EXEC_OK && self.keep_pending {
            // enforce needs the path of a killed exec after its EXEC_OK
            if let Some(p) = self.pending_exec.get(&e.tid).cloned() {
                self.last_exec.insert(e.tid, p.0);
            }
        }
        match e.kind {
            EVENT_EXEC_ATTEMPT => {
                let abs = self
                    .resolve(e.pid, dirfd(e.args[0]), &path)
                    .unwrap_or_else(|| format!("{path} (relative to a directory fd)"));
                self.pending_exec.insert(e.tid, (abs, cstr(&e.aux)));
                // Until an EXEC_OK from the same thread says otherwise, it failed.
                self.info
                    .failed_executables
                    .insert(self.pending_exec[&e.tid].0.clone());
            }
            EVENT_EXEC_OK => {
                // After exec the thread id is the process id (de_thread()).
                let pending = self
                    .pending_exec
                    .remove(&e.tid)
                    .or_else(|| self.pending_exec.remove(&e.pid));
                if let Some((abs, argv0)) = pending {
                    self.info.failed_executables.remove(&abs);
                    self.info.executables.entry(abs).or_default().insert(argv0);
                }
                let (uid, gid) = (e.args[0], e.args[1]);
                self.info.users.ran_as.insert(format!("{uid}:{gid}"));
                self.info.users.needs_root |= uid == 0;
            }
            EVENT_WRITE if !path.is_empty() => {
                let op = syscall_name(e.args[0]);
                match self.resolve(e.pid, dirfd(e.args[1]), &path) {
                    Some(abs) => {
                        if self.info.written_paths.len() < MAX_WRITTEN_PATHS
                            || self.info.written_paths.contains_key(&abs)
                        {
                            self.info.written_paths.entry(abs).or_default().insert(op);
                        } else {
                            // Past the bound, a path still counts through its folder, which
                            // stands in for it (writable directories are made of parents).
                            self.info.written_paths_folded += 1;
                            let parent = Path::new(&abs)
                                .parent()
                                .map(|p| p.join(FOLDED).display().to_string())
                                .unwrap_or_else(|| format!("/{FOLDED}"));
                            self.info
                                .written_paths
                                .entry(parent)
                                .or_default()
                                .insert(op);
                        }
                    }
                    None => {
                        self.info
                            .unresolved_writes
                            .insert(format!("{path} ({op}, dirfd {})", dirfd(e.args[1])));
                    }
                }
            }
            EVENT_BIND | EVENT_CONNECT => {
                if let Some((addr, port)) = sockaddr(&e.data, e.args[1] as usize) {
                    if e.kind == EVENT_BIND {
                        if let Some(p) = port.filter(|p| *p != 0) {
                            self.info.network.bound_ports.insert(p);
                        }
                        self.info.network.bound.insert(addr);
                    } else {
                        self.info.network.connected.insert(addr);
                    }
                }
            }
            EVENT_LISTEN => self.info.network.listens = true,
            EVENT_SOCKET => {
                self.info.network.sockets.insert(format!(
                    "{}/{}/{}",
                    family_name(e.args[0]),
                    type_name(e.args[1]),
                    e.args[2]
                ));
            }
            EVENT_SETID => {
                let name = syscall_name(e.args[0]);
                let ids: Vec<String> = e.args[1..4]
                    .iter()
                    .take(match name.as_str() {
                        "setuid" | "setgid" => 1,
                        "setreuid" | "setregid" => 2,
                        _ => 3,
                    })
                    .map(|i| (*i as u32 as i32).to_string())
                    .collect();
                self.info
                    .users
                    .switched_to
                    .insert(format!("{name}({})", ids.join(", ")));
            }
            _ => {}
        }
    }

    pub fn finish(mut self, events_lost: u64, resources: Resources) -> ImageInfo {
        self.info.writable_directories = writable_directories(self.info.written_paths.keys());
        self.info.events_lost = events_lost;
        self.info.resources = resources;
        self.info
    }
}

/// At most this many written paths are kept one by one (a workload writing millions of
/// files would otherwise cost gigabytes); beyond it each further path is kept as
/// `FOLDER/…` (see [`FOLDED`]), which keeps the writable directories exact.
pub const MAX_WRITTEN_PATHS: usize = 100_000;

/// The name that stands for "more files in this folder" once the bound is reached.
pub const FOLDED: &str = "…";

/// Pseudo filesystems a container engine provides itself: writes there are not image writes.
fn is_pseudo(path: &str) -> bool {
    ["/dev", "/proc", "/sys"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

/// The parent directory of every written path, minus those inside another one.
///
/// The probe sees syscalls on entry, not their result, so `mkdir -p /a/b/c` shows
/// mkdir("/a") and mkdir("/a/b") even though they existed (EEXIST). A directory created on
/// the way to other writes below it therefore does not make its parent writable; writes
/// below it decide.
///
/// O(n log n) in the number of paths: "has writes below" is one ordered-set lookup (the
/// paths below `d` sort right after `d/`), and "inside another one" walks each directory's
/// few ancestors. (A pairwise version took minutes for a workload writing 50,000 files.)
pub fn writable_directories<'a>(paths: impl Iterator<Item = &'a String>) -> BTreeSet<String> {
    let sorted: BTreeSet<&str> = paths.map(String::as_str).collect();
    let has_writes_below = |p: &str| {
        if p == "/" {
            return sorted.iter().any(|q| *q != "/");
        }
        let prefix = format!("{p}/");
        sorted
            .range(prefix.as_str()..)
            .next()
            .is_some_and(|q| q.starts_with(&prefix))
    };
    let dirs: BTreeSet<String> = sorted
        .iter()
        .copied()
        .filter(|p| !is_pseudo(p))
        .filter(|p| !has_writes_below(p))
        .filter_map(|p| Path::new(p).parent().map(|d| d.display().to_string()))
        .collect();
    dirs.iter()
        .filter(|d| {
            let mut up = Path::new(d.as_str()).parent();
            while let Some(a) = up {
                if dirs.contains(a.to_str().unwrap_or_default()) {
                    return false;
                }
                up = a.parent();
            }
            true
        })
        .cloned()
        .collect()
}

impl Builder {
    /// Container runtimes' own set-up (before the seccomp filter) is not what the image does.
    pub fn skipping_setup(mut self, skip: bool) -> Self {
        self.skip_setup = skip;
        self
    }

    /// Keeps the path of each thread's last successful exec in `last_exec`.
    pub fn remembering_execs(mut self) -> Self {
        self.keep_pending = true;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u32, pid: u32, args: [u64; 4], path: &str) -> Event {
        let mut data = [0u8; profiler_common::EVENT_PATH_LEN];
        data[..path.len()].copy_from_slice(path.as_bytes());
        Event {
            cgroup_id: 1,
            kind,
            pid,
            tid: pid,
            phase: profiler_common::PHASE_SETUP as u32,
            args,
            data,
            aux: [0; profiler_common::EVENT_AUX_LEN],
        }
    }

    #[test]
    fn relative_paths_follow_cwd_fork_and_dotdot() {
        let mut b = Builder::new(PathBuf::from("/work"));
        let openat = 257;
        let cwd = AT_FDCWD as u64;
        let _ = b.event(&event(
            EVENT_WRITE,
            10,
            [openat, cwd, 1, 0],
            "out/../log.txt",
        ));
        let _ = b.event(&event(EVENT_CHDIR, 10, [0; 4], "sub/./dir"));
        let _ = b.event(&event(EVENT_FORK, 10, [10, 11, 0, 0], ""));
        let _ = b.event(&event(EVENT_WRITE, 11, [openat, cwd, 1, 0], "../x"));
        let _ = b.event(&event(EVENT_WRITE, 11, [openat, 5, 1, 0], "y"));
        let _ = b.event(&event(EVENT_WRITE, 12, [openat, cwd, 1, 0], "/abs/./z"));
        let info = b.finish(0, Resources::default());
        let paths: Vec<&String> = info.written_paths.keys().collect();
        assert_eq!(paths, ["/abs/z", "/work/log.txt", "/work/sub/x"]);
        assert_eq!(info.unresolved_writes.len(), 1);
        assert_eq!(
            info.writable_directories.iter().collect::<Vec<_>>(),
            ["/abs", "/work"]
        );
    }

    #[test]
    fn failed_execs_are_kept_apart() {
        let mut b = Builder::new(PathBuf::from("/"));
        let _ = b.event(&event(
            EVENT_EXEC_ATTEMPT,
            5,
            [AT_FDCWD as u64, 0, 0, 0],
            "/usr/local/bin/app",
        ));
        let _ = b.event(&event(
            EVENT_EXEC_ATTEMPT,
            5,
            [AT_FDCWD as u64, 0, 0, 0],
            "/usr/bin/app",
        ));
        let _ = b.event(&event(EVENT_EXEC_OK, 5, [1000, 1000, 0, 0], ""));
        let info = b.finish(0, Resources::default());
        assert!(info.executables.contains_key("/usr/bin/app"));
        assert!(info.failed_executables.contains("/usr/local/bin/app"));
        assert!(!info.users.needs_root);
    }

    #[test]
    fn writable_directories_are_the_outermost_parents() {
        let paths: Vec<String> = [
            "/a/b/c/file",
            "/a/b",
            "/a/b-x/f",
            "/data/x",
            "/data/sub/y",
            "/proc/self/attr",
            "/tmp/t",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let dirs = writable_directories(paths.iter());
        // "/a/b" has writes below it (a mkdir on the way); "/a/b-x" sorts between "/a/b"
        // and "/a/b/" and must not be taken for a path below "/a/b".
        assert_eq!(
            dirs.iter().collect::<Vec<_>>(),
            ["/a/b-x", "/a/b/c", "/data", "/tmp"]
        );
    }

    #[test]
    fn writable_directories_scale() {
        let paths: Vec<String> = (0..200_000)
            .map(|i| format!("/srv/d{}/e{}/f{i}", i % 97, i % 13))
            .collect();
        // (A pairwise version takes minutes here; `cargo xtask bench --only paths` measures.)
        let dirs = writable_directories(paths.iter());
        assert_eq!(dirs.len(), 97 * 13);
    }

    #[test]
    fn sockaddrs_decode() {
        let mut v4 = [0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            sockaddr(&v4, 16),
            Some(("AF_INET 127.0.0.1:8080".into(), Some(8080)))
        );
    }
}
