//! `profiler record`: run a command in a fresh cgroup with the probes attached, then turn
//! what the kernel aggregated into a trace and profiles.
use std::collections::BTreeMap;
use std::os::fd::AsRawFd as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::exit::{exit_error, resolve_command};
use crate::kernel::{Collected, Probes, check_privileges};
use crate::profile;
use crate::profile::capabilities::{Kallsyms, checks_from_kernel};
use crate::profile::seccomp::GenerateOptions;
use crate::profile::summary;
use crate::recording::cgroup::RecordingCgroup;
use crate::recording::containers::{self, RecordingSeccompFile};
use crate::recording::live_facts::LiveFacts;
use crate::timings;
use crate::trace::{
    ArgumentValues, CgroupInfo, Exit, Host, Losses, Phase, Probes as ProbeInfo, SyscallEntry,
    TRACE_SCHEMA, Trace, Workload,
};
use profiler_common::Event;

pub struct RecordOptions {
    pub out: PathBuf,
    pub command: Vec<String>,
    pub quiet: bool,
    pub wait_descendants: bool,
    /// Record the containers the command starts (one profile each), not the command.
    pub containers: bool,
    pub generate: GenerateOptions,
}

/// Exit code when the workload succeeded but the recording lost data.
pub const EXIT_LOST_DATA: i32 = 3;

/// What every trace of one recording shares, to turn collected kernel data into traces.
pub struct TraceContext {
    recorded_at_unix: u64,
    workload: Workload,
    host: Host,
    probes: ProbeInfo,
    cred_check: bool,
    kallsyms: Option<std::sync::Arc<Kallsyms>>,
}

impl TraceContext {
    pub fn new(
        recorded_at_unix: u64,
        workload: Workload,
        syscall_hook: String,
        cap_hook: Option<String>,
        cred_check: bool,
        kallsyms: Option<std::sync::Arc<Kallsyms>>,
    ) -> anyhow::Result<TraceContext> {
        let uname = nix::sys::utsname::uname().context("uname")?;
        Ok(TraceContext {
            recorded_at_unix,
            workload,
            host: Host {
                kernel: uname.release().to_string_lossy().into_owned(),
                machine: uname.machine().to_string_lossy().into_owned(),
            },
            probes: ProbeInfo {
                syscalls: syscall_hook,
                capabilities: cap_hook,
            },
            cred_check,
            kallsyms,
        })
    }

    /// Builds the trace of one cgroup; `events` are the ring-buffer events (all cgroups: the
    /// ones of this cgroup are picked), `cwd` where its first process started.
    pub fn trace(
        &self,
        c: Collected,
        path: Option<String>,
        container: bool,
        events: &[Event],
        cwd: &std::path::Path,
        resources: crate::trace::image::Resources,
    ) -> Trace {
        let cgroup_id = c.cgroup_id;
        let events_lost = c.events_lost;
        let mut trace = Trace {
            schema: TRACE_SCHEMA.to_owned(),
            profiler_version: env!("CARGO_PKG_VERSION").to_owned(),
            recorded_at_unix: self.recorded_at_unix,
            host: self.host.clone(),
            workload: self.workload.clone(),
            probes: self.probes.clone(),
            cgroup: CgroupInfo {
                path,
                id: c.cgroup_id,
                container,
                container_info: None,
            },
            seccomp_filter_loads: c.seccomp_loads,
            arguments: c
                .args
                .iter()
                .filter_map(|(p, a)| Some((Phase::from_index(*p)?, argument_values(a))))
                .filter(|(_, v)| !v.is_empty())
                .collect(),
            syscalls: c
                .syscalls
                .iter()
                .map(|(arch, nrs)| {
                    let entries = nrs
                        .iter()
                        .map(|(nr, phases)| SyscallEntry {
                            nr: *nr,
                            name: arch.display_name(*nr),
                            phases: phases
                                .iter()
                                .filter_map(|p| Phase::from_index(*p))
                                .collect(),
                        })
                        .collect();
                    (*arch, entries)
                })
                .collect(),
            capability_checks: checks_from_kernel(
                c.cap_checks,
                self.kallsyms.as_deref(),
                self.cred_check,
            ),
            losses: Losses {
                syscalls_out_of_range: c.out_of_range,
                capability_map_full: c.cap_map_full,
                capability_stack_missing: c.cap_stack_missing,
                cgroup_map_full: c.cgroup_map_full,
            },
            image: Default::default(),
        };
        let mut builder = crate::trace::image::Builder::new(cwd.to_path_buf())
            .skipping_setup(trace.filter_loaded_before_exec());
        for e in events.iter().filter(|e| e.cgroup_id == cgroup_id) {
            let _ = builder.event(e);
        }
        trace.image = builder.finish(events_lost, resources);
        trace
    }
}

/// The event ring buffer as something tokio can wait on.
pub type EventRing = tokio::io::unix::AsyncFd<aya::maps::RingBuf<aya::maps::MapData>>;

/// Registers the ring buffer with tokio (call inside the runtime).
pub fn watch_events(ring: aya::maps::RingBuf<aya::maps::MapData>) -> anyhow::Result<EventRing> {
    // SAFETY: the ring buffer owns its map fd and keeps it open as long as the AsyncFd, which
    // owns the ring buffer, lives.
    unsafe { tokio::io::unix::AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| anyhow::anyhow!("watching the event ring buffer: {e}"))
}

/// Decodes one ring-buffer record.
pub fn decode_event(bytes: &[u8]) -> Option<Event> {
    (bytes.len() >= std::mem::size_of::<Event>())
        // SAFETY: Event is plain old data and the length was checked.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr() as *const Event) })
}

/// Takes every event the ring buffer holds now.
pub fn drain_events(ring: &mut aya::maps::RingBuf<aya::maps::MapData>, out: &mut Vec<Event>) {
    while let Some(item) = ring.next() {
        if let Some(e) = decode_event(&item) {
            out.push(e);
        }
    }
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

/// The kernel's per-value bytes as sets of values.
fn argument_values(a: &profiler_common::ArgRecord) -> ArgumentValues {
    let set = |bytes: &[u8]| -> std::collections::BTreeSet<u32> {
        bytes
            .iter()
            .enumerate()
            .filter(|(_, b)| **b != 0)
            .map(|(i, _)| i as u32)
            .collect()
    };
    let mask = |bytes: &[u8]| -> Option<u64> {
        let bits = set(bytes);
        // clone/unshare with no flag at all still marks nothing: treat "called" as seen when
        // any byte is set; a flags value of 0 is indistinguishable and allowed anyway.
        (!bits.is_empty()).then(|| bits.iter().fold(0u64, |m, b| m | (1 << b)))
    };
    let personality_slots = set(&a.personality);
    ArgumentValues {
        socket_families: set(&a.socket_families),
        socketpair_families: set(&a.socketpair_families),
        clone_flags: mask(&a.clone_flag_bits),
        unshare_flags: mask(&a.unshare_flag_bits),
        personality: personality_slots
            .iter()
            .filter_map(|s| {
                profiler_common::PERSONALITY_VALUES
                    .get(*s as usize)
                    .copied()
            })
            .collect(),
        personality_other: personality_slots.contains(&(profiler_common::PERSONALITY_OTHER as u32)),
        prctl_options: set(&a.prctl_options)
            .into_iter()
            .filter(|o| *o != profiler_common::PRCTL_OTHER as u32)
            .collect(),
        prctl_other: a.prctl_options[profiler_common::PRCTL_OTHER] != 0,
        socketcall_calls: set(&a.socketcall_calls),
        ipc_calls: set(&a.ipc_calls),
    }
}

/// Writes the profile folder of each (trace, folder) at once (see
/// `profile::write_atomically_many`), prints the summaries; returns whether any trace lost data.
///
/// With `compose` (the stack the containers came from), `out` also gets
/// `docker-compose.profile.yml`, applying each service's profile.
pub fn write_profiles(
    items: &[(&Trace, PathBuf)],
    quiet: bool,
    options: &GenerateOptions,
    compose: Option<(&crate::recording::compose::Stack, &std::path::Path)>,
) -> anyhow::Result<bool> {
    let mut sets = Vec::new();
    let mut generated = Vec::new();
    let mut services = BTreeMap::new();
    for (trace, dir) in items {
        let profiles = profile::generate(std::slice::from_ref(*trace), options);
        sets.push((
            dir.clone(),
            profile::render(Some(trace), &profiles, dir, options),
        ));
        if let Some(service) = trace
            .cgroup
            .container_info
            .as_ref()
            .and_then(|c| c.compose_service.clone())
        {
            // A scaled service's replicas: the first one's profile (their folders say more).
            services
                .entry(service)
                .or_insert_with(|| profile::deployment(&profiles, dir, options).compose_service());
        }
        generated.push(profiles);
    }
    if let Some((stack, out)) = compose
        && !services.is_empty()
    {
        let yaml =
            crate::recording::compose::production_override(stack.version.as_deref(), &services);
        sets.push((
            out.to_path_buf(),
            vec![(
                crate::profile::deploy::COMPOSE_OVERRIDE_FILE,
                yaml.into_bytes(),
            )],
        ));
    }
    timings::mark("profiles generated");
    let written = profile::write_atomically_many(&sets, options.follow_symlinks)?;
    timings::mark("profiles written");
    let mut lost = false;
    for ((trace, dir), profiles) in items.iter().zip(&generated) {
        if !quiet {
            let mine: Vec<PathBuf> = written
                .iter()
                .filter(|p| p.parent() == Some(dir.as_path()))
                .cloned()
                .collect();
            summary::print(trace, profiles, &mine);
        }
        lost |= report_losses(trace, dir);
    }
    Ok(lost)
}

/// Says loudly when a trace lost data; returns whether it did.
fn report_losses(trace: &Trace, dir: &std::path::Path) -> bool {
    let unclassified: std::collections::BTreeSet<&str> = trace
        .capability_checks
        .iter()
        .filter(|c| c.audit == crate::trace::Audit::Unclassified)
        .map(|c| c.capability.as_str())
        .collect();
    let hidden = !unclassified.is_empty();
    if hidden {
        eprintln!(
            "profiler: ERROR: kernel addresses are hidden (kernel.kptr_restrict), so capability checks of {} could \
             not be told audited or unaudited; they are listed under \"unclassified\" in {}/capabilities.json and \
             NOT added (guessing would add CAP_SYS_ADMIN to every whitelist). Record again with \
             kernel.kptr_restrict=0 or 1 (root with CAP_SYSLOG sees addresses).",
            unclassified.into_iter().collect::<Vec<_>>().join(", "),
            dir.display()
        );
    }
    if trace.losses.any() {
        eprintln!(
            "profiler: ERROR: the recording lost data ({} syscalls out of range, {} capability checks dropped, \
             {} cgroups not recorded); the profiles in {} are incomplete",
            trace.losses.syscalls_out_of_range,
            trace.losses.capability_map_full,
            trace.losses.cgroup_map_full,
            dir.display()
        );
        return true;
    }
    hidden
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
    let level = if opts.containers { cgroup.level() } else { 0 };
    let mut probes = Probes::attach(level)?;
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
        let prepared =
            containers::prepare(&command, cgroup.relative_path(), f.path(), Some(f.dir()))
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
            while !stop.load(Ordering::Relaxed) {
                let found = crate::recording::cgroup::children_of(&cgroup_path, &relative);
                {
                    let mut res = resources.lock().unwrap();
                    for (id, rel) in &found {
                        crate::recording::cgroup::sample_resources(
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
                // come before the engine removes the cgroup. Every 5 ms this loop was ~2% of
                // a core for as long as containers ran.
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
    let kallsyms = std::thread::spawn(|| Kallsyms::load().ok().map(std::sync::Arc::new));
    let mut events = Vec::new();
    let ring = probes.take_events()?;
    let (exit, mut ring) = runtime.block_on(async {
        let mut ring = watch_events(ring)?;
        let exit = run_in_cgroup(&cgroup, &program, &command, &env, &mut ring, &mut |batch| {
            directories.events(&batch, &cgroup_procs, &recorded, &reclaim);
            events.extend(batch)
        })
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
    for (pid, dst) in &escaped {
        eprintln!(
            "profiler: ERROR: process {pid} of the workload moved itself into cgroup {dst}, outside the recording; \
             profiler moved it back, but what it did in between (and any child it started there) is not in the \
             profile"
        );
        // Children it started in the other cgroup before it was moved back stay there:
        // they are the workload's, and are stopped.
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

    drain_events(&mut ring, &mut events);
    let collected = probes.collect(cgroup.id())?;
    let cap_hook = probes.cap_hook.clone();
    let syscall_hook = probes.syscall_hook.clone();
    let cred_check = probes.cred_check;
    drop(probes); // detaches every program
    timings::mark("collected and detached");
    let rec_id = cgroup.id();
    let rec_path = cgroup.relative_path().to_owned();
    drop(cgroup);
    drop(seccomp_file);

    let ctx = TraceContext::new(
        recorded_at_unix,
        Workload {
            command: command.clone(),
            exit,
            duration_ms,
            leftover_processes: leftover,
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
        let mut trace = ctx.trace(c, path, container, &events, &cwd, res);
        trace.cgroup.container_info = infos.get(&id).cloned();
        trace.image.users.supplementary_groups = directories.groups(id);
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
        compose_stack.as_ref().map(|s| (s, opts.out.as_path())),
    )
    .map_err(|e| {
        // The workload's own failure stays what profiler reports.
        let code = match exit.as_exit_code() {
            0 => EXIT_WRITE_FAILED,
            c => c,
        };
        exit_error(code, format!("{e:#}; no profile was written"))
    })?;
    if (lost || !escaped.is_empty()) && exit.as_exit_code() == 0 {
        return Ok(EXIT_LOST_DATA);
    }
    Ok(exit.as_exit_code())
}

/// Every process whose parent chain leads to `pid`, from /proc (field 4 of
/// /proc/PID/stat, after the command name, which may hold spaces and parentheses).
fn descendants(pid: u32) -> Vec<u32> {
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
pub(crate) async fn run_in_cgroup(
    cgroup: &RecordingCgroup,
    program: &std::path::Path,
    command: &[String],
    env: &[(&str, String)],
    ring: &mut EventRing,
    on_events: &mut dyn FnMut(Vec<Event>),
) -> anyhow::Result<Exit> {
    // Handlers first: once the workload runs, a signal meant for profiler may come any time.
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sighup = signal(SignalKind::hangup())?;
    timings::mark("spawning the workload");
    let mut child =
        match crate::recording::spawn::spawn_in_cgroup(cgroup.path(), program, command, env) {
            Ok(child) => WorkloadProcess::InCgroup(child),
            Err(crate::recording::spawn::SpawnError::Failed(e)) => return Err(e),
            Err(crate::recording::spawn::SpawnError::Unsupported(_)) => {
                WorkloadProcess::Moved(spawn_then_join(cgroup, program, command, env)?)
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

/// The fallback where clone3(CLONE_INTO_CGROUP) is missing: fork, join the cgroup through
/// cgroup.procs between fork and exec, exec.
fn spawn_then_join(
    cgroup: &RecordingCgroup,
    program: &std::path::Path,
    command: &[String],
    env: &[(&str, String)],
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
            Ok(())
        });
    }
    cmd.spawn()
        .with_context(|| format!("cannot start {}", program.display()))
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
