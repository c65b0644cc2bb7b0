//! `profiler kubernetes node-agent`: the objects (k8s-openapi types) that record pods on every
//! node of a CRI-O cluster. A `DaemonSet` runs `profiler serve` privileged on each node, with
//! the host's PID namespace (the kernel reports host pids, and serve reads their /proc) and the
//! host's BTF, bpffs, cgroup2 tree and runtime folder; its init container installs the
//! profiler binary on the host and the OCI hook (a `ConfigMap`) in CRI-O's hooks directory.
//! CRI-O then runs `profiler hook` for every container of a pod annotated
//! `io.profiler.record: "true"`, and serve writes the container's profile folder (seccomp.json,
//! seccompprofile.yaml for the Security Profiles Operator, networkpolicy.yaml, …) under the
//! node's output folder when the container's cgroup empties.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::bail;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, HostPathVolumeSource, Namespace, PodSpec,
    PodTemplateSpec, SecurityContext, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use serde::Serialize;

/// The pod annotation that has CRI-O run the hook (the hook file's `when`).
pub const RECORD_ANNOTATION: &str = "io.profiler.record";
/// Where the hook file goes in the agent's ConfigMap and on the host.
pub const HOOK_FILE: &str = "profiler.json";
/// Where the image holds the profiler binary.
pub const IMAGE_BINARY: &str = "/usr/local/bin/profiler";

/// What the objects are made of; every host path is the same inside the agent's container
/// (the socket path the hook connects to on the host is the one serve listens on).
#[derive(Clone, Debug)]
pub struct NodeAgentOptions {
    /// The image with the profiler binary at [`IMAGE_BINARY`] and a shell with `cp`/`mv`.
    pub image: String,
    pub namespace: String,
    pub name: String,
    /// serve's socket, in a folder of its own on the host (`/run/profiler`).
    pub socket: String,
    /// The node folder the profiles are written under.
    pub out: String,
    /// CRI-O's hooks directory (`hooks_dir` in crio.conf).
    pub hooks_dir: String,
    /// The host folder the hook binary is installed in.
    pub bin_dir: String,
}

impl Default for NodeAgentOptions {
    fn default() -> Self {
        NodeAgentOptions {
            image: String::new(),
            namespace: "profiler".to_owned(),
            name: "profiler-node-agent".to_owned(),
            socket: "/run/profiler/profiler.sock".to_owned(),
            out: "/var/lib/profiler".to_owned(),
            hooks_dir: "/usr/share/containers/oci/hooks.d".to_owned(),
            bin_dir: "/opt/profiler/bin".to_owned(),
        }
    }
}

/// An RFC 1123 label (namespace and DaemonSet names): lowercase letters, digits and '-',
/// starting and ending with a letter or digit, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A host path the objects can name: absolute, already normal (no `.`, `..`, `//`, trailing
/// `/`), not `/` itself, and no whitespace or control characters (it also lands in the hook's
/// command line and in the install step's arguments).
fn check_host_path(what: &str, p: &str) -> anyhow::Result<()> {
    let normal = crate::trace::image::normalize(Path::new(p));
    if !p.starts_with('/')
        || p == "/"
        || normal.to_str() != Some(p)
        || p.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        bail!(
            "{what} {p:?} must be an absolute, normal path other than / without spaces or control characters"
        );
    }
    Ok(())
}

impl NodeAgentOptions {
    pub fn check(&self) -> anyhow::Result<()> {
        if self.image.is_empty()
            || self
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            bail!("--image {:?} is not an image reference", self.image);
        }
        for (what, v) in [("--namespace", &self.namespace), ("--name", &self.name)] {
            if !is_dns1123_label(v) {
                bail!(
                    "{what} {v:?} is not a DNS-1123 label (lowercase letters, digits, '-', at most 63)"
                );
            }
        }
        for (what, v) in [
            ("--socket", &self.socket),
            ("--out", &self.out),
            ("--hooks-dir", &self.hooks_dir),
            ("--bin-dir", &self.bin_dir),
        ] {
            check_host_path(what, v)?;
        }
        if self.socket_dir() == "/" {
            bail!("--socket must be in a folder of its own (e.g. /run/profiler/profiler.sock)");
        }
        Ok(())
    }

    fn socket_dir(&self) -> String {
        Path::new(&self.socket)
            .parent()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "/".to_owned())
    }

    fn labels(&self) -> BTreeMap<String, String> {
        [("app".to_owned(), self.name.clone())].into()
    }

    fn meta(&self, name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.namespace.clone()),
            labels: Some(self.labels()),
            ..Default::default()
        }
    }

    fn config_map_name(&self) -> String {
        // At most 63 + 5 characters: a ConfigMap name may have 253.
        format!("{}-hook", self.name)
    }
}

/// An OCI hooks.d file (containers/common pkg/hooks, schema 1.0.0), as CRI-O and podman read
/// them.
#[derive(Debug, Serialize, PartialEq)]
pub struct HookFile {
    pub version: String,
    pub hook: HookCommand,
    pub when: HookWhen,
    pub stages: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HookCommand {
    pub path: String,
    pub args: Vec<String>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct HookWhen {
    /// Annotation key regex to value regex.
    pub annotations: BTreeMap<String, String>,
}

/// The hook: `profiler hook --socket S` at `createRuntime` for annotated containers.
pub fn hook_file(o: &NodeAgentOptions) -> HookFile {
    HookFile {
        version: "1.0.0".to_owned(),
        hook: HookCommand {
            path: format!("{}/profiler", o.bin_dir),
            args: ["profiler", "hook", "--socket", &o.socket]
                .map(str::to_owned)
                .to_vec(),
        },
        when: HookWhen {
            annotations: [(RECORD_ANNOTATION.replace('.', "\\."), "true".to_owned())].into(),
        },
        stages: vec!["createRuntime".to_owned()],
    }
}

pub fn hook_json(o: &NodeAgentOptions) -> String {
    let mut s = serde_json::to_string_pretty(&hook_file(o)).expect("serialises");
    s.push('\n');
    s
}

/// The namespace, labelled for the privileged Pod Security level the agent needs.
pub fn namespace(o: &NodeAgentOptions) -> Namespace {
    Namespace {
        metadata: ObjectMeta {
            name: Some(o.namespace.clone()),
            labels: Some(
                [(
                    "pod-security.kubernetes.io/enforce".to_owned(),
                    "privileged".to_owned(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        ..Default::default()
    }
}

pub fn config_map(o: &NodeAgentOptions) -> ConfigMap {
    ConfigMap {
        metadata: o.meta(&o.config_map_name()),
        data: Some([(HOOK_FILE.to_owned(), hook_json(o))].into()),
        ..Default::default()
    }
}

/// The install step: copies the binary and the hook file next to their final names and
/// renames them over (a hook running the old binary, or CRI-O reading the hooks directory,
/// never sees a half-written file). The paths are the script's arguments, never its text.
const INSTALL_SCRIPT: &str = "set -eu; \
    cp \"$1\" /host/bin/.profiler.new && chmod 0755 /host/bin/.profiler.new && mv -f /host/bin/.profiler.new /host/bin/profiler; \
    cp \"$2\" /host/hooks.d/.profiler.json.new && mv -f /host/hooks.d/.profiler.json.new /host/hooks.d/profiler.json";

fn host_volume(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource {
            path: path.to_owned(),
            type_: Some(type_.to_owned()),
        }),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

pub fn daemon_set(o: &NodeAgentOptions) -> DaemonSet {
    let socket_dir = o.socket_dir();
    let install = Container {
        name: "install-hook".to_owned(),
        image: Some(o.image.clone()),
        command: Some(
            [
                "/bin/sh",
                "-c",
                INSTALL_SCRIPT,
                "install-hook",
                IMAGE_BINARY,
                &format!("/etc/profiler/hook/{HOOK_FILE}"),
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        security_context: Some(SecurityContext {
            run_as_user: Some(0),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("hook-config", "/etc/profiler/hook", true),
            mount("host-bin", "/host/bin", false),
            mount("host-hooks", "/host/hooks.d", false),
        ]),
        ..Default::default()
    };
    let agent = Container {
        name: "profiler".to_owned(),
        image: Some(o.image.clone()),
        command: Some(
            [
                IMAGE_BINARY,
                "serve",
                "--socket",
                &o.socket,
                "--out",
                &o.out,
            ]
            .map(str::to_owned)
            .to_vec(),
        ),
        // Loading eBPF programs and reading every container's /proc need the host's root.
        security_context: Some(SecurityContext {
            privileged: Some(true),
            run_as_user: Some(0),
            ..Default::default()
        }),
        volume_mounts: Some(vec![
            mount("btf", "/sys/kernel/btf", true),
            mount("bpffs", "/sys/fs/bpf", false),
            mount("cgroup", "/sys/fs/cgroup", true),
            mount("run", &socket_dir, false),
            mount("profiles", &o.out, false),
        ]),
        ..Default::default()
    };
    let volumes = vec![
        host_volume("btf", "/sys/kernel/btf", "Directory"),
        host_volume("bpffs", "/sys/fs/bpf", "Directory"),
        host_volume("cgroup", "/sys/fs/cgroup", "Directory"),
        host_volume("run", &socket_dir, "DirectoryOrCreate"),
        host_volume("profiles", &o.out, "DirectoryOrCreate"),
        host_volume("host-hooks", &o.hooks_dir, "DirectoryOrCreate"),
        host_volume("host-bin", &o.bin_dir, "DirectoryOrCreate"),
        Volume {
            name: "hook-config".to_owned(),
            config_map: Some(ConfigMapVolumeSource {
                name: o.config_map_name(),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    DaemonSet {
        metadata: o.meta(&o.name),
        spec: Some(DaemonSetSpec {
            selector: LabelSelector {
                match_labels: Some(o.labels()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(o.labels()),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    host_pid: Some(true),
                    // Every node records, control-plane and tainted ones included.
                    tolerations: Some(vec![Toleration {
                        operator: Some("Exists".to_owned()),
                        ..Default::default()
                    }]),
                    // SIGTERM makes serve write what it is still recording.
                    termination_grace_period_seconds: Some(60),
                    init_containers: Some(vec![install]),
                    containers: vec![agent],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The objects as one YAML stream: Namespace, ConfigMap (the hook file), DaemonSet.
pub fn node_agent_yaml(o: &NodeAgentOptions) -> anyhow::Result<String> {
    o.check()?;
    let docs = [
        serde_yaml_ng::to_string(&namespace(o))?,
        serde_yaml_ng::to_string(&config_map(o))?,
        serde_yaml_ng::to_string(&daemon_set(o))?,
    ];
    Ok(format!(
        "# profiler node agent, made by `profiler kubernetes node-agent`:\n\
         #   kubectl apply -f node-agent.yaml\n\
         # Each node runs `profiler serve`; CRI-O runs the hook it installs ({}/{HOOK_FILE}) for pods\n\
         # annotated {RECORD_ANNOTATION}: \"true\", and the profiles land in {} on the node.\n---\n{}",
        o.hooks_dir,
        o.out,
        docs.join("---\n")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> NodeAgentOptions {
        NodeAgentOptions {
            image: "registry.example/profiler:0.1".to_owned(),
            ..Default::default()
        }
    }

    #[test]
    fn dns1123_labels() {
        for ok in ["a", "profiler", "web-1", "0abc", &"a".repeat(63)] {
            assert!(is_dns1123_label(ok), "{ok}");
        }
        for bad in ["", "-a", "a-", "Web", "a_b", "a.b", "a b", &"a".repeat(64)] {
            assert!(!is_dns1123_label(bad), "{bad}");
        }
    }

    #[test]
    fn untrusted_values_are_refused() {
        let bad = [
            NodeAgentOptions {
                image: "img\n- evil".into(),
                ..opts()
            },
            NodeAgentOptions {
                image: String::new(),
                ..opts()
            },
            NodeAgentOptions {
                namespace: "Kube_System".into(),
                ..opts()
            },
            NodeAgentOptions {
                out: "relative/dir".into(),
                ..opts()
            },
            NodeAgentOptions {
                hooks_dir: "/etc/../usr/share".into(),
                ..opts()
            },
            NodeAgentOptions {
                bin_dir: "/opt/my bin".into(),
                ..opts()
            },
            NodeAgentOptions {
                socket: "/profiler.sock".into(),
                ..opts()
            },
            NodeAgentOptions {
                out: "/".into(),
                ..opts()
            },
        ];
        for o in bad {
            assert!(node_agent_yaml(&o).is_err(), "{o:?}");
        }
        assert!(node_agent_yaml(&opts()).is_ok());
    }

    #[test]
    fn hook_names_the_installed_binary_and_serves_socket() {
        let o = opts();
        let v: serde_json::Value = serde_json::from_str(&hook_json(&o)).unwrap();
        assert_eq!(v["hook"]["path"], "/opt/profiler/bin/profiler");
        assert_eq!(
            v["hook"]["args"],
            serde_json::json!([
                "profiler",
                "hook",
                "--socket",
                "/run/profiler/profiler.sock"
            ])
        );
        assert_eq!(v["when"]["annotations"]["io\\.profiler\\.record"], "true");
        assert_eq!(v["stages"], serde_json::json!(["createRuntime"]));
    }

    #[test]
    fn daemon_set_runs_serve_privileged_with_the_host_folders() {
        let o = opts();
        let ds = daemon_set(&o);
        let spec = ds.spec.unwrap().template.spec.unwrap();
        assert_eq!(spec.host_pid, Some(true));
        let agent = &spec.containers[0];
        assert_eq!(
            agent.command.as_deref().unwrap(),
            [
                IMAGE_BINARY,
                "serve",
                "--socket",
                "/run/profiler/profiler.sock",
                "--out",
                "/var/lib/profiler"
            ]
        );
        assert_eq!(
            agent.security_context.as_ref().unwrap().privileged,
            Some(true)
        );
        let volumes = spec.volumes.unwrap();
        let host = |p: &str| {
            volumes
                .iter()
                .find(|v| v.host_path.as_ref().is_some_and(|h| h.path == p))
                .map(|v| v.name.clone())
                .unwrap_or_else(|| panic!("no hostPath {p}"))
        };
        let mounted = |c: &Container, name: &str, at: &str| {
            c.volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .any(|m| m.name == name && m.mount_path == at)
        };
        for p in [
            "/sys/kernel/btf",
            "/sys/fs/bpf",
            "/sys/fs/cgroup",
            "/run/profiler",
            "/var/lib/profiler",
        ] {
            assert!(mounted(agent, &host(p), p), "{p} not mounted in the agent");
        }
        let install = &spec.init_containers.unwrap()[0];
        assert!(mounted(
            install,
            &host("/usr/share/containers/oci/hooks.d"),
            "/host/hooks.d"
        ));
        assert!(mounted(install, &host("/opt/profiler/bin"), "/host/bin"));
        // The paths are arguments of the constant script, never spliced into it.
        let cmd = install.command.as_ref().unwrap();
        assert_eq!(cmd[2], INSTALL_SCRIPT);
        assert_eq!(cmd[4], IMAGE_BINARY);
    }
}
