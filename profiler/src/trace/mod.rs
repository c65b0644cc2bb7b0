//! The trace: everything one recording observed, in a versioned JSON schema
//! (`trace.json`). Every output format is generated from traces alone, so
//! `profiler generate` can regenerate profiles later, or from the union of several runs.
pub mod capability;
pub mod image;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;

/// Bump on any incompatible change; readers refuse schemas they do not know.
pub const TRACE_SCHEMA: &str = "profiler.dev/trace/v1";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Trace {
    pub schema: String,
    pub profiler_version: String,
    /// Seconds since the Unix epoch when recording started.
    pub recorded_at_unix: u64,
    pub host: Host,
    pub workload: Workload,
    pub probes: Probes,
    pub cgroup: CgroupInfo,
    /// seccomp filters loaded inside the cgroup (by a container runtime, or the workload).
    pub seccomp_filter_loads: u32,
    /// Syscalls seen, per architecture, sorted by number.
    pub syscalls: BTreeMap<Arch, Vec<SyscallEntry>>,
    /// Argument values of the syscalls filtered by argument, per phase.
    #[serde(default)]
    pub arguments: BTreeMap<Phase, ArgumentValues>,
    /// What the workload is: executables, written paths, network, users, resources.
    #[serde(default)]
    pub image: crate::trace::image::ImageInfo,
    /// Every distinct capability check (capability, outcome, syscall, kernel path).
    pub capability_checks: Vec<CapabilityCheck>,
    /// io_uring operations the workload submitted (`IORING_OP_*` names), which its
    /// io_uring_enter calls carried.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub io_uring_ops: BTreeSet<String>,
    pub losses: Losses,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Host {
    pub kernel: String,
    pub machine: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Workload {
    pub command: Vec<String>,
    pub exit: Exit,
    pub duration_ms: u64,
    /// Processes still in the workload's cgroup when the main command exited, which were
    /// killed (or waited for, with `--wait-descendants`).
    pub leftover_processes: u32,
    /// The workload this container is a replica of, as its runtime described it (a
    /// Kubernetes pod template, through the OCI hook): what `merge --by-workload` groups by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica_of: Option<ReplicaOf>,
}

/// Which workload a container is one replica of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReplicaOf {
    /// What its replicas share (e.g. namespace, pod-template hash and container name).
    pub key: String,
    /// A name for the merged folder (the pod's `app` label, else the container's name).
    pub name: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    Code(i32),
    Signal(i32),
    /// Recorded through an OCI hook: the runtime, not profiler, saw the exit.
    Unknown,
}

impl Exit {
    /// The shell convention: the exit code, or 128 + the signal number.
    pub fn as_exit_code(self) -> i32 {
        match self {
            Exit::Code(c) => c,
            Exit::Signal(s) => 128 + s,
            Exit::Unknown => 0,
        }
    }
}

/// Which kernel hooks produced this trace (so a reader knows what it can trust).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Probes {
    pub syscalls: String,
    /// `None` when no capability hook could be attached on that kernel.
    pub capabilities: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyscallEntry {
    pub nr: u32,
    pub name: String,
    /// When in the cgroup's life the syscall was seen.
    pub phases: Vec<Phase>,
}

/// Phases of a recorded cgroup (see `profiler_common::PHASE_*`).
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Before a seccomp filter was loaded: a container runtime's set-up (namespaces, mounts,
    /// pivot_root...), which the profile does not need to allow. Everything a command that
    /// loads no filter does stays in this phase.
    Setup,
    /// After the runtime loaded a seccomp filter, before the first exec: still the runtime,
    /// but already under the filter, so the profile must allow these.
    Runtime,
    /// From the first successful exec after the filter load on.
    Workload,
}

impl Phase {
    pub fn from_index(i: usize) -> Option<Phase> {
        match i {
            profiler_common::PHASE_SETUP => Some(Phase::Setup),
            profiler_common::PHASE_RUNTIME => Some(Phase::Runtime),
            profiler_common::PHASE_WORKLOAD => Some(Phase::Workload),
            _ => None,
        }
    }
}

/// Argument values seen for the syscalls whose power depends on an argument.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct ArgumentValues {
    /// socket(2) address families (AF_*).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub socket_families: BTreeSet<u32>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub socketpair_families: BTreeSet<u32>,
    /// Union of the clone(2) flags seen (None: clone was not called).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone_flags: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unshare_flags: Option<u64>,
    /// personality(2) values; `None` in the set stands for "some other value".
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub personality: BTreeSet<u64>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub personality_other: bool,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub prctl_options: BTreeSet<u32>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prctl_other: bool,
    /// i386 socketcall(2) call numbers (SYS_SOCKET=1 ...).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub socketcall_calls: BTreeSet<u32>,
    /// i386 ipc(2) call numbers (SEMOP=1 ...).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub ipc_calls: BTreeSet<u32>,
}

impl ArgumentValues {
    pub fn is_empty(&self) -> bool {
        *self == ArgumentValues::default()
    }

    pub fn union(&mut self, other: &ArgumentValues) {
        self.socket_families.extend(&other.socket_families);
        self.socketpair_families.extend(&other.socketpair_families);
        self.clone_flags = or_flags(self.clone_flags, other.clone_flags);
        self.unshare_flags = or_flags(self.unshare_flags, other.unshare_flags);
        self.personality.extend(&other.personality);
        self.personality_other |= other.personality_other;
        self.prctl_options.extend(&other.prctl_options);
        self.prctl_other |= other.prctl_other;
        self.socketcall_calls.extend(&other.socketcall_calls);
        self.ipc_calls.extend(&other.ipc_calls);
    }
}

fn or_flags(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (None, None) => None,
        (a, b) => Some(a.unwrap_or(0) | b.unwrap_or(0)),
    }
}

/// The cgroup a trace covers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct CgroupInfo {
    /// Path relative to the cgroup2 root, when it was seen before it was removed.
    pub path: Option<String>,
    pub id: u64,
    /// A container started under the recording cgroup, rather than the command itself.
    pub container: bool,
    /// What the container engine said about the container while it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_info: Option<ContainerInfo>,
    /// The recording began while the workload was already running (`--attach`): its
    /// start-up (the runtime's set-up, the entrypoint's first calls) is not in it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attached: bool,
}

/// A container as its engine describes it (`docker inspect`, `podman inspect`).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerInfo {
    /// `docker` or `podman`.
    pub engine: String,
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The compose project and service (labels `com.docker.compose.project`/`.service`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_project: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compose_service: Option<String>,
    /// The user the container was configured to run as (`--user`, compose `user:`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Its entrypoint and command (Config.Entrypoint, Config.Cmd): what the sealing
    /// entrypoint runs once it has applied the Landlock rules.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct SyscallRef {
    pub arch: Arch,
    pub nr: u32,
    pub name: String,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Audit {
    /// A check whose failure would have made an operation fail: it belongs in a whitelist.
    Audited,
    /// A check the kernel makes without auditing (CAP_OPT_NOAUDIT): it only picks a
    /// behaviour (e.g. memory overcommit headroom for CAP_SYS_ADMIN) and never belongs in a
    /// whitelist.
    Noaudit,
    /// The kernel stack could not be symbolised (kernel addresses hidden by kptr_restrict,
    /// no /proc/kallsyms) and the hook could not say either: which of the two it is cannot be
    /// known, and profiler does not guess (such checks are kept out of the whitelist, listed
    /// apart, and the recording reports lost data).
    Unclassified,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct CapabilityCheck {
    /// e.g. `CAP_CHOWN`.
    pub capability: String,
    pub number: u32,
    pub granted: bool,
    /// The cgroup's phase when the kernel checked.
    pub phase: Phase,
    /// Whether the kernel checked the task's own credentials. `false` when it checked
    /// credentials it had swapped in (`override_creds()`: overlayfs acting as its mounter,
    /// access() with a real-uid copy) or another task's. `None` when the kernel side could not
    /// tell (no BTF offset, or the fexit fallback).
    #[serde(default)]
    pub own_credentials: Option<bool>,
    pub audit: Audit,
    /// Why it was classified so (which kernel function, or which hook flag, decided).
    pub audit_reason: String,
    /// The syscall during which the kernel checked; `None` outside any syscall.
    pub syscall: Option<SyscallRef>,
    pub count: u64,
    /// How many of `count` the kernel counted without walking their stack: checks of a call
    /// path it knew by its depth below the syscall's entry, once a walk had shown
    /// `cap_capable()` called by a function that only makes unaudited checks (such as
    /// `security_vm_enough_memory_mm()`). `kernel_stack` is the walked one.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub counted_by_depth: u64,
    /// Kernel call stack, innermost first, as `function+0xoffset`.
    pub kernel_stack: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Anything the kernel side could not record. Non-zero means the trace is incomplete.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
pub struct Losses {
    pub syscalls_out_of_range: u64,
    pub capability_map_full: u64,
    pub capability_stack_missing: u64,
    /// Container cgroups that appeared while the map of recorded cgroups was full.
    #[serde(default)]
    pub cgroup_map_full: u64,
}

impl Losses {
    pub fn any(&self) -> bool {
        self.syscalls_out_of_range + self.capability_map_full + self.cgroup_map_full > 0
    }
}

impl Trace {
    /// Which workload this trace is a run of, for merging the recordings of its replicas:
    /// (the key replicas share, a folder name for it). Containers the OCI hook recorded share
    /// what their runtime said of them (`replica_of`); a compose service's containers share
    /// the project and service; other containers their image, entrypoint and command; a
    /// command its argv.
    pub fn workload_group(&self) -> (String, String) {
        if let Some(r) = &self.workload.replica_of {
            return (format!("replica {}", r.key), r.name.clone());
        }
        let c = self.cgroup.container_info.as_ref();
        if let Some(c) = c
            && let Some(service) = &c.compose_service
        {
            let project = c.compose_project.as_deref().unwrap_or_default();
            return (format!("compose {project}/{service}"), service.clone());
        }
        if let Some(c) = c
            && let Some(image) = &c.image
        {
            let key = serde_json::json!(["image", image, c.entrypoint, c.cmd]).to_string();
            // `registry/path/name:tag@digest` -> `name`
            let base = image.rsplit('/').next().unwrap_or(image);
            let base = base.split(['@', ':']).next().unwrap_or(base);
            return (key, base.to_owned());
        }
        let argv = &self.workload.command;
        let key = serde_json::json!(["command", argv]).to_string();
        let name = argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_owned())
            .unwrap_or_default();
        (key, name)
    }

    /// Reads a trace, naming the file and the line/column of any parse error.
    pub fn load(path: &Path) -> anyhow::Result<Trace> {
        // Read from the file as it is parsed, twice, rather than held whole in memory: a
        // trace can hold millions of paths (the parsed form is bounded, see
        // `image::MAX_WRITTEN_PATHS`). First only the schema (ignoring the rest allocates
        // nothing), so a file of another schema gets that error, not a field's.
        let reader = || -> anyhow::Result<std::io::BufReader<std::fs::File>> {
            Ok(std::io::BufReader::with_capacity(
                1 << 16,
                std::fs::File::open(path)
                    .with_context(|| format!("cannot read trace {}", path.display()))?,
            ))
        };
        #[derive(Deserialize)]
        struct SchemaOnly {
            schema: Option<serde_json::Value>,
        }
        let head: SchemaOnly = serde_json::from_reader(reader()?).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: malformed JSON: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        match head.schema.as_ref().and_then(|s| s.as_str()) {
            Some(TRACE_SCHEMA) => {}
            Some(other) => bail!(
                "{}: unsupported trace schema {other:?} (this profiler reads {TRACE_SCHEMA:?})",
                path.display()
            ),
            None => bail!(
                "{}: not a profiler trace (no \"schema\" field; expected {TRACE_SCHEMA:?})",
                path.display()
            ),
        }
        let mut trace: Trace = serde_json::from_reader(reader()?).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}:{}: invalid trace: {e}",
                path.display(),
                e.line(),
                e.column()
            )
        })?;
        trace.image.fold_written_paths();
        if let Err(bad) = trace.validate() {
            let at = bad
                .needle
                .as_deref()
                .and_then(|n| {
                    std::fs::read_to_string(path)
                        .ok()
                        .and_then(|t| position_of(&t, n))
                })
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default();
            bail!(
                "{}{at}: invalid trace at {}: {}",
                path.display(),
                bad.pointer,
                bad.message
            );
        }
        Ok(trace)
    }

    /// Checks what the JSON schema cannot: every syscall name is the one its architecture's
    /// table gives its number, every capability is a real one with its real number, and the
    /// resource peaks are within what a kernel can report. A trace is input like any other:
    /// an edited or hostile one must not put names into profiles that the architecture does
    /// not have, or limits that wrap.
    pub fn validate(&self) -> Result<(), Invalid> {
        let bad = |pointer: String, message: String, needle: Option<String>| {
            Err(Invalid {
                pointer,
                message,
                needle,
            })
        };
        for (arch, entries) in &self.syscalls {
            for (i, e) in entries.iter().enumerate() {
                let expected = arch.display_name(e.nr);
                if e.name != expected {
                    return bad(
                        format!("/syscalls/{arch}/{i}/name"),
                        format!("{:?} is not {arch} syscall {} ({expected})", e.name, e.nr),
                        Some(e.name.clone()),
                    );
                }
            }
        }
        for (i, c) in self.capability_checks.iter().enumerate() {
            match crate::trace::capability::parse_capability(&c.capability) {
                Ok(cap) if cap.index() as u32 == c.number => {}
                Ok(cap) => {
                    return bad(
                        format!("/capability_checks/{i}/number"),
                        format!(
                            "{} is capability {}, not {}",
                            c.capability,
                            cap.index(),
                            c.number
                        ),
                        Some(c.capability.clone()),
                    );
                }
                Err(e) => {
                    return bad(
                        format!("/capability_checks/{i}/capability"),
                        format!("{e:#}"),
                        Some(c.capability.clone()),
                    );
                }
            }
            if let Some(s) = &c.syscall
                && s.name != s.arch.display_name(s.nr)
            {
                return bad(
                    format!("/capability_checks/{i}/syscall/name"),
                    format!("{:?} is not {} syscall {}", s.name, s.arch, s.nr),
                    Some(s.name.clone()),
                );
            }
        }
        let r = &self.image.resources;
        if r.peak_memory_bytes.is_some_and(|m| m > MAX_MEMORY_BYTES) {
            return bad(
                "/image/resources/peak_memory_bytes".into(),
                format!("a peak above {MAX_MEMORY_BYTES} bytes is not a measurement"),
                None,
            );
        }
        if r.peak_tasks.is_some_and(|t| t > MAX_TASKS) {
            return bad(
                "/image/resources/peak_tasks".into(),
                format!(
                    "a peak above {MAX_TASKS} tasks (the kernel's PID_MAX_LIMIT) is not a measurement"
                ),
                None,
            );
        }
        let paths = self
            .image
            .executables
            .keys()
            .chain(self.image.written_paths.keys())
            .chain(self.image.executable_files.keys())
            .chain(self.image.writable_directories.iter());
        for p in paths {
            if p.contains('\0') || !p.starts_with('/') {
                return bad(
                    "/image".into(),
                    format!("{p:?} is not an absolute path a kernel could have passed"),
                    Some(p.clone()),
                );
            }
        }
        // What the programs import becomes profile rules and their comments: every name must
        // be a syscall of the program's architecture, every object an absolute path.
        for (exe, file) in &self.image.executable_files {
            let Some(imports) = &file.imports else {
                continue;
            };
            let pointer = format!("/image/executable_files/{}/imports", pointer_escape(exe));
            for (object, names) in &imports.objects {
                if object.contains('\0') || !object.starts_with('/') {
                    return bad(
                        format!("{pointer}/objects"),
                        format!("{object:?} is not an absolute path"),
                        Some(object.clone()),
                    );
                }
                for n in names {
                    if !imports.arch.is_some_and(|a| a.has_syscall(n)) {
                        return bad(
                            format!("{pointer}/objects/{}", pointer_escape(object)),
                            format!(
                                "{n:?} is not a syscall of {}",
                                imports
                                    .arch
                                    .map_or("an unnamed architecture".into(), |a| a.to_string())
                            ),
                            Some(n.clone()),
                        );
                    }
                }
            }
        }
        Ok(())
    }

    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("trace serialises");
        out.push(b'\n');
        out
    }

    /// Syscall names seen per architecture, in any phase.
    /// Adds what `other` saw to this trace (`profiler watch --promote`: a training trace and
    /// what production needed): syscalls with their phases, argument values, capability
    /// checks (counts added), the image, io_uring operations, losses. The workload, host and
    /// cgroup stay this trace's.
    pub fn union(&mut self, other: &Trace) {
        for (arch, entries) in &other.syscalls {
            let mine = self.syscalls.entry(*arch).or_default();
            for e in entries {
                match mine.iter_mut().find(|m| m.nr == e.nr) {
                    Some(m) => {
                        for p in &e.phases {
                            if !m.phases.contains(p) {
                                m.phases.push(*p);
                            }
                        }
                        m.phases.sort();
                    }
                    None => mine.push(e.clone()),
                }
            }
            mine.sort_by_key(|e| e.nr);
        }
        for (phase, values) in &other.arguments {
            self.arguments.entry(*phase).or_default().union(values);
        }
        for c in &other.capability_checks {
            let same = |m: &CapabilityCheck| {
                m.capability == c.capability
                    && m.granted == c.granted
                    && m.phase == c.phase
                    && m.syscall == c.syscall
                    && m.kernel_stack == c.kernel_stack
            };
            match self.capability_checks.iter_mut().find(|m| same(m)) {
                Some(m) => m.count += c.count,
                None => self.capability_checks.push(c.clone()),
            }
        }
        self.image.union(&other.image);
        self.io_uring_ops.extend(other.io_uring_ops.iter().cloned());
        self.seccomp_filter_loads = self.seccomp_filter_loads.max(other.seccomp_filter_loads);
        self.losses.syscalls_out_of_range += other.losses.syscalls_out_of_range;
        self.losses.capability_map_full += other.losses.capability_map_full;
        self.losses.capability_stack_missing += other.losses.capability_stack_missing;
        self.losses.cgroup_map_full += other.losses.cgroup_map_full;
    }

    pub fn syscall_names(&self) -> BTreeMap<Arch, BTreeSet<String>> {
        self.syscalls
            .iter()
            .map(|(arch, entries)| (*arch, entries.iter().map(|e| e.name.clone()).collect()))
            .collect()
    }

    /// Whether this is a container whose runtime loaded a seccomp filter before starting the
    /// entrypoint; then the set-up before that load is the runtime's business, not the
    /// profile's. A command profiler started itself is all workload, whatever it loads.
    pub fn filter_loaded_before_exec(&self) -> bool {
        self.cgroup.container
            && self
                .syscalls
                .values()
                .flatten()
                .any(|e| e.phases.contains(&Phase::Runtime))
    }
}

/// A peak no machine reports (1 PiB): what a wrapped or made-up value looks like.
pub const MAX_MEMORY_BYTES: u64 = 1 << 50;
/// PID_MAX_LIMIT on 64-bit kernels (include/linux/threads.h): no cgroup holds more tasks.
pub const MAX_TASKS: u64 = 4 * 1024 * 1024;

/// Where a trace is wrong: a JSON pointer, what is wrong, and the offending string (to find
/// its line and column in the file).
#[derive(Debug)]
pub struct Invalid {
    pub pointer: String,
    pub message: String,
    pub needle: Option<String>,
}

/// A JSON pointer reference token (RFC 6901: `~` as `~0`, `/` as `~1`).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// Line and column (1-based) of the first occurrence of `value` as a JSON string literal.
fn position_of(text: &str, value: &str) -> Option<(usize, usize)> {
    let literal = serde_json::to_string(value).ok()?;
    let offset = text.find(&literal)?;
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map(|i| i + 1).unwrap_or(0) + 1;
    Some((line, col))
}
