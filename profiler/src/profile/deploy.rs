//! Deployment outputs of the image profile: `image-profile.json`, `docker-run.txt`,
//! `kubernetes.yaml` (a patch for a Deployment, built with the k8s-openapi types) and
//! `seccompprofile.yaml` (a Security Profiles Operator `SeccompProfile`).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSecurityContext, PodSpec, PodTemplateSpec,
    ResourceRequirements, SeccompProfile, SecurityContext, Sysctl, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::profile::capabilities::CapabilityProfile;
use crate::profile::seccomp::{DockerSeccomp, SyscallRule};
use crate::trace::image::DirectoryFacts;
use crate::trace::image::{ImageInfo, Network};

pub const IMAGE_PROFILE_FILE: &str = "image-profile.json";
pub const DOCKER_RUN_FILE: &str = "docker-run.txt";
pub const PODMAN_RUN_FILE: &str = "podman-run.txt";
/// Written next to the per-service folders when the recorded containers came from compose.
pub const COMPOSE_OVERRIDE_FILE: &str = "docker-compose.profile.yml";
pub const KUBERNETES_FILE: &str = "kubernetes.yaml";
pub const SPO_FILE: &str = "seccompprofile.yaml";

/// The Security Profiles Operator's SeccompProfile CRD version this writes
/// (security-profiles-operator.x-k8s.io, SeccompProfile v1beta1).
pub const SPO_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";

/// Default headroom over the recorded peaks: a recording sees one run, not the worst one
/// (x1.5 OOM-killed a cache service under a slightly heavier load than its training run).
pub const DEFAULT_HEADROOM: f64 = 2.0;

/// The memory limit never sits closer than this above the recorded peak: a small service's
/// peak doubled is still only a few MiB of slack, less than one more connection's buffers.
const MIN_MEMORY_SLACK: u64 = 64 * 1024 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    /// The peaks the limits were made from (also in `resources`), next to them.
    #[serde(default)]
    pub peak_memory_bytes: Option<u64>,
    #[serde(default)]
    pub peak_tasks: Option<u64>,
    pub headroom: String,
}

/// Limits from the recorded peaks: memory = max(peak x headroom, peak + 64 MiB), rounded up
/// to 16 MiB; tasks = max(peak x headroom, peak + 16, 64).
pub fn limits(image: &ImageInfo, headroom: f64) -> Limits {
    let mib = 1024 * 1024;
    let headroom = if headroom.is_finite() && headroom >= 1.0 {
        headroom
    } else {
        DEFAULT_HEADROOM
    };
    let scaled = |v: u64| (v as f64 * headroom).ceil() as u64;
    Limits {
        memory_bytes: image.resources.peak_memory_bytes.map(|p| {
            scaled(p)
                .max(p.saturating_add(MIN_MEMORY_SLACK))
                .div_ceil(16 * mib)
                .saturating_mul(16 * mib)
        }),
        pids: image
            .resources
            .peak_tasks
            .map(|t| scaled(t).max(t.saturating_add(16)).max(64)),
        peak_memory_bytes: image.resources.peak_memory_bytes,
        peak_tasks: image.resources.peak_tasks,
        headroom: format!(
            "memory: max({headroom} x the recorded peak, peak + 64 MiB), rounded up to 16 MiB; \
             tasks: max({headroom} x the recorded peak, peak + 16, 64) (--limit-headroom)"
        ),
    }
}

/// `image-profile.json`: what the workload is, and the references to its seccomp profile and
/// capability whitelist.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ImageProfile {
    pub schema: String,
    /// The seccomp profile (Docker format) and capability whitelist, next to this file.
    pub seccomp_profile: String,
    pub capabilities_file: String,
    pub syscalls: BTreeMap<Arch, BTreeSet<String>>,
    pub capabilities: Vec<String>,
    pub executables: BTreeMap<String, BTreeSet<String>>,
    pub failed_executables: BTreeSet<String>,
    pub writable_directories: BTreeSet<String>,
    /// Owner, mode and prior content of the writable directories.
    #[serde(default)]
    pub directories: BTreeMap<String, DirectoryFacts>,
    pub written_paths: BTreeMap<String, BTreeSet<String>>,
    pub unresolved_writes: BTreeSet<String>,
    pub network: Network,
    pub users: crate::trace::image::Users,
    /// A `uid:gid` the workload can run as from the start, when it never needed root.
    pub run_as: Option<String>,
    pub resources: crate::trace::image::Resources,
    pub limits: Limits,
    pub events_lost: u64,
}

pub const IMAGE_PROFILE_SCHEMA: &str = "profiler.dev/image-profile/v1";

/// The user every program of the workload ran as, when that is one non-root user that never
/// switched: the container can start as it (and a root workload cannot be told to).
pub fn run_as(image: &ImageInfo) -> Option<String> {
    if image.users.needs_root || !image.users.switched_to.is_empty() {
        return None;
    }
    image.users.ran_as.iter().next().cloned()
}

fn run_as_ids(image: &ImageInfo) -> Option<(u32, u32)> {
    let u = run_as(image)?;
    let (uid, gid) = u.split_once(':')?;
    Some((uid.parse().ok()?, gid.parse().ok()?))
}

pub fn image_profile(
    image: &ImageInfo,
    syscalls: BTreeMap<Arch, BTreeSet<String>>,
    caps: &CapabilityProfile,
    headroom: f64,
) -> ImageProfile {
    ImageProfile {
        schema: IMAGE_PROFILE_SCHEMA.to_owned(),
        seccomp_profile: crate::profile::SECCOMP_FILE.to_owned(),
        capabilities_file: crate::profile::CAPABILITIES_FILE.to_owned(),
        syscalls,
        capabilities: caps.add.clone(),
        executables: image.executables.clone(),
        failed_executables: image.failed_executables.clone(),
        writable_directories: image.writable_directories.clone(),
        directories: image.directories.clone(),
        written_paths: image.written_paths.clone(),
        unresolved_writes: image.unresolved_writes.clone(),
        network: image.network.clone(),
        users: image.users.clone(),
        run_as: run_as(image),
        resources: image.resources.clone(),
        limits: limits(image, headroom),
        events_lost: image.events_lost,
    }
}

/// A program run through a setuid/setgid file changes its uid without a setuid syscall;
/// no-new-privileges would stop that.
fn setuid_exec_suspected(image: &ImageInfo) -> bool {
    let uids: BTreeSet<&str> = image
        .users
        .ran_as
        .iter()
        .filter_map(|u| u.split(':').next())
        .collect();
    uids.len() > 1 && image.users.switched_to.is_empty()
}

/// The engine a rendering is for: they differ in what a container gets by default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Docker,
    Podman,
}

/// How one writable directory is made writable on a read-only root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WritableMount {
    /// An empty tmpfs with the directory's owner and mode (`None`: not known).
    Tmpfs {
        path: String,
        owner: Option<(u32, u32, u32)>,
    },
    /// The directory came with content in the image: an anonymous volume, which Docker and
    /// podman fill with the image's content (owner and mode included) at creation.
    Volume { path: String },
    /// A path no mount option can express (`,` `:` or control characters): left out.
    Unexpressible { path: String },
}

fn expressible(path: &str) -> bool {
    path.starts_with('/') && !path.chars().any(|c| c == ',' || c == ':' || c.is_control())
}

pub fn writable_mounts(image: &ImageInfo) -> Vec<WritableMount> {
    image
        .writable_directories
        .iter()
        .filter(|d| *d != "/")
        .map(|dir| {
            if !expressible(dir) {
                return WritableMount::Unexpressible { path: dir.clone() };
            }
            match image.directories.get(dir) {
                Some(f) if f.has_image_content => WritableMount::Volume { path: dir.clone() },
                Some(f) => WritableMount::Tmpfs {
                    path: dir.clone(),
                    owner: Some((f.uid, f.gid, f.mode)),
                },
                None => WritableMount::Tmpfs {
                    path: dir.clone(),
                    owner: (dir == "/tmp" || dir == "/var/tmp").then_some((0, 0, 0o1777)),
                },
            }
        })
        .collect()
}

/// Ports below the unprivileged-port boundary the workload bound without CAP_NET_BIND_SERVICE
/// in its whitelist. Docker sets `net.ipv4.ip_unprivileged_port_start=0` in every
/// container's network namespace (moby daemon/oci_linux.go, since 20.10), so there these
/// binds needed nothing; podman and Kubernetes keep the kernel's default of 1024
/// (net/ipv4/af_inet.c, `inet_port_requires_bind_service()`), where they would fail.
pub fn privileged_ports(image: &ImageInfo, caps: &CapabilityProfile) -> Vec<u16> {
    if caps.add.iter().any(|c| c == "CAP_NET_BIND_SERVICE") {
        return Vec::new();
    }
    image
        .network
        .bound_ports
        .iter()
        .copied()
        .filter(|p| *p < 1024)
        .collect()
}

/// What production needs, engine by engine, from one profile folder.
pub struct Deployment<'a> {
    pub image: &'a ImageInfo,
    pub caps: &'a CapabilityProfile,
    /// Absolute path of seccomp.json.
    pub seccomp_path: String,
    pub limits: Limits,
}

/// One flag of a run command: comment lines explaining it, then its words.
struct Flag {
    why: Vec<String>,
    words: Vec<String>,
}

fn flag(words: &[&str]) -> Flag {
    Flag {
        why: Vec::new(),
        words: words.iter().map(|w| w.to_string()).collect(),
    }
}

fn note(text: String) -> Flag {
    Flag {
        why: vec![text],
        words: Vec::new(),
    }
}

impl Deployment<'_> {
    fn flags(&self, engine: Engine) -> Vec<Flag> {
        let image = self.image;
        let mut out = Vec::new();
        if image.writable_directories.contains("/") {
            out.push(note(
                "--read-only left out: the workload writes files directly in /".into(),
            ));
        } else {
            out.push(flag(&["--read-only"]));
        }
        let run_as = run_as_ids(image);
        for m in writable_mounts(image) {
            match m {
                WritableMount::Tmpfs { path, owner } => {
                    let mut opts = "rw,nosuid,nodev".to_owned();
                    let mut why = Vec::new();
                    match (owner, engine) {
                        (Some((uid, gid, mode)), Engine::Docker) => {
                            opts.push_str(&format!(",uid={uid},gid={gid},mode={mode:04o}"));
                        }
                        (Some((uid, gid, mode)), Engine::Podman) => {
                            // podman 4 refuses uid=/gid=; its `U` option chowns the tmpfs to
                            // the container's user instead, which is right when that user
                            // owns the directory.
                            opts.push_str(&format!(",mode={mode:04o}"));
                            if run_as == Some((uid, gid)) {
                                opts.push_str(",U");
                            } else if (uid, gid) != (0, 0) {
                                why.push(format!(
                                    "{path} belongs to {uid}:{gid} in the image; podman cannot set a tmpfs owner other than the container user's"
                                ));
                            }
                        }
                        (None, _) => why.push(format!(
                            "owner and mode of {path} were not seen (the writer had exited): the tmpfs belongs to root"
                        )),
                    }
                    out.push(Flag {
                        why,
                        words: vec!["--tmpfs".into(), format!("{path}:{opts}")],
                    });
                }
                WritableMount::Volume { path } => out.push(Flag {
                    why: vec![format!(
                        "{path} held content in the image: an anonymous volume starts as a copy of it (owner and mode included); \
                         use a named volume to keep its data across containers"
                    )],
                    words: vec!["--volume".into(), path],
                }),
                WritableMount::Unexpressible { path } => out.push(note(format!(
                    "writable directory {} left out: a mount option cannot express its name",
                    quote_for_comment(&path)
                ))),
            }
        }
        out.push(flag(&["--cap-drop", "ALL"]));
        for c in &self.caps.add {
            out.push(flag(&["--cap-add", c.trim_start_matches("CAP_")]));
        }
        out.push(Flag {
            why: Vec::new(),
            words: vec![
                "--security-opt".into(),
                format!("seccomp={}", self.seccomp_path),
            ],
        });
        if setuid_exec_suspected(image) {
            out.push(note(
                "no-new-privileges left out: a program changed uid through exec (a setuid file?)"
                    .into(),
            ));
        } else {
            out.push(flag(&["--security-opt", "no-new-privileges"]));
        }
        match run_as {
            Some((u, g)) => {
                out.push(flag(&["--user", &format!("{u}:{g}")]));
                // A numeric --user gets no memberships from the image's /etc/group (a named
                // one does): the ones the programs ran with are added back.
                for group in &image.users.supplementary_groups {
                    out.push(flag(&["--group-add", &group.to_string()]));
                }
            }
            None => out.push(note(
                "--user left out: the workload ran as root or switched users".into(),
            )),
        }
        if engine == Engine::Podman
            && let Some(low) = privileged_ports(image, self.caps).first()
        {
            out.push(Flag {
                why: vec![format!(
                    "the workload bound port(s) {:?} under Docker, which lets containers bind any port; podman keeps 1024",
                    privileged_ports(image, self.caps)
                )],
                words: vec![
                    "--sysctl".into(),
                    format!("net.ipv4.ip_unprivileged_port_start={low}"),
                ],
            });
        }
        let l = &self.limits;
        if let (Some(m), Some(peak)) = (l.memory_bytes, l.peak_memory_bytes) {
            out.push(Flag {
                why: vec![format!(
                    "recorded memory peak {} MiB; limit with headroom ({})",
                    peak.div_ceil(1024 * 1024),
                    l.headroom
                )],
                words: vec!["--memory".into(), format!("{}m", m / 1024 / 1024)],
            });
        }
        if let (Some(p), Some(peak)) = (l.pids, l.peak_tasks) {
            out.push(Flag {
                why: vec![format!("recorded task peak {peak}")],
                words: vec!["--pids-limit".into(), p.to_string()],
            });
        }
        if l.memory_bytes.is_none() && l.pids.is_none() {
            out.push(note(
                "no resource peaks were measured (no memory/pids controller): no limits".into(),
            ));
        }
        out
    }

    /// The `docker run` / `podman run` flags, one per line as shell words, with comments.
    pub fn run_flags(&self, engine: Engine) -> String {
        let name = match engine {
            Engine::Docker => "docker",
            Engine::Podman => "podman",
        };
        let mut out = format!(
            "# {name} run flags that hold this workload to what profiler recorded, as shell words.\n\
             # Paste them before the image name, or: eval \"{name} run $(grep -v '^#' THIS_FILE | tr '\\n' ' ') IMAGE ...\"\n\
             # --tmpfs keeps nothing across restarts: use a named volume for data that must persist.\n"
        );
        for f in self.flags(engine) {
            for w in &f.why {
                out.push_str(&format!("# {}\n", comment_safe(w)));
            }
            if !f.words.is_empty() {
                let words: Vec<String> = f.words.iter().map(|w| shell_quote(w)).collect();
                out.push_str(&words.join(" "));
                out.push('\n');
            }
        }
        out
    }

    /// The same settings as a compose service (docker-compose file format 2.4 / 3.x keys).
    pub fn compose_service(&self) -> serde_yaml_ng::Mapping {
        use serde_yaml_ng::Value;
        let image = self.image;
        let mut m = serde_yaml_ng::Mapping::new();
        let list =
            |items: Vec<String>| Value::Sequence(items.into_iter().map(Value::String).collect());
        m.insert(
            "read_only".into(),
            Value::Bool(!image.writable_directories.contains("/")),
        );
        let mut tmpfs = Vec::new();
        let mut volumes = Vec::new();
        for w in writable_mounts(image) {
            match w {
                WritableMount::Tmpfs { path, owner } => tmpfs.push(match owner {
                    Some((u, g, mode)) => {
                        format!("{path}:rw,nosuid,nodev,uid={u},gid={g},mode={mode:04o}")
                    }
                    None => format!("{path}:rw,nosuid,nodev"),
                }),
                WritableMount::Volume { path } => volumes.push(path),
                WritableMount::Unexpressible { .. } => {}
            }
        }
        if !tmpfs.is_empty() {
            m.insert("tmpfs".into(), list(tmpfs));
        }
        if !volumes.is_empty() {
            m.insert("volumes".into(), list(volumes));
        }
        m.insert("cap_drop".into(), list(vec!["ALL".into()]));
        if !self.caps.add.is_empty() {
            m.insert(
                "cap_add".into(),
                list(
                    self.caps
                        .add
                        .iter()
                        .map(|c| c.trim_start_matches("CAP_").to_owned())
                        .collect(),
                ),
            );
        }
        let mut opts = vec![format!("seccomp={}", self.seccomp_path)];
        if !setuid_exec_suspected(image) {
            opts.push("no-new-privileges:true".into());
        }
        m.insert("security_opt".into(), list(opts));
        if let Some((u, g)) = run_as_ids(image) {
            m.insert("user".into(), Value::String(format!("{u}:{g}")));
            if !image.users.supplementary_groups.is_empty() {
                m.insert(
                    "group_add".into(),
                    list(
                        image
                            .users
                            .supplementary_groups
                            .iter()
                            .map(|g| g.to_string())
                            .collect(),
                    ),
                );
            }
        }
        if let Some(mem) = self.limits.memory_bytes {
            m.insert(
                "mem_limit".into(),
                Value::String(format!("{}m", mem / 1024 / 1024)),
            );
        }
        if let Some(p) = self.limits.pids {
            m.insert("pids_limit".into(), Value::Number(p.into()));
        }
        m
    }
}

/// POSIX shell quoting: a word of safe characters as it is, anything else in single quotes.
pub fn shell_quote(word: &str) -> String {
    shell_words::quote(word).into_owned()
}

/// A comment line must stay one line: control characters become `?`.
fn comment_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

fn quote_for_comment(path: &str) -> String {
    format!("{path:?}")
}

fn volume_name(i: usize) -> String {
    format!("profiler-writable-{i}")
}

/// What a reader of kubernetes.yaml must know that the patch cannot say.
pub fn kubernetes_notes(image: &ImageInfo, caps: &CapabilityProfile) -> Vec<String> {
    let mut notes = Vec::new();
    for m in writable_mounts(image) {
        match m {
            WritableMount::Volume { path } => notes.push(format!(
                "{path} held content in the image; an emptyDir starts empty: give it a PersistentVolumeClaim, \
                 or an initContainer that copies the image's content into the emptyDir"
            )),
            WritableMount::Unexpressible { path } => notes.push(format!(
                "writable directory {} left out: not a valid mount path",
                quote_for_comment(&path)
            )),
            WritableMount::Tmpfs { .. } => {}
        }
    }
    let low = privileged_ports(image, caps);
    if !low.is_empty() {
        notes.push(format!(
            "the workload bound port(s) {low:?} under Docker, which lets containers bind any port; Kubernetes keeps \
             1024, so the pod sets the safe sysctl net.ipv4.ip_unprivileged_port_start"
        ));
    }
    notes
}

/// The pod template patch: apply with
/// `kubectl patch deployment NAME --type strategic --patch-file kubernetes.yaml`.
pub fn pod_template(
    image: &ImageInfo,
    caps: &CapabilityProfile,
    container: &str,
    localhost_profile: &str,
    headroom: f64,
) -> PodTemplateSpec {
    let ids = run_as_ids(image);
    let (uid, gid) = (ids.map(|i| i.0 as i64), ids.map(|i| i.1 as i64));
    let l = limits(image, headroom);
    let mut limits_map = BTreeMap::new();
    if let Some(m) = l.memory_bytes {
        limits_map.insert(
            "memory".to_owned(),
            Quantity(format!("{}Mi", m / 1024 / 1024)),
        );
    }
    let mounts: Vec<WritableMount> = writable_mounts(image)
        .into_iter()
        .filter(|m| !matches!(m, WritableMount::Unexpressible { .. }))
        .collect();
    let path_of = |m: &WritableMount| match m {
        WritableMount::Tmpfs { path, .. }
        | WritableMount::Volume { path }
        | WritableMount::Unexpressible { path } => path.clone(),
    };
    // An emptyDir belongs to root, mode 0777 unless fsGroup is set; with fsGroup the kubelet
    // makes it group-owned by that gid, setgid (pkg/volume/volume_linux.go SetVolumeOwnership):
    // the directories' group, when they agree, is what lets a non-root service write them.
    let groups: BTreeSet<u32> = image
        .directories
        .iter()
        .filter(|(d, _)| mounts.iter().any(|m| path_of(m) == **d))
        .map(|(_, f)| f.gid)
        .filter(|g| *g != 0)
        .collect();
    let fs_group = (groups.len() == 1).then(|| *groups.iter().next().unwrap() as i64);
    let low = privileged_ports(image, caps);
    let sysctls = low.first().map(|p| {
        vec![Sysctl {
            name: "net.ipv4.ip_unprivileged_port_start".to_owned(),
            value: p.to_string(),
        }]
    });
    let supplemental_groups =
        (ids.is_some() && !image.users.supplementary_groups.is_empty()).then(|| {
            image
                .users
                .supplementary_groups
                .iter()
                .map(|g| *g as i64)
                .collect::<Vec<_>>()
        });
    let pod_security = (fs_group.is_some() || sysctls.is_some() || supplemental_groups.is_some())
        .then(|| PodSecurityContext {
            fs_group,
            sysctls,
            supplemental_groups,
            ..Default::default()
        });
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            security_context: pod_security,
            containers: vec![Container {
                name: container.to_owned(),
                security_context: Some(SecurityContext {
                    read_only_root_filesystem: Some(!image.writable_directories.contains("/")),
                    allow_privilege_escalation: Some(setuid_exec_suspected(image)),
                    run_as_non_root: uid.map(|u| u != 0),
                    run_as_user: uid,
                    run_as_group: gid,
                    capabilities: Some(Capabilities {
                        drop: Some(vec!["ALL".to_owned()]),
                        add: Some(
                            caps.add
                                .iter()
                                .map(|c| c.trim_start_matches("CAP_").to_owned())
                                .collect(),
                        ),
                    }),
                    seccomp_profile: Some(SeccompProfile {
                        type_: "Localhost".to_owned(),
                        localhost_profile: Some(localhost_profile.to_owned()),
                    }),
                    ..Default::default()
                }),
                resources: (!limits_map.is_empty()).then(|| ResourceRequirements {
                    limits: Some(limits_map),
                    ..Default::default()
                }),
                volume_mounts: (!mounts.is_empty()).then(|| {
                    mounts
                        .iter()
                        .enumerate()
                        .map(|(i, m)| VolumeMount {
                            name: volume_name(i),
                            mount_path: path_of(m),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }],
            volumes: (!mounts.is_empty()).then(|| {
                mounts
                    .iter()
                    .enumerate()
                    .map(|(i, _)| Volume {
                        name: volume_name(i),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }),
    }
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DeploymentPatch {
    pub spec: DeploymentPatchSpec,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct DeploymentPatchSpec {
    pub template: PodTemplateSpec,
}

pub fn kubernetes_yaml(
    template: PodTemplateSpec,
    localhost_profile: &str,
    notes: &[String],
) -> anyhow::Result<String> {
    let body = serde_yaml_ng::to_string(&DeploymentPatch {
        spec: DeploymentPatchSpec { template },
    })?;
    let notes: String = notes
        .iter()
        .map(|n| format!("# {}\n", comment_safe(n)))
        .collect();
    Ok(format!(
        "# Strategic-merge patch for a Deployment, made by profiler from a recording:\n\
         #   kubectl patch deployment NAME --type strategic --patch-file kubernetes.yaml\n\
         # The seccomp profile must be on every node at /var/lib/kubelet/seccomp/{localhost_profile}\n\
         # (copy seccomp.json there), or use seccompprofile.yaml with the Security Profiles Operator.\n\
         # Process limits are a node setting in Kubernetes (podPidsLimit), not a container limit.\n{notes}{body}"
    ))
}

/// The Security Profiles Operator's `SeccompProfile` resource.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpoSeccompProfile {
    pub api_version: String,
    pub kind: String,
    pub metadata: ObjectMeta,
    pub spec: SpoSpec,
}

#[derive(Debug, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SpoSpec {
    pub default_action: String,
    pub architectures: Vec<String>,
    pub syscalls: Vec<SyscallRule>,
}

pub fn spo_profile(name: &str, seccomp: &DockerSeccomp) -> SpoSeccompProfile {
    SpoSeccompProfile {
        api_version: SPO_API_VERSION.to_owned(),
        kind: "SeccompProfile".to_owned(),
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        },
        spec: SpoSpec {
            default_action: seccomp.default_action.clone(),
            architectures: seccomp.architectures.clone(),
            syscalls: seccomp
                .syscalls
                .iter()
                .map(|r| SyscallRule {
                    comment: None,
                    ..r.clone()
                })
                .collect(),
        },
    }
}

/// A Kubernetes object name from a folder name (RFC 1123 label).
pub fn k8s_name(raw: &str) -> String {
    let mut s: String = raw
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    s = s.trim_matches('-').chars().take(63).collect();
    if s.is_empty() {
        "workload".to_owned()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::image::{Resources, Users};

    fn sample() -> (ImageInfo, CapabilityProfile, DockerSeccomp) {
        let mut image = ImageInfo::default();
        image
            .executables
            .insert("/bin/httpd".into(), ["httpd".to_owned()].into());
        for p in ["/tmp/www/index.html", "/data/app.log", "/srv/db/pg.pid"] {
            image
                .written_paths
                .insert(p.into(), ["openat".to_owned()].into());
        }
        image.writable_directories =
            crate::trace::image::writable_directories(image.written_paths.keys());
        image.directories.insert(
            "/data".into(),
            DirectoryFacts {
                uid: 1000,
                gid: 1000,
                mode: 0o750,
                has_image_content: false,
            },
        );
        image.directories.insert(
            "/srv/db".into(),
            DirectoryFacts {
                uid: 1000,
                gid: 1000,
                mode: 0o700,
                has_image_content: true,
            },
        );
        image.network.bound_ports.insert(80);
        image.users = Users {
            ran_as: ["1000:1000".to_owned()].into(),
            switched_to: Default::default(),
            needs_root: false,
            supplementary_groups: [101].into(),
        };
        image.resources = Resources {
            peak_memory_bytes: Some(40 * 1024 * 1024),
            peak_tasks: Some(5),
        };
        let caps = CapabilityProfile {
            schema: String::new(),
            drop: vec!["ALL".into()],
            add: vec!["CAP_NET_BIND_SERVICE".into()],
            evidence: Default::default(),
            denied: Default::default(),
            ignored_unaudited: Default::default(),
            notes: Default::default(),
            ignored_other_credentials: Default::default(),
            unclassified: Default::default(),
        };
        let seccomp: DockerSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
                "syscalls":[{"names":["read","write"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38}]}"#,
        )
        .unwrap();
        (image, caps, seccomp)
    }

    /// Compares with a checked-in snapshot; `UPDATE_SNAPSHOTS=1` rewrites it.
    fn snapshot(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/profile/snapshots")
            .join(name);
        if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert_eq!(
            actual, expected,
            "snapshot {name} differs (UPDATE_SNAPSHOTS=1 to accept)"
        );
    }

    #[test]
    fn kubernetes_patch_parses_back_and_matches_the_profile() {
        let (image, caps, _) = sample();
        let template = pod_template(&image, &caps, "web", "profiles/web.json", DEFAULT_HEADROOM);
        let notes = kubernetes_notes(&image, &caps);
        let yaml = kubernetes_yaml(template.clone(), "profiles/web.json", &notes).unwrap();
        snapshot("kubernetes.yaml", &yaml);
        let parsed: DeploymentPatch = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(parsed.spec.template, template);
        let c = &parsed.spec.template.spec.as_ref().unwrap().containers[0];
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.read_only_root_filesystem, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.run_as_user, Some(1000));
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(
            sc.capabilities.as_ref().unwrap().add,
            Some(vec!["NET_BIND_SERVICE".to_owned()])
        );
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "Localhost");
        let mounts: Vec<&str> = c
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert_eq!(mounts, ["/data", "/srv/db", "/tmp/www"]);
        // 40 MiB peak: x2 = 80 MiB, but at least peak + 64 MiB = 104 MiB, rounded up to 112.
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
            "112Mi"
        );
        // /data belongs to 1000:1000 in the image: the pod's fsGroup makes the emptyDir
        // writable for the non-root user; port 80 needs the unprivileged-port sysctl.
        let pod = parsed.spec.template.spec.as_ref().unwrap();
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!(psc.fs_group, Some(1000));
        assert_eq!(psc.supplemental_groups, Some(vec![101]));
        // CAP_NET_BIND_SERVICE is in the whitelist: port 80 needs no sysctl.
        assert_eq!(psc.sysctls, None);
        assert!(yaml.contains("/srv/db held content in the image"), "{yaml}");
    }

    #[test]
    fn spo_profile_parses_back_and_matches_the_seccomp_profile() {
        let (_, _, seccomp) = sample();
        let yaml = serde_yaml_ng::to_string(&spo_profile("web", &seccomp)).unwrap();
        snapshot("seccompprofile.yaml", &yaml);
        let parsed: SpoSeccompProfile = serde_yaml_ng::from_str(&yaml).unwrap();
        assert_eq!(parsed.api_version, SPO_API_VERSION);
        assert_eq!(parsed.kind, "SeccompProfile");
        assert_eq!(parsed.metadata.name.as_deref(), Some("web"));
        assert_eq!(parsed.spec.default_action, seccomp.default_action);
        assert_eq!(parsed.spec.syscalls, seccomp.syscalls);
    }

    fn deployment<'a>(image: &'a ImageInfo, caps: &'a CapabilityProfile) -> Deployment<'a> {
        Deployment {
            image,
            caps,
            seccomp_path: "/profiles/web/seccomp.json".into(),
            limits: limits(image, DEFAULT_HEADROOM),
        }
    }

    /// The lines of a run-flags file as the shell splits them.
    fn shell_lines(text: &str) -> Vec<Vec<String>> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| shell_words::split(l).unwrap())
            .collect()
    }

    #[test]
    fn docker_flags_hold_the_workload_to_its_recording() {
        let (image, caps, _) = sample();
        let flags = deployment(&image, &caps).run_flags(Engine::Docker);
        snapshot("docker-run.txt", &flags);
        let lines = shell_lines(&flags);
        for f in [
            "--read-only",
            "--tmpfs /tmp/www:rw,nosuid,nodev",
            "--tmpfs /data:rw,nosuid,nodev,uid=1000,gid=1000,mode=0750",
            "--volume /srv/db",
            "--cap-drop ALL",
            "--cap-add NET_BIND_SERVICE",
            "--security-opt seccomp=/profiles/web/seccomp.json",
            "--security-opt no-new-privileges",
            "--user 1000:1000",
            "--group-add 101",
            "--memory 112m",
            "--pids-limit 64",
        ] {
            let words: Vec<String> = f.split(' ').map(str::to_owned).collect();
            assert!(lines.contains(&words), "{f} missing in\n{flags}");
        }
        assert!(flags.contains("# recorded memory peak 40 MiB"), "{flags}");
    }

    #[test]
    fn podman_flags_say_what_podman_needs_that_docker_gives() {
        let (image, mut caps, _) = sample();
        caps.add.clear();
        let flags = deployment(&image, &caps).run_flags(Engine::Podman);
        let lines = shell_lines(&flags);
        let has = |f: &str| lines.contains(&f.split(' ').map(str::to_owned).collect());
        // podman refuses uid=/gid= on --tmpfs; U chowns it to the container user (1000:1000,
        // who owns /data in the image).
        assert!(has("--tmpfs /data:rw,nosuid,nodev,mode=0750,U"), "{flags}");
        assert!(
            has("--sysctl net.ipv4.ip_unprivileged_port_start=80"),
            "{flags}"
        );
        let docker = deployment(&image, &caps).run_flags(Engine::Docker);
        assert!(!docker.contains("--sysctl"), "{docker}");
        // Kubernetes keeps 1024 like podman: the pod sets the (safe) sysctl.
        let pod = pod_template(&image, &caps, "web", "p.json", DEFAULT_HEADROOM)
            .spec
            .unwrap();
        let sysctls = pod.security_context.unwrap().sysctls.unwrap();
        assert_eq!(sysctls[0].name, "net.ipv4.ip_unprivileged_port_start");
        assert_eq!(sysctls[0].value, "80");
    }

    #[test]
    fn hostile_paths_cannot_add_flags() {
        let (mut image, caps, _) = sample();
        for p in [
            "/data/x\n--privileged\n--volume=/:/host/y",
            "/a b/$(reboot)/f",
            "/c,uid=0:rw/f",
        ] {
            image
                .written_paths
                .insert(p.into(), ["openat".to_owned()].into());
        }
        image.writable_directories =
            crate::trace::image::writable_directories(image.written_paths.keys());
        for engine in [Engine::Docker, Engine::Podman] {
            let flags = deployment(&image, &caps).run_flags(engine);
            let words: Vec<String> = shell_lines(&flags).into_iter().flatten().collect();
            assert!(
                !words
                    .iter()
                    .any(|w| w == "--privileged" || w.starts_with("--volume=")),
                "{flags}"
            );
            // Every line parses as shell words, and a path with spaces stays one word.
            assert!(
                words.iter().any(|w| w == "/a b/$(reboot):rw,nosuid,nodev"),
                "{flags}"
            );
            assert!(!words.iter().any(|w| w.contains("uid=0:rw")), "{flags}");
        }
        let compose =
            serde_yaml_ng::to_string(&deployment(&image, &caps).compose_service()).unwrap();
        let back: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&compose).unwrap();
        assert_eq!(back, deployment(&image, &caps).compose_service());
    }

    #[test]
    fn limits_keep_headroom_and_say_the_peak() {
        let mut image = ImageInfo::default();
        image.resources.peak_memory_bytes = Some(304 * 1024 * 1024);
        image.resources.peak_tasks = Some(100);
        let l = limits(&image, 2.0);
        assert_eq!(l.memory_bytes, Some(608 * 1024 * 1024));
        assert_eq!(l.pids, Some(200));
        assert_eq!(l.peak_memory_bytes, Some(304 * 1024 * 1024));
        let l = limits(&image, 1.2);
        // 360 MiB is less than peak + 64 MiB.
        assert_eq!(l.memory_bytes, Some(368 * 1024 * 1024));
        assert_eq!(l.pids, Some(120));
    }
}
