//! What a workload *is* (executables, written paths, network endpoints, users, resources):
//! the image section of a trace. `recording::image_events` builds it from the kernel's
//! events.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

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
    /// What identifies each program the kernel executed (by the path it has in the
    /// workload's root), read from `/proc/PID/exe` at the exec: the file itself, not a path.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub executable_files: BTreeMap<String, ExecutableFile>,
    /// Owner, mode and prior content of each writable directory, as the workload's root
    /// showed it at the first write below it (what a tmpfs or volume over it must keep).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub directories: BTreeMap<String, DirectoryFacts>,
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
        for (path, file) in &other.executable_files {
            self.executable_files
                .entry(path.clone())
                .or_insert_with(|| file.clone());
        }
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

/// A file the kernel executed: its identity and what the ELF header says it needs.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ExecutableFile {
    pub dev: u64,
    pub inode: u64,
    pub size: u64,
    pub mtime: i64,
    pub sha256: String,
    /// `elf64 x86_64`, `elf32 i386`, or `not ELF`.
    pub format: String,
    /// The ELF loader it names (`PT_INTERP`), for a dynamic executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interpreter: Option<String>,
    /// The libraries it names (`DT_NEEDED`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needed: Vec<String>,
    /// The syscalls its import table says it can make (read at record time, in the
    /// workload's root, which may be gone by `generate`). `None`: not analysed (a trace from
    /// before this field, or the file could no longer be read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imports: Option<Imports>,
}

/// What a program imports that is named like a syscall: the functions it and the libraries
/// of its `DT_NEEDED` closure take from other objects (libc's wrappers), whose names are
/// syscall names of its architecture (`recording::elf_imports` reads them).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Imports {
    pub table: ImportTable,
    /// The syscall table the names are of (the ELF's machine); `None` for no table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<crate::arch::Arch>,
    /// For the executable and each library read (by its path in the workload's root), the
    /// syscall names it imports (possibly none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub objects: BTreeMap<String, BTreeSet<String>>,
    /// `DT_NEEDED` names no search path held (the closure is incomplete without them).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub missing_libraries: BTreeSet<String>,
    /// How many functions the executable itself imports, syscall-named or not.
    #[serde(default)]
    pub executable_functions: u64,
}

/// Whether a program has an import table to read.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ImportTable {
    /// Dynamically linked: the table was read.
    #[default]
    Dynamic,
    /// Statically linked (no `PT_INTERP`, no `DT_NEEDED`): its syscalls are compiled in and
    /// no table says which; profiler does not guess.
    None,
    /// Not an ELF file profiler can read (another machine, too large, malformed).
    Unreadable,
}

impl Imports {
    /// Every syscall name the program and its libraries import, with the objects importing it.
    pub fn syscalls(&self) -> BTreeMap<&str, Vec<&str>> {
        let mut out: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (object, names) in &self.objects {
            for n in names {
                out.entry(n.as_str()).or_default().push(object.as_str());
            }
        }
        out
    }
}

/// A writable directory as it was when the workload first wrote below it.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DirectoryFacts {
    pub uid: u32,
    pub gid: u32,
    /// Permission bits with setgid/sticky (`st_mode & 0o7777`).
    pub mode: u32,
    /// It held entries the workload did not create during the recording: content that came
    /// with the image (a database's data folder), which an empty tmpfs would hide.
    pub has_image_content: bool,
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

/// [`normalize`] of an absolute path given as text. A path that already is normal (the
/// common case: nearly every path a build writes or executes) is taken as it is, without
/// building a `PathBuf` component by component and printing it back (BENCHMARKS.md, M29).
pub fn normalize_str(path: &str) -> String {
    if is_normal_absolute(path) {
        return path.to_owned();
    }
    normalize(Path::new(path)).display().to_string()
}

/// `/`, or `/` followed by components that are neither empty, `.` nor `..`, with no
/// trailing slash: what [`normalize`] gives back unchanged.
pub fn is_normal_absolute(path: &str) -> bool {
    match path.strip_prefix('/') {
        Some("") => true,
        Some(rest) => is_normal_relative(rest),
        None => false,
    }
}

/// Components that are neither empty, `.` nor `..`, joined by single slashes: what stays
/// as it is when joined to a normal directory.
pub fn is_normal_relative(path: &str) -> bool {
    !path.is_empty()
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writable_directories_are_the_outermost_parents() {
        let paths: Vec<String> = [
            "/a/b/c/file",
            "/a/b",
            "/a/b-x/f",
            "/data/x",
            "/data/sub/y",
            "/proc/self/attr",
            "/srv/t",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let dirs = writable_directories(paths.iter());
        // "/a/b" has writes below it (a mkdir on the way); "/a/b-x" sorts between "/a/b"
        // and "/a/b/" and must not be taken for a path below "/a/b".
        assert_eq!(
            dirs.iter().collect::<Vec<_>>(),
            ["/a/b-x", "/a/b/c", "/data", "/srv"]
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
}
