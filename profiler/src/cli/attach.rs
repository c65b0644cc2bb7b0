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
    /// A workload the session starts itself (`watch -- CMD`, `watch --containers -- CMD`);
    /// taken out while it runs.
    owned: Option<Owned>,
    /// The session started its workload (the command line it ran), and whether that
    /// workload is the containers it starts.
    started_command: Option<Vec<String>>,
    containers: bool,
    exit: Option<Exit>,
    /// Container cgroups seen below the recording cgroup (id -> path), kept after they are
    /// removed.
    names: std::collections::BTreeMap<u64, String>,
}

/// What a session that starts its workload holds for it.
struct Owned {
    cgroup: crate::recording::cgroup::RecordingCgroup,
    program: PathBuf,
    command: Vec<String>,
    env: Vec<(&'static str, String)>,
    // Kept for the workload's life: the recording seccomp profile and a rewritten bundle.
    _seccomp: Option<crate::recording::containers::RecordingSeccompFile>,
    _bundle: Option<crate::recording::oci_bundle::RecordingBundle>,
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
        let mut probes = Probes::attach_one_cgroup()?;
        probes.track_running(attached.cgroup_id)?;
        attached
            .confirm()
            .map_err(|e| exit_error(2, format!("--attach {target}: {e:#}")))?;
        let mut facts = LiveFacts::attached(attached.cgroup_id);
        // After the probes: a program executed from now on is in the events, one running
        // already is read here.
        let pids = cgroup_procs(&attached.dir);
        let running = facts.seed_running(attached.cgroup_id, &pids);
        let ran_as = pids.iter().filter_map(|p| ids_of(*p)).collect();
        Ok(Session {
            running,
            ran_as,
            ..Session::base(target.to_owned(), attached, probes, facts)
        })
    }

    /// A session on `attached` with nothing seen yet (kallsyms read now, the clock started).
    fn base(target: String, attached: Attached, probes: Probes, facts: LiveFacts) -> Session {
        let kallsyms = crate::kernel::kallsyms::Kallsyms::load().ok();
        if let (Some(k), Some(mut callers)) = (&kallsyms, probes.direct_noaudit_callers()) {
            callers.fill(&k.direct_noaudit_ranges());
        }
        Session {
            target,
            attached,
            probes,
            facts,
            events: EventLog::default(),
            kallsyms: kallsyms.map(std::sync::Arc::new),
            started: Instant::now(),
            recorded_at_unix: SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            running: Vec::new(),
            ran_as: BTreeSet::new(),
            owned: None,
            started_command: None,
            containers: false,
            exit: None,
            names: Default::default(),
        }
    }

    /// Starts CMD in a recording cgroup of its own and records it (with `containers`, the
    /// containers it starts, as `record --containers` does: `--cgroup-parent` and the
    /// permissive recording seccomp profile are added to docker/podman run commands, and
    /// other commands find them in the environment).
    pub fn command(cmd: &[String], containers: bool) -> anyhow::Result<Session> {
        let program = crate::recording::command::resolve_command(&cmd[0])?;
        let cgroup = crate::recording::cgroup::RecordingCgroup::create()?;
        let mut probes = if containers {
            Probes::attach(cgroup.level())?
        } else {
            Probes::attach_one_cgroup()?
        };
        probes.track_from_exec(cgroup.id())?;
        let mut command = cmd.to_vec();
        let mut env = Vec::new();
        let mut seccomp = None;
        let mut bundle = None;
        if containers {
            let f = crate::recording::containers::RecordingSeccompFile::create()?;
            let oci = crate::profile::seccomp::DockerSeccomp::load(f.path())
                .and_then(|p| crate::profile::oci::seccomp(&p))
                .map_err(|e| exit_error(2, format!("{e:#}")))?;
            let prepared = crate::recording::containers::prepare(
                &command,
                cgroup.relative_path(),
                f.path(),
                &oci,
                Some(f.dir()),
            )
            .map_err(|e| exit_error(2, format!("{e:#}")))?;
            command = prepared.command;
            env = prepared.env;
            bundle = prepared.bundle;
            seccomp = Some(f);
        }
        let start_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        let facts = LiveFacts::new(cgroup.id(), start_cwd, containers);
        let attached = Attached::own(
            format!("/{}", cgroup.relative_path().trim_start_matches('/')),
            cgroup.path().to_path_buf(),
            cgroup.id(),
        );
        Ok(Session {
            started_command: Some(command.clone()),
            containers,
            owned: Some(Owned {
                cgroup,
                program,
                command,
                env,
                _seccomp: seccomp,
                _bundle: bundle,
            }),
            ..Session::base(cmd.join(" "), attached, probes, facts)
        })
    }

    /// The workload's exit, for a session that started it.
    pub fn exit(&self) -> Option<Exit> {
        self.exit
    }

    fn feed(&mut self, batch: Vec<profiler_common::Event>) {
        let dir = self.attached.dir.clone();
        let id = self.attached.cgroup_id;
        let rel = self.attached.cgroup_path.clone();
        let below = |c: u64| {
            crate::recording::cgroup::children_of(&dir, rel.trim_start_matches('/'))
                .iter()
                .any(|(i, _)| *i == c)
        };
        // A process that leaves the cgroup is the engine's business here (profiler did not
        // start this workload): it is not moved back, only no longer recorded.
        self.facts.events(
            &batch,
            &|_| cgroup_procs(&dir),
            &|c| c == id || below(c),
            &|_| {},
        );
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
        if let Some(owned) = self.owned.take() {
            // A workload the session started: run_in_cgroup forwards signals and waits for
            // it; the checks happen between drains, every `period`.
            let mut last = Instant::now();
            let result = runtime.block_on(async {
                let mut ring = watch_events(ring)?;
                let exit = crate::recording::process::run_in_cgroup(
                    &owned.cgroup,
                    &owned.program,
                    &owned.command,
                    &owned.env,
                    None,
                    &mut ring,
                    &mut |batch| {
                        self.feed(batch);
                        if last.elapsed() >= period {
                            last = Instant::now();
                            if let Err(e) = on_tick(self) {
                                eprintln!("profiler: {e:#}");
                            }
                        }
                    },
                )
                .await?;
                let mut rest = Vec::new();
                crate::kernel::events::drain_events(ring.get_mut(), &mut rest);
                self.feed(rest);
                anyhow::Ok(exit)
            });
            owned.cgroup.kill_all();
            self.exit = Some(result?);
            self.owned = Some(owned);
            return Ok(Ended::Exited);
        }
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
        self.traces(finish, exit)?
            .into_iter()
            .next()
            .context("the recording has no record of its cgroup")
    }

    /// The traces of what was seen so far: one for an attached workload or a command, one
    /// per container for `--containers`.
    pub fn traces(&mut self, finish: bool, exit: Exit) -> anyhow::Result<Vec<Trace>> {
        let id = self.attached.cgroup_id;
        let collected = if finish {
            self.probes.collect(id)?
        } else {
            self.probes.snapshot(id)?
        };
        let containers = self.containers;
        let exit = self.exit.unwrap_or(exit);
        self.names.extend(crate::recording::cgroup::children_of(
            &self.attached.dir,
            self.attached.cgroup_path.trim_start_matches('/'),
        ));
        let names = self.names.clone();
        let mut out = Vec::new();
        for c in collected {
            let own = c.cgroup_id == id;
            if own == containers {
                continue; // with --containers, the engine's CLI is not the workload
            }
            let path = if own {
                Some(self.attached.cgroup_path.clone())
            } else {
                names.get(&c.cgroup_id).cloned()
            };
            out.push(self.trace_of(c, path, !own || self.attached.container.is_some(), exit)?);
        }
        Ok(out)
    }

    fn trace_of(
        &self,
        c: crate::kernel::Collected,
        path: Option<String>,
        container: bool,
        exit: Exit,
    ) -> anyhow::Result<Trace> {
        let id = c.cgroup_id;
        let attached = self.started_command.is_none();
        let ctx = TraceContext::new(
            self.recorded_at_unix,
            Workload {
                command: if attached {
                    vec!["attach".into(), self.target.clone()]
                } else {
                    self.started_command.clone().unwrap_or_default()
                },
                exit,
                duration_ms: self.started.elapsed().as_millis() as u64,
                leftover_processes: 0,
                replica_of: None,
            },
            self.probes.syscall_hook.clone(),
            self.probes.cap_hook.clone(),
            self.probes.cred_check,
            self.kallsyms.clone(),
        )?;
        let cwd = if container || attached {
            PathBuf::from("/")
        } else {
            std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
        };
        let mut trace = ctx.trace(
            c,
            path,
            container,
            self.events.events(),
            &cwd,
            Default::default(),
        );
        trace.cgroup.attached = attached;
        if attached {
            trace.cgroup.container_info = self.attached.container.clone();
        }
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
