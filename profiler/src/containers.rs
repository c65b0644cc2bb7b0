//! Recording containers: the engine is told to create the container's cgroup below the
//! recording cgroup, where the kernel side discovers it at its first syscall.
//!
//! - `docker run` / `podman run` / `... create` commands get `--cgroup-parent` and a
//!   permissive seccomp profile added (see [`RECORDING_SECCOMP`]);
//! - any other command (a script, compose) finds both in the environment,
//!   `PROFILER_CGROUP_PARENT` and `PROFILER_RECORDING_SECCOMP`, to pass on itself
//!   (`docker run --cgroup-parent "$PROFILER_CGROUP_PARENT" ...`, compose `cgroup_parent:`).
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

pub const ENV_CGROUP_PARENT: &str = "PROFILER_CGROUP_PARENT";
pub const ENV_RECORDING_SECCOMP: &str = "PROFILER_RECORDING_SECCOMP";

/// The seccomp profile containers are recorded under. Without one the engine applies its
/// default profile, and a syscall that profile denies never reaches the syscall tracepoint
/// (seccomp runs first in `syscall_trace_enter()`, kernel/entry/common.c), so the recording
/// would silently miss it. A filter is still loaded, on purpose: the runtime loads it at the
/// same point as it will load the generated profile, and the probe sees that load and starts
/// the `runtime` phase there. runc 1.1.5 loads even a rule-less allow-all filter (measured);
/// the one rule (log `uselib`, an a.out-era syscall nothing calls) keeps the filter from being
/// a no-op that a runtime could decide to skip.
pub const RECORDING_SECCOMP: &str = r#"{
  "defaultAction": "SCMP_ACT_ALLOW",
  "syscalls": [{ "names": ["uselib"], "action": "SCMP_ACT_LOG" }]
}
"#;

/// A temporary file holding [`RECORDING_SECCOMP`], removed on drop.
pub struct RecordingSeccompFile(PathBuf);

impl RecordingSeccompFile {
    pub fn create() -> anyhow::Result<RecordingSeccompFile> {
        let p = std::env::temp_dir().join(format!(
            "profiler-recording-seccomp-{}.json",
            std::process::id()
        ));
        std::fs::write(&p, RECORDING_SECCOMP)
            .with_context(|| format!("cannot write {}", p.display()))?;
        Ok(RecordingSeccompFile(p))
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for RecordingSeccompFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn engine(cmd: &[String]) -> Option<&'static str> {
    let base = Path::new(cmd.first()?).file_name()?.to_str()?;
    match base {
        "docker" => Some("docker"),
        "podman" => Some("podman"),
        _ => None,
    }
}

/// Adds `--cgroup-parent` (and the recording seccomp profile, unless the command sets its
/// own) to a `docker`/`podman` `run`/`create` command. Other commands are returned as they
/// are: they get the same settings through the environment.
pub fn inject(cmd: &[String], cgroup_parent: &str, seccomp: &Path) -> anyhow::Result<Vec<String>> {
    let Some(engine) = engine(cmd) else {
        return Ok(cmd.to_vec());
    };
    let Some(pos) = cmd.iter().position(|a| a == "run" || a == "create") else {
        return Ok(cmd.to_vec());
    };
    if cmd
        .iter()
        .any(|a| a == "--cgroup-parent" || a.starts_with("--cgroup-parent="))
    {
        bail!(
            "the {engine} command sets --cgroup-parent itself; profiler needs to choose it to record the container \
             (drop the option, or use \"${ENV_CGROUP_PARENT}\" in it)"
        );
    }
    let mut out = cmd[..=pos].to_vec();
    out.push(format!("--cgroup-parent={cgroup_parent}"));
    let has_seccomp = cmd
        .windows(2)
        .any(|w| w[0] == "--security-opt" && w[1].starts_with("seccomp"))
        || cmd.iter().any(|a| a.starts_with("--security-opt=seccomp"));
    if !has_seccomp {
        out.push(format!("--security-opt=seccomp={}", seccomp.display()));
    }
    out.extend_from_slice(&cmd[pos + 1..]);
    Ok(out)
}

/// A readable name for a container cgroup: the engine's container name when it still
/// knows it, else the cgroup's last path component (a container id for docker, runc and
/// podman), shortened.
pub fn container_name(cgroup_path: &str) -> String {
    let leaf = cgroup_path.rsplit('/').next().unwrap_or(cgroup_path);
    let id = leaf
        .trim_start_matches("libpod-")
        .trim_start_matches("docker-")
        .trim_end_matches(".scope");
    // Only ask the engines about what looks like their 64-hex container ids: each question
    // is a process start, and a plain sub-cgroup name is already the best name.
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return leaf.to_owned();
    }
    for engine in ["docker", "podman"] {
        if let Ok(out) = std::process::Command::new(engine)
            .args(["inspect", "--format", "{{.Name}}", id])
            .stderr(std::process::Stdio::null())
            .output()
            && out.status.success()
        {
            let name = String::from_utf8_lossy(&out.stdout)
                .trim()
                .trim_start_matches('/')
                .to_owned();
            if !name.is_empty() {
                return name;
            }
        }
    }
    id.chars().take(12).collect()
}

/// A command rewritten to start its containers under the recording cgroup, with what must
/// live as long as it runs.
pub struct Prepared {
    pub command: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// The rewritten OCI bundle of a runc/crun command (removed on drop).
    pub bundle: Option<crate::oci::RecordingBundle>,
    /// The bundle had its own linux.seccomp, which was kept.
    pub bundle_has_own_seccomp: bool,
}

/// Readies `command` for container recording (or enforcement): docker/podman get
/// `--cgroup-parent` and `seccomp` (a Docker-format profile file), runc/crun a rewritten
/// bundle with the same profile as `linux.seccomp`, anything else the environment variables.
pub fn prepare(
    command: &[String],
    cgroup_parent: &str,
    seccomp: &Path,
) -> anyhow::Result<Prepared> {
    let mut command = inject(command, cgroup_parent, seccomp)?;
    let profile = crate::seccomp::DockerSeccomp::load(seccomp)?;
    let oci_seccomp = crate::oci::seccomp(&profile)?;
    let mut bundle = None;
    let mut bundle_has_own_seccomp = false;
    if let Some((cmd, b, own)) = crate::oci::rewrite_bundle(&command, cgroup_parent, &oci_seccomp)?
    {
        command = cmd;
        bundle = Some(b);
        bundle_has_own_seccomp = own;
    }
    Ok(Prepared {
        command,
        env: vec![
            (ENV_CGROUP_PARENT, cgroup_parent.to_owned()),
            (ENV_RECORDING_SECCOMP, seccomp.display().to_string()),
        ],
        bundle,
        bundle_has_own_seccomp,
    })
}
