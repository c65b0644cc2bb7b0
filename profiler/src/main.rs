use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use profiler::arch::Arch;
use profiler::profile::imported::{IncludeAction, IncludeImported};
use profiler::profile::seccomp::{DefaultAction, GenerateOptions};
use profiler::{cli::record, confine::run, exit::ExitError};

/// Record a workload with eBPF and turn what it did into security profiles.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The `--default-action` values: the command line's spelling of the profile layer's
/// [`DefaultAction`] (which knows nothing of clap).
#[derive(Clone, Copy, ValueEnum)]
enum DeniedSyscall {
    /// Fail with EPERM (what Docker's own profile does): the program sees
    /// "Operation not permitted" and can report it.
    Errno,
    /// Kill the process (SCMP_ACT_KILL_PROCESS): loudest, nothing runs on past a violation.
    Kill,
    /// Allow but log to the audit log (SCMP_ACT_LOG): a soft first rollout.
    Log,
}

impl From<DeniedSyscall> for DefaultAction {
    fn from(d: DeniedSyscall) -> Self {
        match d {
            DeniedSyscall::Errno => DefaultAction::Errno,
            DeniedSyscall::Kill => DefaultAction::Kill,
            DeniedSyscall::Log => DefaultAction::Log,
        }
    }
}

/// How profiles are generated.
#[derive(Args, Clone)]
struct ProfileArgs {
    /// Allow socket families, clone/unshare namespace flags, personality values and prctl
    /// options only as seen (on by default, like Docker's default profile); this turns it off.
    #[arg(long)]
    no_argument_rules: bool,
    /// What a syscall outside the profile does: errno (EPERM), kill (the process) or log
    /// (allowed and logged to the audit log, for a soft first rollout).
    #[arg(long, value_enum, default_value_t = DeniedSyscall::Errno)]
    default_action: DeniedSyscall,
    /// Also list this architecture (x86_64, i386, x32) in the seccomp profile; repeatable.
    #[arg(long = "arch", value_parser = parse_arch)]
    arches: Vec<Arch>,
    /// Resource limits are the recorded peaks times this (memory at least peak + 64 MiB).
    #[arg(long, default_value_t = profiler::profile::image_profile::DEFAULT_HEADROOM, value_parser = parse_headroom)]
    limit_headroom: f64,
    /// The workload's name in kubernetes.yaml and seccompprofile.yaml (strategic-merge
    /// patches match containers by name). Default: the container's name (the compose
    /// service's), else the output folder's.
    #[arg(long)]
    name: Option<String>,
    /// Follow symbolic links owned by other users on the way to --out (root refuses them by
    /// default: another user may have planted one to redirect what root writes).
    #[arg(long)]
    follow_symlinks: bool,
    /// Allow io_uring in the seccomp profile when the recording used it. Refused by default:
    /// seccomp cannot see the file and network operations io_uring carries, so allowing it
    /// allows them all.
    #[arg(long)]
    allow_io_uring: bool,
    /// Also put into the seccomp profile the syscalls the recorded programs import (their ELF
    /// import tables and their libraries') but never made while recording: `log`
    /// (SCMP_ACT_LOG: allowed, and logged to the audit log) or `allow`. Each rule says which
    /// program imports it. Interpreters and the dangerous syscalls (ptrace, bpf, mount,
    /// unshare, setns, keyctl, io_uring...) stay out unless named.
    #[arg(long, value_enum, value_name = "ACTION")]
    include_imported: Option<IncludeImportedArg>,
    /// Only the imports of this executable (its path in the workload, as the summary and
    /// coverage.json name it); names an interpreter in too. Repeatable.
    #[arg(long, value_name = "PATH", requires = "include_imported", value_parser = parse_absolute)]
    include_imported_from: Vec<String>,
    /// Include this dangerous syscall too when a program imports it (e.g. ptrace, chroot).
    /// Repeatable.
    #[arg(long, value_name = "NAME", requires = "include_imported", value_parser = parse_syscall)]
    include_imported_syscall: Vec<String>,
}

/// The `--include-imported` values.
#[derive(Clone, Copy, ValueEnum)]
enum IncludeImportedArg {
    /// SCMP_ACT_LOG: allowed, and logged to the audit log.
    Log,
    /// SCMP_ACT_ALLOW.
    Allow,
}

fn parse_absolute(s: &str) -> Result<String, String> {
    if s.starts_with('/') && !s.contains('\0') {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?} is not an absolute path (as the summary names programs)"
        ))
    }
}

fn parse_syscall(s: &str) -> Result<String, String> {
    if Arch::any_has_syscall(s) {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a syscall of x86_64, i386 or x32"))
    }
}

fn parse_headroom(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && (1.0..=100.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a factor between 1 and 100")),
    }
}

impl ProfileArgs {
    fn options(&self) -> GenerateOptions {
        GenerateOptions {
            argument_rules: !self.no_argument_rules,
            default_action: self.default_action.into(),
            extra_arches: self.arches.clone(),
            limit_headroom: self.limit_headroom,
            name: self.name.clone(),
            follow_symlinks: self.follow_symlinks,
            allow_io_uring: self.allow_io_uring,
            include_imported: IncludeImported {
                action: self.include_imported.map(|a| match a {
                    IncludeImportedArg::Log => IncludeAction::Log,
                    IncludeImportedArg::Allow => IncludeAction::Allow,
                }),
                from: self.include_imported_from.clone(),
                dangerous_allowed: self.include_imported_syscall.clone(),
            },
        }
    }
}

fn parse_arch(s: &str) -> Result<Arch, String> {
    Arch::ALL
        .into_iter()
        .find(|a| a.label() == s)
        .ok_or_else(|| format!("unknown architecture {s:?} (x86_64, i386, x32)"))
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    profiler::recording::attach::parse_duration(s)
}

#[derive(Subcommand)]
enum Command {
    /// Run CMD in a fresh cgroup with the probes attached; write trace.json, seccomp.json and
    /// capabilities.json. Exits with CMD's exit code (128+signal when killed).
    Record {
        /// Output folder.
        #[arg(long, default_value = "profile")]
        out: PathBuf,
        /// Do not print the summary.
        #[arg(long, short)]
        quiet: bool,
        /// When CMD exits, keep recording until every process it left behind has exited
        /// (default: stop them, as a container runtime would).
        #[arg(long)]
        wait_descendants: bool,
        /// Record the containers CMD starts, one profile each (in OUT, or OUT/<container> when
        /// there are several), instead of CMD itself. `docker run`/`podman run` commands get
        /// `--cgroup-parent` and a permissive recording seccomp profile added; other commands
        /// find them in $PROFILER_CGROUP_PARENT and $PROFILER_RECORDING_SECCOMP.
        #[arg(long)]
        containers: bool,
        /// Record a workload that is already running, from now on, instead of starting CMD:
        /// `docker:NAME`, `podman:NAME`, a bare container name or id, `pid:N` (its cgroup)
        /// or `cgroup:/PATH`. Its start-up is not seen (the trace says so); the recording
        /// ends when it exits, after --duration, or on Ctrl-C.
        #[arg(long, value_name = "TARGET", conflicts_with_all = ["containers", "wait_descendants", "cmd"])]
        attach: Option<String>,
        /// With --attach: stop after this long (30s, 5m, 1h).
        #[arg(long, requires = "attach", value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        #[command(flatten)]
        profile: ProfileArgs,
        /// The command to record.
        #[arg(required_unless_present = "attach", last = true)]
        cmd: Vec<String>,
    },
    /// Regenerate the profiles from one or more traces (their union).
    Generate {
        #[arg(long, default_value = "profile")]
        out: PathBuf,
        #[command(flatten)]
        profile: ProfileArgs,
        #[arg(required = true)]
        traces: Vec<PathBuf>,
    },
    /// Run CMD (or, with --containers, the containers it starts) held to an image profile:
    /// Landlock refuses execs, writes and TCP ports outside it (for containers, through the
    /// sealing entrypoint of their run flags), and an exec of a program the profile does not
    /// list is killed before it runs. One JSON line per violation. Exits with CMD's exit code.
    Enforce {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        containers: bool,
        /// Append violation lines to this file instead of stderr.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Do not also hold a command to the image profile with Landlock (execs, writes,
        /// TCP ports). Containers get Landlock from their run flags' sealing entrypoint.
        #[arg(long)]
        no_landlock: bool,
        /// Exit with CMD's exit code even when something was denied or killed (otherwise a
        /// CMD that succeeded makes enforce exit 5).
        #[arg(long)]
        violations_ok: bool,
        /// Do not read Landlock's denials from the kernel's audit records (which switches
        /// audit on for the session where it is off); they are then refused, not reported.
        #[arg(long)]
        no_audit: bool,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Watch a workload against its profile (DIR): a running one (--attach), CMD, or the
    /// containers CMD starts (--containers). One JSON line per syscall,
    /// capability, exec, write or port the profile does not allow, within a second, and a
    /// summary line now and then; the last line holds what production did (for `promote`).
    /// Exits 5 when anything was reported.
    Watch {
        #[arg(long)]
        profile: PathBuf,
        /// A running workload, as `record --attach` takes it (else CMD is started).
        #[arg(long, value_name = "TARGET", conflicts_with_all = ["containers", "cmd"])]
        attach: Option<String>,
        /// Watch the containers CMD starts (as `record --containers` records them).
        #[arg(long)]
        containers: bool,
        /// Append the lines to this file instead of stdout.
        #[arg(long)]
        log: Option<PathBuf>,
        /// Write the next profile here when the watch ends: the profile's recording plus
        /// what production needed (coverage.json), and print `profiler diff DIR OUT`.
        #[arg(long, value_name = "OUT")]
        promote: Option<PathBuf>,
        /// Stop after this long (default: when the workload exits, or on Ctrl-C).
        #[arg(long, value_parser = parse_duration)]
        duration: Option<std::time::Duration>,
        /// How often a summary line is written.
        #[arg(long, value_parser = parse_duration, default_value = "10s")]
        summary_every: std::time::Duration,
        #[command(flatten)]
        options: ProfileArgs,
        /// The command to start and watch.
        #[arg(required_unless_present = "attach", last = true)]
        cmd: Vec<String>,
    },
    /// The next profile from watch logs: PROFILE's recording plus the production traces the
    /// logs end with; prints `profiler diff PROFILE OUT`.
    Promote {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        options: ProfileArgs,
        profile: PathBuf,
        #[arg(required = true)]
        logs: Vec<PathBuf>,
    },
    /// Union of several recordings (trace.json files or profile folders holding one), with
    /// coverage.json: how many runs used each syscall/capability and which run first did.
    Merge {
        #[arg(long, default_value = "profile")]
        out: PathBuf,
        /// Merge the replicas of each workload apart, into OUT/<workload>/: recordings of the
        /// same compose service, of the same image, entrypoint and command, or of the same
        /// command are one workload.
        #[arg(long)]
        by_workload: bool,
        #[command(flatten)]
        profile: ProfileArgs,
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
    },
    /// What NEW allows beyond OLD and the reverse (profile folders or trace.json files).
    /// Exit 0 when NEW needs nothing more than OLD, 1 when it needs more, 2 on error.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Benchmark baseline: run CMD with a do-nothing program attached to the same syscall
    /// tracepoint profiler records with (what any such probe costs every syscall).
    #[command(hide = true)]
    BenchFloor {
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
    /// Benchmark check: list the profiler programs loaded in the kernel right now (none
    /// should be while nothing records).
    #[command(hide = true)]
    BenchAttached,
    /// Record containers that runtimes start on their own, announced by `profiler hook`;
    /// writes OUT/<name>/ when each container's cgroup empties, and the rest on SIGINT/SIGTERM.
    Serve {
        #[arg(long, default_value = profiler::cli::oci_hook::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long, default_value = "profiles")]
        out: PathBuf,
        #[arg(long, short)]
        quiet: bool,
    },
    /// OCI hook (createRuntime or prestart): reads the container state on stdin and has
    /// `profiler serve` record the container. Exits 0 when no server listens, unless --required.
    Hook {
        #[arg(long, default_value = profiler::cli::oci_hook::DEFAULT_SOCKET)]
        socket: PathBuf,
        #[arg(long)]
        required: bool,
    },
    /// Internal: stops what a recording cgroup holds once its recorder is gone.
    #[command(hide = true)]
    Reap { cgroup: PathBuf },
    /// Kubernetes objects that are not made from one recording.
    #[command(subcommand)]
    Kubernetes(KubernetesCommand),
    /// Run CMD confined by a profile folder (seccomp.json + capabilities.json).
    Run {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long, short)]
        quiet: bool,
        /// Do not hold the image profile in the kernel with Landlock (execs, writes, TCP
        /// ports): seccomp and capabilities only.
        #[arg(long)]
        no_landlock: bool,
        #[arg(required = true, last = true)]
        cmd: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KubernetesCommand {
    /// The node agent: a Namespace, the OCI hook's ConfigMap and a DaemonSet that runs
    /// `profiler serve` privileged on every node, installs `profiler hook` for CRI-O and writes
    /// each annotated pod's profile folder (seccompprofile.yaml, networkpolicy.yaml, ...) on
    /// the node.
    NodeAgent {
        /// The image holding the profiler binary at /usr/local/bin/profiler (and /bin/sh, cp, mv).
        #[arg(long)]
        image: String,
        /// Write the YAML here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        #[arg(long, default_value = "profiler")]
        namespace: String,
        /// The DaemonSet's name (and its pods' `app` label).
        #[arg(long, default_value = "profiler-node-agent")]
        name: String,
        /// serve's socket on the node, in a folder of its own.
        #[arg(long, default_value = "/run/profiler/profiler.sock")]
        socket: String,
        /// The node folder the profiles are written under.
        #[arg(long, default_value = "/var/lib/profiler")]
        node_profiles: String,
        /// CRI-O's hooks directory (crio.conf `hooks_dir`).
        #[arg(long, default_value = "/usr/share/containers/oci/hooks.d")]
        hooks_dir: String,
        /// The node folder the hook binary is installed in.
        #[arg(long, default_value = "/opt/profiler/bin")]
        bin_dir: String,
    },
}

fn main() -> ExitCode {
    profiler::timings::start();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Record {
            out,
            quiet,
            attach: Some(target),
            duration,
            profile,
            ..
        } => profiler::cli::attach::record_attached(profiler::cli::attach::AttachOptions {
            target,
            duration,
            out,
            quiet,
            generate: profile.options(),
        }),
        Command::Record {
            out,
            quiet,
            wait_descendants,
            containers,
            profile,
            cmd,
            ..
        } => record::record(record::RecordOptions {
            out,
            command: cmd,
            quiet,
            wait_descendants,
            containers,
            generate: profile.options(),
        }),
        Command::Generate {
            out,
            profile,
            traces,
        } => profiler::cli::generate::generate(&out, &traces, &profile.options()),
        Command::Run {
            profile,
            quiet,
            no_landlock,
            cmd,
        } => run::run(
            &profile,
            &cmd,
            quiet,
            if no_landlock {
                run::Landlock::Off
            } else {
                run::Landlock::Auto
            },
        ),
        Command::Reap { cgroup } => profiler::recording::cgroup::reap(&cgroup),
        Command::Merge {
            out,
            by_workload,
            profile,
            inputs,
        } => if by_workload {
            profiler::cli::merge::merge_by_workload(&out, &inputs, &profile.options())
        } else {
            profiler::cli::merge::merge(&out, &inputs, &profile.options())
        }
        .map_err(|e| profiler::exit::exit_error(2, format!("{e:#}")))
        .map(|written| {
            for p in written {
                eprintln!("profiler: wrote {}", p.display());
            }
            0
        }),
        Command::Diff { old, new, json } => profiler::cli::diff::diff(&old, &new, json),
        Command::BenchFloor { cmd } => profiler::cli::bench::bench_floor(&cmd),
        Command::Enforce {
            profile,
            containers,
            log,
            no_landlock,
            violations_ok,
            no_audit,
            cmd,
        } => profiler::confine::enforce::enforce(profiler::confine::enforce::EnforceOptions {
            profile,
            command: cmd,
            containers,
            log,
            landlock: !no_landlock,
            violations_ok,
            audit: !no_audit,
        }),
        Command::Watch {
            profile,
            attach,
            containers,
            log,
            promote,
            duration,
            summary_every,
            options,
            cmd,
        } => profiler::cli::watch::watch(profiler::cli::watch::WatchOptions {
            profile,
            target: attach,
            command: cmd,
            containers,
            log,
            promote,
            duration,
            summary_every,
            generate: options.options(),
        }),
        Command::Promote {
            out,
            options,
            profile,
            logs,
        } => profiler::cli::watch::promote(&out, &profile, &logs, &options.options()),
        Command::BenchAttached => profiler::cli::bench::attached(),
        Command::Serve { socket, out, quiet } => {
            profiler::cli::oci_hook::serve(&socket, &out, quiet)
        }
        Command::Hook { socket, required } => profiler::cli::oci_hook::hook(&socket, required),
        Command::Kubernetes(KubernetesCommand::NodeAgent {
            image,
            out,
            namespace,
            name,
            socket,
            node_profiles,
            hooks_dir,
            bin_dir,
        }) => profiler::cli::kubernetes::node_agent(
            &profiler::profile::node_agent::NodeAgentOptions {
                image,
                namespace,
                name,
                socket,
                out: node_profiles,
                hooks_dir,
                bin_dir,
            },
            out.as_deref(),
        ),
    };
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            let code = e.downcast_ref::<ExitError>().map(|x| x.code).unwrap_or(1);
            eprintln!("profiler: error: {e:#}");
            ExitCode::from(code as u8)
        }
    }
}
