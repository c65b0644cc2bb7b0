//! Starting the workload directly inside the recording cgroup: `clone3(CLONE_INTO_CGROUP)`.
//!
//! Moving a process into a cgroup after it exists (a write to `cgroup.procs`) takes the
//! global `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period and
//! stalls every fork and exit on the host meanwhile (kernel/cgroup/cgroup.c,
//! `cgroup_procs_write_start`, unless cgroup2 is mounted with `favordynmods`): a visible
//! part of profiler's start-up (BENCHMARKS.md, M11). A child created in the cgroup
//! (Linux 5.7+) takes only the read side. The child also comes with a pidfd (`CLONE_PIDFD`), which is how it is waited for.
//! Where clone3 or CLONE_INTO_CGROUP is missing the caller falls back to the cgroup.procs
//! write (`PROFILER_SPAWN_FALLBACK=1` forces that, for tests).
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use anyhow::Context as _;
use tokio::io::unix::AsyncFd;

use crate::trace::Exit;

/// include/uapi/linux/sched.h
const CLONE_PIDFD: u64 = 0x1000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` up to `cgroup` (CLONE_ARGS_SIZE_VER2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A workload process started by [`spawn_in_cgroup`].
pub struct Child {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
}

/// Why [`spawn_in_cgroup`] did not start the command.
pub enum SpawnError {
    /// This kernel cannot create a process in a cgroup: use another way.
    Unsupported(std::io::Error),
    /// The command could not be started (exec failed, ...).
    Failed(anyhow::Error),
}

fn cstring(s: &OsStr) -> anyhow::Result<CString> {
    CString::new(s.as_bytes()).with_context(|| format!("{s:?} contains a NUL byte"))
}

/// Starts `program` (argv[0] `command[0]`) with the environment plus `env`, as a member of
/// the cgroup2 directory `cgroup_dir` from its first instruction. The child dies with
/// profiler's main thread (PR_SET_PDEATHSIG), as the workload must not outlive a killed
/// profiler.
/// A Landlock ruleset the child restricts itself to just before its exec, made by the
/// parent: `profiler enforce`.
pub type Restriction = Option<profiler_seal::ChildRestriction>;

pub fn spawn_in_cgroup(
    cgroup_dir: &Path,
    program: &Path,
    command: &[String],
    env: &[(&str, String)],
    restrict: Restriction,
) -> Result<Child, SpawnError> {
    if std::env::var_os("PROFILER_SPAWN_FALLBACK").is_some() {
        // For tests: the path kernels before 5.7 take.
        return Err(SpawnError::Unsupported(std::io::Error::from_raw_os_error(
            libc::ENOSYS,
        )));
    }
    let failed = SpawnError::Failed;
    // Everything the child needs is made before the clone: between clone and exec a child
    // of a threaded process may only make async-signal-safe calls (no allocation).
    let path = cstring(program.as_os_str()).map_err(failed)?;
    let argv: Vec<CString> = command
        .iter()
        .map(|a| cstring(OsStr::new(a)))
        .collect::<anyhow::Result<_>>()
        .map_err(failed)?;
    let mut vars: Vec<(OsString, OsString)> = std::env::vars_os()
        .filter(|(k, _)| !env.iter().any(|(name, _)| OsStr::new(name) == k))
        .collect();
    vars.extend(env.iter().map(|(k, v)| (k.into(), v.into())));
    let envp: Vec<CString> = vars
        .iter()
        .map(|(k, v)| {
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            cstring(&kv)
        })
        .collect::<anyhow::Result<_>>()
        .map_err(failed)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut envp_ptrs: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_ptrs.push(std::ptr::null());

    let dir = std::fs::File::open(cgroup_dir)
        .with_context(|| format!("cannot open {}", cgroup_dir.display()))
        .map_err(failed)?;
    // The child reports a failed exec through this pipe; a successful exec closes it.
    let (report_read, report_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .context("pipe")
        .map_err(failed)?;
    let mut pidfd: libc::c_int = -1;
    let args = CloneArgs {
        flags: CLONE_PIDFD | CLONE_INTO_CGROUP,
        pidfd: &raw mut pidfd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: dir.as_raw_fd() as u64,
        ..Default::default()
    };
    let write_fd = report_write.as_raw_fd();
    // SAFETY: clone3 without CLONE_VM is a fork: the child gets a copy of this process and
    // runs only the async-signal-safe calls below before exec or _exit.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw const args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if ret == 0 {
        // Child.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // What std::process::Command does too: the Rust runtime ignores SIGPIPE and
            // tokio blocks nothing, but a clean slate is what a shell would give.
            let mut empty: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut empty);
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            if let Some(r) = &restrict
                && r.apply().is_err()
            {
                let errno = *libc::__errno_location();
                libc::write(write_fd, (&raw const errno).cast(), 4);
                libc::_exit(126);
            }
            libc::execve(path.as_ptr(), argv_ptrs.as_ptr(), envp_ptrs.as_ptr());
            let errno = *libc::__errno_location();
            libc::write(write_fd, (&raw const errno).cast(), 4);
            libc::_exit(127);
        }
    }
    drop(report_write);
    if ret < 0 {
        let e = std::io::Error::last_os_error();
        return Err(match e.raw_os_error() {
            // No clone3 (before 5.3), no CLONE_INTO_CGROUP (before 5.7) or a cgroup it
            // refuses (EOPNOTSUPP on a v1 hierarchy, EBUSY on a cgroup with controllers).
            Some(libc::ENOSYS | libc::EINVAL | libc::E2BIG | libc::EOPNOTSUPP | libc::EBUSY) => {
                SpawnError::Unsupported(e)
            }
            _ => SpawnError::Failed(anyhow::Error::new(e).context("clone3")),
        });
    }
    let pid = ret as i32;
    // SAFETY: the kernel just returned this fd to this process.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let mut errno = [0u8; 4];
    let n = nix::unistd::read(&report_read, &mut errno).unwrap_or(0);
    if n == 4 {
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
        let e = std::io::Error::from_raw_os_error(i32::from_ne_bytes(errno));
        return Err(SpawnError::Failed(
            anyhow::Error::new(e).context(format!("cannot start {}", program.display())),
        ));
    }
    // SAFETY: the AsyncFd owns the pidfd, so the fd stays open while it is registered.
    let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .context("watching the workload's pidfd")
        .map_err(failed)?;
    Ok(Child { pid, pidfd })
}

impl Child {
    pub fn id(&self) -> i32 {
        self.pid
    }

    /// Waits for the process to end (a pidfd becomes readable then) and reaps it.
    pub async fn wait(&mut self) -> anyhow::Result<Exit> {
        use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
        loop {
            let mut guard = self.pidfd.readable().await?;
            match waitpid(
                nix::unistd::Pid::from_raw(self.pid),
                Some(WaitPidFlag::WNOHANG),
            ) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(Exit::Code(code)),
                Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(Exit::Signal(sig as i32)),
                Ok(_) => guard.clear_ready(),
                Err(e) => return Err(anyhow::Error::new(e).context("waiting for the workload")),
            }
        }
    }
}

/// The fallback where clone3(CLONE_INTO_CGROUP) is missing: fork, join the cgroup through
/// cgroup.procs between fork and exec, exec.
pub fn spawn_then_join(
    cgroup: &crate::recording::cgroup::RecordingCgroup,
    program: &std::path::Path,
    command: &[String],
    env: &[(&str, String)],
    restrict: Restriction,
) -> anyhow::Result<tokio::process::Child> {
    let procs = cgroup.procs_file()?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg0(&command[0]).args(&command[1..]);
    cmd.envs(env.iter().map(|(k, v)| (*k, v)));
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // The workload must not outlive a killed profiler (the cgroup would then hold an
            // unrecorded process); this is the spawning thread of a current-thread runtime.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // Join the recording cgroup before exec: the probes are attached already, so the
            // execve itself and everything after it is recorded.
            if libc::write(procs_fd, b"0".as_ptr().cast(), 1) != 1 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(r) = &restrict {
                r.apply()?;
            }
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}
