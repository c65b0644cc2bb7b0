//! Recording containers: the engine is told to create the container's cgroup below the
//! recording cgroup, where the kernel side discovers it at its first syscall.
//!
//! - `docker run` / `podman run` / `... create` commands get `--cgroup-parent` and a
//!   permissive seccomp profile added (see [`RECORDING_SECCOMP`]);
//! - any other command (a script, compose) finds both in the environment,
//!   `PROFILER_CGROUP_PARENT` and `PROFILER_RECORDING_SECCOMP`, to pass on itself
//!   (`docker run --cgroup-parent "$PROFILER_CGROUP_PARENT" ...`, compose `cgroup_parent:`).
use std::path::{Path, PathBuf};

use anyhow::bail;

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

/// [`RECORDING_SECCOMP`] in a private folder (see `private_dir`), removed on drop.
pub struct RecordingSeccompFile {
    dir: crate::private_dir::PrivateDir,
    path: PathBuf,
}

impl RecordingSeccompFile {
    pub fn create() -> anyhow::Result<RecordingSeccompFile> {
        let dir = crate::private_dir::PrivateDir::create("recording")?;
        let path = dir.write("recording-seccomp.json", RECORDING_SECCOMP.as_bytes())?;
        Ok(RecordingSeccompFile { dir, path })
    }
    pub fn path(&self) -> &Path {
        &self.path
    }
    /// The private folder, for other files the recording hands to the engine.
    pub fn dir(&self) -> &crate::private_dir::PrivateDir {
        &self.dir
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
            .args(["inspect", "--format", "{{.Name}}", "--", id])
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

/// The 64-hex container id a container cgroup is named after (docker's cgroupfs driver:
/// `<parent>/<id>`; podman: `libpod-<id>`; systemd drivers: `docker-<id>.scope`).
pub fn container_id(cgroup_path: &str) -> Option<&str> {
    let leaf = cgroup_path.rsplit('/').next().unwrap_or(cgroup_path);
    let id = leaf
        .trim_start_matches("libpod-")
        .trim_start_matches("docker-")
        .trim_end_matches(".scope");
    (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then_some(id)
}

/// The engine CLIs to ask about the containers `command` starts, with the command's own
/// global options (`podman --root DIR --runroot DIR run ...`, `docker -H HOST run ...`), so
/// the question reaches the same storage or daemon.
pub fn engine_clis(command: &[String]) -> Vec<Vec<String>> {
    if let Some(engine) = engine(command) {
        let end = command
            .iter()
            .position(|a| matches!(a.as_str(), "run" | "create" | "start" | "container"))
            .unwrap_or(1);
        let mut cli = vec![engine.to_owned()];
        cli.extend_from_slice(&command[1..end.max(1)]);
        return vec![cli];
    }
    vec![vec!["docker".to_owned()], vec!["podman".to_owned()]]
}

/// An argument vector as engines write it: a JSON list (Docker, podman 4), a string
/// (older podman writes the entrypoint as one, split like a shell would), or null.
fn words(v: &serde_json::Value) -> Vec<String> {
    match v {
        serde_json::Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str().map(str::to_owned))
            .collect(),
        serde_json::Value::String(s) if !s.is_empty() => {
            shell_words::split(s).unwrap_or_else(|_| vec![s.clone()])
        }
        _ => Vec::new(),
    }
}

/// What the engine says about container `id` (None once it is removed, or from no engine).
pub fn inspect(clis: &[Vec<String>], id: &str) -> Option<crate::trace::ContainerInfo> {
    for cli in clis {
        let Ok(out) = std::process::Command::new(&cli[0])
            .args(&cli[1..])
            .args(["inspect", "--format", "{{json .}}", "--", id])
            .stderr(std::process::Stdio::null())
            .output()
        else {
            continue;
        };
        if !out.status.success() {
            continue;
        }
        let Ok(mut v) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
            continue;
        };
        // podman 4 writes `{{json .}}` of a container as a one-element list.
        if let serde_json::Value::Array(items) = &mut v {
            match items.len() {
                1 => v = items.remove(0),
                _ => continue,
            }
        }
        let text = |v: &serde_json::Value| v.as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let labels = &v["Config"]["Labels"];
        return Some(crate::trace::ContainerInfo {
            engine: cli[0].clone(),
            id: id.to_owned(),
            name: text(&v["Name"])
                .map(|n| n.trim_start_matches('/').to_owned())
                .unwrap_or_default(),
            image: text(&v["Config"]["Image"]).or_else(|| text(&v["ImageName"])),
            compose_project: text(&labels["com.docker.compose.project"]),
            compose_service: text(&labels["com.docker.compose.service"]),
            user: text(&v["Config"]["User"]),
            entrypoint: words(&v["Config"]["Entrypoint"]),
            cmd: words(&v["Config"]["Cmd"]),
        });
    }
    None
}

/// A folder name for a recorded container: the compose service, else the container's name,
/// else its cgroup's name. Only `[A-Za-z0-9._-]` survive (anything else becomes `_`), and
/// a name that would mean the folder itself or its parent (`.`, `..`, empty) becomes
/// `container-<id>`: a hostile engine-side name must not choose where root writes.
pub fn folder_name(
    info: Option<&crate::trace::ContainerInfo>,
    cgroup_path: Option<&str>,
    cgroup_id: u64,
) -> String {
    let raw = info
        .and_then(|i| i.compose_service.clone().or_else(|| Some(i.name.clone())))
        .filter(|n| !n.is_empty())
        .or_else(|| cgroup_path.map(container_name))
        .unwrap_or_default();
    let clean: String = raw
        .chars()
        .take(100)
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if clean.is_empty() || clean.chars().all(|c| c == '.') {
        format!("container-{cgroup_id}")
    } else {
        clean
    }
}

/// Makes folder names unique in order: a second `web` becomes `web-2`.
pub fn unique_names(names: Vec<String>) -> Vec<String> {
    let mut taken = std::collections::BTreeSet::new();
    names
        .into_iter()
        .map(|n| {
            let mut candidate = n.clone();
            let mut i = 2;
            while !taken.insert(candidate.clone()) {
                candidate = format!("{n}-{i}");
                i += 1;
            }
            candidate
        })
        .collect()
}

/// A command rewritten to start its containers under the recording cgroup, with what must
/// live as long as it runs.
pub struct Prepared {
    pub command: Vec<String>,
    pub env: Vec<(&'static str, String)>,
    /// The rewritten OCI bundle of a runc/crun command (removed on drop).
    pub bundle: Option<crate::recording::oci_bundle::RecordingBundle>,
    /// The bundle had its own linux.seccomp, which was kept.
    pub bundle_has_own_seccomp: bool,
    /// A compose stack started with the recording override (see `compose`).
    pub compose: Option<crate::recording::compose::Stack>,
}

/// Readies `command` for container recording (or enforcement): docker/podman get
/// `--cgroup-parent` and `seccomp` (a Docker-format profile file), runc/crun a rewritten
/// bundle with the same profile as `linux.seccomp`, anything else the environment variables.
///
/// With `private` (a recording), a compose command that creates containers gets an override
/// file written there.
///
/// `seccomp` is the profile file (Docker format, for docker/podman/compose) and
/// `oci_seccomp` the same profile as OCI `linux.seccomp` (for runc/crun bundles).
pub fn prepare(
    command: &[String],
    cgroup_parent: &str,
    seccomp: &Path,
    oci_seccomp: &oci_spec::runtime::LinuxSeccomp,
    private: Option<&crate::private_dir::PrivateDir>,
) -> anyhow::Result<Prepared> {
    let mut compose = None;
    let mut command = command.to_vec();
    if let Some(dir) = private
        && let Some(c) = crate::recording::compose::parse(&command)
        && c.creates_containers()
    {
        let p = crate::recording::compose::prepare(&c, cgroup_parent, seccomp, dir)?;
        command = p.command;
        compose = Some(p.stack);
    }
    let mut command = inject(&command, cgroup_parent, seccomp)?;
    let mut bundle = None;
    let mut bundle_has_own_seccomp = false;
    if let Some((cmd, b, own)) =
        crate::recording::oci_bundle::rewrite_bundle(&command, cgroup_parent, oci_seccomp)?
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
        compose,
    })
}

/// CRI-O's annotation with the container's labels as JSON: the pod's labels and
/// `io.kubernetes.pod.namespace`, `io.kubernetes.pod.name`, `io.kubernetes.container.name`.
pub const CRIO_LABELS_ANNOTATION: &str = "io.kubernetes.cri-o.Labels";
/// CRI-O's annotation with the image the container was asked to run.
pub const CRIO_IMAGE_ANNOTATION: &str = "io.kubernetes.cri-o.ImageName";

/// Longer replica keys (a long command) are kept as their sha256.
const MAX_REPLICA_KEY: usize = 1024;

/// Which workload a container CRI-O started for Kubernetes is a replica of, from the OCI
/// annotations CRI-O gives it: its namespace and container name, and the pod template
/// (`pod-template-hash` of a Deployment's ReplicaSet, `controller-revision-hash` of a
/// StatefulSet or DaemonSet), else its image and command (`args`, from config.json).
/// `None` for a container without Kubernetes labels.
pub fn kubernetes_replica(
    annotations: &std::collections::BTreeMap<String, String>,
    args: &[String],
) -> Option<crate::trace::ReplicaOf> {
    let labels: std::collections::BTreeMap<String, String> =
        serde_json::from_str(annotations.get(CRIO_LABELS_ANNOTATION)?).ok()?;
    let namespace = labels.get("io.kubernetes.pod.namespace")?;
    let container = labels.get("io.kubernetes.container.name")?;
    let template = ["pod-template-hash", "controller-revision-hash"]
        .iter()
        .find_map(|l| labels.get(*l));
    let key = match (template, annotations.get(CRIO_IMAGE_ANNOTATION)) {
        (Some(t), _) => serde_json::json!(["pod-template", namespace, t, container]),
        (None, Some(image)) => serde_json::json!(["image", namespace, container, image, args]),
        (None, None) => return None,
    };
    // The hook's request is one short line: a long command is kept as its digest.
    let mut key = key.to_string();
    if key.len() > MAX_REPLICA_KEY {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(key.as_bytes());
        key = format!(
            "sha256:{}",
            digest
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
    }
    // The container's name: kubernetes.yaml's patch finds the container by it.
    Some(crate::trace::ReplicaOf {
        key,
        name: container.chars().take(MAX_REPLICA_KEY).collect(),
    })
}

#[cfg(test)]
mod kubernetes_replica_tests {
    use super::*;
    use std::collections::BTreeMap;

    fn annotations(labels: serde_json::Value, image: Option<&str>) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert(CRIO_LABELS_ANNOTATION.to_owned(), labels.to_string());
        if let Some(i) = image {
            a.insert(CRIO_IMAGE_ANNOTATION.to_owned(), i.to_owned());
        }
        a
    }

    #[test]
    fn replicas_of_one_pod_template_share_a_key() {
        let pod = |name: &str, hash: &str, container: &str| {
            annotations(
                serde_json::json!({
                    "app": "web",
                    "pod-template-hash": hash,
                    "io.kubernetes.pod.namespace": "shop",
                    "io.kubernetes.pod.name": name,
                    "io.kubernetes.container.name": container,
                }),
                Some("reg/web:1"),
            )
        };
        let a = kubernetes_replica(&pod("web-7d9f-abcde", "7d9f", "web"), &[]).unwrap();
        let b = kubernetes_replica(&pod("web-7d9f-fghij", "7d9f", "web"), &["x".into()]).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.name, "web");
        // Another template (a rollout), or the pod's other container: another workload.
        assert_ne!(
            kubernetes_replica(&pod("web-8e0a-x", "8e0a", "web"), &[])
                .unwrap()
                .key,
            a.key
        );
        assert_ne!(
            kubernetes_replica(&pod("web-7d9f-abcde", "7d9f", "sidecar"), &[])
                .unwrap()
                .key,
            a.key
        );
    }

    #[test]
    fn without_a_template_image_and_command_decide() {
        let labels = serde_json::json!({
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.container.name": "job",
        });
        let one = kubernetes_replica(
            &annotations(labels.clone(), Some("reg/job:1")),
            &["run".into()],
        );
        let two = kubernetes_replica(
            &annotations(labels.clone(), Some("reg/job:1")),
            &["run".into()],
        );
        let other = kubernetes_replica(
            &annotations(labels.clone(), Some("reg/job:1")),
            &["other".into()],
        );
        assert!(one.is_some());
        assert_eq!(one, two);
        assert_ne!(one, other);
        assert_eq!(kubernetes_replica(&annotations(labels, None), &[]), None);
    }

    #[test]
    fn a_long_command_is_kept_as_its_digest() {
        let labels = serde_json::json!({
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.container.name": "job",
        });
        let a = annotations(labels, Some("reg/job:1"));
        let long = |c: char| vec![c.to_string().repeat(100_000)];
        let one = kubernetes_replica(&a, &long('x')).unwrap();
        assert!(
            one.key.starts_with("sha256:") && one.key.len() < 100,
            "{}",
            one.key
        );
        assert_eq!(kubernetes_replica(&a, &long('x')), Some(one.clone()));
        assert_ne!(kubernetes_replica(&a, &long('y')), Some(one));
    }

    #[test]
    fn containers_without_kubernetes_labels_are_no_replicas() {
        assert_eq!(kubernetes_replica(&BTreeMap::new(), &[]), None);
        let mut a = BTreeMap::new();
        a.insert(CRIO_LABELS_ANNOTATION.to_owned(), "not json".to_owned());
        assert_eq!(kubernetes_replica(&a, &[]), None);
    }
}
