//! The Kubernetes objects made from a real recording: `networkpolicy.yaml` (ingress on the
//! port the workload listened on, egress to the host it connected to and to DNS),
//! `seccompprofile.yaml` (the Security Profiles Operator's SeccompProfile) and the node agent
//! of `profiler kubernetes node-agent`, each checked against its schema offline and against
//! what the recording saw; and `merge --by-workload`, which merges replicas apart with
//! coverage.
use std::collections::BTreeSet;
use std::io::Read as _;
use std::net::{IpAddr, TcpListener, UdpSocket};
use std::path::Path;
use std::process::Command;

use integration_tests::*;
use serde_json::{Value, json};

/// A server that also calls an upstream: listens on 0.0.0.0:PORT (and answers a client on
/// loopback, which is pod-local), connects to UPSTREAM_IP:UPSTREAM_PORT, and connects a
/// datagram socket to UPSTREAM_IP:53 and sends a query, as a resolver does.
const SERVER: &str = r#"
import socket, sys
ip, upstream, port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("0.0.0.0", port))
srv.listen(4)
client = socket.create_connection(("127.0.0.1", port))
conn, _ = srv.accept()
client.sendall(b"ping")
assert conn.recv(4) == b"ping"
up = socket.create_connection((ip, upstream))
up.sendall(b"hello upstream")
up.close()
dns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
dns.connect((ip, 53))
dns.send(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07example\x03com\x00\x00\x01\x00\x01")
print("served")
"#;

/// This host's address on its default route (a UDP connect sends nothing): a destination
/// that is not loopback, as a peer in another pod would be.
fn host_address() -> IpAddr {
    let s = UdpSocket::bind("0.0.0.0:0").unwrap();
    s.connect("192.0.2.1:9")
        .expect("no default route: the test needs a non-loopback address");
    let ip = s.local_addr().unwrap().ip();
    assert!(!ip.is_loopback() && !ip.is_unspecified(), "{ip}");
    ip
}

fn free_port() -> u16 {
    TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn ports(rule: &Value) -> BTreeSet<(String, u64)> {
    rule["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().unwrap().to_owned(),
                p["port"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// The SeccompProfile CRD's schema as the Security Profiles Operator declares it
/// (deploy/base-crds/crds/seccompprofile.yaml, version v1beta1): the required fields, the
/// enums of actions, architectures, flags and argument operators, integer errno and argument
/// values. Unknown fields are refused, as the API server does with strict field validation
/// (kubectl's default).
fn spo_seccomp_profile_schema() -> Value {
    let actions = json!([
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_TRAP",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY"
    ]);
    let arches = json!([
        "SCMP_ARCH_NATIVE",
        "SCMP_ARCH_X86",
        "SCMP_ARCH_X86_64",
        "SCMP_ARCH_X32",
        "SCMP_ARCH_ARM",
        "SCMP_ARCH_AARCH64",
        "SCMP_ARCH_MIPS",
        "SCMP_ARCH_MIPS64",
        "SCMP_ARCH_MIPS64N32",
        "SCMP_ARCH_MIPSEL",
        "SCMP_ARCH_MIPSEL64",
        "SCMP_ARCH_MIPSEL64N32",
        "SCMP_ARCH_PPC",
        "SCMP_ARCH_PPC64",
        "SCMP_ARCH_PPC64LE",
        "SCMP_ARCH_S390",
        "SCMP_ARCH_S390X",
        "SCMP_ARCH_PARISC",
        "SCMP_ARCH_PARISC64",
        "SCMP_ARCH_RISCV64"
    ]);
    let arg = json!({
        "type": "object",
        "required": ["index", "op"],
        "additionalProperties": false,
        "properties": {
            "index": {"type": "integer", "minimum": 0},
            "op": {"enum": [
                "SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ",
                "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_MASKED_EQ"
            ]},
            "value": {"type": "integer", "minimum": 0},
            "valueTwo": {"type": "integer", "minimum": 0}
        }
    });
    let syscall = json!({
        "type": "object",
        "required": ["action", "names"],
        "additionalProperties": false,
        "properties": {
            "action": {"enum": actions},
            "errnoRet": {"type": "integer", "minimum": 0},
            "names": {"type": "array", "items": {"type": "string"}},
            "args": {"type": "array", "maxItems": 6, "items": arg}
        }
    });
    let flags = json!([
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
    ]);
    let spec = json!({
        "type": "object",
        "required": ["defaultAction"],
        "additionalProperties": false,
        "properties": {
            "architectures": {"type": "array", "items": {"enum": arches}},
            "baseProfileName": {"type": "string"},
            "defaultAction": {"enum": actions},
            "flags": {"type": "array", "items": {"enum": flags}},
            "listenerMetadata": {"type": "string"},
            "listenerPath": {"type": "string"},
            "syscalls": {"type": "array", "items": syscall}
        }
    });
    let name = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    json!({
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "additionalProperties": false,
        "properties": {
            "apiVersion": {"const": "security-profiles-operator.x-k8s.io/v1beta1"},
            "kind": {"const": "SeccompProfile"},
            "metadata": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string", "pattern": name, "maxLength": 253}}
            },
            "spec": spec
        }
    })
}

/// `file`'s one object validated by jsonschema (of the kubernetes-validate environment)
/// against `schema`; returns the error text, empty when it passed.
fn jsonschema_errors(file: &Path, schema: &Value, scratch: &Path) -> String {
    let schema_file = scratch.join("schema.json");
    std::fs::write(&schema_file, schema.to_string()).unwrap();
    let python = workspace_path(xtask::KUBERNETES_VALIDATE_VENV).join("bin/python3");
    let o = Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml, jsonschema\n\
             docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]\n\
             assert len(docs) == 1, docs\n\
             v = jsonschema.Draft202012Validator(json.load(open(sys.argv[2])))\n\
             for e in v.iter_errors(docs[0]): print(list(e.absolute_path), e.message)",
        ])
        .arg(file)
        .arg(&schema_file)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

privileged_test!(
    #[scratch = "k8s-objects"]
    fn rendered_objects_pass_their_schemas_and_match_the_recording(dir: TempDir) {
        let ip = host_address();
        let upstream = TcpListener::bind((ip, 0)).unwrap();
        let upstream_port = upstream.local_addr().unwrap().port();
        let got = std::thread::spawn(move || {
            let (mut c, _) = upstream.accept().unwrap();
            let mut s = String::new();
            c.read_to_string(&mut s).unwrap();
            s
        });
        let port = free_port();
        let profile = dir.join("web");
        let o = run_ok(
            profiler()
                .args(["record", "--quiet", "--name", "web", "--out"])
                .arg(&profile)
                .args(["--", "python3", "-c", SERVER])
                .arg(ip.to_string())
                .arg(upstream_port.to_string())
                .arg(port.to_string()),
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("served"));
        assert_eq!(got.join().unwrap(), "hello upstream");

        // What the recording saw, which the policy must match.
        let network = &read_json(&profile.join("image-profile.json"))["network"];
        let has = |key: &str, v: &str| {
            network[key]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x.as_str() == Some(v))
        };
        assert!(
            has("bound", &format!("AF_INET 0.0.0.0:{port}")),
            "{network:#}"
        );
        assert!(
            has("connected", &format!("AF_INET {ip}:{upstream_port}")),
            "{network:#}"
        );
        assert!(
            has("connected", &format!("AF_INET 127.0.0.1:{port}")),
            "{network:#}"
        );
        assert!(has("connected", &format!("AF_INET {ip}:53")), "{network:#}");
        assert_eq!(network["listens"], true);

        let policy_file = profile.join("networkpolicy.yaml");
        kubernetes_validate_strict(&policy_file);
        let docs = yaml_documents(&policy_file);
        assert_eq!(docs.len(), 1);
        let p = &docs[0];
        assert_eq!(p["kind"], "NetworkPolicy");
        assert_eq!(p["metadata"]["name"], "web");
        assert_eq!(
            p["spec"]["podSelector"]["matchLabels"],
            json!({"app": "web"})
        );
        assert_eq!(p["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
        // Ingress: exactly the listening port, over TCP, from any peer (clients are not
        // recorded); the loopback client needed nothing.
        let ingress = p["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1, "{p:#}");
        assert_eq!(ports(&ingress[0]), [("TCP".to_owned(), port as u64)].into());
        assert!(ingress[0].get("from").is_none(), "{p:#}");
        // Egress: the upstream host (one address) on its port, and DNS to kube-dns; nothing
        // for loopback, and the recording host's DNS server is no destination in a cluster.
        let egress = p["spec"]["egress"].as_array().unwrap();
        assert_eq!(egress.len(), 2, "{p:#}");
        let up = &egress[0];
        assert_eq!(up["to"], json!([{"ipBlock": {"cidr": format!("{ip}/32")}}]));
        let up_ports = ports(up);
        assert!(
            up_ports.contains(&("TCP".to_owned(), upstream_port as u64)),
            "{p:#}"
        );
        assert!(
            up_ports.iter().all(|(_, n)| *n == upstream_port as u64),
            "{p:#}"
        );
        let dns = &egress[1];
        assert_eq!(
            dns["to"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
            "kube-system"
        );
        assert_eq!(
            dns["to"][0]["podSelector"]["matchLabels"]["k8s-app"],
            "kube-dns"
        );
        assert_eq!(
            ports(dns),
            [("TCP".to_owned(), 53), ("UDP".to_owned(), 53)].into()
        );
        let text = std::fs::read_to_string(&policy_file).unwrap();
        assert!(!text.contains("127.0.0.1"), "{text}");

        // The SeccompProfile: the CRD's schema (kubernetes-validate bundles only the built-in
        // kinds), and the same syscalls as seccomp.json.
        let spo = profile.join("seccompprofile.yaml");
        let errors = jsonschema_errors(&spo, &spo_seccomp_profile_schema(), dir.path());
        assert!(errors.is_empty(), "{errors}");
        // The check catches what the operator would refuse (a string errno, an unknown field).
        let bad = dir.join("bad-spo.yaml");
        std::fs::write(
            &bad,
            std::fs::read_to_string(&spo)
                .unwrap()
                .replace("defaultAction:", "defaultAktion: x\n  defaultAction:"),
        )
        .unwrap();
        assert!(
            !jsonschema_errors(&bad, &spo_seccomp_profile_schema(), dir.path()).is_empty(),
            "the schema check accepts anything"
        );
        let sp = &yaml_documents(&spo)[0];
        assert_eq!(sp["metadata"]["name"], "web");
        let spo_allowed: BTreeSet<String> = sp["spec"]["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
            .flat_map(|r| r["names"].as_array().unwrap().clone())
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        assert_eq!(spo_allowed, allowed_names(&profile.join("seccomp.json")));
        assert!(spo_allowed.contains("listen") && spo_allowed.contains("connect"));

        // The node agent: every object passes, and the hook it installs talks to the socket
        // its DaemonSet serves on.
        let agent = dir.join("node-agent.yaml");
        run_ok(
            profiler()
                .args([
                    "kubernetes",
                    "node-agent",
                    "--image",
                    "registry.example/profiler:0.1",
                    "--out",
                ])
                .arg(&agent),
        );
        kubernetes_validate_strict(&agent);
        let docs = yaml_documents(&agent);
        let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
        assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
        let hook: Value =
            serde_json::from_str(docs[1]["data"]["profiler.json"].as_str().unwrap()).unwrap();
        let pod = &docs[2]["spec"]["template"]["spec"];
        assert_eq!(pod["hostPID"], true);
        let serve = &pod["containers"][0];
        assert_eq!(serve["securityContext"]["privileged"], true);
        let cmd: Vec<&str> = serve["command"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(cmd[1], "serve");
        assert_eq!(hook["hook"]["args"][3].as_str(), Some(cmd[3]));
        // A value that is not a DNS-1123 name is refused, with nothing written.
        let o = profiler()
            .args([
                "kubernetes",
                "node-agent",
                "--image",
                "x",
                "--namespace",
                "Not_A_Name",
                "--out",
            ])
            .arg(dir.join("refused.yaml"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        assert!(!dir.join("refused.yaml").exists());
    }
);

privileged_test!(
    #[scratch = "k8s-replicas"]
    fn replicas_merge_with_coverage_one_folder_per_workload(dir: TempDir) {
        // Three replicas of one command; only the second finds the flag and calls getsid.
        let flag = dir.join("flag");
        let script = format!(
            "import os\nif os.path.exists({:?}): os.getsid(0)\n",
            flag.display().to_string()
        );
        let mut inputs = Vec::new();
        for i in 0..3 {
            if i == 1 {
                std::fs::write(&flag, "").unwrap();
            } else {
                let _ = std::fs::remove_file(&flag);
            }
            let out = dir.join(&format!("replica-{i}"));
            record(&out, &["python3", "-c", &script]);
            inputs.push(out);
        }
        let other = dir.join("other");
        record(&other, &["/bin/true"]);
        inputs.insert(1, other);

        let merged = dir.join("merged");
        let o = run_ok(
            profiler()
                .args(["merge", "--by-workload", "--out"])
                .arg(&merged)
                .args(&inputs),
        );
        let mut folders: Vec<String> = std::fs::read_dir(&merged)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        folders.sort();
        assert_eq!(folders, ["python3", "true"]);
        let cov = read_json(&merged.join("python3/coverage.json"));
        assert_eq!(cov["run_count"], 3);
        assert_eq!(cov["runs"].as_array().unwrap().len(), 3);
        assert_eq!(cov["syscalls"]["x86_64"]["getsid"]["runs"], 1, "{cov:#}");
        assert!(
            cov["syscalls"]["x86_64"]["getsid"]["first_seen_in"]
                .as_str()
                .unwrap()
                .contains("replica-1")
        );
        assert_eq!(cov["syscalls"]["x86_64"]["execve"]["runs"], 3);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(stderr.contains("x86_64/getsid (1 of 3 runs)"), "{stderr}");
        // The other workload is merged on its own.
        let cov = read_json(&merged.join("true/coverage.json"));
        assert_eq!(cov["run_count"], 1);
        assert!(cov["syscalls"]["x86_64"].get("getsid").is_none());
        // Each folder is a full profile folder, the Kubernetes files included.
        for f in [
            "seccomp.json",
            "kubernetes.yaml",
            "seccompprofile.yaml",
            "networkpolicy.yaml",
        ] {
            assert!(merged.join("python3").join(f).exists(), "{f}");
        }
        assert!(allowed_names(&merged.join("python3/seccomp.json")).contains("getsid"));
        assert!(!allowed_names(&merged.join("true/seccomp.json")).contains("getsid"));
    }
);

/// `podman GLOBAL... run --rm --network none FLAGS... IMAGE /bin/sh -c SCRIPT`.
fn podman_sh(global: &[&str], flags: &[&str], script: &str) -> std::process::Output {
    let (conf, argv) = podman_argv();
    with_timeout(&argv[0])
        .env("CONTAINERS_CONF", conf)
        .args(&argv[1..])
        .args(global)
        .args(["run", "--rm", "--network", "none"])
        .args(flags)
        .args([PODMAN_IMAGE, "/bin/sh", "-c", script])
        .output()
        .unwrap()
}

/// A `profiler serve` child, stopped when the test ends however it ends.
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
            let _ = self.0.wait();
        }
    }
}

privileged_test!(
    /// The node agent's path, with podman standing in for CRI-O: containers started with the
    /// annotations CRI-O gives a pod's containers (the labels with the pod-template hash) are
    /// recorded by `profiler serve` through the hook, and `merge --by-workload` merges the
    /// replicas of one template apart from another workload, with coverage.
    #[scratch = "k8s-hook"]
    fn hook_recorded_replicas_merge_by_pod_template(dir: TempDir) {
        let socket = dir.join("profiler.sock");
        let hooks = dir.join("hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        // The hook file the node agent installs, pointing at this build.
        let agent = dir.join("agent.yaml");
        run_ok(
            profiler()
                .args(["kubernetes", "node-agent", "--image", "x", "--socket"])
                .arg(&socket)
                .arg("--out")
                .arg(&agent),
        );
        let docs = yaml_documents(&agent);
        let mut hook: Value =
            serde_json::from_str(docs[1]["data"]["profiler.json"].as_str().unwrap()).unwrap();
        hook["hook"]["path"] = json!(profiler_bin());
        std::fs::write(hooks.join("profiler.json"), hook.to_string()).unwrap();
        let out = dir.join("profiles");
        let mut server = Server(
            profiler()
                .args(["serve", "--quiet", "--socket"])
                .arg(&socket)
                .arg("--out")
                .arg(&out)
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap(),
        );
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(socket.exists(), "profiler serve did not start");
        let hooks_dir = hooks.display().to_string();
        let pod = |name: &str, hash: &str, container: &str, script: &str| {
            let labels = json!({
                "app": container,
                "pod-template-hash": hash,
                "io.kubernetes.pod.namespace": "shop",
                "io.kubernetes.pod.name": name,
                "io.kubernetes.container.name": container,
            });
            let o = podman_sh(
                &["--hooks-dir", &hooks_dir],
                &[
                    "--annotation",
                    "io.profiler.record=true",
                    "--annotation",
                    &format!("io.profiler.name={container}"),
                    // podman reads --annotation as CSV: quoted, its quotes doubled.
                    "--annotation",
                    &format!(
                        "\"io.kubernetes.cri-o.Labels={}\"",
                        labels.to_string().replace('"', "\"\"")
                    ),
                ],
                script,
            );
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        };
        // Three replicas of web; only the second syncs. Then another workload.
        pod("web-7d9f-a", "7d9f", "web", "echo a");
        pod("web-7d9f-b", "7d9f", "web", "echo b; sync");
        pod("web-7d9f-c", "7d9f", "web", "echo c");
        pod("worker-5c4b-a", "5c4b", "worker", "echo w");
        let folders = ["web", "web-2", "web-3", "worker"];
        for _ in 0..500 {
            if folders
                .iter()
                .all(|f| out.join(f).join("seccomp.json").exists())
            {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::kill(server.0.id() as i32, libc::SIGTERM) };
        assert!(server.0.wait().unwrap().success());
        for f in folders {
            assert!(
                out.join(f).join("seccomp.json").exists(),
                "{f} not recorded"
            );
        }
        let trace = read_json(&out.join("web-2/trace.json"));
        assert_eq!(
            trace["workload"]["replica_of"]["name"], "web",
            "{:#}",
            trace["workload"]
        );

        let merged = dir.join("merged");
        let inputs: Vec<_> = folders.iter().map(|f| out.join(f)).collect();
        let o = run_ok(
            profiler()
                .args(["merge", "--by-workload", "--out"])
                .arg(&merged)
                .args(&inputs),
        );
        let cov = read_json(&merged.join("web/coverage.json"));
        assert_eq!(cov["run_count"], 3, "{cov:#}");
        assert_eq!(cov["syscalls"]["x86_64"]["sync"]["runs"], 1, "{cov:#}");
        assert!(
            cov["syscalls"]["x86_64"]["sync"]["first_seen_in"]
                .as_str()
                .unwrap()
                .contains("web-2")
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("x86_64/sync (1 of 3 runs)"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        let cov = read_json(&merged.join("worker/coverage.json"));
        assert_eq!(cov["run_count"], 1);
        assert!(cov["syscalls"]["x86_64"].get("sync").is_none());
        // The merged folder's Kubernetes files name the workload.
        let policy = yaml_documents(&merged.join("web/networkpolicy.yaml"));
        assert_eq!(
            policy[0]["spec"]["podSelector"]["matchLabels"]["app"],
            "web"
        );
        kubernetes_validate_strict(&merged.join("web/networkpolicy.yaml"));
    }
);
