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
//! - For a container CRI-O started for Kubernetes, the hook also sends which workload it is a
//!   replica of (namespace, container, pod template; `containers::kubernetes_replica`), kept
//!   in the trace for `merge --by-workload`.
use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::signal::unix::{SignalKind, signal};

use crate::kernel::events::{EventLog, watch_events};
use crate::kernel::{Probes, check_privileges};
use crate::profile::seccomp::GenerateOptions;
use crate::profile::write_profiles;
use crate::recording::cgroup::cgroup2_mount;
use crate::recording::to_trace::TraceContext;
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
    /// The workload it is a replica of (CRI-O's Kubernetes annotations).
    #[serde(default)]
    replica_of: Option<crate::trace::ReplicaOf>,
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
    /// The bundle folder (its config.json holds the container's command).
    #[serde(default)]
    bundle: Option<String>,
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
    // The container's command, for telling replicas apart when there is no pod template.
    let args: Vec<String> = state
        .bundle
        .as_ref()
        .and_then(|b| std::fs::read(Path::new(b).join("config.json")).ok())
        .and_then(|c| serde_json::from_slice::<serde_json::Value>(&c).ok())
        .and_then(|c| serde_json::from_value(c["process"]["args"].clone()).ok())
        .unwrap_or_default();
    let replica_of = crate::recording::containers::kubernetes_replica(&state.annotations, &args);
    let request = Request {
        container_id: state.id,
        name,
        cgroup_id,
        cgroup_path,
        replica_of,
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
    /// The container's cgroup directory.
    dir: PathBuf,
    /// Where its profile goes.
    folder: PathBuf,
    started: Instant,
    recorded_at_unix: u64,
}

/// `profiler serve`.
pub fn serve(socket: &Path, out: &Path, quiet: bool) -> anyhow::Result<i32> {
    check_privileges("profiler serve")?;
    crate::profile::out_dir::OutputDir::check(out, false)
        .with_context(|| format!("--out {} is not usable", out.display()))?;
    let mut probes = Probes::attach(0)?;
    // Read once: /proc/kallsyms takes thousands of reads to produce.
    let kallsyms = crate::kernel::kallsyms::Kallsyms::load().ok();
    if let (Some(k), Some(mut callers)) = (&kallsyms, probes.direct_noaudit_callers()) {
        callers.fill(&k.direct_noaudit_ranges());
    }
    let kallsyms = kallsyms.map(std::sync::Arc::new);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let listener = listen(socket)?;
        if !quiet {
            eprintln!("profiler: serving on {}, writing profiles under {}", socket.display(), out.display());
        }
        let root = cgroup2_mount()?;
        let own_cgroup = own_cgroup_path();
        let mut active: Vec<Active> = Vec::new();
        let mut used_names = std::collections::BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        // Image events of every container being recorded, drained as they come.
        let ring = probes.take_events()?;
        let mut ring = watch_events(ring)?;
        let mut events = EventLog::default();
        let mut sigint = signal(SignalKind::interrupt())?;
        let mut sigterm = signal(SignalKind::terminate())?;
        let mut failures = 0;
        // Each connection is read by its own task: a client that connects and says nothing
        // holds up only itself (and is dropped after REQUEST_TIMEOUT), never the others.
        let (requests_tx, mut requests) =
            tokio::sync::mpsc::channel::<(Request, tokio::sync::oneshot::Sender<Reply>)>(64);
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    let Ok((stream, _)) = conn else { continue };
                    let tx = requests_tx.clone();
                    tokio::spawn(async move {
                        let (read, mut write) = stream.into_split();
                        let mut line = String::new();
                        let mut reader = tokio::io::BufReader::new(read).take(MAX_REQUEST_BYTES);
                        let reply = match tokio::time::timeout(REQUEST_TIMEOUT, reader.read_line(&mut line)).await {
                            Ok(Ok(_)) => match serde_json::from_str::<Request>(&line) {
                                Ok(req) => {
                                    let (reply_tx, reply_rx) = tokio::sync::oneshot::channel();
                                    if tx.send((req, reply_tx)).await.is_err() {
                                        return;
                                    }
                                    reply_rx.await.unwrap_or(Reply { ok: false, error: Some("server stopping".into()) })
                                }
                                Err(e) => Reply { ok: false, error: Some(format!("bad request: {e}")) },
                            },
                            _ => Reply { ok: false, error: Some("no request".into()) },
                        };
                        let mut bytes = serde_json::to_vec(&reply).unwrap_or_default();
                        bytes.push(b'\n');
                        let _ = write.write_all(&bytes).await;
                    });
                }
                Some((req, reply_tx)) = requests.recv() => {
                    let reply = match check_request(&root, own_cgroup.as_deref(), &req)
                        .and_then(|()| probes.track(req.cgroup_id))
                    {
                        Ok(()) => {
                            let folder = unique_folder(out, &req, &mut used_names);
                            if !quiet {
                                eprintln!(
                                    "profiler: recording container {:?} ({:?}) into {}",
                                    req.name, req.cgroup_path, folder.display()
                                );
                            }
                            active.push(Active {
                                dir: root.join(req.cgroup_path.trim_start_matches('/')),
                                folder,
                                request: req,
                                started: Instant::now(),
                                recorded_at_unix: unix_now(),
                            });
                            Reply { ok: true, error: None }
                        }
                        Err(e) => Reply { ok: false, error: Some(format!("{e:#}")) },
                    };
                    let _ = reply_tx.send(reply);
                }
                guard = ring.readable_mut() => {
                    let mut guard = guard?;
                    events.drain(guard.get_inner_mut());
                    guard.clear_ready();
                }
                _ = tick.tick() => {
                    // The programs wake this loop only when the buffer fills up.
                    events.drain(ring.get_mut());
                    let mut i = 0;
                    while i < active.len() {
                        if cgroup_populated(&active[i].dir) {
                            i += 1;
                            continue;
                        }
                        let a = active.remove(i);
                        events.drain(ring.get_mut());
                        let id = a.request.cgroup_id;
                        let mine = events.take_cgroup(id);
                        if let Err(e) = finish(&kallsyms, &mut probes, a, quiet, &mine) {
                            failures += 1;
                            eprintln!("profiler: {e:#}");
                        }
                    }
                }
                _ = sigint.recv() => break,
                _ = sigterm.recv() => break,
            }
        }
        events.drain(ring.get_mut());
        for a in active.drain(..) {
            if let Err(e) = finish(&kallsyms, &mut probes, a, quiet, events.events()) {
                failures += 1;
                eprintln!("profiler: {e:#}");
            }
        }
        let _ = std::fs::remove_file(socket);
        Ok(if failures > 0 { 1 } else { 0 })
    })
}

/// How long a client may take to send its one-line request.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// A request is one short JSON line.
const MAX_REQUEST_BYTES: u64 = 64 * 1024;

/// Binds the server socket. An existing socket is replaced only when no server answers on it
/// (a stale one); anything else at that path is left alone and refused.
fn listen(socket: &Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt as _;
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            if std::os::unix::net::UnixStream::connect(socket).is_ok() {
                bail!(
                    "another `profiler serve` already listens on {}; stop it or choose another --socket",
                    socket.display()
                );
            }
            std::fs::remove_file(socket)
                .with_context(|| format!("removing the stale socket {}", socket.display()))?;
        }
        Ok(_) => bail!(
            "{} exists and is not a socket; refusing to replace it (choose another --socket)",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot look at {}", socket.display())),
    }
    // Created with no permissions for others from the start (no window before a chmod).
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let listener = tokio::net::UnixListener::bind(socket);
    nix::sys::stat::umask(old);
    listener.with_context(|| format!("cannot listen on {}", socket.display()))
}

/// The cgroup2 path of this process (serve must never record itself or an ancestor).
fn own_cgroup_path() -> Option<String> {
    std::fs::read_to_string("/proc/self/cgroup")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_owned)
}

/// A request names a container's own cgroup: a real cgroup directory below the root whose
/// inode is the id asked for, neither the root (the whole host) nor an ancestor of serve's
/// own cgroup.
fn check_request(root: &Path, own: Option<&str>, req: &Request) -> anyhow::Result<()> {
    let rel = req.cgroup_path.trim_start_matches('/');
    if rel.is_empty() {
        bail!("refusing to record the root cgroup (the whole host)");
    }
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == "..")
        || req.cgroup_path.contains('\0')
    {
        bail!("invalid cgroup path {:?}", req.cgroup_path);
    }
    if let Some(own) = own {
        let own = own.trim_start_matches('/');
        if own == rel || own.starts_with(&format!("{rel}/")) {
            bail!(
                "refusing to record cgroup {:?}: profiler serve itself runs in it",
                req.cgroup_path
            );
        }
    }
    let meta = std::fs::symlink_metadata(root.join(rel))
        .with_context(|| format!("no cgroup {:?}", req.cgroup_path))?;
    if !meta.is_dir() || meta.ino() != req.cgroup_id {
        bail!(
            "cgroup {:?} does not have id {}",
            req.cgroup_path,
            req.cgroup_id
        );
    }
    Ok(())
}

/// The container's folder under `out`: its name made one safe path component (see
/// `containers::folder_name`), unique among the containers this server recorded.
fn unique_folder(
    out: &Path,
    req: &Request,
    used: &mut std::collections::BTreeSet<String>,
) -> PathBuf {
    let info = crate::trace::ContainerInfo {
        name: req.name.clone(),
        ..Default::default()
    };
    let base = crate::recording::containers::folder_name(
        Some(&info),
        Some(&req.cgroup_path),
        req.cgroup_id,
    );
    // Unique among this server's containers and on disk: a pod naming itself after another
    // must not take (or, after a restart, replace) that one's folder.
    let mut name = base.clone();
    let mut i = 2;
    while out.join(&name).exists() || !used.insert(name.clone()) {
        name = format!("{base}-{i}");
        i += 1;
    }
    out.join(name)
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
    kallsyms: &Option<std::sync::Arc<crate::kernel::kallsyms::Kallsyms>>,
    probes: &mut Probes,
    a: Active,
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
            replica_of: a.request.replica_of.clone(),
        },
        probes.syscall_hook.clone(),
        probes.cap_hook.clone(),
        probes.cred_check,
        kallsyms.clone(),
    )?;
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
            &[(&trace, a.folder.clone())],
            quiet,
            &GenerateOptions::default(),
            None,
        )?;
    }
    Ok(())
}
