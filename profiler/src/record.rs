//! `profiler record`: run a command in a fresh cgroup with the probes attached, then turn
//! what the kernel aggregated into a trace and profiles.
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::capabilities::{Kallsyms, checks_from_kernel};
use crate::cgroup::RecordingCgroup;
use crate::output;
use crate::probes::{Probes, check_privileges};
use crate::summary;
use crate::trace::{
    Exit, Host, Losses, Probes as ProbeInfo, SyscallEntry, TRACE_SCHEMA, Trace, Workload,
};
use crate::workload::resolve_command;

pub struct RecordOptions {
    pub out: PathBuf,
    pub command: Vec<String>,
    pub quiet: bool,
    pub wait_descendants: bool,
}

/// Exit code when the workload succeeded but the recording lost data.
pub const EXIT_LOST_DATA: i32 = 3;

pub fn record(opts: RecordOptions) -> anyhow::Result<i32> {
    check_privileges("profiler record")?;
    let program = resolve_command(&opts.command[0])?;
    let cgroup = RecordingCgroup::create()?;
    let mut probes = Probes::attach()?;
    probes.track(cgroup.id())?;
    if probes.cap_hook.is_none() && !opts.quiet {
        eprintln!(
            "profiler: warning: no capability hook could be attached; capabilities.json will be empty:\n  {}",
            probes.cap_hook_errors.join("\n  ")
        );
    }

    let recorded_at_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let started = Instant::now();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let exit = runtime.block_on(run_in_cgroup(&cgroup, &program, &opts.command))?;

    let leftover = cgroup.process_count();
    if leftover > 0 {
        if opts.wait_descendants {
            runtime.block_on(wait_until_empty(&cgroup));
        }
        cgroup.kill_all();
    }
    let duration_ms = started.elapsed().as_millis() as u64;

    let collected = probes.collect(cgroup.id())?;
    let cap_hook = probes.cap_hook.clone();
    let syscall_hook = probes.syscall_hook.clone();
    drop(probes); // detaches every program
    drop(cgroup);

    let kallsyms = Kallsyms::load().ok();
    let uname = nix::sys::utsname::uname().context("uname")?;
    let trace = Trace {
        schema: TRACE_SCHEMA.to_owned(),
        profiler_version: env!("CARGO_PKG_VERSION").to_owned(),
        recorded_at_unix,
        host: Host {
            kernel: uname.release().to_string_lossy().into_owned(),
            machine: uname.machine().to_string_lossy().into_owned(),
        },
        workload: Workload {
            command: opts.command.clone(),
            exit,
            duration_ms,
            leftover_processes: leftover,
        },
        probes: ProbeInfo {
            syscalls: syscall_hook,
            capabilities: cap_hook,
        },
        syscalls: collected
            .syscalls
            .iter()
            .map(|(arch, nrs)| {
                let entries = nrs
                    .iter()
                    .map(|&nr| SyscallEntry {
                        nr,
                        name: arch.display_name(nr),
                    })
                    .collect();
                (*arch, entries)
            })
            .collect(),
        capability_checks: checks_from_kernel(collected.cap_checks, kallsyms.as_ref()),
        losses: Losses {
            syscalls_out_of_range: collected.out_of_range,
            capability_map_full: collected.cap_map_full,
            capability_stack_missing: collected.cap_stack_missing,
        },
    };
    let profiles = output::generate(std::slice::from_ref(&trace));
    let files = output::render(Some(&trace), &profiles);
    let written = output::write_atomically(&opts.out, &files)?;
    if !opts.quiet {
        summary::print(&trace, &profiles, &written);
    }
    if trace.losses.any() {
        eprintln!(
            "profiler: ERROR: the recording lost data ({} syscalls out of range, {} capability checks dropped); \
             the profiles are incomplete",
            trace.losses.syscalls_out_of_range, trace.losses.capability_map_full
        );
        if exit.as_exit_code() == 0 {
            return Ok(EXIT_LOST_DATA);
        }
    }
    Ok(exit.as_exit_code())
}

/// Starts the command inside the cgroup and waits for it, forwarding termination signals.
async fn run_in_cgroup(
    cgroup: &RecordingCgroup,
    program: &std::path::Path,
    command: &[String],
) -> anyhow::Result<Exit> {
    let procs = cgroup.procs_file()?;
    let procs_fd = procs.as_raw_fd();
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg0(&command[0]).args(&command[1..]);
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
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    drop(procs);
    let pid = child.id().map(|p| p as i32);
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status?,
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
    use std::os::unix::process::ExitStatusExt as _;
    Ok(match (status.code(), status.signal()) {
        (Some(code), _) => Exit::Code(code),
        (None, Some(sig)) => Exit::Signal(sig),
        _ => Exit::Code(1),
    })
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
async fn wait_until_empty(cgroup: &RecordingCgroup) {
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
