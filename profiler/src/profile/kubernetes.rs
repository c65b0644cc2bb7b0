//! `kubernetes.yaml` (a strategic-merge patch for a Deployment, built with the k8s-openapi
//! types) and `seccompprofile.yaml` (a Security Profiles Operator `SeccompProfile`).
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Capabilities, Container, EmptyDirVolumeSource, HostPathVolumeSource, PodSecurityContext,
    PodSpec, PodTemplateSpec, ResourceRequirements, SeccompProfile, SecurityContext, Sysctl,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

use crate::profile::capabilities::CapabilityProfile;
use crate::profile::docker::{comment_safe, quote_for_comment};
use crate::profile::image_profile::{
    WritableMount, limits, privileged_ports, run_as_ids, setuid_exec_suspected, writable_mounts,
};
use crate::profile::seccomp::{DockerSeccomp, SyscallRule};
use crate::trace::image::ImageInfo;

/// The Security Profiles Operator's SeccompProfile CRD version this writes
/// (security-profiles-operator.x-k8s.io, SeccompProfile v1beta1).
pub const SPO_API_VERSION: &str = "security-profiles-operator.x-k8s.io/v1beta1";

fn volume_name(i: usize) -> String {
    format!("profiler-writable-{i}")
}

fn seal_volume_name(i: usize) -> String {
    ["profiler-seal-binary", "profiler-seal-rules"][i.min(1)].to_owned()
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
    sealing: Option<&crate::profile::landlock::Sealing>,
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
                // Sealed: the command is the sealing entrypoint, which runs the image's
                // recorded entrypoint and command itself (a `command` without `args` drops
                // the image's CMD, so the recorded one is what runs).
                command: sealing.map(|_| vec![crate::profile::landlock::Sealing::entrypoint()]),
                volume_mounts: (!mounts.is_empty() || sealing.is_some()).then(|| {
                    let mut v: Vec<VolumeMount> = mounts
                        .iter()
                        .enumerate()
                        .map(|(i, m)| VolumeMount {
                            name: volume_name(i),
                            mount_path: path_of(m),
                            ..Default::default()
                        })
                        .collect();
                    if let Some(s) = sealing {
                        for (i, (_, inside)) in s.mounts().into_iter().enumerate() {
                            v.push(VolumeMount {
                                name: seal_volume_name(i),
                                mount_path: inside,
                                read_only: Some(true),
                                ..Default::default()
                            });
                        }
                    }
                    v
                }),
                ..Default::default()
            }],
            volumes: (!mounts.is_empty() || sealing.is_some()).then(|| {
                let mut v: Vec<Volume> = mounts
                    .iter()
                    .enumerate()
                    .map(|(i, _)| Volume {
                        name: volume_name(i),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    })
                    .collect();
                if let Some(s) = sealing {
                    // The node must hold both files at these paths (the node agent installs
                    // profiler-seal; the profile folder is copied as it is).
                    for (i, (host, _)) in s.mounts().into_iter().enumerate() {
                        v.push(Volume {
                            name: seal_volume_name(i),
                            host_path: Some(HostPathVolumeSource {
                                path: host,
                                type_: Some("File".to_owned()),
                            }),
                            ..Default::default()
                        });
                    }
                }
                v
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
    // Cut to 63 first, then trimmed: a '-' at the cut would end the name otherwise.
    s = s.trim_matches('-').chars().take(63).collect();
    s = s.trim_matches('-').to_owned();
    if s.is_empty() {
        "workload".to_owned()
    } else {
        s
    }
}
