//! `profiler record`: run a command in a fresh cgroup with the probes attached, then turn
//! what the kernel aggregated into a trace and profiles.
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;

use crate::exit::exit_error;
use crate::kernel::events::{EventLog, drain_events, watch_events};
use crate::kernel::kallsyms::Kallsyms;
use crate::kernel::{Collected, Probes, check_privileges};
use crate::profile::seccomp::GenerateOptions;
use crate::profile::{EXIT_LOST_DATA, write_profiles};
use crate::recording::cgroup::RecordingCgroup;
use crate::recording::command::resolve_command;
use crate::recording::containers::{self, RecordingSeccompFile};
use crate::recording::live_facts::LiveFacts;
use crate::recording::process::{descendants, run_in_cgroup, wait_until_empty};
use crate::recording::to_trace::TraceContext;
use crate::timings;
use crate::trace::{Phase, Trace, Workload};

pub struct RecordOptions {
    pub out: PathBuf,
    pub command: Vec<String>,
    pub quiet: bool,
    pub wait_descendants: bool,
    /// Record the containers the command starts (one profile each), not the command.
    pub containers: bool,
    pub generate: GenerateOptions,
}

/// A workload started under a seccomp filter inherits it, and a syscall the filter denies
/// never reaches the syscall tracepoint (seccomp runs first, kernel/entry/common.c), so the
/// recording would be missing it without any sign. /proc/self/status says so ("Seccomp: 2").
fn warn_if_under_seccomp(quiet: bool) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let mode = status
        .lines()
        .find_map(|l| l.strip_prefix("Seccomp:"))
        .map(str::trim)
        .unwrap_or("0");
    if mode != "0" && !quiet {
        eprintln!(
            "profiler: warning: profiler runs under a seccomp filter (Seccomp: {mode} in /proc/self/status); the \
             workload inherits it, and syscalls it denies never reach the probes: the profile will lack them"
        );
    }
}

/// A thread joined when this is dropped.
struct JoinOnDrop(Option<std::thread::JoinHandle<()>>);

impl Drop for JoinOnDrop {
    fn drop(&mut self) {
        if let Some(thread) = self.0.take() {
            let _ = thread.join();
        }
    }
}

/// Exit code when the workload succeeded but its profiles could not be written.
pub const EXIT_WRITE_FAILED: i32 = 4;

pub fn record(opts: RecordOptions) -> anyhow::Result<i32> {
    check_privileges("profiler record")?;
    let program = resolve_command(&opts.command[0])?;
    // An unusable --out (a file, a read-only or full filesystem, a planted symlink) must be
    // found before the workload runs, not after.
    crate::profile::out_dir::OutputDir::check(&opts.out, opts.generate.follow_symlinks)
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
    warn_if_under_seccomp(opts.quiet);
    let cgroup = RecordingCgroup::create()?;
    let mut probes = if opts.containers {
        Probes::attach(cgroup.level())?
    } else {
        Probes::attach_one_cgroup()?
    };
    probes.track_from_exec(cgroup.id())?;
    timings::mark("probes attached");
    if !probes.optional_hook_errors.is_empty() && !opts.quiet {
        eprintln!(
            "profiler: warning: optional kernel hooks are missing (child working directories, processes leaving \
             the cgroup go unseen):\n  {}",
            probes.optional_hook_errors.join("\n  ")
        );
    }
    if probes.cap_hook.is_none() && !opts.quiet {
        eprintln!(
            "profiler: warning: no capability hook could be attached; capabilities.json will be empty:\n  {}",
            probes.cap_hook_errors.join("\n  ")
        );
    }
    let seccomp_file = if opts.containers {
        Some(RecordingSeccompFile::create()?)
    } else {
        None
    };
    let mut command = opts.command.clone();
    let mut env = Vec::new();
    let mut _bundle = None;
    let mut compose_stack = None;
    if let Some(f) = &seccomp_file {
        let oci_seccomp = crate::profile::seccomp::DockerSeccomp::load(f.path())
            .and_then(|p| crate::profile::oci::seccomp(&p))
            .map_err(|e| exit_error(2, format!("{e:#}")))?;
        let prepared = containers::prepare(
            &command,
            cgroup.relative_path(),
            f.path(),
            &oci_seccomp,
            Some(f.dir()),
        )
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
        if let Some(stack) = &prepared.compose
            && !stack.own_seccomp.is_empty()
            && !opts.quiet
        {
            eprintln!(
                "profiler: warning: compose services {} set their own seccomp profile; syscalls it denies never \
                 reach the probes and will be missing from their profiles",
                stack.own_seccomp.join(", ")
            );
        }
        compose_stack = prepared.compose.clone();
        if prepared.bundle_has_own_seccomp && !opts.quiet {
            eprintln!(
                "profiler: warning: the bundle has its own linux.seccomp; syscalls it denies never reach the \
                 probes and will be missing from the profile"
            );
        }
        command = prepared.command;
        env = prepared.env;
        _bundle = prepared.bundle;
    }

    let recorded_at_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let started = Instant::now();
    // Container cgroups can be gone (removed by the runtime) by the time the recording ends;
    // their names are noted while they exist. The kernel side needs none of this.
    let names: Arc<Mutex<BTreeMap<u64, String>>> = Arc::default();
    let resources: Arc<Mutex<BTreeMap<u64, crate::trace::image::Resources>>> = Arc::default();
    // What the engine says about each container (name, compose service, image, user),
    // asked once per container while it exists: a `--rm` container is gone at the end.
    let infos: Arc<Mutex<BTreeMap<u64, crate::trace::ContainerInfo>>> = Arc::default();
    let lookups: Arc<Mutex<Vec<std::thread::JoinHandle<()>>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let engine_clis = containers::engine_clis(&opts.command);
    let watcher = opts.containers.then(|| {
        let (names, stop, cgroup_path) = (names.clone(), stop.clone(), cgroup.path().to_owned());
        let (resources, infos, lookups) = (resources.clone(), infos.clone(), lookups.clone());
        let relative = cgroup.relative_path().to_owned();
        std::thread::spawn(move || {
            let resource_mounts = crate::recording::cgroup::ResourceMounts::find();
            while !stop.load(Ordering::Relaxed) {
                let found = crate::recording::cgroup::children_of(&cgroup_path, &relative);
                {
                    let mut res = resources.lock().unwrap();
                    for (id, rel) in &found {
                        crate::recording::cgroup::sample_resources(
                            &resource_mounts,
                            rel,
                            res.entry(*id).or_default(),
                        );
                    }
                }
                let mut known = names.lock().unwrap();
                for (id, rel) in &found {
                    if known.contains_key(id) {
                        continue;
                    }
                    if let Some(cid) = containers::container_id(rel).map(str::to_owned) {
                        let (infos, clis, id) = (infos.clone(), engine_clis.clone(), *id);
                        lookups.lock().unwrap().push(std::thread::spawn(move || {
                            if let Some(info) = containers::inspect(&clis, &cid) {
                                infos.lock().unwrap().insert(id, info);
                            }
                        }));
                    }
                }
                known.extend(found);
                drop(known);
                // The peaks are the kernel's (see sample_resources): a reading only has to
                // come before the engine removes the cgroup; sampling more often cost a
                // noticeable share of a core while containers ran (BENCHMARKS.md, M13).
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    });
    let start_cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
    let mut directories = LiveFacts::new(cgroup.id(), start_cwd.clone(), opts.containers);
    // Whether a cgroup id is the recording's own or one below it (a container the engine is
    // setting up may not have made its first syscall yet, so the directory decides).
    let recorded = {
        let (names, rec_id, path, rel) = (
            names.clone(),
            cgroup.id(),
            cgroup.path().to_owned(),
            cgroup.relative_path().to_owned(),
        );
        move |id: u64| -> bool {
            id == rec_id
                || names.lock().unwrap().contains_key(&id)
                || crate::recording::cgroup::children_of(&path, &rel)
                    .iter()
                    .any(|(i, _)| *i == id)
        }
    };
    // A workload process that moved itself out is moved back (with the threads of its
    // process), so it stays recorded and stoppable; the moments in between are lost.
    let reclaim = {
        let procs = cgroup.path().join("cgroup.procs");
        move |pid: u32| {
            let _ = std::fs::write(&procs, pid.to_string());
        }
    };
    let cgroup_procs = {
        let (names, root) = (
            names.clone(),
            crate::recording::cgroup::cgroup2_mount().ok(),
        );
        move |id: u64| -> Vec<u32> {
            let Some(root) = &root else { return Vec::new() };
            let Some(rel) = names.lock().unwrap().get(&id).cloned() else {
                return Vec::new();
            };
            std::fs::read_to_string(root.join(rel.trim_start_matches('/')).join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.trim().parse().ok())
                .collect()
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    // /proc/kallsyms is generated a page per read (some 4,000 reads here): read it while the
    // workload runs instead of after it.
    // It also tells the capability hook the functions it can count checks of without
    // walking their stacks: from the head of this boot's cache at once, else once read.
    let mut noaudit_callers = probes.direct_noaudit_callers();
    let kallsyms = std::thread::spawn(move || {
        if let Some(callers) = &mut noaudit_callers
            && let Some(ranges) = Kallsyms::cached_direct_noaudit_ranges()
        {
            callers.fill(&ranges);
            noaudit_callers = None;
        }
        let kallsyms = Kallsyms::load().ok()?;
        if let Some(callers) = &mut noaudit_callers {
            callers.fill(&kallsyms.direct_noaudit_ranges());
        }
        Some(std::sync::Arc::new(kallsyms))
    });
    let mut events = EventLog::default();
    let ring = probes.take_events()?;
    let (exit, mut ring) = runtime.block_on(async {
        let mut ring = watch_events(ring)?;
        let exit = run_in_cgroup(
            &cgroup,
            &program,
            &command,
            &env,
            None,
            &mut ring,
            &mut |batch| {
                directories.events(&batch, &cgroup_procs, &recorded, &reclaim);
                events.extend(batch)
            },
        )
        .await?;
        anyhow::Ok((exit, ring.into_inner()))
    })?;
    // What the ring still holds from the workload's last moments (a short workload may end
    // before the first drain tick).
    let mut last = Vec::new();
    drain_events(&mut ring, &mut last);
    directories.events(&last, &cgroup_procs, &recorded, &reclaim);
    events.extend(last);

    // Processes that left the recording for another cgroup: what they did there is not in
    // the profile, and they must not outlive the recording either.
    let escaped = std::mem::take(&mut directories.escaped);
    for (pid, dst, started) in &escaped {
        eprintln!(
            "profiler: ERROR: process {pid} of the workload moved itself into cgroup {dst}, outside the recording; \
             profiler moved it back, but what it did in between (and any child it started there) is not in the \
             profile"
        );
        // Children it started in the other cgroup before it was moved back stay there:
        // they are the workload's, and are stopped.
        // Only while the pid still names that process (a reused pid is someone else's).
        if crate::recording::live_facts::start_time(*pid) != Some(*started) {
            continue;
        }
        for p in descendants(*pid) {
            if !crate::recording::cgroup::pid_in(p, cgroup.path()) {
                // SAFETY: a signal to a process of the workload's own family.
                unsafe { libc::kill(p as i32, libc::SIGKILL) };
            }
        }
    }
    let leftover = cgroup.process_count();
    if leftover > 0 {
        if opts.wait_descendants {
            runtime.block_on(wait_until_empty(&cgroup));
        }
        cgroup.kill_all();
    }
    let duration_ms = started.elapsed().as_millis() as u64;
    timings::mark("workload ended");
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = watcher {
        let _ = w.join();
    }
    names.lock().unwrap().extend(cgroup.children());
    // Engines answer in tens of milliseconds; a lookup still running has lost its container.
    for handle in std::mem::take(&mut *lookups.lock().unwrap()) {
        let _ = handle.join();
    }
    let infos = infos.lock().unwrap().clone();

    events.drain(&mut ring);
    let collected = probes.collect(cgroup.id())?;
    let cap_hook = probes.cap_hook.clone();
    let syscall_hook = probes.syscall_hook.clone();
    let cred_check = probes.cred_check;
    // Detaching every program (each a tracepoint unregistered, the kernel's text patched on
    // every CPU) and removing the recording cgroup go on beside building the profiles:
    // nothing below reads the kernel side or the cgroup. Done before profiler exits, on
    // every way out of this function (`JoinOnDrop`).
    let rec_id = cgroup.id();
    let rec_path = cgroup.relative_path().to_owned();
    let detaching = JoinOnDrop(Some(std::thread::spawn(move || {
        drop(probes);
        drop(cgroup);
    })));
    timings::mark("collected");
    drop(seccomp_file);

    let ctx = TraceContext::new(
        recorded_at_unix,
        Workload {
            command: command.clone(),
            exit,
            duration_ms,
            leftover_processes: leftover,
            replica_of: None,
        },
        syscall_hook,
        cap_hook,
        cred_check,
        kallsyms.join().ok().flatten(),
    )?;
    timings::mark("kallsyms ready");
    let resources = resources.lock().unwrap().clone();
    let make_trace = |c: Collected, path: Option<String>, container: bool| {
        // A container's first process starts where its runtime put it; the runtime's chdir
        // into the configured working directory is in the event stream.
        let cwd = if container {
            PathBuf::from("/")
        } else {
            start_cwd.clone()
        };
        let res = resources.get(&c.cgroup_id).cloned().unwrap_or_default();
        let id = c.cgroup_id;
        let mut trace = ctx.trace(c, path, container, events.events(), &cwd, res);
        trace.cgroup.container_info = infos.get(&id).cloned();
        trace.image.users.supplementary_groups = directories.groups(id);
        trace.image.executable_files = directories.executables(id);
        trace.image.directories = directories.facts(
            id,
            &trace.image.writable_directories,
            &trace.image.written_paths,
        );
        trace
    };

    let names = names.lock().unwrap().clone();
    let mut traces = Vec::new();
    for c in collected {
        if c.cgroup_id == rec_id {
            if !opts.containers {
                traces.push(make_trace(c, Some(rec_path.clone()), false));
            }
        } else {
            let path = names.get(&c.cgroup_id).cloned();
            traces.push(make_trace(c, path, true));
        }
    }
    timings::mark("traces built");
    // What the next recording need not hash again.
    directories.save_identified();
    // A container whose runtime never got to exec the entrypoint (bad command, failed
    // mount...) did nothing a profile could describe.
    let (started_traces, failed): (Vec<Trace>, Vec<Trace>) = traces.into_iter().partition(|t| {
        !t.filter_loaded_before_exec()
            || t.syscalls
                .values()
                .flatten()
                .any(|e| e.phases.contains(&Phase::Workload))
    });
    for t in started_traces
        .iter()
        .filter(|t| !opts.quiet && t.cgroup.container && !t.filter_loaded_before_exec())
    {
        eprintln!(
            "profiler: warning: the runtime of container cgroup {} loaded no seccomp filter before the entrypoint, \
             so its own set-up cannot be told apart: the profile includes it (allows more than needed)",
            t.cgroup.path.as_deref().unwrap_or("?")
        );
    }
    for t in &failed {
        eprintln!(
            "profiler: container cgroup {} never started its entrypoint (no successful exec); no profile for it",
            t.cgroup.path.as_deref().unwrap_or("?")
        );
    }
    let traces = started_traces;
    if traces.is_empty() {
        let code = match exit.as_exit_code() {
            0 => 1,
            c => c,
        };
        return Err(exit_error(
            code,
            format!(
                "no container was started under the recording cgroup (`{}` exited with {}); nothing written. \
                 docker/podman run commands get --cgroup-parent automatically; other commands must pass \
                 --cgroup-parent \"${}\" themselves",
                command.join(" "),
                exit.as_exit_code(),
                containers::ENV_CGROUP_PARENT
            ),
        ));
    }

    let single = traces.len() == 1;
    let folders = containers::unique_names(
        traces
            .iter()
            .map(|t| {
                containers::folder_name(
                    t.cgroup.container_info.as_ref(),
                    t.cgroup.path.as_deref(),
                    t.cgroup.id,
                )
            })
            .collect(),
    );
    let items: Vec<(&Trace, PathBuf)> = traces
        .iter()
        .zip(folders)
        .map(|(trace, folder)| {
            let dir = if single {
                opts.out.clone()
            } else {
                opts.out.join(folder)
            };
            (trace, dir)
        })
        .collect();
    let lost = write_profiles(
        &items,
        opts.quiet,
        &opts.generate,
        compose_stack
            .as_ref()
            .map(|s| (s.version.as_deref(), opts.out.as_path())),
    )
    .map_err(|e| {
        // The workload's own failure stays what profiler reports.
        let code = match exit.as_exit_code() {
            0 => EXIT_WRITE_FAILED,
            c => c,
        };
        exit_error(code, format!("{e:#}; no profile was written"))
    })?;
    drop(detaching);
    timings::mark("detached");
    if (lost || !escaped.is_empty()) && exit.as_exit_code() == 0 {
        return Ok(EXIT_LOST_DATA);
    }
    Ok(exit.as_exit_code())
}
