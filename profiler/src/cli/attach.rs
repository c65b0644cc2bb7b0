//! `profiler record --attach TARGET`: record a workload that is already running (a Docker or
//! podman container, a cgroup, a process's cgroup) from now on, until it exits, `--duration`
//! elapses, or SIGINT/SIGTERM. The start-up was not seen, and the trace says so
//! (`cgroup.attached`); the programs already running are read from /proc at the start.
//! Only TARGET's cgroup is recorded: other containers and the host never leak in.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::exit_error;
use crate::kernel::events::{EventLog, watch_events};
use crate::kernel::{Probes, check_privileges};
use crate::profile::seccomp::GenerateOptions;
use crate::recording::attach::{Attached, populated, resolve};
use crate::recording::live_facts::LiveFacts;
use crate::recording::to_trace::TraceContext;
use crate::trace::{Exit, Trace, Workload};

pub struct AttachOptions {
    pub target: String,
    pub duration: Option<Duration>,
    pub out: PathBuf,
    pub quiet: bool,
    pub generate: GenerateOptions,
}

/// Why an attached session ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// The cgroup emptied: the workload exited.
    Exited,
    /// `--duration` elapsed.
    Duration,
    /// SIGINT or SIGTERM.
    Signal,
}

/// The probes on one running workload's cgroup, and what they saw so far.
pub struct Session {
    pub target: String,
    pub attached: Attached,
    probes: Probes,
    facts: LiveFacts,
    events: EventLog,
    kallsyms: Option<std::sync::Arc<crate::kernel::kallsyms::Kallsyms>>,
    started: Instant,
    recorded_at_unix: u64,
    /// Programs running when the session began: (path in their root, argv[0]).
    running: Vec<(String, String)>,
    /// `uid:gid` of the processes running when the session began.
    ran_as: BTreeSet<String>,
}

fn cgroup_procs(dir: &std::path::Path) -> Vec<u32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn ids_of(pid: u32) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let first = |key: &str| -> Option<String> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().next().map(str::to_owned))
    };
    Some(format!("{}:{}", first("Uid:")?, first("Gid:")?))
}

impl Session {
    /// Resolves TARGET and starts recording its cgroup.
    pub fn start(target: &str) -> anyhow::Result<Session> {
        let attached =
            resolve(target).map_err(|e| exit_error(2, format!("--attach {target}: {e:#}")))?;
        let mut probes = Probes::attach(0)?;
        probes.track_running(attached.cgroup_id)?;
        let mut facts = LiveFacts::attached(attached.cgroup_id);
        // After the probes: a program executed from now on is in the events, one running
        // already is read here.
        let pids = cgroup_procs(&attached.dir);
        let running = facts.seed_running(attached.cgroup_id, &pids);
        let ran_as = pids.iter().filter_map(|p| ids_of(*p)).collect();
        let kallsyms = crate::kernel::kallsyms::Kallsyms::load()
            .ok()
            .map(std::sync::Arc::new);
        Ok(Session {
            target: target.to_owned(),
            attached,
            probes,
            facts,
            events: EventLog::default(),
            kallsyms,
            started: Instant::now(),
            recorded_at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            running,
            ran_as,
        })
    }

    fn feed(&mut self, batch: Vec<profiler_common::Event>) {
        let dir = self.attached.dir.clone();
        let id = self.attached.cgroup_id;
        // A process that leaves the cgroup is the engine's business here (profiler did not
        // start this workload): it is not moved back, only no longer recorded.
        self.facts
            .events(&batch, &|_| cgroup_procs(&dir), &|c| c == id, &|_| {});
        self.events.extend(batch);
    }

    /// Runs until the workload exits, `duration` elapses or a signal comes; `every`
    /// `period`, `on_tick` sees the session (`profiler watch` compares what was seen so far).
    pub fn run(
        &mut self,
        duration: Option<Duration>,
        period: Duration,
        on_tick: &mut dyn FnMut(&mut Session) -> anyhow::Result<()>,
    ) -> anyhow::Result<Ended> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let ring = self.probes.take_events()?;
        runtime.block_on(async {
            let mut ring = watch_events(ring)?;
            let mut sigint = signal(SignalKind::interrupt())?;
            let mut sigterm = signal(SignalKind::terminate())?;
            let mut drain = tokio::time::interval(Duration::from_millis(
                profiler_common::EVENT_DRAIN_INTERVAL_MS,
            ));
            let mut tick = tokio::time::interval(period);
            let deadline = duration.map(|d| tokio::time::Instant::now() + d);
            let ended = loop {
                tokio::select! {
                    guard = ring.readable_mut() => {
                        let mut guard = guard?;
                        let mut batch = Vec::new();
                        crate::kernel::events::drain_events(guard.get_inner_mut(), &mut batch);
                        self.feed(batch);
                        guard.clear_ready();
                    }
                    _ = drain.tick() => {
                        let mut batch = Vec::new();
                        crate::kernel::events::drain_events(ring.get_mut(), &mut batch);
                        self.feed(batch);
                        if !populated(&self.attached.dir) {
                            break Ended::Exited;
                        }
                        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                            break Ended::Duration;
                        }
                    }
                    _ = tick.tick() => on_tick(self)?,
                    _ = sigint.recv() => break Ended::Signal,
                    _ = sigterm.recv() => break Ended::Signal,
                }
            };
            let mut batch = Vec::new();
            crate::kernel::events::drain_events(ring.get_mut(), &mut batch);
            self.feed(batch);
            anyhow::Ok(ended)
        })
    }

    /// The trace of what was seen so far; `finish` ends the recording (the kernel's records
    /// are released), otherwise it goes on.
    pub fn trace(&mut self, finish: bool, exit: Exit) -> anyhow::Result<Trace> {
        let id = self.attached.cgroup_id;
        let collected = if finish {
            self.probes.collect(id)?
        } else {
            self.probes.snapshot(id)?
        };
        let c = collected
            .into_iter()
            .find(|c| c.cgroup_id == id)
            .context("the recording has no record of its cgroup")?;
        let ctx = TraceContext::new(
            self.recorded_at_unix,
            Workload {
                command: vec!["attach".into(), self.target.clone()],
                exit,
                duration_ms: self.started.elapsed().as_millis() as u64,
                leftover_processes: 0,
            },
            self.probes.syscall_hook.clone(),
            self.probes.cap_hook.clone(),
            self.probes.cred_check,
            self.kallsyms.clone(),
        )?;
        let container = self.attached.container.is_some();
        let mut trace = ctx.trace(
            c,
            Some(self.attached.cgroup_path.clone()),
            container,
            self.events.events(),
            std::path::Path::new("/"),
            Default::default(),
        );
        trace.cgroup.attached = true;
        trace.cgroup.container_info = self.attached.container.clone();
        for (path, argv0) in &self.running {
            trace
                .image
                .executables
                .entry(path.clone())
                .or_default()
                .insert(argv0.clone());
        }
        trace.image.users.ran_as.extend(self.ran_as.iter().cloned());
        trace.image.users.needs_root |= self.ran_as.iter().any(|u| u.starts_with("0:"));
        trace.image.users.supplementary_groups = self.facts.groups(id);
        trace.image.executable_files = self.facts.executables(id);
        trace.image.directories = self.facts.facts(
            id,
            &trace.image.writable_directories,
            &trace.image.written_paths,
        );
        Ok(trace)
    }
}

pub fn record_attached(opts: AttachOptions) -> anyhow::Result<i32> {
    check_privileges("profiler record --attach")?;
    crate::profile::out_dir::OutputDir::check(&opts.out, opts.generate.follow_symlinks)
        .map_err(|e| exit_error(2, format!("--out {}: {e:#}", opts.out.display())))?;
    let mut session = Session::start(&opts.target)?;
    if !opts.quiet {
        eprintln!(
            "profiler: recording {} (cgroup {}) from now on: its start-up is not in this recording",
            opts.target, session.attached.cgroup_path
        );
    }
    let ended = session.run(opts.duration, Duration::from_secs(3600), &mut |_| Ok(()))?;
    let trace = session.trace(true, Exit::Unknown)?;
    if !opts.quiet {
        eprintln!(
            "profiler: {}",
            match ended {
                Ended::Exited => "the workload exited",
                Ended::Duration => "--duration elapsed",
                Ended::Signal => "stopped by a signal",
            }
        );
    }
    let lost = crate::profile::write_profiles(
        &[(&trace, opts.out.clone())],
        opts.quiet,
        &opts.generate,
        None,
    )?;
    Ok(if lost {
        crate::profile::EXIT_LOST_DATA
    } else {
        0
    })
}
