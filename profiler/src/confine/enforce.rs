//! `profiler enforce`: run a workload (or the containers a command starts) held to its image
//! profile. An exec of a program the profile does not list is killed before the program runs
//! an instruction (tp_btf `sched_process_exec` + `bpf_send_signal`, which work where BPF LSM
//! programs cannot load, as under lockdown=confidentiality); writes outside the writable
//! directories and binds to unexpected ports are reported. Every violation is one JSON line.
use std::collections::BTreeSet;
use std::io::Write as _;
use std::path::PathBuf;
use std::time::SystemTime;

use profiler_common::{EVENT_BIND, EVENT_EXEC_KILLED, EVENT_WRITE, Event};
use serde::Serialize;

use crate::exit::exit_error;
use crate::kernel::{Probes, check_privileges};
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
}

#[derive(Serialize)]
struct Violation<'a> {
    time: f64,
    rule: &'a str,
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

    fn event(&mut self, e: &Event) {
        let resolved = self.builder.event(e);
        // A container runtime's set-up (before it loads the container's seccomp filter)
        // mounts and creates device nodes in the host's view: not the workload's doing.
        if self.containers && e.phase == profiler_common::PHASE_SETUP as u32 {
            return;
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
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
            EVENT_WRITE => {
                if let Some(p) = resolved.filter(|p| !self.writable(p)) {
                    self.report(Violation {
                        time: now,
                        rule: "write-outside-writable-directories",
                        action: "reported",
                        pid: e.pid,
                        path: Some(p),
                        address: None,
                        inode: None,
                    });
                }
            }
            EVENT_BIND => {
                let port = bind_port(e);
                if let Some(port) = port.filter(|p| *p != 0 && !self.ports.contains(p)) {
                    self.report(Violation {
                        time: now,
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
    let plan = crate::confine::landlock::plan(&profile);
    let stat = |p: &std::path::Path| {
        use std::os::unix::fs::MetadataExt as _;
        std::fs::metadata(p).ok().map(|m| (Some(m.dev()), m.ino()))
    };
    let allowed: Vec<(Option<u64>, u64)> = if opts.containers {
        let mut v: Vec<_> = profile
            .executable_files
            .values()
            .map(|f| (None, f.inode))
            .collect();
        if let Ok(seal) = crate::profile::landlock::seal_binary() {
            v.extend(stat(&seal));
        }
        let without: Vec<&String> = profile
            .executables
            .keys()
            .filter(|p| !profile.executable_files.contains_key(*p))
            .filter(|p| {
                // Listed under a link's name: the file it resolves to has the identity.
                !profile.executable_files.keys().any(|f| {
                    std::path::Path::new(f).file_name().is_some_and(|n| {
                        n.to_string_lossy().starts_with(
                            &*std::path::Path::new(p)
                                .file_name()
                                .unwrap_or_default()
                                .to_string_lossy(),
                        )
                    })
                })
            })
            .collect();
        if !without.is_empty() && probes.judges_execs_by_file() {
            eprintln!(
                "profiler: warning: no file identity recorded for {without:?} (an older recording?): they are killed when run; record again"
            );
        }
        v
    } else {
        plan.executables.iter().filter_map(|p| stat(p)).collect()
    };
    probes.allow_inodes(allowed)?;
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
        let prepared = profiler_seal::prepare(&plan).map_err(|e| exit_error(2, e))?;
        eprint!("{}", plan.describe(&prepared.outcome, "profiler"));
        Some(prepared)
    } else {
        None
    };
    let restrict = landlock
        .as_ref()
        .and_then(|p| p.raw_fd().map(|fd| (fd, p.flags())));
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
    let mut checker = Checker {
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
            },
        )
        .await?;
        let mut rest = Vec::new();
        crate::kernel::events::drain_events(ring.get_mut(), &mut rest);
        for e in &rest {
            checker.event(e);
        }
        anyhow::Ok(exit)
    })?;
    cgroup.kill_all();
    drop(probes);
    drop(cgroup);
    if checker.count > 0 {
        eprintln!(
            "profiler: {} violation(s) of {}",
            checker.count,
            opts.profile.display()
        );
    }
    Ok(exit.as_exit_code())
}
