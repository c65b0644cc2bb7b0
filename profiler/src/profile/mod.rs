//! Renderers: every output of a profile folder made from traces, one file per format, and
//! the folder written all or nothing.
pub mod capabilities;
pub mod compose;
pub mod coverage;
pub mod docker;
pub mod image_profile;
pub mod imported;
pub mod kubernetes;
pub mod landlock;
pub mod network_policy;
pub mod node_agent;
pub mod oci;
pub mod out_dir;
pub mod policy;
pub mod seccomp;
pub mod summary;

#[cfg(test)]
mod render_tests;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::profile::capabilities::{CapabilityProfile, whitelist};
use crate::profile::policy::Observed;
use crate::profile::seccomp::{DockerSeccomp, GenerateOptions, docker_profile};
use crate::trace::Trace;

pub const IMAGE_PROFILE_FILE: &str = "image-profile.json";
pub const DOCKER_RUN_FILE: &str = "docker-run.txt";
pub const PODMAN_RUN_FILE: &str = "podman-run.txt";
/// The same flags without the sealing entrypoint (seccomp, capabilities, read-only root,
/// user, limits; no Landlock).
pub const DOCKER_RUN_UNSEALED_FILE: &str = "docker-run-unsealed.txt";
pub const PODMAN_RUN_UNSEALED_FILE: &str = "podman-run-unsealed.txt";
pub use crate::profile::landlock::RULES_FILE as LANDLOCK_FILE;
/// Written next to the per-service folders when the recorded containers came from compose.
pub const COMPOSE_OVERRIDE_FILE: &str = "docker-compose.profile.yml";
pub const KUBERNETES_FILE: &str = "kubernetes.yaml";
pub const SPO_FILE: &str = "seccompprofile.yaml";
/// The Kubernetes NetworkPolicy from the recorded binds and connections.
pub const NETWORK_POLICY_FILE: &str = "networkpolicy.yaml";
pub const TRACE_FILE: &str = "trace.json";
pub const SECCOMP_FILE: &str = "seccomp.json";
pub const CAPABILITIES_FILE: &str = "capabilities.json";
/// The seccomp profile as OCI `linux.seccomp` (runc/crun config.json).
pub const OCI_SECCOMP_FILE: &str = "oci-seccomp.json";
/// The capability whitelist as OCI `process.capabilities`.
pub const OCI_CAPABILITIES_FILE: &str = "oci-capabilities.json";

pub struct Profiles {
    pub seccomp: DockerSeccomp,
    /// The container the traces recorded, as its engine described it (the first one's).
    pub container: Option<crate::trace::ContainerInfo>,
    pub capabilities: CapabilityProfile,
    /// The union of the traces' image sections, and the syscalls the profile allows.
    pub image: crate::trace::image::ImageInfo,
    pub syscalls: std::collections::BTreeMap<crate::arch::Arch, std::collections::BTreeSet<String>>,
    /// Each executable's imports against the syscalls seen (see `imported`).
    pub programs: BTreeMap<String, imported::ProgramCoverage>,
}

pub fn generate(traces: &[Trace], options: &GenerateOptions) -> Profiles {
    let observed = Observed::from_traces(traces);
    let mut image = crate::trace::image::ImageInfo::default();
    for t in traces {
        image.union(&t.image);
    }
    let container = traces.iter().find_map(|t| t.cgroup.container_info.clone());
    // A 32-bit (or x32) program that ran makes that architecture's syscalls, whatever of
    // them the recording saw: its ELF class and machine say so.
    let mut options = options.clone();
    for f in image.executable_files.values() {
        let arch = match f.format.as_str() {
            "elf32 i386" => Some(crate::arch::Arch::I386),
            "elf32 x86_64_x32" => Some(crate::arch::Arch::X32),
            _ => None,
        };
        if let Some(a) = arch
            && !options.extra_arches.contains(&a)
        {
            options.extra_arches.push(a);
        }
    }
    let options = &options;
    let mut seccomp = docker_profile(&observed, options);
    // A container profile is run sealed (docker-run.txt): the sealing entrypoint runs under
    // the same seccomp profile first.
    if container.is_some() && crate::profile::landlock::seal_binary().is_ok() {
        crate::profile::seccomp::allow_sealing(&mut seccomp);
    }
    Profiles {
        seccomp,
        container,
        capabilities: whitelist(&observed.capability_checks),
        image,
        syscalls: observed.syscalls.clone(),
        programs: observed.programs.clone(),
    }
}

/// `coverage.json` for the traces (each with its run's name) whose union made `profiles`.
pub fn coverage_file(
    traces: &[(String, &Trace)],
    profiles: &Profiles,
    options: &GenerateOptions,
) -> (&'static str, Vec<u8>) {
    (
        coverage::COVERAGE_FILE,
        coverage::to_json(&coverage::coverage(traces, profiles, options)),
    )
}

/// The `--include-imported-from` paths that name no executable of `profiles` (a typo, or a
/// program of another recording).
pub fn unknown_import_sources<'a>(
    profiles: &Profiles,
    options: &'a GenerateOptions,
) -> Vec<&'a str> {
    options
        .include_imported
        .from
        .iter()
        .filter(|p| !profiles.image.executable_files.contains_key(p.as_str()))
        .map(String::as_str)
        .collect()
}

/// The workload's name in the Kubernetes outputs: `--name`, else the compose service or the
/// container's name, else the output folder's name.
pub fn workload_name(profiles: &Profiles, dir: &Path, options: &GenerateOptions) -> String {
    options
        .name
        .clone()
        .or_else(|| {
            let c = profiles.container.as_ref()?;
            c.compose_service.clone().or_else(|| Some(c.name.clone()))
        })
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
}

/// `dir` made absolute without resolving symlinks (the folder may not exist yet): the
/// rendered flags name files in it, and must work from any working directory.
pub fn absolute(dir: &Path) -> PathBuf {
    if dir.is_absolute() {
        crate::trace::image::normalize(dir)
    } else {
        let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        crate::trace::image::normalize(&cwd.join(dir))
    }
}

/// Reads one JSON file of a profile folder: errors name the file, and the line and column
/// of a parse error, one style for every file.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {what} {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}:{}:{}: invalid {what}: {e}",
            path.display(),
            e.line(),
            e.column()
        )
    })
}

/// `seccomp.json` of the profile folder `dir`.
pub fn load_seccomp(dir: &Path) -> anyhow::Result<DockerSeccomp> {
    DockerSeccomp::load(&dir.join(SECCOMP_FILE))
}

/// `capabilities.json` of the profile folder `dir`.
pub fn load_capabilities(dir: &Path) -> anyhow::Result<CapabilityProfile> {
    read_json(&dir.join(CAPABILITIES_FILE), "capability profile")
}

/// `image-profile.json` of the profile folder `dir`.
pub fn load_image_profile(dir: &Path) -> anyhow::Result<image_profile::ImageProfile> {
    read_json(&dir.join(IMAGE_PROFILE_FILE), "image profile")
        .map_err(|e| e.context("record the workload first: `profiler record`"))
}

/// The production settings of the profile folder `dir`.
pub fn deployment<'a>(
    profiles: &'a Profiles,
    dir: &Path,
    options: &GenerateOptions,
) -> crate::profile::docker::Deployment<'a> {
    let sealing = if profiles.container.is_none() {
        Err(crate::profile::landlock::NOT_A_CONTAINER.to_owned())
    } else {
        crate::profile::landlock::seal_binary()
            .map(|binary| crate::profile::landlock::Sealing {
                binary: binary.display().to_string(),
                rules: absolute(dir).join(LANDLOCK_FILE).display().to_string(),
            })
            .map_err(|e| {
                format!("no static profiler-seal binary ({e}); `cargo xtask setup` builds one")
            })
            .and_then(|s| {
                // A bind mount is `host:container:ro`: a ':' or ',' in a host path would
                // change what is mounted, a newline would start another flag, and compose
                // interpolates `$`.
                match s
                    .mounts()
                    .iter()
                    .find(|(h, _)| h.contains([':', ',', '$']) || h.chars().any(char::is_control))
                {
                    Some((h, _)) => Err(format!(
                        "{h:?} cannot be written as a mount (':', ',', '$' or a control character)"
                    )),
                    None => Ok(s),
                }
            })
    };
    crate::profile::docker::Deployment {
        image: &profiles.image,
        caps: &profiles.capabilities,
        seccomp_path: absolute(dir).join(SECCOMP_FILE).display().to_string(),
        limits: crate::profile::image_profile::limits(&profiles.image, options.limit_headroom),
        sealing,
    }
}

/// The files of an output folder `dir`, with their content.
pub fn render(
    trace: Option<&Trace>,
    profiles: &Profiles,
    dir: &Path,
    options: &GenerateOptions,
) -> Vec<(&'static str, Vec<u8>)> {
    let name = workload_name(profiles, dir, options);
    let mut files = Vec::new();
    if let Some(t) = trace {
        files.push((TRACE_FILE, t.to_json()));
    }
    files.push((SECCOMP_FILE, profiles.seccomp.to_json()));
    let mut caps = serde_json::to_vec_pretty(&profiles.capabilities).expect("serialises");
    caps.push(b'\n');
    files.push((CAPABILITIES_FILE, caps));
    // Both come from values this program built, so conversion cannot fail on names it made.
    if let Ok(s) = crate::profile::oci::seccomp(&profiles.seccomp) {
        files.push((OCI_SECCOMP_FILE, crate::profile::oci::to_json(&s)));
    }
    if let Ok(c) = crate::profile::oci::capabilities(&profiles.capabilities) {
        files.push((OCI_CAPABILITIES_FILE, crate::profile::oci::to_json(&c)));
    }
    let image = &profiles.image;
    let headroom = options.limit_headroom;
    let ip = image_profile::image_profile(
        image,
        profiles.syscalls.clone(),
        &profiles.capabilities,
        headroom,
    );
    files.push((IMAGE_PROFILE_FILE, crate::profile::oci::to_json(&ip)));
    let deployment = deployment(profiles, dir, options);
    if deployment.sealed() {
        let container = profiles.container.clone().unwrap_or_default();
        let rules = landlock::rules(&ip, &container.entrypoint, &container.cmd);
        files.push((LANDLOCK_FILE, landlock::to_json(&rules)));
    }
    for (file, engine, sealed) in [
        (DOCKER_RUN_FILE, docker::Engine::Docker, true),
        (DOCKER_RUN_UNSEALED_FILE, docker::Engine::Docker, false),
        (PODMAN_RUN_FILE, docker::Engine::Podman, true),
        (PODMAN_RUN_UNSEALED_FILE, docker::Engine::Podman, false),
    ] {
        files.push((file, deployment.run_flags(engine, sealed).into_bytes()));
    }
    let k8s_name = kubernetes::k8s_name(&name);
    let localhost = format!("profiles/{k8s_name}.json");
    let template = kubernetes::pod_template(
        image,
        &profiles.capabilities,
        &k8s_name,
        &localhost,
        headroom,
        deployment.sealing.as_ref().ok(),
    );
    let notes = kubernetes::kubernetes_notes(image, &profiles.capabilities);
    if let Ok(y) = kubernetes::kubernetes_yaml(template, &localhost, &notes) {
        files.push((KUBERNETES_FILE, y.into_bytes()));
    }
    if let Ok(y) = serde_yaml_ng::to_string(&kubernetes::spo_profile(&k8s_name, &profiles.seccomp))
    {
        files.push((SPO_FILE, y.into_bytes()));
    }
    if let Ok(y) = network_policy::network_policy_yaml(&k8s_name, &image.network) {
        files.push((NETWORK_POLICY_FILE, y.into_bytes()));
    }
    files
}

/// Writes the files of one folder all or nothing (see `out_dir`).
pub fn write_atomically(
    dir: &Path,
    files: &[(&str, Vec<u8>)],
    follow_any_symlink: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    write_atomically_many(&[(dir.to_path_buf(), files.to_vec())], follow_any_symlink)
}

/// An output folder and its files (name, content).
pub type OutputSet<'a> = (PathBuf, Vec<(&'a str, Vec<u8>)>);

/// Several output folders at once: data made durable first, then the renames.
pub fn write_atomically_many(
    sets: &[OutputSet<'_>],
    follow_any_symlink: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    crate::profile::out_dir::write_sets(sets, follow_any_symlink)
}

/// Exit code when the workload succeeded but the recording lost data.
pub const EXIT_LOST_DATA: i32 = 3;

/// Writes the profile folder of each (trace, folder) at once (see
/// `profile::write_atomically_many`), prints the summaries; returns whether any trace lost data.
///
/// With `compose` (the compose file version of the stack the containers came from, and the
/// output folder), that folder also gets
/// `docker-compose.profile.yml`, applying each service's profile.
pub fn write_profiles(
    items: &[(&Trace, PathBuf)],
    quiet: bool,
    options: &GenerateOptions,
    compose: Option<(Option<&str>, &std::path::Path)>,
) -> anyhow::Result<bool> {
    let mut sets = Vec::new();
    let mut generated = Vec::new();
    let mut services = BTreeMap::new();
    for (trace, dir) in items {
        let profiles = generate(std::slice::from_ref(*trace), options);
        let unknown = unknown_import_sources(&profiles, options);
        if !unknown.is_empty() && !quiet {
            eprintln!(
                "profiler: warning: --include-imported-from {} names no program of the recording in {}",
                unknown.join(", "),
                dir.display()
            );
        }
        let mut files = render(Some(trace), &profiles, dir, options);
        let run = dir.join(TRACE_FILE).display().to_string();
        files.push(coverage_file(&[(run, *trace)], &profiles, options));
        sets.push((dir.clone(), files));
        if let Some(service) = trace
            .cgroup
            .container_info
            .as_ref()
            .and_then(|c| c.compose_service.clone())
        {
            // A scaled service's replicas: the first one's profile (their folders say more).
            services
                .entry(service)
                .or_insert_with(|| deployment(&profiles, dir, options).compose_service());
        }
        generated.push(profiles);
    }
    if let Some((version, out)) = compose
        && !services.is_empty()
    {
        let yaml = compose::production_override(version, &services);
        sets.push((
            out.to_path_buf(),
            vec![(COMPOSE_OVERRIDE_FILE, yaml.into_bytes())],
        ));
    }
    crate::timings::mark("profiles generated");
    let written = write_atomically_many(&sets, options.follow_symlinks)?;
    crate::timings::mark("profiles written");
    let mut lost = false;
    for ((trace, dir), profiles) in items.iter().zip(&generated) {
        if !quiet {
            let mine: Vec<PathBuf> = written
                .iter()
                .filter(|p| p.parent() == Some(dir.as_path()))
                .cloned()
                .collect();
            summary::print(trace, profiles, &mine);
        }
        lost |= report_losses(trace, dir);
    }
    Ok(lost)
}

/// Says loudly when a trace lost data; returns whether it did.
pub fn report_losses(trace: &Trace, dir: &std::path::Path) -> bool {
    let unclassified: std::collections::BTreeSet<&str> = trace
        .capability_checks
        .iter()
        .filter(|c| c.audit == crate::trace::Audit::Unclassified)
        .map(|c| c.capability.as_str())
        .collect();
    let hidden = !unclassified.is_empty();
    if hidden {
        eprintln!(
            "profiler: ERROR: kernel addresses are hidden (kernel.kptr_restrict), so capability checks of {} could \
             not be told audited or unaudited; they are listed under \"unclassified\" in {}/capabilities.json and \
             NOT added (guessing would add CAP_SYS_ADMIN to every whitelist). Record again with \
             kernel.kptr_restrict=0 or 1 (root with CAP_SYSLOG sees addresses).",
            unclassified.into_iter().collect::<Vec<_>>().join(", "),
            dir.display()
        );
    }
    if trace.losses.any() {
        eprintln!(
            "profiler: ERROR: the recording lost data ({} syscalls out of range, {} capability checks dropped, \
             {} cgroups not recorded); the profiles in {} are incomplete",
            trace.losses.syscalls_out_of_range,
            trace.losses.capability_map_full,
            trace.losses.cgroup_map_full,
            dir.display()
        );
        return true;
    }
    hidden
}
