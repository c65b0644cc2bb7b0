//! Recording containers that a runtime starts on its own (podman, CRI-O on a Kubernetes
//! node), through an OCI hook, the way oci-seccomp-bpf-hook is used.
//!
//! - `profiler serve --socket S --out DIR` loads the probes and waits;
//! - `profiler hook --socket S`, installed as a `createRuntime` (or `prestart`) hook, receives
//!   the container state on stdin (runtime-spec config.md "Hooks"), finds the container's
//!   cgroup from its init pid and asks the server to record it. The runtime waits for the hook
//!   before it lets the container go on, and the server answers only once the cgroup is in
//!   the kernel map: nothing after that point is missed. runc runs `createRuntime` hooks
//!   after the init process joined its cgroup and before it loads the seccomp filter and
//!   execs the entrypoint, so the phases (runtime set-up, runtime after the filter,
//!   workload) come out as for `record --containers`.
//! - When the container's cgroup empties, the server writes DIR/<name>/ (name from the
//!   `io.profiler.name` annotation, else the container id). SIGINT/SIGTERM write what is
//!   still running and stop.
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{SignalKind, signal};

use crate::cgroup::cgroup2_mount;
use crate::probes::{Probes, check_privileges};
use crate::record::{TraceContext, write_profiles};
use crate::seccomp::GenerateOptions;
use crate::trace::{Exit, Workload};

/// Default socket path of `profiler serve`.
pub const DEFAULT_SOCKET: &str = "/run/profiler.sock";
/// Annotation naming the output folder of a container.
pub const NAME_ANNOTATION: &str = "io.profiler.name";

#[derive(Debug, Serialize, Deserialize)]
struct Request {
    container_id: String,
    name: String,
    cgroup_id: u64,
    /// Path relative to the cgroup2 root.
    cgroup_path: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct Reply {
    ok: bool,
    error: Option<String>,
}

/// The OCI state the runtime passes to hooks on stdin (runtime-spec runtime.md "State").
#[derive(Debug, Deserialize)]
struct State {
    id: String,
    pid: Option<i32>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

/// `profiler hook`: exit 0 even when no server listens unless `required`, so that installing
/// the hook never breaks containers on a node where nobody is recording.
pub fn hook(socket: &Path, required: bool) -> anyhow::Result<i32> {
    match hook_inner(socket) {
        Ok(()) => Ok(0),
        Err(e) if !required => {
            eprintln!("profiler hook: not recording this container: {e:#}");
            Ok(0)
        }
        Err(e) => Err(e),
    }
}

fn hook_inner(socket: &Path) -> anyhow::Result<()> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input)
        .context("reading the OCI state from stdin")?;
    let state: State =
        serde_json::from_str(&input).context("the OCI state on stdin is not valid JSON")?;
    let pid = state
        .pid
        .context("the OCI state has no pid (hook installed at a stage without a process?)")?;
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .with_context(|| format!("reading /proc/{pid}/cgroup"))?;
    let cgroup_path = cgroups
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .context("the container's init is in no cgroup2 cgroup")?
        .to_owned();
    let dir = cgroup2_mount()?.join(cgroup_path.trim_start_matches('/'));
    let cgroup_id = std::fs::metadata(&dir)
        .with_context(|| format!("{}", dir.display()))?
        .ino();
    let name = state
        .annotations
        .get(NAME_ANNOTATION)
        .cloned()
        .unwrap_or_else(|| state.id.clone());
    let request = Request {
        container_id: state.id,
        name,
        cgroup_id,
        cgroup_path,
    };
    let mut stream = std::os::unix::net::UnixStream::connect(socket)
        .with_context(|| format!("no `profiler serve` listens on {}", socket.display()))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut line = serde_json::to_vec(&request)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut reply = String::new();
    BufReader::new(&stream)
        .read_line(&mut reply)
        .context("reading the server's reply")?;
    let reply: Reply = serde_json::from_str(&reply).context("invalid reply from profiler serve")?;
    if !reply.ok {
        bail!(
            "profiler serve refused: {}",
            reply.error.unwrap_or_default()
        );
    }
    Ok(())
}

struct Active {
    request: Request,
    dir: PathBuf,
    started: Instant,
    recorded_at_unix: u64,
}

/// `profiler serve`.
pub fn serve(socket: &Path, out: &Path, quiet: bool) -> anyhow::Result<i32> {
    check_privileges("profiler serve")?;
    if !is_safe_name_dir(out) {
        bail!("--out {} is not a usable folder", out.display());
    }
    let mut probes = Probes::attach(0)?;
    // Read once: /proc/kallsyms takes thousands of reads to produce.
    let kallsyms = crate::capabilities::Kallsyms::load()
        .ok()
        .map(std::sync::Arc::new);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("cannot listen on {}", socket.display()))?;
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
        if !quiet {
            eprintln!("profiler: serving on {}, writing profiles under {}", socket.display(), out.display());
        }
        let root = cgroup2_mount()?;
        let mut active: Vec<Active> = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // Image events of every container being recorded, drained as they come.
        let ring = probes.take_events()?;
        let mut ring = crate::record::watch_events(ring)?;
        let mut events: Vec<profiler_common::Event> = Vec::new();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut failures = 0;
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let Ok((stream, _)) = conn else { continue };
                    let (read, mut write) = stream.into_split();
                    let mut line = String::new();
                    let mut reader = tokio::io::BufReader::new(read);
                    let reply = match tokio::time::timeout(Duration::from_secs(5), reader.read_line(&mut line)).await {
                        Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                            Ok(req) => match probes.track(req.cgroup_id) {
                                Ok(()) => {
                                    if !quiet {
                                        eprintln!("profiler: recording container {} ({})", req.name, req.cgroup_path);
                                    }
                                    active.push(Active {
                                        dir: root.join(req.cgroup_path.trim_start_matches('/')),
                                        request: req,
                                        started: Instant::now(),
                                        recorded_at_unix: unix_now(),
                                    });
                                    Reply { ok: true, error: None }
                                }
                                Err(e) => Reply { ok: false, error: Some(format!("{e:#}")) },
                            },
                            Err(e) => Reply { ok: false, error: Some(format!("bad request: {e}")) },
                        },
                        _ => Reply { ok: false, error: Some("no request".into()) },
                    };
                    let mut bytes = serde_json::to_vec(&reply)?;
                    bytes.push(b'\n');
                    let _ = write.write_all(&bytes).await;
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    crate::record::drain_events(guard.get_inner_mut(), &mut events);
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    // The programs wake this loop only when the buffer fills up.
                    crate::record::drain_events(ring.get_mut(), &mut events);
                    let mut i = 0;
                    while i < active.len() {
                        if cgroup_populated(&active[i].dir) {
                            i += 1;
                            continue;
                        }
                        let a = active.remove(i);
                        crate::record::drain_events(ring.get_mut(), &mut events);
                        let id = a.request.cgroup_id;
                        let mine: Vec<_> = events.iter().filter(|e| e.cgroup_id == id).copied().collect();
                        events.retain(|e| e.cgroup_id != id);
                        if let Err(e) = finish(&kallsyms, &mut probes, a, out, quiet, &mine) {
                            failures += 1;
                            eprintln!("profiler: {e:#}");
                        }
                    }
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        crate::record::drain_events(ring.get_mut(), &mut events);
        for a in active.drain(..) {
            if let Err(e) = finish(&kallsyms, &mut probes, a, out, quiet, &events) {
                failures += 1;
                eprintln!("profiler: {e:#}");
            }
        }
        let _ = std::fs::remove_file(socket);
        Ok(if failures > 0 { 1 } else { 0 })
    })
}

fn is_safe_name_dir(p: &Path) -> bool {
    !p.as_os_str().is_empty() && !p.is_file()
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cgroup that is gone counts as empty.
fn cgroup_populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events"))
        .map(|s| s.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

fn finish(
    kallsyms: &Option<std::sync::Arc<crate::capabilities::Kallsyms>>,
    probes: &mut Probes,
    a: Active,
    out: &Path,
    quiet: bool,
    events: &[profiler_common::Event],
) -> anyhow::Result<()> {
    let collected = probes.collect(a.request.cgroup_id)?;
    let ctx = TraceContext::new(
        a.recorded_at_unix,
        Workload {
            command: vec![format!("container {}", a.request.container_id)],
            exit: Exit::Unknown,
            duration_ms: a.started.elapsed().as_millis() as u64,
            leftover_processes: 0,
        },
        probes.syscall_hook.clone(),
        probes.cap_hook.clone(),
        probes.cred_check,
        kallsyms.clone(),
    )?;
    // Only a name the runtime's annotation or id gave: keep it one path component.
    let name: String = a
        .request
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    for c in collected {
        let trace = ctx.trace(
            c,
            Some(a.request.cgroup_path.clone()),
            true,
            events,
            std::path::Path::new("/"),
            Default::default(),
        );
        write_profiles(
            &[(&trace, out.join(&name))],
            quiet,
            &GenerateOptions::default(),
            None,
        )?;
    }
    Ok(())
}
