//! `image-profile.json` (what the workload is, and the limits made from its peaks), and the
//! facts every engine's rendering shares: the user to run as, how each writable directory
//! is mounted, the ports that need more than Docker gives.
use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::profile::capabilities::CapabilityProfile;
use crate::trace::image::{DirectoryFacts, ImageInfo, Network};

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
    /// What identifies each file the kernel executed (by its path in the workload's root):
    /// device, inode, size, mtime, sha256, and the ELF facts.
    #[serde(default)]
    pub executable_files: BTreeMap<String, crate::trace::image::ExecutableFile>,
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

pub(crate) fn run_as_ids(image: &ImageInfo) -> Option<(u32, u32)> {
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
        // The identity only: what they import is in trace.json and coverage.json.
        executable_files: image
            .executable_files
            .iter()
            .map(|(p, f)| {
                let mut f = f.clone();
                f.imports = None;
                (p.clone(), f)
            })
            .collect(),
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
pub(crate) fn setuid_exec_suspected(image: &ImageInfo) -> bool {
    let uids: BTreeSet<&str> = image
        .users
        .ran_as
        .iter()
        .filter_map(|u| u.split(':').next())
        .collect();
    uids.len() > 1 && image.users.switched_to.is_empty()
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
                // Owner and mode not seen (the writer was gone before its folder could be
                // read): the shared temporary folders keep their usual mode; any other
                // belongs to the one non-root user the workload ran as, since that user
                // wrote in it (0700: nobody else needs it).
                None => WritableMount::Tmpfs {
                    path: dir.clone(),
                    owner: if dir == "/tmp" || dir == "/var/tmp" {
                        Some((0, 0, 0o1777))
                    } else {
                        run_as_ids(image)
                            .filter(|(u, _)| *u != 0)
                            .map(|(u, g)| (u, g, 0o700))
                    },
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
