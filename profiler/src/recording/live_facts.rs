//! What can only be read while the workload runs: the owner, mode and prior content of the
//! directories it writes (from its own root), and the supplementary groups its programs ran
//! with (the exec event carries uid and gid only).
//!
//! A container made immutable gets a fresh mount over each directory it writes. That mount
//! must look like the image's directory: a non-root service cannot write its data folder
//! when the tmpfs over it belongs to root (`--tmpfs` defaults to 0:0, mode 1777 or 0755),
//! and a database whose data folder came with the image cannot start on an empty one. So at
//! the first write below a directory, profiler looks at the directory itself, through
//! `/proc/PID/root` of a process of the cgroup: owner, mode, and the names it holds.
//!
//! The lookups are confined to the workload's root with `openat2(RESOLVE_IN_ROOT)`: a
//! symlink the workload planted (`/data -> /etc/shadow`'s folder on the host) resolves inside
//! the container's root, never on the host (fs/namei.c, `LOOKUP_IN_ROOT`).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::os::fd::{AsFd as _, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::fstat;
use profiler_common::{EVENT_CGROUP_ATTACH, EVENT_EXEC_OK, EVENT_FORK, EVENT_WRITE, Event};

use crate::recording::elf_imports;
use crate::recording::files::open_regular;
use crate::recording::identified::Identified;
use crate::recording::image_events::Builder;
use crate::trace::image::{DirectoryFacts, ExecutableFile, Imports};

/// At most this many names are kept per directory: enough to tell "came with content" from
/// "holds only what the workload wrote", without letting a directory of millions of files
/// cost memory.
const MAX_NAMES: usize = 256;

/// What was seen of one directory at the first write below it.
#[derive(Clone, Debug)]
struct FirstSight {
    uid: u32,
    gid: u32,
    mode: u32,
    names: BTreeSet<String>,
}

/// Follows the write events of every recorded cgroup as they arrive and looks at each
/// written path's directory once.
pub struct LiveFacts {
    /// Path resolution (working directories, fork, chdir) per cgroup.
    resolvers: HashMap<u64, Builder>,
    seen: HashMap<u64, HashMap<String, Option<FirstSight>>>,
    /// Per (cgroup, folder): how many later writes tried again to read its facts.
    misses: HashMap<(u64, String), u8>,
    /// Supplementary groups of each cgroup's programs, read at their exec.
    groups: HashMap<u64, BTreeSet<u32>>,
    /// The files each cgroup's programs were executed from, by their path in its root.
    executables: HashMap<u64, BTreeMap<String, ExecutableFile>>,
    /// Files already read: a program run a thousand times is hashed once, and one unchanged
    /// since an earlier recording not at all.
    hashed: Identified,
    /// Import tables (see `elf_imports`), each object read once.
    import_reader: elf_imports::ImportReader,
    /// The imports of each executable already analysed, by (dev, inode).
    imports: HashMap<(u64, u64), Imports>,
    /// Execs already looked at: the same path asked for, in the same cgroup, ran the same
    /// file as the kernel identified it (see [`ExecSeen`]).
    execs_seen: HashSet<ExecSeen>,
    /// Every process seen in a recorded cgroup (its events, its forks), with its start time
    /// (field 22 of /proc/PID/stat) when it could be read: a pid reused later by another
    /// process on the host is not the workload's.
    pids: HashMap<u32, Option<u64>>,
    /// Workload processes that moved into a cgroup outside the recording: (pid, cgroup id,
    /// start time).
    pub escaped: Vec<(u32, u64, u64)>,
    /// Cgroups whose events are not a workload's (the engine CLI in container mode).
    ignored: Option<u64>,
    default_cwd: PathBuf,
    container_cwd: PathBuf,
    /// The workload's programs may be in profiler's own root (a command profiler started),
    /// not only in its processes' roots (a container, or a workload attached to).
    host_root: bool,
}

impl LiveFacts {
    /// `recording_cgroup`'s own processes start in `start_cwd`; container cgroups in `/`.
    /// With `containers`, the recording cgroup itself (the engine's CLI) is not looked at.
    pub fn new(recording_cgroup: u64, start_cwd: PathBuf, containers: bool) -> LiveFacts {
        LiveFacts {
            resolvers: HashMap::new(),
            seen: HashMap::new(),
            misses: HashMap::new(),
            groups: HashMap::new(),
            executables: HashMap::new(),
            hashed: Identified::default(),
            import_reader: elf_imports::ImportReader::default(),
            imports: HashMap::new(),
            execs_seen: HashSet::new(),
            pids: HashMap::new(),
            escaped: Vec::new(),
            ignored: containers.then_some(recording_cgroup),
            default_cwd: if containers {
                PathBuf::from("/")
            } else {
                start_cwd
            },
            container_cwd: PathBuf::from("/"),
            host_root: !containers,
        }
    }

    /// For a workload that was running before the recording began (`--attach`): its own
    /// cgroup is the recording's, its programs live in its processes' roots.
    pub fn attached(cgroup: u64) -> LiveFacts {
        LiveFacts {
            host_root: false,
            ..LiveFacts::new(cgroup, PathBuf::from("/"), false)
        }
    }

    /// The processes already running in `cgroup` when an attached recording began: their
    /// programs were executed before the probes could see it, so they are read from
    /// /proc/PID/exe now (identity, hash, ELF facts) along with their groups. Returns each
    /// program's path in its root with its argv[0].
    pub fn seed_running(&mut self, cgroup: u64, pids: &[u32]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for &pid in pids {
            self.pids.entry(pid).or_insert_with(|| start_time(pid));
            // A program run from a memfd or a file deleted since has no path to list.
            if let Some((path, file)) = executed_file(pid, None, &mut self.hashed)
                .filter(|(p, _)| p.starts_with('/') && !p.ends_with(" (deleted)"))
            {
                let argv0 = std::fs::read(format!("/proc/{pid}/cmdline"))
                    .ok()
                    .and_then(|c| {
                        c.split(|b| *b == 0)
                            .next()
                            .map(|a| String::from_utf8_lossy(a).into_owned())
                    })
                    .filter(|a| !a.is_empty())
                    .unwrap_or_else(|| path.clone());
                self.executables
                    .entry(cgroup)
                    .or_default()
                    .entry(path.clone())
                    .or_insert(file);
                out.push((path, argv0));
            }
            if let Some(g) = supplementary_groups(pid) {
                let primary = std::fs::read_to_string(format!("/proc/{pid}/status"))
                    .ok()
                    .and_then(|s| {
                        s.lines()
                            .find_map(|l| l.strip_prefix("Gid:"))
                            .and_then(|g| g.split_whitespace().next()?.parse::<u32>().ok())
                    });
                self.groups
                    .entry(cgroup)
                    .or_default()
                    .extend(g.into_iter().filter(|g| Some(*g) != primary));
            }
        }
        out
    }

    /// Feeds a batch of events; `procs` lists the processes of a cgroup (a fallback when the
    /// writing process is already gone); `recorded` says whether a cgroup id belongs to the
    /// recording (the recording cgroup or one below it).
    pub fn events(
        &mut self,
        batch: &[Event],
        procs: &dyn Fn(u64) -> Vec<u32>,
        recorded: &dyn Fn(u64) -> bool,
        reclaim: &dyn Fn(u32),
    ) {
        let mut deferred: Vec<(Event, Option<String>)> = Vec::new();
        for e in batch {
            if e.kind == EVENT_CGROUP_ATTACH {
                // Any move on the host into a cgroup the kernel side does not record; a
                // workload's process moving there leaves its recording, and is moved back.
                let (mut dst, pid) = (e.args[0], e.args[1] as u32);
                let same_process = match (self.pids.get(&pid), start_time(pid)) {
                    (Some(Some(then)), Some(now)) => *then == now,
                    _ => false,
                };
                if same_process && e.args[2] != 0 {
                    // Unresolved in the kernel (its offsets did not fit): the cgroup the
                    // process is in now, by the inode of its cgroup2 directory.
                    dst = cgroup_id_of_pid(pid).unwrap_or(0);
                }
                if same_process && !recorded(dst) {
                    reclaim(pid);
                    self.escaped.push((pid, dst, start_time(pid).unwrap_or(0)));
                }
                continue;
            }
            self.pids.entry(e.pid).or_insert_with(|| start_time(e.pid));
            if e.kind == EVENT_FORK {
                let child = e.args[1] as u32;
                // The kernel said when the child started; /proc only where it could not. A
                // new process: whatever an earlier one of that pid left here is replaced.
                let started = start_time_of_boottime(e.args[2]).or_else(|| start_time(child));
                self.pids.insert(child, started);
            }
            if Some(e.cgroup_id) == self.ignored {
                continue;
            }
            let cwd = if self.ignored.is_some() {
                self.container_cwd.clone()
            } else {
                self.default_cwd.clone()
            };
            let resolver = self
                .resolvers
                .entry(e.cgroup_id)
                .or_insert_with(|| Builder::new(cwd));
            let exec_path = (e.kind == EVENT_EXEC_OK)
                .then(|| resolver.pending_exec_of(e.pid).map(str::to_owned))
                .flatten();
            let resolved = resolver.event(e);
            if e.kind == EVENT_EXEC_OK {
                // What the executed file is (hash, ELF facts, imports) is the expensive
                // part: done after the batch's cheap, time-critical looks at written
                // folders, whose writer may be gone a moment later.
                deferred.push((*e, exec_path.clone()));
                // A container user's groups from the image's /etc/group (runc sets them with
                // setgroups before the exec): `postgres` reads its TLS key as `ssl-cert`.
                // The kernel's word at the exec where it gave all of them (and a process
                // that has exited since can be read no more); /proc otherwise.
                let groups = profiler_common::exec_groups(&e.aux)
                    .map(|g| g.collect())
                    .or_else(|| supplementary_groups(e.pid));
                if let Some(g) = groups {
                    let primary = profiler_common::ExecOk::from_args(&e.args).gid;
                    self.groups
                        .entry(e.cgroup_id)
                        .or_default()
                        .extend(g.into_iter().filter(|g| *g != primary));
                }
                continue;
            }
            if e.kind != EVENT_WRITE {
                continue;
            }

            let Some(dir) = resolved
                .as_deref()
                .and_then(|p| Path::new(p).parent())
                .map(|d| d.display().to_string())
            else {
                continue;
            };
            let seen = self.seen.entry(e.cgroup_id).or_default();
            // A folder whose facts could not be read at its first write is tried again at
            // the next writes (a few times): the writer's /proc entry can be unreadable for a
            // moment (measured: 2 runs in 7 of a container's first heartbeat), and an empty
            // record makes its tmpfs root's, which the service then cannot write.
            match seen.get(&dir) {
                Some(Some(_)) => continue,
                Some(None) => {
                    let tries = self.misses.entry((e.cgroup_id, dir.clone())).or_default();
                    if *tries >= FACT_RETRIES {
                        continue;
                    }
                    *tries += 1;
                }
                None => {}
            }
            let mut sight = look(e.pid, &dir);
            if sight.is_none() {
                for pid in procs(e.cgroup_id).into_iter().take(4) {
                    sight = look(pid, &dir);
                    if sight.is_some() {
                        break;
                    }
                }
            }
            seen.insert(dir, sight);
        }
        for (e, exec_path) in deferred {
            self.exec_facts(&e, exec_path, procs);
        }
    }

    /// The file an EXEC_OK's exec ran: identity, hash, ELF facts and imports.
    fn exec_facts(
        &mut self,
        e: &Event,
        exec_path: Option<String>,
        procs: &dyn Fn(u64) -> Vec<u32>,
    ) {
        // The file the kernel executed, through the process itself (never a path the
        // workload passed, which it could have changed by then).
        // A program that has exited already (drains come every 50 ms) is read at the
        // path it was executed by, inside the root of a process of its cgroup.
        // Behind a container runtime, the execs before its filter load are the
        // runtime's own (runc re-executing itself): not the image's programs, and
        // the largest file to hash.
        let runtime_setup =
            self.ignored.is_some() && e.phase as usize == profiler_common::PHASE_SETUP;
        // The kernel's own word on which file it ran (`bprm->file`), where its BTF
        // gave the way to it.
        let exec = profiler_common::ExecOk::from_args(&e.args);
        let kernel_identity = (exec.ino != 0).then_some(exec);
        // A program a build runs hundreds of times (cc1, as) is looked at once: the rest
        // cost /proc reads and, as most have exited by the drain, a search of the cgroup's
        // roots (perf, Intel Xeon 2026-12-03: a fifth of profiler's CPU while a make ran).
        let seen = ExecSeen::of(e.cgroup_id, exec_path.as_deref(), kernel_identity);
        if seen.as_ref().is_some_and(|s| self.execs_seen.contains(s)) {
            return;
        }
        let found = (!runtime_setup)
            .then(|| {
                let expected = kernel_identity.map(|k| [k.dev as u64, k.ino]);
                executed_file(e.pid, expected, &mut self.hashed)
            })
            .flatten()
            .or_else(|| {
                if runtime_setup {
                    return None;
                }
                let path = exec_path.as_deref()?;
                let mut roots = vec![e.pid];
                roots.extend(procs(e.cgroup_id).into_iter().take(4));
                if self.host_root {
                    // A command's own programs live in profiler's root.
                    roots.push(std::process::id());
                }
                // By the path asked for, the file found may be another by now (a symlink
                // repointed, a file renamed over): only the one the kernel ran counts, where
                // the kernel said which. Another file would be listed as executed when it
                // never was.
                roots.into_iter().find_map(|pid| {
                    file_in_root(pid, path, &mut self.hashed)
                        .filter(|(_, f)| kernel_identity.is_none_or(|k| is_kernel_file(f, &k)))
                })
            })
            .or_else(|| {
                // Gone before it could be read (a short container): what the kernel
                // said at the exec still identifies the file; no content hash.
                let k = kernel_identity.filter(|_| !runtime_setup)?;
                let path = exec_path.clone()?;
                Some((
                    path,
                    ExecutableFile {
                        dev: libc::makedev(k.dev >> 20, k.dev & 0xfffff),
                        inode: k.ino,
                        size: k.size,
                        mtime: k.mtime as i64,
                        sha256: String::new(),
                        format: "not read (the process had exited)".into(),
                        ..Default::default()
                    },
                ))
            });
        // Only a file that was read, and is the very file the kernel ran, ends the looking:
        // one known only by what the kernel said (its process gone) is read at a later exec
        // where it can be, and one read by the path asked for (`file_in_root`) may be
        // another file by now (a symlink the workload repointed), which must not stand for
        // the later execs of the real one.
        if let (Some((_, file)), Some(seen)) = (&found, seen)
            && !file.sha256.is_empty()
            && kernel_identity.is_some_and(|k| is_kernel_file(file, &k) && file.size == k.size)
        {
            self.execs_seen.insert(seen);
        }
        if let Some((path, mut file)) = found
            && !self
                .executables
                .get(&e.cgroup_id)
                .and_then(|m| m.get(&path))
                .is_some_and(|known| !known.sha256.is_empty() || file.sha256.is_empty())
        {
            // What it imports, read now from the same root: a container's files are
            // gone by the time profiles are generated.
            let key = (file.dev, file.inode);
            file.imports = match self.imports.get(&key) {
                Some(known) => Some(known.clone()),
                None => {
                    let mut roots = vec![e.pid];
                    roots.extend(procs(e.cgroup_id).into_iter().take(4));
                    if self.host_root {
                        roots.push(std::process::id());
                    }
                    let read = roots.into_iter().find_map(|pid| {
                        let root = elf_imports::process_root(pid)?;
                        self.import_reader
                            .imports(root.as_fd(), &path, file.dev, file.inode)
                    });
                    if let Some(i) = &read {
                        self.imports.insert(key, i.clone());
                    }
                    read
                }
            };
            self.executables
                .entry(e.cgroup_id)
                .or_default()
                .insert(path, file);
        }
    }

    /// The files `cgroup`'s programs were executed from.
    pub fn executables(&self, cgroup: u64) -> BTreeMap<String, ExecutableFile> {
        self.executables.get(&cgroup).cloned().unwrap_or_default()
    }

    /// Keeps the executables identified in this recording for the next ones (see
    /// [`Identified`]).
    pub fn save_identified(&mut self) {
        self.hashed.save();
    }

    /// The supplementary groups `cgroup`'s programs ran with (their primary group aside).
    pub fn groups(&self, cgroup: u64) -> BTreeSet<u32> {
        self.groups.get(&cgroup).cloned().unwrap_or_default()
    }

    /// The facts of `cgroup`'s writable directories, given everything it wrote.
    pub fn facts(
        &self,
        cgroup: u64,
        writable: &BTreeSet<String>,
        written: &BTreeMap<String, BTreeSet<String>>,
    ) -> BTreeMap<String, DirectoryFacts> {
        let Some(seen) = self.seen.get(&cgroup) else {
            return BTreeMap::new();
        };
        writable
            .iter()
            .filter_map(|dir| {
                let s = seen.get(dir)?.as_ref()?;
                let prefix = if dir == "/" {
                    "/".to_owned()
                } else {
                    format!("{dir}/")
                };
                // The workload's own entries: the first component below `dir` of each path
                // it wrote (a file, or a folder it made on the way to one).
                // (The paths below `dir` sort together, right after `dir/`.)
                let own: BTreeSet<&str> = written
                    .range(prefix.clone()..)
                    .map(|(p, _)| p)
                    .take_while(|p| p.starts_with(&prefix))
                    .filter_map(|p| p.strip_prefix(&prefix))
                    .filter_map(|rest| rest.split('/').next())
                    .collect();
                Some((
                    dir.clone(),
                    DirectoryFacts {
                        uid: s.uid,
                        gid: s.gid,
                        mode: s.mode,
                        has_image_content: s.names.iter().any(|n| !own.contains(n.as_str())),
                    },
                ))
            })
            .collect()
    }
}

/// Whether `file` is the one the kernel said an exec ran (its device and inode).
fn is_kernel_file(file: &ExecutableFile, kernel: &profiler_common::ExecOk) -> bool {
    crate::kernel::kernel_dev(file.dev) == kernel.dev as u64 && file.inode == kernel.ino
}

/// An exec as the kernel reported it: the cgroup, the path asked for (as resolved from the
/// working directory), and the file the kernel ran: `(s_dev, i_ino, i_size, i_mtime_sec)`
/// of `bprm->file`. Another exec with all of these equal ran the same file by the same
/// name, so what profiler read of the first (path, hash, ELF facts, imports) holds for it.
/// Only with a content key (`i_size` is 0 where the kernel gave none) and an absolute path.
/// An inode rewritten in place to the same size with its mtime set back (`utimensat`, which
/// its owner may call) looks the same: its new hash goes unread, as a path already listed
/// kept its first reading before (the kernel's enforcement checks inode and content key,
/// not the hash).
#[derive(Clone, PartialEq, Eq, Hash)]
struct ExecSeen {
    cgroup: u64,
    path: String,
    dev: u32,
    ino: u64,
    size: u64,
    mtime: u32,
}

impl ExecSeen {
    fn of(
        cgroup: u64,
        path: Option<&str>,
        kernel: Option<profiler_common::ExecOk>,
    ) -> Option<ExecSeen> {
        let k = kernel.filter(|k| k.size != 0)?;
        // Only an absolute path names one file: a path left relative to a directory fd
        // (fexecve, execveat) could name any hard link of it.
        let path = path.filter(|p| p.starts_with('/'))?;
        Some(ExecSeen {
            cgroup,
            path: path.to_owned(),
            dev: k.dev,
            ino: k.ino,
            size: k.size,
            mtime: k.mtime,
        })
    }
}

/// The file process `pid` runs, from `/proc/PID/exe` (the kernel's `mm->exe_file`): its
/// path in the process's root, identity, hash and ELF facts.
/// With `expected` (the kernel's `[s_dev, i_ino]` of the file the exec ran), a file that is
/// not that one is refused: by the time profiler reads `/proc/PID/exe` the process may have
/// executed something else, or its pid been reused.
fn executed_file(
    pid: u32,
    expected: Option<[u64; 2]>,
    hashed: &mut Identified,
) -> Option<(String, ExecutableFile)> {
    use std::os::unix::fs::MetadataExt as _;
    let link = format!("/proc/{pid}/exe");
    let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_CLOEXEC);
    let cwd = nix::fcntl::AT_FDCWD;
    let file = open_regular(cwd, &link, how)?;
    // The name from the opened file itself, not a second read of the link.
    let path = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .ok()?
    .display()
    .to_string();
    if let Some([dev, ino]) = expected {
        let meta = file.metadata().ok()?;
        if crate::kernel::kernel_dev(meta.dev()) != dev || meta.ino() != ino {
            return None;
        }
    }
    Some((path, identify(file, hashed)?))
}

/// Files larger than this are hashed as a stream but their ELF facts are not read (a
/// hostile sparse "executable" must not take profiler's memory).
const MAX_ELF_READ: u64 = 64 * 1024 * 1024;
/// The read size for hashing an executable.
const HASH_BUFFER: usize = 256 * 1024;

/// Identity, hash and ELF facts of an open file, once per (dev, inode). Only regular files
/// are read.
fn identify(mut file: std::fs::File, hashed: &mut Identified) -> Option<ExecutableFile> {
    use sha2::Digest as _;
    use std::io::Read as _;
    use std::os::unix::fs::MetadataExt as _;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    if let Some(known) = hashed.get(&meta) {
        return Some(known);
    }
    // Streamed through one small buffer: the file is read once for the hash and its ELF
    // headers are read again on their own. cc1 alone is 33 MB; collecting the file in memory
    // for the ELF parse cost more CPU than the hash (page faults, copies), time taken from
    // the workload while it runs.
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; HASH_BUFFER];
    loop {
        let n = file.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    drop(buf);
    let sha256: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let elf = if meta.len() <= MAX_ELF_READ {
        // Only the ranges the parse asks for are read, each within the length the file had
        // at the size check (`CappedFile`; object's `ReadCache` checks every range against
        // it).
        elf_facts(&object::ReadCache::new(
            crate::recording::files::CappedFile::new(file, meta.len()),
        ))
    } else {
        ExecutableFile {
            format: "not read (too large)".into(),
            ..Default::default()
        }
    };
    let facts = ExecutableFile {
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.len(),
        mtime: meta.mtime(),
        sha256,
        ..elf
    };
    hashed.insert(&meta, facts.clone());
    Some(facts)
}

/// The file at `path` inside process `pid`'s root (openat2 RESOLVE_IN_ROOT: a link the
/// workload planted resolves inside its root, never on the host).
fn file_in_root(pid: u32, path: &str, hashed: &mut Identified) -> Option<(String, ExecutableFile)> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = open_regular(root.as_fd(), path.trim_start_matches('/'), how)?;
    // The canonical path, as /proc/PID/exe would have named it (symlinks resolved inside
    // the root).
    let canonical = std::fs::read_link(format!(
        "/proc/self/fd/{}",
        std::os::fd::AsRawFd::as_raw_fd(&file)
    ))
    .ok()
    .map(|p| {
        let root_path = std::fs::read_link(format!("/proc/{pid}/root")).unwrap_or_default();
        p.strip_prefix(&root_path)
            .map(|r| Path::new("/").join(r))
            .unwrap_or(p)
            .display()
            .to_string()
    })
    .unwrap_or_else(|| path.to_owned());
    Some((canonical, identify(file, hashed)?))
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Class and machine, `PT_INTERP` and `DT_NEEDED`, read with the `object` crate.
pub fn elf_facts<'data, R: object::ReadRef<'data>>(data: R) -> ExecutableFile {
    use object::Object as _;
    let Ok(file) = object::File::parse(data) else {
        return ExecutableFile {
            format: "not ELF".into(),
            ..Default::default()
        };
    };
    let format = format!(
        "elf{} {:?}",
        if file.is_64() { 64 } else { 32 },
        file.architecture()
    )
    .to_lowercase();
    let mut needed = Vec::new();
    let mut interpreter = None;
    if let object::File::Elf64(elf) = &file {
        use object::read::elf::{Dyn as _, FileHeader as _, ProgramHeader as _};
        let endian = elf.endian();
        if let Ok(segments) = elf.elf_header().program_headers(endian, data) {
            for ph in segments {
                if let Ok(Some(i)) = ph.interpreter(endian, data) {
                    interpreter =
                        Some(String::from_utf8_lossy(i).trim_end_matches('\0').to_owned());
                }
            }
        }
        let sections = elf.elf_section_table();
        if let Ok(Some((dyns, strtab_index))) = sections.dynamic(endian, data)
            && let Ok(strings) = sections.strings(endian, data, strtab_index)
        {
            for d in dyns {
                if d.tag(endian) == object::elf::DT_NEEDED
                    && let Ok(name) = d.string(endian, strings)
                {
                    needed.push(String::from_utf8_lossy(name).into_owned());
                }
            }
        }
    }
    ExecutableFile {
        format,
        interpreter,
        needed,
        ..Default::default()
    }
}

/// The cgroup2 id of the cgroup process `pid` is in now: its directory's inode.
fn cgroup_id_of_pid(pid: u32) -> Option<u64> {
    use std::os::unix::fs::MetadataExt as _;
    let path = crate::recording::attach::cgroup_of_pid(pid).ok()?;
    let root = crate::recording::cgroup::cgroup2_mount().ok()?;
    std::fs::symlink_metadata(root.join(path.trim_start_matches('/')))
        .ok()
        .map(|m| m.ino())
}

/// When process `pid` started (clock ticks after boot, field 22 of /proc/PID/stat, after the
/// command name, which may hold spaces and parentheses): with the pid, what names one
/// process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A task's `start_boottime` (ns; the fork event carries it, 0 when unknown) in the unit of
/// [`start_time`]: clock ticks, as fs/proc/array.c converts it (`nsec_to_clock_t`).
fn start_time_of_boottime(ns: u64) -> Option<u64> {
    static TICK_NS: std::sync::OnceLock<Option<u64>> = std::sync::OnceLock::new();
    let tick_ns = (*TICK_NS.get_or_init(|| {
        let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
        u64::try_from(hz)
            .ok()
            .filter(|hz| *hz > 0 && 1_000_000_000 % hz == 0)
            .map(|hz| 1_000_000_000 / hz)
    }))?;
    (ns != 0).then(|| ns / tick_ns)
}

/// The `Groups:` line of /proc/PID/status (fs/proc/array.c, task_state()).
fn supplementary_groups(pid: u32) -> Option<BTreeSet<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("Groups:"))?;
    Some(
        line.split_whitespace()
            .filter_map(|g| g.parse().ok())
            .collect(),
    )
}

/// Opens `dir` inside `pid`'s root and reads its owner, mode and names.
/// How many later writes may try again to read a folder's facts.
const FACT_RETRIES: u8 = 8;

fn look(pid: u32, dir: &str) -> Option<FirstSight> {
    let root = nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    let rel = dir.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd: OwnedFd = openat2(root.as_fd(), rel, how).ok()?;
    let st = fstat(fd.as_fd()).ok()?;
    let mut names = BTreeSet::new();
    if let Ok(mut d) = nix::dir::Dir::from_fd(fd) {
        for entry in d.iter().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == "." || name == ".." {
                continue;
            }
            names.insert(name);
            if names.len() >= MAX_NAMES {
                break;
            }
        }
    }
    Some(FirstSight {
        uid: st.st_uid,
        gid: st.st_gid,
        mode: st.st_mode & 0o7777,
        names,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_cgroup_id_is_its_cgroup_directory_inode() {
        use std::os::unix::fs::MetadataExt as _;
        let Ok(root) = crate::recording::cgroup::cgroup2_mount() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let own = crate::recording::attach::cgroup_of_pid(std::process::id()).unwrap();
        let dir = root.join(own.trim_start_matches('/'));
        assert_eq!(
            cgroup_id_of_pid(std::process::id()),
            Some(std::fs::metadata(dir).unwrap().ino())
        );
        assert_eq!(cgroup_id_of_pid(u32::MAX), None);
    }

    #[test]
    fn a_planted_symlink_resolves_inside_the_root() {
        // /proc/self/root is the host root here; a symlink to an absolute path resolves
        // against it as RESOLVE_IN_ROOT would inside a container. The point is that the
        // lookup works and reports the directory's own owner and mode.
        let tmp = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/dirfacts-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(tmp.join("d")).unwrap();
        std::fs::write(tmp.join("d/f"), b"x").unwrap();
        let me = std::process::id();
        let s = look(me, &tmp.join("d").display().to_string()).unwrap();
        assert!(s.names.contains("f"));
        assert_eq!(s.uid, nix::unistd::geteuid().as_raw());
        // A symlink as the last component is refused (O_NOFOLLOW), not followed.
        std::os::unix::fs::symlink(tmp.join("d"), tmp.join("link")).unwrap();
        assert!(look(me, &tmp.join("link").display().to_string()).is_none());
        let _ = std::fs::remove_dir_all(&tmp);
    }
}
