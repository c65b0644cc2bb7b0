//! The recording cgroup: a fresh cgroup2 leaf per recording.
//!
//! Every process of the workload (children, threads, double-forked daemons) stays in it, and
//! `bpf_get_current_cgroup_id()` (kernel/bpf/helpers.c) returns the cgroup2 id of the current
//! task, which is the inode number of its cgroup2 directory. So the cgroup is the unit the
//! kernel side aggregates by.
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

/// Folder under the cgroup2 root that holds recording cgroups, `rec-<profiler pid>-<n>`.
const PARENT: &str = "profiler";

/// The cgroup filesystems this process sees, from /proc/self/mountinfo (the one reader:
/// the `procfs` crate, which also undoes mountinfo's octal escapes).
fn cgroup_mounts() -> Vec<procfs::process::MountInfo> {
    procfs::process::Process::myself()
        .and_then(|p| p.mountinfo())
        .map(|m| {
            m.into_iter()
                .filter(|m| m.fs_type == "cgroup2" || m.fs_type == "cgroup")
                .collect()
        })
        .unwrap_or_default()
}

/// Where cgroup2 is mounted: /sys/fs/cgroup on unified hosts, /sys/fs/cgroup/unified on
/// hybrid ones.
pub fn cgroup2_mount() -> anyhow::Result<PathBuf> {
    match cgroup_mounts().into_iter().find(|m| m.fs_type == "cgroup2") {
        Some(m) => Ok(m.mount_point),
        None => bail!(
            "no cgroup2 filesystem is mounted (looked in /proc/self/mountinfo); mount one with `mount -t cgroup2 none /sys/fs/cgroup/unified`"
        ),
    }
}

/// A recording cgroup, removed on drop (after killing whatever is left in it).
pub struct RecordingCgroup {
    path: PathBuf,
    id: u64,
    /// Path relative to the cgroup2 root (what `--cgroup-parent` and /proc/PID/cgroup use).
    relative: String,
    /// Level in the hierarchy, as `bpf_get_current_ancestor_cgroup_id()` counts (root = 0).
    level: i32,
    /// `profiler reap` for this cgroup (see [`spawn_reaper`]); its stdin closes with us.
    reaper: Option<std::process::Child>,
}

/// The mount's root within the cgroup2 hierarchy (mountinfo field 4), "/" unless profiler
/// runs in a cgroup namespace or on a bind mount.
fn cgroup2_mount_root() -> String {
    cgroup_mounts()
        .into_iter()
        .find(|m| m.fs_type == "cgroup2")
        .map(|m| m.root)
        .unwrap_or_else(|| "/".to_owned())
}

impl RecordingCgroup {
    pub fn create() -> anyhow::Result<RecordingCgroup> {
        let root = cgroup2_mount()?;
        let parent = root.join(PARENT);
        match fs::create_dir(&parent) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("cannot create cgroup {}", parent.display()));
            }
        }
        sweep_stale(&parent);
        let pid = std::process::id();
        for n in 0..1000 {
            let path = parent.join(format!("rec-{pid}-{n}"));
            match fs::create_dir(&path) {
                Ok(()) => {
                    let id = fs::metadata(&path)?.ino();
                    let relative = format!("/{PARENT}/rec-{pid}-{n}");
                    let root = cgroup2_mount_root();
                    let level = root.split('/').filter(|c| !c.is_empty()).count() as i32 + 2;
                    let reaper = spawn_reaper(&path);
                    return Ok(RecordingCgroup {
                        path,
                        id,
                        relative,
                        level,
                        reaper,
                    });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot create cgroup {}", path.display()));
                }
            }
        }
        bail!("cannot find a free cgroup name under {}", parent.display())
    }

    /// The cgroup2 id, as `bpf_get_current_cgroup_id()` reports it.
    pub fn id(&self) -> u64 {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Path relative to the cgroup2 mount, e.g. `/profiler/rec-42-0`: give it to a container
    /// engine as `--cgroup-parent` and its containers are recorded.
    pub fn relative_path(&self) -> &str {
        &self.relative
    }

    pub fn level(&self) -> i32 {
        self.level
    }

    /// Child cgroups that exist now, as (inode = cgroup id, path relative to the root).
    pub fn children(&self) -> Vec<(u64, String)> {
        children_of(&self.path, &self.relative)
    }

    /// An open `cgroup.procs`, for a child to move itself in before it execs.
    pub fn procs_file(&self) -> anyhow::Result<fs::File> {
        let p = self.path.join("cgroup.procs");
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .with_context(|| format!("cannot open {}", p.display()))
    }

    /// Number of processes still in the cgroup.
    pub fn process_count(&self) -> u32 {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().count() as u32)
            .unwrap_or(0)
    }

    pub fn populated(&self) -> bool {
        populated(&self.path)
    }

    /// SIGKILL everything in the cgroup and wait until it is empty.
    pub fn kill_all(&self) {
        kill_and_wait(&self.path);
    }
}

impl Drop for RecordingCgroup {
    fn drop(&mut self) {
        clean_up(&self.path, &self.relative);
        if let Some(mut reaper) = self.reaper.take() {
            drop(reaper.stdin.take());
            let _ = reaper.wait();
        }
    }
}

/// Kills what is left in a recording cgroup and removes it (and the same path in the v1
/// hierarchies, where container engines on hybrid hosts create it too).
fn clean_up(path: &Path, relative: &str) {
    kill_and_wait(path);
    remove_tree(path);
    for v1 in cgroup_v1_mounts() {
        remove_tree(&v1.join(relative.trim_start_matches('/')));
    }
}

/// A workload must not outlive its recorder: after `kill -9` of profiler nothing in
/// profiler runs, and its processes (a daemon, a container below the cgroup) would go on in
/// a cgroup nobody records. So a small process of profiler's own, outside the cgroup and in
/// a session of its own (a signal to profiler's process group does not reach it), waits for
/// its stdin, a pipe only profiler holds (close-on-exec: the workload never inherits it), to
/// close; then it kills what is left in the cgroup (cgroup.kill) and removes it. When
/// profiler ends normally it has cleaned up already, and the reaper finds nothing to do.
fn spawn_reaper(path: &Path) -> Option<std::process::Child> {
    let exe = std::env::current_exe().ok()?;
    std::process::Command::new(exe)
        .arg("reap")
        .arg(path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()
}

/// Whether process `pid` is in the cgroup at `path` or below it.
pub fn pid_in(pid: u32, path: &Path) -> bool {
    let Ok(root) = cgroup2_mount() else {
        return false;
    };
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(str::to_owned)
        })
        .is_some_and(|rel| root.join(rel.trim_start_matches('/')).starts_with(path))
}

/// `profiler reap CGROUP` (hidden; see [`spawn_reaper`]).
pub fn reap(path: &Path) -> anyhow::Result<i32> {
    let _ = nix::unistd::setsid();
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGPIPE] {
        // SAFETY: setting a signal to be ignored.
        unsafe { libc::signal(sig, libc::SIG_IGN) };
    }
    let mut buf = [0u8; 64];
    loop {
        match std::io::Read::read(&mut std::io::stdin(), &mut buf) {
            Ok(0) => break,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    if !path.exists() {
        return Ok(0);
    }
    let root = cgroup2_mount()?;
    let relative = format!(
        "/{}",
        path.strip_prefix(&root)
            .context("not a cgroup below the cgroup2 mount")?
            .display()
    );
    let left = fs::read_to_string(path.join("cgroup.procs"))
        .map(|s| s.lines().count())
        .unwrap_or(0);
    clean_up(path, &relative);
    eprintln!(
        "profiler: the recorder of {} ended without cleaning up (killed?): stopped the {left} process(es) it left and \
         removed the cgroup; no profile was written",
        path.display()
    );
    Ok(0)
}

/// Descendant cgroups of `path` (whose path relative to the root is `relative`), as
/// (inode = cgroup id, path relative to the root).
pub fn children_of(path: &Path, relative: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                let p = e.path();
                if let (Ok(m), Ok(rel)) = (e.metadata(), p.strip_prefix(path)) {
                    out.push((m.ino(), format!("{relative}/{}", rel.display())));
                }
                stack.push(p);
            }
        }
    }
    out
}

/// Where a cgroup's resource peaks can be read: the v1 memory and pids controllers (where
/// a container engine on a hybrid host creates them) and the cgroup2 mount. Found once, from
/// the mount table, not assumed at /sys/fs/cgroup.
pub struct ResourceMounts {
    memory_v1: Option<PathBuf>,
    pids_v1: Option<PathBuf>,
    v2: Option<PathBuf>,
}

impl ResourceMounts {
    pub fn find() -> ResourceMounts {
        let mounts = cgroup_mounts();
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|m| m.fs_type == "cgroup" && m.super_options.contains_key(controller))
                .map(|m| m.mount_point.clone())
        };
        ResourceMounts {
            memory_v1: v1("memory"),
            pids_v1: v1("pids"),
            v2: mounts
                .iter()
                .find(|m| m.fs_type == "cgroup2")
                .map(|m| m.mount_point.clone()),
        }
    }
}

/// Samples the peaks a container's cgroup shows in the cgroup v1 memory and pids
/// hierarchies (where engines on hybrid hosts keep their controllers; the unified hierarchy
/// here has none): `memory.max_usage_in_bytes` and `pids.peak` (Linux 6.12+) are the kernel's
/// own peaks, so sampling only has to happen before the engine removes the cgroup; where
/// `pids.peak` is missing the task count is sampled.
pub fn sample_resources(
    mounts: &ResourceMounts,
    relative: &str,
    res: &mut crate::trace::image::Resources,
) {
    let rel = relative.trim_start_matches('/');
    let read = |base: &Option<PathBuf>, file: &str| {
        let path = base.as_ref()?.join(rel).join(file);
        fs::read_to_string(path)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
    };
    if let Some(m) = read(&mounts.memory_v1, "memory.max_usage_in_bytes")
        .or_else(|| read(&mounts.v2, "memory.peak"))
    {
        res.peak_memory_bytes = Some(res.peak_memory_bytes.unwrap_or(0).max(m));
    }
    if let Some(t) =
        read(&mounts.pids_v1, "pids.peak").or_else(|| read(&mounts.pids_v1, "pids.current"))
    {
        res.peak_tasks = Some(res.peak_tasks.unwrap_or(0).max(t));
    }
}

/// Removes a cgroup directory and its (empty) descendants, deepest first.
fn remove_tree(path: &Path) {
    if let Ok(entries) = fs::read_dir(path) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(path);
}

fn cgroup_v1_mounts() -> Vec<PathBuf> {
    cgroup_mounts()
        .into_iter()
        .filter(|m| m.fs_type == "cgroup")
        .map(|m| m.mount_point)
        .collect()
}

fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

fn kill_and_wait(path: &Path) {
    if !populated(path) {
        return;
    }
    // cgroup.kill (Linux 5.14) kills every process including ones forking right now.
    if let Ok(mut f) = fs::OpenOptions::new()
        .write(true)
        .open(path.join("cgroup.kill"))
    {
        let _ = f.write_all(b"1");
    } else if let Ok(procs) = fs::read_to_string(path.join("cgroup.procs")) {
        for pid in procs.lines().filter_map(|l| l.parse::<i32>().ok()) {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while populated(path) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Removes recording cgroups whose profiler died without cleaning up (e.g. SIGKILL).
fn sweep_stale(parent: &Path) {
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix("rec-")) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let relative = format!("/{PARENT}/{}", entry.file_name().to_string_lossy());
        clean_up(&entry.path(), &relative);
    }
}
