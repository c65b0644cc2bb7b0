//! The image section of a trace built from the kernel's rare events (see
//! `profiler_common::Event`).
//!
//! Paths arrive as the workload passed them. Relative ones are resolved against the
//! process's working directory, which is tracked from the same event stream: the recording's
//! start directory (or `/` in a container), inherited at fork, changed by chdir. `..` and `.`
//! are resolved lexically; a path relative to a directory fd other than AT_FDCWD, or after
//! fchdir, cannot be resolved from the stream and is kept apart, marked unresolved.
use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use profiler_common::{
    EVENT_BIND, EVENT_CHDIR, EVENT_CONNECT, EVENT_EXEC_ATTEMPT, EVENT_EXEC_OK, EVENT_FCHDIR,
    EVENT_FORK, EVENT_LISTEN, EVENT_SETID, EVENT_SOCKET, EVENT_WRITE, Event,
};

use crate::arch::Arch;
use crate::trace::Phase;
use crate::trace::image::{
    FOLDED, ImageInfo, MAX_WRITTEN_PATHS, Resources, is_normal_absolute, is_normal_relative,
    normalize, normalize_str, writable_directories,
};

const AT_FDCWD: i64 = -100;

/// Decoded events of one cgroup, in order.
pub struct Builder {
    cwd: HashMap<u32, Option<PathBuf>>,
    default_cwd: PathBuf,
    /// Per thread: the exec it attempts (resolved path, argv[0]) and its process.
    pending_exec: HashMap<u32, (String, String, u32)>,
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

    /// `pid`'s working directory (the default until it is known otherwise); `None` after
    /// an fchdir.
    fn cwd_of(&mut self, pid: u32) -> Option<&Path> {
        self.cwd
            .entry(pid)
            .or_insert_with(|| Some(self.default_cwd.clone()))
            .as_deref()
    }

    /// Absolute path for `path` as passed by `pid` relative to `dirfd`.
    fn resolve(&mut self, pid: u32, dirfd: i64, path: &str) -> Option<String> {
        if path.starts_with('/') {
            return Some(normalize_str(path));
        }
        if dirfd != AT_FDCWD {
            return None;
        }
        let cwd = self.cwd_of(pid)?;
        // A normal name below a normal directory is the two joined (see `normalize_str`).
        if let Some(dir) = cwd.to_str()
            && is_normal_absolute(dir)
            && is_normal_relative(path)
        {
            return Some(if dir == "/" {
                format!("/{path}")
            } else {
                format!("{dir}/{path}")
            });
        }
        Some(normalize(&cwd.join(path)).display().to_string())
    }

    /// Feeds one event; returns the absolute path of a write or exec attempt when it could be
    /// resolved (what `profiler enforce` checks).
    pub fn event(&mut self, e: &Event) -> Option<String> {
        // The path is read and resolved once here, for the caller and for `apply` (a build's
        // events are mostly writes and exec attempts: twice was a tenth of profiler's CPU
        // while a make ran, perf on Intel Xeon 2026-12-03).
        let path = cstr(&e.data);
        let resolved = match e.kind {
            EVENT_WRITE if !path.is_empty() => self.resolve(e.pid, dirfd(e.args[1]), &path),
            EVENT_EXEC_ATTEMPT => self.resolve(e.pid, dirfd(e.args[0]), &path),
            _ => None,
        };
        self.apply(e, &path, resolved.as_deref());
        resolved
    }

    /// The path an exec attempt of thread `tid` was for (the last one not yet finished).
    pub fn pending_exec(&self, tid: u32) -> Option<&str> {
        self.pending_exec.get(&tid).map(|(p, _, _)| p.as_str())
    }

    /// The thread of process `pid` whose exec an EXEC_OK of `pid` reports: the leader
    /// itself, or another thread, which de_thread() (fs/exec.c) gave the leader's id.
    fn exec_thread(&self, pid: u32) -> Option<u32> {
        if self.pending_exec.contains_key(&pid) {
            return Some(pid);
        }
        self.pending_exec
            .iter()
            .find(|(_, (_, _, tgid))| *tgid == pid)
            .map(|(tid, _)| *tid)
    }

    /// The path of the exec that an EXEC_OK of process `pid` reports (see `exec_thread`).
    pub fn pending_exec_of(&self, pid: u32) -> Option<&str> {
        self.exec_thread(pid).and_then(|t| self.pending_exec(t))
    }

    /// `path` is the event's `data` as a string, `resolved` what [`Builder::event`] made of
    /// it (writes and exec attempts).
    fn apply(&mut self, e: &Event, path: &str, resolved: Option<&str>) {
        match e.kind {
            EVENT_FORK => {
                let parent = self.cwd_of(e.args[0] as u32).map(Path::to_path_buf);
                self.cwd.insert(e.args[1] as u32, parent);
            }
            EVENT_CHDIR => {
                let new = self.resolve(e.pid, AT_FDCWD, path).map(PathBuf::from);
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
            if let Some(p) = self
                .exec_thread(e.pid)
                .and_then(|t| self.pending_exec.get(&t))
            {
                self.last_exec.insert(e.tid, p.0.clone());
            }
        }
        match e.kind {
            EVENT_EXEC_ATTEMPT => {
                let abs = resolved
                    .map(str::to_owned)
                    .unwrap_or_else(|| format!("{path} (relative to a directory fd)"));
                self.pending_exec.insert(e.tid, (abs, cstr(&e.aux), e.pid));
                // Until an EXEC_OK from the same thread says otherwise, it failed.
                self.info
                    .failed_executables
                    .insert(self.pending_exec[&e.tid].0.clone());
            }
            EVENT_EXEC_OK => {
                // After exec the thread id is the process id (de_thread()).
                let pending = self
                    .exec_thread(e.pid)
                    .and_then(|t| self.pending_exec.remove(&t));
                if let Some((abs, argv0, _)) = pending {
                    self.info.failed_executables.remove(&abs);
                    self.info.executables.entry(abs).or_default().insert(argv0);
                }
                let exec = profiler_common::ExecOk::from_args(&e.args);
                let (uid, gid) = (exec.uid, exec.gid);
                self.info.users.ran_as.insert(format!("{uid}:{gid}"));
                self.info.users.needs_root |= uid == 0;
            }
            EVENT_WRITE if !path.is_empty() => {
                let op = syscall_name(e.args[0]);
                match resolved.map(str::to_owned) {
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
    fn the_text_fast_path_resolves_as_the_components_do() {
        use crate::trace::image::normalize;
        // Normal working directories, and ones that are not (the slow path).
        let dirs = [
            "/",
            "/work",
            "/work/src",
            "/a b/ü",
            "/work/",
            "/work/./x",
            "//",
            "/a/../b",
        ];
        let paths = [
            "x.o",
            "a/b",
            "./x",
            "a/./b",
            "a//b",
            "a/",
            "../x",
            "a/../../b",
            ".",
            "..",
            "..a",
            "a..",
            ".x",
            "/",
            "/x",
            "//x",
            "/x/",
            "/x/.",
            "/x/..",
            "/./x",
            "/x//y",
            "/x/y/../z",
            "/...",
            "",
            "a/.",
            "a/..",
        ];
        for dir in dirs {
            for path in paths {
                let mut b = Builder::new(PathBuf::from(dir));
                let slow = if path.starts_with('/') {
                    Some(normalize(Path::new(path)).display().to_string())
                } else {
                    Some(normalize(&Path::new(dir).join(path)).display().to_string())
                };
                assert_eq!(b.resolve(1, AT_FDCWD, path), slow, "{dir} + {path}");
            }
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
        let _ = b.event(&event(
            EVENT_EXEC_OK,
            5,
            profiler_common::ExecOk {
                uid: 1000,
                gid: 1000,
                dev: 0,
                mtime: 0,
                ino: 0,
                size: 0,
            }
            .to_args(),
            "",
        ));
        let info = b.finish(0, Resources::default());
        assert!(info.executables.contains_key("/usr/bin/app"));
        assert!(info.failed_executables.contains("/usr/local/bin/app"));
        assert!(!info.users.needs_root);
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
