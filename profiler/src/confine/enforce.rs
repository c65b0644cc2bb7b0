//! `profiler enforce`: run a workload (or the containers a command starts) held to its image
//! profile. An exec of a program the profile does not list is killed before the program runs
//! an instruction (tp_btf `sched_process_exec` + `bpf_send_signal`, which work where BPF LSM
//! programs cannot load, as under lockdown=confidentiality); writes outside the writable
//! directories and binds to unexpected ports are reported. Every violation is one JSON line.
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use profiler_common::{
    EVENT_BIND, EVENT_EXEC_KILLED, EVENT_EXEC_OK, EVENT_FORK, EVENT_WRITE, Event,
};
use serde::Serialize;

use crate::exit::exit_error;
use crate::kernel::{ExecFile, Probes, check_privileges};
use crate::recording::cgroup::RecordingCgroup;
use crate::recording::command::resolve_command;
use crate::recording::containers;
use crate::recording::image_events::Builder;

pub struct EnforceOptions {
    pub profile: PathBuf,
    pub command: Vec<String>,
    pub containers: bool,
    /// Where violation lines go (default: stderr).
    pub log: Option<PathBuf>,
    /// Hold a command (not containers: their run flags seal them) to the image profile with
    /// Landlock as well.
    pub landlock: bool,
    /// Keep the workload's exit code even when something was denied or killed (otherwise a
    /// workload that succeeded exits [`EXIT_VIOLATIONS`]).
    pub violations_ok: bool,
    /// Read Landlock's denials from the kernel's audit records (switching audit on for the
    /// session where it is off).
    pub audit: bool,
}

/// Exit code of `enforce` when the workload succeeded but something was denied or killed.
pub const EXIT_VIOLATIONS: i32 = 5;

#[derive(Serialize)]
struct Violation<'a> {
    time: f64,
    rule: &'a str,
    /// For a Landlock denial: what the kernel says refused it (`fs.execute`, `net.bind_tcp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    blockers: Option<String>,
    action: &'a str,
    pid: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    address: Option<String>,
    /// The inode number of the file the kernel executed (an exec's verdict).
    #[serde(skip_serializing_if = "Option::is_none")]
    inode: Option<u64>,
}

struct Checker {
    /// The sealing binary's (kernel device, inode), and whether audit records are read.
    seal_file: Option<(u64, u64)>,
    audit_running: bool,
    /// Landlock holds the workload's writes and ports (a command under enforce's Landlock):
    /// its own denials are the lines, not the reports of what the probes saw.
    landlock_everywhere: bool,
    /// Containers that started through the sealing entrypoint: the same for them.
    sealed: BTreeSet<u64>,
    /// The recording cgroup, as /proc/PID/cgroup names it.
    cgroup_path: String,
    /// Processes of the workload seen in its events (execs, forks): a Landlock denial is the
    /// workload's when its process, or its domain's creator, is one of them.
    pids: BTreeSet<u32>,
    executables: BTreeSet<String>,
    writable: BTreeSet<String>,
    ports: BTreeSet<u16>,
    builder: Builder,
    out: Box<dyn std::io::Write>,
    count: usize,
    containers: bool,
}

impl Checker {
    fn report(&mut self, v: Violation) {
        self.count += 1;
        if let Ok(mut line) = serde_json::to_vec(&v) {
            line.push(b'\n');
            let _ = self.out.write_all(&line);
            let _ = self.out.flush();
        }
    }

    fn writable(&self, path: &str) -> bool {
        ["/dev", "/proc", "/sys"]
            .iter()
            .any(|p| path == *p || path.starts_with(&format!("{p}/")))
            || self
                .writable
                .iter()
                .any(|d| d == "/" || path == d || path.starts_with(&format!("{d}/")))
    }

    /// Landlock's denials of the workload, one line each (records of other processes on the
    /// host, which the audit socket also carries, are left alone).
    fn denials(&mut self, denials: Vec<crate::kernel::audit::Denial>) {
        let now = unix_time();
        for d in denials {
            let ours = d
                .pid
                .is_some_and(|p| self.pids.contains(&p) || in_cgroup(p, &self.cgroup_path))
                || d.domain_creator.is_some_and(|p| self.pids.contains(&p));
            if !ours {
                continue;
            }
            self.report(Violation {
                time: now,
                rule: "landlock",
                blockers: Some(d.blockers.clone()),
                action: "denied",
                pid: d.pid.unwrap_or(0),
                path: d.path.clone(),
                address: d.port.as_ref().map(|p| format!("port {p}")),
                inode: None,
            });
        }
    }

    fn event(&mut self, e: &Event) {
        match e.kind {
            EVENT_EXEC_OK => {
                self.pids.insert(e.pid);
            }
            EVENT_FORK => {
                self.pids.insert(e.args[1] as u32);
            }
            _ => {}
        }
        let resolved = self.builder.event(e);
        // Sealed: the kernel ran the very sealing binary (its device and inode, not the
        // path asked for, which any copy can take), and Landlock's denials are being read.
        if e.kind == EVENT_EXEC_OK
            && self.audit_running
            && let Some(seal) = self.seal_file
        {
            let exec = profiler_common::ExecOk::from_args(&e.args);
            if (exec.dev as u64, exec.ino) == seal {
                self.sealed.insert(e.cgroup_id);
            }
        }
        let reports = !(self.landlock_everywhere || self.sealed.contains(&e.cgroup_id));
        // A container runtime's set-up (before it loads the container's seccomp filter)
        // mounts and creates device nodes in the host's view: not the workload's doing.
        if self.containers && e.phase == profiler_common::PHASE_SETUP as u32 {
            return;
        }
        let now = unix_time();
        match e.kind {
            EVENT_EXEC_KILLED => {
                let path = self.builder.last_exec.get(&e.tid).cloned();
                // A listed path whose file is not the recorded one: replaced or
                // downloaded since.
                let listed = path
                    .as_deref()
                    .is_some_and(|p| self.executables.contains(p));
                let inode = (e.args[1] != 0).then_some(e.args[1]);
                self.report(Violation {
                    time: now,
                    blockers: None,
                    rule: if listed {
                        "exec-file-not-the-recorded-one"
                    } else {
                        "exec-not-in-profile"
                    },
                    action: "killed",
                    pid: e.pid,
                    path,
                    address: None,
                    inode,
                });
            }
            EVENT_WRITE if reports => {
                if let Some(p) = resolved.filter(|p| !self.writable(p)) {
                    self.report(Violation {
                        time: now,
                        blockers: None,
                        rule: "write-outside-writable-directories",
                        action: "reported",
                        pid: e.pid,
                        path: Some(p),
                        address: None,
                        inode: None,
                    });
                }
            }
            EVENT_BIND if reports => {
                let port = bind_port(e);
                if let Some(port) = port.filter(|p| *p != 0 && !self.ports.contains(p)) {
                    self.report(Violation {
                        time: now,
                        blockers: None,
                        rule: "unexpected-bind-port",
                        action: "reported",
                        pid: e.pid,
                        path: None,
                        address: Some(format!("port {port}")),
                        inode: None,
                    });
                }
            }
            _ => {}
        }
    }
}

fn unix_time() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Whether process `pid` is in cgroup2 `path` or below it (its `0::` line).
fn in_cgroup(pid: u32, path: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .map(|s| {
            s.lines().any(|l| {
                l.strip_prefix("0::")
                    .is_some_and(|c| c == path || c.starts_with(&format!("{path}/")))
            })
        })
        .unwrap_or(false)
}

/// The port of an AF_INET/AF_INET6 bind event.
fn bind_port(e: &Event) -> Option<u16> {
    let family = u16::from_ne_bytes([e.data[0], e.data[1]]) as i32;
    (family == libc::AF_INET || family == libc::AF_INET6)
        .then(|| u16::from_be_bytes([e.data[2], e.data[3]]))
}

pub fn enforce(opts: EnforceOptions) -> anyhow::Result<i32> {
    check_privileges("profiler enforce")?;
    let profile = crate::profile::load_image_profile(&opts.profile)
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
    let program = resolve_command(&opts.command[0])?;
    let cgroup = RecordingCgroup::create()?;
    let (level, mode) = if opts.containers {
        (cgroup.level(), profiler_common::ENFORCE_CONTAINERS)
    } else {
        (0, profiler_common::ENFORCE_ALL)
    };
    let mut probes = Probes::attach_enforcing(level, mode)?;
    probes.track_from_exec(cgroup.id())?;
    // A sealed container's first program is the sealing entrypoint (docker-run.txt), which
    // applies the Landlock rules and then executes the recorded entrypoint.
    let seal = crate::profile::landlock::Sealing::entrypoint();
    probes.allow_execs(
        profile
            .executables
            .keys()
            .map(String::as_str)
            .chain(opts.containers.then_some(seal.as_str())),
    )?;
    // The files that may run, by identity: for a command, the recorded programs (and what
    // the kernel opens to run them) as they are on this machine now, once their content is
    // checked against the recording (a replaced program is not among them); for
    // containers, the inode numbers the recording saw in the image (their overlay's device
    // is new with each container), and the sealing binary.
    // For a command, on this machine's root (a container's programs are in its own).
    let plan = if opts.containers {
        crate::confine::landlock::Plan::default()
    } else {
        crate::confine::landlock::plan(&profile)
    };
    let on_this_machine = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(p).ok().map(|m| ExecFile::OnThisMachine {
            dev: m.dev(),
            ino: m.ino(),
        })
    };
    let allowed: Vec<ExecFile> = if opts.containers {
        let mut v: Vec<ExecFile> = profile
            .executable_files
            .values()
            .map(|f| ExecFile::FromImage {
                size: f.size,
                mtime: f.mtime,
            })
            .collect();
        if let Ok(seal) = crate::profile::landlock::seal_binary() {
            v.extend(on_this_machine(&seal));
        }
        if profile.executable_files.is_empty() && !profile.executables.is_empty() {
            eprintln!(
                "profiler: warning: the profile has no file identities (an older recording?): every exec is killed; record again"
            );
        }
        v
    } else {
        plan.executables
            .iter()
            .filter_map(|p| on_this_machine(p))
            .collect()
    };
    probes.allow_files(allowed)?;
    if !probes.judges_execs_by_file() {
        eprintln!(
            "profiler: warning: this kernel's BTF does not lead to the executed file: execs are judged by the path asked for, which a second thread can rewrite"
        );
    }
    let mut command = opts.command.clone();
    let mut env = Vec::new();
    let mut _bundle = None;
    if opts.containers {
        // The container runs under the profile's own seccomp filter (not the permissive
        // recording one): loaded at the same point, it also marks where the runtime's set-up ends.
        let seccomp_path = opts.profile.join(crate::profile::SECCOMP_FILE);
        let seccomp = std::fs::canonicalize(&seccomp_path)
            .map_err(|e| exit_error(2, format!("{}: {e}", seccomp_path.display())))?;
        let oci_seccomp = crate::profile::seccomp::DockerSeccomp::load(&seccomp)
            .and_then(|p| crate::profile::oci::seccomp(&p))
            .map_err(|e| exit_error(2, format!("{e:#}")))?;
        let prepared = containers::prepare(
            &command,
            cgroup.relative_path(),
            &seccomp,
            &oci_seccomp,
            None,
        )
        .map_err(|e| exit_error(2, format!("{e:#}")))?;
        command = prepared.command;
        env = prepared.env;
        _bundle = prepared.bundle;
    }
    // Landlock for a command: the ruleset is made here, and the child restricts itself to
    // it between clone and exec (containers are sealed by their own entrypoint instead).
    let landlock = if opts.landlock && !opts.containers {
        let prepared = profiler_seal::prepare_for_child(&plan).map_err(|e| exit_error(2, e))?;
        eprint!("{}", plan.describe(&prepared.outcome, "profiler"));
        Some(prepared)
    } else {
        None
    };
    let restrict = landlock
        .as_ref()
        .and_then(profiler_seal::Prepared::for_child);
    let out: Box<dyn std::io::Write> = match &opts.log {
        Some(p) => Box::new(
            crate::profile::out_dir::open_log(p, false)
                .map_err(|e| exit_error(2, format!("--log: {e:#}")))?,
        ),
        None => Box::new(std::io::stderr()),
    };
    let start_cwd = if opts.containers {
        PathBuf::from("/")
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
    };
    // Landlock's own reports of what it denied (ABI 7 writes audit records).
    let mut audit = None;
    if opts.audit && profiler_seal::apply::kernel_abi() >= 7 {
        match crate::kernel::audit::LandlockAudit::start() {
            Ok((a, note)) => {
                if let Some(n) = note {
                    eprintln!("profiler: {n}");
                }
                audit = Some(a);
            }
            Err(e) => eprintln!(
                "profiler: warning: cannot read the kernel's audit records ({e}): Landlock's denials are refused but not reported"
            ),
        }
    }
    let mut checker = Checker {
        // Only a ruleset the kernel took whole, whose denials are read, replaces the
        // probes' reports (an older kernel may lack TCP rules, for one).
        landlock_everywhere: audit.is_some()
            && landlock
                .as_ref()
                .is_some_and(|p| p.outcome.status == profiler_seal::apply::Status::FullyEnforced),
        seal_file: crate::profile::landlock::seal_binary().ok().and_then(|p| {
            use std::os::unix::fs::MetadataExt as _;
            std::fs::metadata(p)
                .ok()
                .map(|m| (crate::kernel::kernel_dev(m.dev()), m.ino()))
        }),
        audit_running: audit.is_some(),
        sealed: BTreeSet::new(),
        pids: BTreeSet::new(),
        cgroup_path: format!("/{}", cgroup.relative_path().trim_start_matches('/')),
        executables: profile.executables.keys().cloned().collect(),
        writable: profile.writable_directories.clone(),
        ports: profile.network.bound_ports.clone(),
        builder: Builder::new(start_cwd).remembering_execs(),
        out,
        count: 0,
        containers: opts.containers,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let ring = probes.take_events()?;
    let exit = runtime.block_on(async {
        let mut ring = crate::kernel::events::watch_events(ring)?;
        let exit = crate::recording::process::run_in_cgroup(
            &cgroup,
            &program,
            &command,
            &env,
            restrict,
            &mut ring,
            &mut |batch| {
                for e in &batch {
                    checker.event(e);
                }
                if let Some(a) = audit.as_mut() {
                    checker.denials(a.drain(false));
                }
            },
        )
        .await?;
        let mut rest = Vec::new();
        crate::kernel::events::drain_events(ring.get_mut(), &mut rest);
        for e in &rest {
            checker.event(e);
        }
        if let Some(a) = audit.as_mut() {
            // The kernel hands records to its audit thread: give it a moment for the last.
            std::thread::sleep(std::time::Duration::from_millis(100));
            checker.denials(a.drain(true));
        }
        anyhow::Ok(exit)
    })?;
    cgroup.kill_all();
    drop(probes);
    drop(cgroup);
    drop(audit);
    let code = exit.as_exit_code();
    if checker.count > 0 {
        eprintln!(
            "profiler: {} violation(s) of {}",
            checker.count,
            opts.profile.display()
        );
        if code == 0 && !opts.violations_ok {
            return Ok(EXIT_VIOLATIONS);
        }
    }
    Ok(code)
}
