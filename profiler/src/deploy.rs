//! Deployment outputs of the image profile: `image-profile.json`, `docker-run.txt`,
//! `kubernetes.yaml` (a patch for a Deployment, built with the k8s-openapi types) and
//! `seccompprofile.yaml` (a Security Profiles Operator `SeccompProfile`).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, PodSpec, PodTemplateSpec, ResourceRequirements,
    SeccompProfile, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::capabilities::CapabilityProfile;
use crate::image::{ImageInfo, Network};
use crate::seccomp::{DockerSeccomp, SyscallRule};

pub const IMAGE_PROFILE_FILE: &str = "image-profile.json";
pub const DOCKER_RUN_FILE: &str = "docker-run.txt";
pub const KUBERNETES_FILE: &str = "kubernetes.yaml";
pub const SPO_FILE: &str = "seccompprofile.yaml";

/// The Security Profiles Operator's SeccompProfile CRD version this writes
/// (security-profiles-operator.x-k8s.io, SeccompProfile v1beta1).
pub const SPO_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";

/// Memory limit = peak × 3/2, rounded up to 16 MiB, at least 32 MiB; task limit = peak × 2,
/// at least 64. Headroom, because a recording sees one run, not the worst one.
pub const HEADROOM: &str = "memory: 1.5 x the recorded peak, rounded up to 16 MiB, at least 32 MiB; \
                            tasks: 2 x the recorded peak, at least 64";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Limits {
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
    pub headroom: String,
}

pub fn limits(image: &ImageInfo) -> Limits {
    let mib = 1024 * 1024;
    Limits {
        memory_bytes: image
            .resources
            .peak_memory_bytes
            .map(|p| ((p * 3 / 2).div_ceil(16 * mib) * 16 * mib).max(32 * mib)),
        pids: image.resources.peak_tasks.map(|t| (t * 2).max(64)),
        headroom: HEADROOM.to_owned(),
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
    pub written_paths: BTreeMap<String, BTreeSet<String>>,
    pub unresolved_writes: BTreeSet<String>,
    pub network: Network,
    pub users: crate::image::Users,
    /// A `uid:gid` the workload can run as from the start, when it never needed root.
    pub run_as: Option<String>,
    pub resources: crate::image::Resources,
    pub limits: Limits,
    pub events_lost: u64,
}

pub const IMAGE_PROFILE_SCHEMA: &str = "profiler.dev/image-profile/v1";

fn run_as(image: &ImageInfo) -> Option<String> {
    if image.users.needs_root || !image.users.switched_to.is_empty() {
        return None;
    }
    image.users.ran_as.iter().next().cloned()
}

pub fn image_profile(
    image: &ImageInfo,
    syscalls: BTreeMap<Arch, BTreeSet<String>>,
    caps: &CapabilityProfile,
) -> ImageProfile {
    ImageProfile {
        schema: IMAGE_PROFILE_SCHEMA.to_owned(),
        seccomp_profile: crate::output::SECCOMP_FILE.to_owned(),
        capabilities_file: crate::output::CAPABILITIES_FILE.to_owned(),
        syscalls,
        capabilities: caps.add.clone(),
        executables: image.executables.clone(),
        failed_executables: image.failed_executables.clone(),
        writable_directories: image.writable_directories.clone(),
        written_paths: image.written_paths.clone(),
        unresolved_writes: image.unresolved_writes.clone(),
        network: image.network.clone(),
        users: image.users.clone(),
        run_as: run_as(image),
        resources: image.resources.clone(),
        limits: limits(image),
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

/// The `docker run` (and `podman run`) flags, one per line, with comments.
pub fn docker_flags(image: &ImageInfo, caps: &CapabilityProfile, seccomp_path: &str) -> String {
    let mut out = String::from(
        "# docker run / podman run flags that hold this workload to what profiler recorded.\n\
         # Paste them before the image name. --tmpfs keeps nothing across restarts: use a volume\n\
         # instead for a directory whose data must persist.\n",
    );
    if image.writable_directories.contains("/") {
        out.push_str("# --read-only left out: the workload writes files directly in /\n");
    } else {
        out.push_str("--read-only\n");
    }
    for dir in image.writable_directories.iter().filter(|d| *d != "/") {
        let mode = if dir == "/tmp" || dir == "/var/tmp" {
            ",mode=1777"
        } else {
            ""
        };
        out.push_str(&format!("--tmpfs {dir}:rw,nosuid,nodev{mode}\n"));
    }
    out.push_str("--cap-drop ALL\n");
    for c in &caps.add {
        out.push_str(&format!("--cap-add {}\n", c.trim_start_matches("CAP_")));
    }
    out.push_str(&format!("--security-opt seccomp={seccomp_path}\n"));
    if setuid_exec_suspected(image) {
        out.push_str(
            "# no-new-privileges left out: a program changed uid through exec (a setuid file?)\n",
        );
    } else {
        out.push_str("--security-opt no-new-privileges\n");
    }
    match run_as(image) {
        Some(u) => out.push_str(&format!("--user {u}\n")),
        None => out.push_str("# --user left out: the workload ran as root or switched users\n"),
    }
    let l = limits(image);
    if let Some(m) = l.memory_bytes {
        out.push_str(&format!("--memory {}m\n", m / 1024 / 1024));
    }
    if let Some(p) = l.pids {
        out.push_str(&format!("--pids-limit {p}\n"));
    }
    if l.memory_bytes.is_none() && l.pids.is_none() {
        out.push_str("# no resource peaks were measured (no memory/pids controller): no limits\n");
    }
    out
}

fn volume_name(i: usize) -> String {
    format!("profiler-writable-{i}")
}

/// The pod template patch: apply with
/// `kubectl patch deployment NAME --type strategic --patch-file kubernetes.yaml`.
pub fn pod_template(
    image: &ImageInfo,
    caps: &CapabilityProfile,
    container: &str,
    localhost_profile: &str,
) -> PodTemplateSpec {
    let run_as = run_as(image);
    let (uid, gid) = match run_as.as_deref().and_then(|u| u.split_once(':')) {
        Some((u, g)) => (u.parse::<i64>().ok(), g.parse::<i64>().ok()),
        None => (None, None),
    };
    let l = limits(image);
    let mut limits_map = BTreeMap::new();
    if let Some(m) = l.memory_bytes {
        limits_map.insert(
            "memory".to_owned(),
            Quantity(format!("{}Mi", m / 1024 / 1024)),
        );
    }
    let dirs: Vec<&String> = image
        .writable_directories
        .iter()
        .filter(|d| *d != "/")
        .collect();
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
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
                volume_mounts: (!dirs.is_empty()).then(|| {
                    dirs.iter()
                        .enumerate()
                        .map(|(i, d)| VolumeMount {
                            name: volume_name(i),
                            mount_path: d.to_string(),
                            ..Default::default()
                        })
                        .collect()
                }),
                ..Default::default()
            }],
            volumes: (!dirs.is_empty()).then(|| {
                dirs.iter()
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
) -> anyhow::Result<String> {
    let body = serde_yaml_ng::to_string(&DeploymentPatch {
        spec: DeploymentPatchSpec { template },
    })?;
    Ok(format!(
        "# Strategic-merge patch for a Deployment, made by profiler from a recording:\n\
         #   kubectl patch deployment NAME --type strategic --patch-file kubernetes.yaml\n\
         # The seccomp profile must be on every node at /var/lib/kubelet/seccomp/{localhost_profile}\n\
         # (copy seccomp.json there), or use seccompprofile.yaml with the Security Profiles Operator.\n\
         # Process limits are a node setting in Kubernetes (podPidsLimit), not a container limit.\n{body}"
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
    use crate::image::{Resources, Users};

    fn sample() -> (ImageInfo, CapabilityProfile, DockerSeccomp) {
        let mut image = ImageInfo::default();
        image
            .executables
            .insert("/bin/httpd".into(), ["httpd".to_owned()].into());
        for p in ["/tmp/www/index.html", "/data/app.log"] {
            image
                .written_paths
                .insert(p.into(), ["openat".to_owned()].into());
        }
        image.writable_directories = crate::image::writable_directories(image.written_paths.keys());
        image.users = Users {
            ran_as: ["1000:1000".to_owned()].into(),
            switched_to: Default::default(),
            needs_root: false,
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
            .join("src/snapshots")
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
        let template = pod_template(&image, &caps, "web", "profiles/web.json");
        let yaml = kubernetes_yaml(template.clone(), "profiles/web.json").unwrap();
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
        assert_eq!(mounts, ["/data", "/tmp/www"]);
        // 40 MiB peak x 1.5 = 60 MiB, rounded up to 64 MiB.
        assert_eq!(
            c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
            "64Mi"
        );
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

    #[test]
    fn docker_flags_hold_the_workload_to_its_recording() {
        let (image, caps, _) = sample();
        let flags = docker_flags(&image, &caps, "seccomp.json");
        snapshot("docker-run.txt", &flags);
        for f in [
            "--read-only",
            "--tmpfs /tmp/www:rw,nosuid,nodev",
            "--tmpfs /data:rw,nosuid,nodev",
            "--cap-drop ALL",
            "--cap-add NET_BIND_SERVICE",
            "--security-opt no-new-privileges",
            "--user 1000:1000",
            "--memory 64m",
            "--pids-limit 64",
        ] {
            assert!(flags.lines().any(|l| l == f), "{f} missing in\n{flags}");
        }
    }
}
