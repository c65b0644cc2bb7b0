//! A workload profiler did not start: a running container, a cgroup2 path or a process,
//! found as the cgroup it runs in (`record --attach`, `watch --attach`).
//!
//! TARGET is `docker:NAME`, `podman:NAME`, `pid:N` (or a bare number), `cgroup:/PATH`
//! (relative to the cgroup2 mount, or a path under it), or a bare container name or id
//! (docker first, then podman). `$PROFILER_DOCKER` / `$PROFILER_PODMAN` name the engine CLI
//! as shell words (`podman --root /srv/podman`), for engines with private storage.
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};

use crate::recording::cgroup::cgroup2_mount;

/// A running workload's cgroup.
#[derive(Clone, Debug)]
pub struct Attached {
    /// Its cgroup2 path as /proc/PID/cgroup writes it (`/docker/<id>`).
    pub cgroup_path: String,
    /// The cgroup's directory under the cgroup2 mount.
    pub dir: PathBuf,
    /// The cgroup id (the directory's inode number on cgroup2).
    pub cgroup_id: u64,
    /// The container, when TARGET named one (or the cgroup is one an engine knows).
    pub container: Option<crate::trace::ContainerInfo>,
    /// The engine CLI that found it.
    pub engine: Option<Vec<String>>,
    /// The process its cgroup was read from (TARGET a pid or a container), for [`Attached::confirm`].
    process: Option<Arc<HeldProcess>>,
}

impl Attached {
    /// A cgroup profiler made itself and starts the workload in (`watch -- CMD`).
    pub fn own(cgroup_path: String, dir: PathBuf, cgroup_id: u64) -> Attached {
        Attached {
            cgroup_path,
            dir,
            cgroup_id,
            container: None,
            engine: None,
            process: None,
        }
    }

    /// Once the cgroup is recorded: the process TARGET named is still in it, by the cgroup's
    /// identity (its inode), not its path: a container restarted meanwhile has a new cgroup
    /// at the same path. A move between the cgroup's read and the recording's start would
    /// go unseen (the cgroup-move hook reports moves out of recorded cgroups only). A
    /// process that exited meanwhile passes only while the cgroup it ran in still exists and
    /// holds a process: otherwise the recording would watch a cgroup that is gone or empty
    /// and give an empty profile.
    pub fn confirm(&self) -> anyhow::Result<()> {
        let Some(process) = &self.process else {
            return Ok(());
        };
        let inode_of = |dir: &Path| std::fs::symlink_metadata(dir).ok().map(|m| m.ino());
        // Nothing left to record (the target exited, or is a zombie, and nothing else runs
        // there): the recording would end at once with an empty profile. Told after a move,
        // which says more.
        let empty = || {
            anyhow::anyhow!(
                "cgroup {} holds no process any more (process {} exited while profiler attached to it)",
                self.cgroup_path,
                process.pid
            )
        };
        match process.cgroup() {
            Ok(now) => {
                let dir = cgroup2_mount()?.join(now.trim_start_matches('/'));
                if inode_of(&dir) != Some(self.cgroup_id) {
                    bail!(
                        "process {} moved from cgroup {} to {now} while profiler attached to it",
                        process.pid,
                        self.cgroup_path
                    );
                }
                if !populated(&self.dir) {
                    return Err(empty());
                }
                Ok(())
            }
            Err(e) if process.alive() => Err(e),
            Err(_) if inode_of(&self.dir) == Some(self.cgroup_id) && !populated(&self.dir) => {
                Err(empty())
            }
            Err(_) if inode_of(&self.dir) == Some(self.cgroup_id) => Ok(()),
            Err(_) => bail!(
                "process {} exited and its cgroup {} is gone while profiler attached to it",
                process.pid,
                self.cgroup_path
            ),
        }
    }
}

/// A process held by a pidfd (`pidfd_open`, Linux 5.3), so that a pid read from an engine
/// or the command line names one process throughout: a pid is reused only once its process
/// is gone, and the pidfd tells when it is.
#[derive(Debug)]
struct HeldProcess {
    pid: u32,
    fd: OwnedFd,
}

impl HeldProcess {
    fn open(pid: u32) -> anyhow::Result<HeldProcess> {
        // SAFETY: pidfd_open takes no pointers; a descriptor it returns is ours.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("no process {pid}"));
        }
        Ok(HeldProcess {
            pid,
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// Whether the process still runs (signal 0 through the pidfd: ESRCH once it is gone).
    fn alive(&self) -> bool {
        // SAFETY: no siginfo is passed.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                0,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        r == 0
    }

    /// Its cgroup2 path: /proc/PID/cgroup read while the pidfd held it, so the file was this
    /// process's when the process is still alive after the read.
    fn cgroup(&self) -> anyhow::Result<String> {
        let path = cgroup_of_pid(self.pid)?;
        if !self.alive() {
            bail!("process {} exited while its cgroup was read", self.pid);
        }
        Ok(path)
    }
}

fn engine_cli(engine: &str) -> Vec<String> {
    let var = match engine {
        "docker" => "PROFILER_DOCKER",
        _ => "PROFILER_PODMAN",
    };
    std::env::var(var)
        .ok()
        .and_then(|v| shell_words::split(&v).ok())
        .filter(|w| !w.is_empty())
        .unwrap_or_else(|| vec![engine.to_owned()])
}

/// The main pid of a running container, from its engine.
fn container_pid(cli: &[String], name: &str) -> Option<u32> {
    let out = std::process::Command::new(&cli[0])
        .args(&cli[1..])
        .args([
            "inspect",
            "--format",
            "{{.State.Pid}} {{.State.Running}}",
            name,
        ])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    let pid: u32 = words.next()?.parse().ok()?;
    (words.next() == Some("true") && pid != 0).then_some(pid)
}

/// The cgroup2 path of process `pid` (its `0::` line).
pub fn cgroup_of_pid(pid: u32) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("no process {pid}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
        .with_context(|| format!("process {pid} is in no cgroup2 cgroup (/proc/{pid}/cgroup)"))
}

/// Resolves TARGET to the cgroup to record. Never the root cgroup, nor profiler's own
/// cgroup or one of its ancestors: `--attach` must not take in the host or other workloads.
pub fn resolve(target: &str) -> anyhow::Result<Attached> {
    let root = cgroup2_mount()?;
    let (cgroup_path, container, engine, process) = if let Some(pid) = target
        .strip_prefix("pid:")
        .or_else(|| target.bytes().all(|b| b.is_ascii_digit()).then_some(target))
    {
        let pid: u32 = pid
            .parse()
            .with_context(|| format!("bad pid in {target:?}"))?;
        let process = HeldProcess::open(pid)?;
        (process.cgroup()?, None, None, Some(process))
    } else if let Some(path) = target.strip_prefix("cgroup:") {
        let path = Path::new(path);
        let rel = path.strip_prefix(&root).unwrap_or(path);
        (
            format!("/{}", rel.display().to_string().trim_start_matches('/')),
            None,
            None,
            None,
        )
    } else {
        let (engines, name): (Vec<&str>, &str) = match target.split_once(':') {
            Some(("docker", n)) => (vec!["docker"], n),
            Some(("podman", n)) => (vec!["podman"], n),
            _ => (vec!["docker", "podman"], target),
        };
        let mut found = None;
        for e in engines {
            let cli = engine_cli(e);
            if let Some(pid) = container_pid(&cli, name) {
                found = Some((pid, cli));
                break;
            }
        }
        let Some((pid, cli)) = found else {
            bail!(
                "no running container {name:?} (asked docker and podman; a pid is pid:N, a cgroup cgroup:/PATH)"
            );
        };
        // The engine's pid, held: asked again once the cgroup is read, the engine confirms
        // the container's process was alive from its first answer until after the pidfd was
        // opened, so that pidfd (and the cgroup read through it) is the container's, not a
        // process that took the pid of an exited one.
        let process = HeldProcess::open(pid)?;
        let cgroup = process.cgroup()?;
        if container_pid(&cli, name) != Some(pid) {
            bail!("container {name:?} stopped or restarted while profiler attached to it");
        }
        let info = crate::recording::containers::inspect(std::slice::from_ref(&cli), name);
        (cgroup, info, Some(cli), Some(process))
    };
    let rel = cgroup_path.trim_start_matches('/');
    if rel.is_empty()
        || rel
            .split('/')
            .any(|c| c == ".." || c == "." || c.is_empty())
    {
        bail!("refusing to record cgroup {cgroup_path:?}: the root cgroup takes in the whole host");
    }
    if let Ok(own) = cgroup_of_pid(std::process::id()) {
        let own = own.trim_start_matches('/');
        if own == rel || own.starts_with(&format!("{rel}/")) {
            bail!("refusing to record cgroup {cgroup_path:?}: profiler itself runs in it");
        }
    }
    let dir = root.join(rel);
    let meta = std::fs::symlink_metadata(&dir)
        .with_context(|| format!("no cgroup {cgroup_path:?} under {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a cgroup", dir.display());
    }
    Ok(Attached {
        cgroup_path: format!("/{rel}"),
        dir,
        cgroup_id: meta.ino(),
        container,
        engine,
        process: process.map(Arc::new),
    })
}

/// Whether the cgroup still holds a process (a cgroup that is gone counts as empty).
pub fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

/// `30s`, `5m`, `1h`, `250ms`, or plain seconds.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {text:?} (e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" | "" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {text:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs > 0.0) {
        return Err(format!("bad duration {text:?}"));
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(parse_duration("30s").unwrap().as_secs(), 30);
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert_eq!(parse_duration("250ms").unwrap().as_millis(), 250);
        assert_eq!(parse_duration("2").unwrap().as_secs(), 2);
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn a_process_that_moves_or_exits_while_attached_to_is_told_apart() {
        use crate::recording::cgroup::RecordingCgroup;
        use std::io::Write as _;
        let (first, second) = match (RecordingCgroup::create(), RecordingCgroup::create()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("skipped: cannot make cgroups here ({e:#}); needs root and cgroup2");
                return;
            }
        };
        let sleep = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .unwrap()
        };
        let (mut target, mut other) = (sleep(), sleep());
        let pid = target.id();
        write!(first.procs_file().unwrap(), "{pid}").unwrap();
        write!(first.procs_file().unwrap(), "{}", other.id()).unwrap();
        let attached = resolve(&format!("pid:{pid}")).unwrap();
        assert_eq!(attached.cgroup_path, first.relative_path());
        assert_eq!(attached.cgroup_id, first.id());
        attached.confirm().unwrap();
        // Moved after its cgroup was read: refused.
        write!(second.procs_file().unwrap(), "{pid}").unwrap();
        let moved = attached.confirm().unwrap_err();
        assert!(
            format!("{moved:#}").contains("moved from cgroup"),
            "{moved:#}"
        );
        // Gone: its pid names nothing (or another process) and is not read again. Passes
        // while its cgroup is there and holds a process; not once it is empty.
        target.kill().unwrap();
        target.wait().unwrap();
        assert!(HeldProcess::open(std::process::id()).unwrap().alive());
        assert!(attached.process.as_ref().unwrap().cgroup().is_err());
        attached.confirm().unwrap();
        other.kill().unwrap();
        other.wait().unwrap();
        let empty = attached.confirm().unwrap_err();
        assert!(
            format!("{empty:#}").contains("holds no process"),
            "{empty:#}"
        );
        drop(first);
        let gone = attached.confirm().unwrap_err();
        assert!(format!("{gone:#}").contains("is gone"), "{gone:#}");
    }

    #[test]
    fn the_root_cgroup_and_profilers_own_are_refused() {
        if cgroup2_mount().is_err() {
            return;
        }
        assert!(resolve("cgroup:/").is_err());
        let own = cgroup_of_pid(std::process::id()).unwrap();
        if own != "/" {
            assert!(resolve(&format!("cgroup:{own}")).is_err());
            assert!(resolve(&format!("pid:{}", std::process::id())).is_err());
        }
    }
}
