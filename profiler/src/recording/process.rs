//! The workload process: started inside its cgroup, waited for, its termination signals
//! forwarded, and what it left behind found.
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use crate::kernel::events::{EventRing, drain_events};
use crate::recording::cgroup::RecordingCgroup;
use crate::recording::spawn::spawn_then_join;
use crate::timings;
use crate::trace::Exit;
use profiler_common::Event;

/// Every process whose parent chain leads to `pid`, from /proc (field 4 of
/// /proc/PID/stat, after the command name, which may hold spaces and parentheses).
pub fn descendants(pid: u32) -> Vec<u32> {
    let mut parent_of = std::collections::HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u32>().ok())
            {
                parent_of.insert(p, ppid);
            }
        }
    }
    parent_of
        .keys()
        .copied()
        .filter(|p| {
            let mut cur = *p;
            for _ in 0..64 {
                match parent_of.get(&cur) {
                    Some(&pp) if pp == pid => return true,
                    Some(&pp) if pp > 1 => cur = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect()
}

/// Starts the command inside the cgroup and waits for it, forwarding termination signals.
pub async fn run_in_cgroup(
    cgroup: &RecordingCgroup,
    program: &std::path::Path,
    command: &[String],
    env: &[(&str, String)],
    restrict: crate::recording::spawn::Restriction,
    ring: &mut EventRing,
    on_events: &mut dyn FnMut(Vec<Event>),
) -> anyhow::Result<Exit> {
    // Handlers first: once the workload runs, a signal meant for profiler may come any time.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    timings::mark("spawning the workload");
    let mut child = match crate::recording::spawn::spawn_in_cgroup(
        cgroup.path(),
        program,
        command,
        env,
        restrict.clone(),
    ) {
        Ok(child) => WorkloadProcess::InCgroup(child),
        Err(crate::recording::spawn::SpawnError::Failed(e)) => return Err(e),
        Err(crate::recording::spawn::SpawnError::Unsupported(_)) => {
            WorkloadProcess::Moved(spawn_then_join(cgroup, program, command, env, restrict)?)
        }
    };
    timings::mark("workload started");
    let pid = child.id();
    let mut drain_tick = tokio::time::interval(Duration::from_millis(
        profiler_common::EVENT_DRAIN_INTERVAL_MS,
    ));
    let exit = loop {
        tokio::select! {
            exit = child.wait() => break exit?,
            guard = ring.readable_mut() => {
                let mut guard = guard?;
                let mut batch = Vec::new();
                drain_events(guard.get_inner_mut(), &mut batch);
                on_events(batch);
                guard.clear_ready();
            }
            _ = drain_tick.tick() => {
                let mut batch = Vec::new();
                drain_events(ring.get_mut(), &mut batch);
                on_events(batch);
            }
            _ = sigint.recv() => {
                // Ctrl-C on a terminal reaches every process of the foreground group, the
                // workload included; forwarding it again would deliver it twice.
                if !in_terminal_foreground() {
                    forward(pid, libc::SIGINT);
                }
            }
            _ = sigterm.recv() => forward(pid, libc::SIGTERM),
            _ = sighup.recv() => forward(pid, libc::SIGHUP),
        }
    };
    Ok(exit)
}

/// The workload process, however it was started.
enum WorkloadProcess {
    /// Created inside the recording cgroup (clone3, Linux 5.7+).
    InCgroup(crate::recording::spawn::Child),
    /// Forked, then moved into the cgroup before exec.
    Moved(tokio::process::Child),
}

impl WorkloadProcess {
    /// None once reaped (never 0: kill(0, ...) would signal profiler's own process group).
    fn id(&self) -> Option<i32> {
        match self {
            WorkloadProcess::InCgroup(c) => Some(c.id()),
            WorkloadProcess::Moved(c) => c.id().map(|p| p as i32),
        }
    }

    async fn wait(&mut self) -> anyhow::Result<Exit> {
        use std::os::unix::process::ExitStatusExt as _;
        match self {
            WorkloadProcess::InCgroup(c) => c.wait().await,
            WorkloadProcess::Moved(c) => {
                let status = c.wait().await?;
                Ok(match (status.code(), status.signal()) {
                    (Some(code), _) => Exit::Code(code),
                    (None, Some(sig)) => Exit::Signal(sig),
                    _ => Exit::Code(1),
                })
            }
        }
    }
}

fn forward(pid: Option<i32>, sig: i32) {
    if let Some(pid) = pid {
        unsafe { libc::kill(pid, sig) };
    }
}

fn in_terminal_foreground() -> bool {
    unsafe {
        let fg = libc::tcgetpgrp(0);
        fg > 0 && fg == libc::getpgrp()
    }
}

/// `--wait-descendants`: wait for processes left in the cgroup; a signal ends the wait.
pub async fn wait_until_empty(cgroup: &RecordingCgroup) {
    let Ok(mut sigint) = signal(SignalKind::interrupt()) else {
        return;
    };
    let Ok(mut sigterm) = signal(SignalKind::terminate()) else {
        return;
    };
    loop {
        if !cgroup.populated() {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = sigint.recv() => return,
            _ = sigterm.recv() => return,
        }
    }
}
