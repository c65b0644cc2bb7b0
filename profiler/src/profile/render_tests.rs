//! The renderers' outputs parsed back, and compared with checked-in snapshots.

use super::capabilities::CapabilityProfile;
use super::docker::*;
use super::image_profile::*;
use super::kubernetes::*;
use super::seccomp::DockerSeccomp;
use crate::trace::image::{DirectoryFacts, ImageInfo};
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
    let template = pod_template(
        &image,
        &caps,
        "web",
        "profiles/web.json",
        DEFAULT_HEADROOM,
        None,
    );
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
        sealing: Err(crate::profile::landlock::NOT_A_CONTAINER.into()),
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
    let flags = deployment(&image, &caps).run_flags(Engine::Docker, true);
    snapshot("docker-run.txt", &flags);
    let lines = shell_lines(&flags);
    for f in [
        "--read-only",
        // Its owner was not seen: the user the workload ran as wrote it, so it is theirs.
        "--tmpfs /tmp/www:rw,nosuid,nodev,uid=1000,gid=1000,mode=0700",
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
    let flags = deployment(&image, &caps).run_flags(Engine::Podman, true);
    let lines = shell_lines(&flags);
    let has = |f: &str| lines.contains(&f.split(' ').map(str::to_owned).collect());
    // podman refuses uid=/gid= on --tmpfs; U chowns it to the container user (1000:1000,
    // who owns /data in the image).
    assert!(has("--tmpfs /data:rw,nosuid,nodev,mode=0750,U"), "{flags}");
    assert!(
        has("--sysctl net.ipv4.ip_unprivileged_port_start=80"),
        "{flags}"
    );
    let docker = deployment(&image, &caps).run_flags(Engine::Docker, true);
    assert!(!docker.contains("--sysctl"), "{docker}");
    // Kubernetes keeps 1024 like podman: the pod sets the (safe) sysctl.
    let pod = pod_template(&image, &caps, "web", "p.json", DEFAULT_HEADROOM, None)
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
        let flags = deployment(&image, &caps).run_flags(engine, true);
        let words: Vec<String> = shell_lines(&flags).into_iter().flatten().collect();
        assert!(
            !words
                .iter()
                .any(|w| w == "--privileged" || w.starts_with("--volume=")),
            "{flags}"
        );
        // Every line parses as shell words, and a path with spaces stays one word.
        assert!(
            words
                .iter()
                .any(|w| w.starts_with("/a b/$(reboot):rw,nosuid,nodev")),
            "{flags}"
        );
        assert!(!words.iter().any(|w| w.contains("uid=0:rw")), "{flags}");
    }
    let compose = serde_yaml_ng::to_string(&deployment(&image, &caps).compose_service()).unwrap();
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

#[test]
fn a_sealed_container_runs_the_sealing_entrypoint_with_its_rules_read_only() {
    let (image, caps, _) = sample();
    let sealing = crate::profile::landlock::Sealing {
        binary: "/opt/profiler/profiler-seal".into(),
        rules: "/profiles/web/landlock.json".into(),
    };
    let mut d = deployment(&image, &caps);
    d.sealing = Ok(sealing.clone());
    let sealed = shell_lines(&d.run_flags(Engine::Docker, true));
    assert!(sealed.contains(&vec![
        "--entrypoint".to_owned(),
        "/.profiler-seal/profiler-seal".to_owned()
    ]));
    assert!(sealed.contains(&vec![
        "--volume".to_owned(),
        "/opt/profiler/profiler-seal:/.profiler-seal/profiler-seal:ro".to_owned()
    ]));
    assert!(sealed.contains(&vec![
        "--volume".to_owned(),
        "/profiles/web/landlock.json:/.profiler-seal/landlock.json:ro".to_owned()
    ]));
    let unsealed = d.run_flags(Engine::Docker, false);
    assert!(!unsealed.contains("profiler-seal"), "{unsealed}");
    let compose = d.compose_service();
    assert_eq!(
        compose
            .get("entrypoint")
            .and_then(|v| v.as_sequence())
            .map(|v| v.len()),
        Some(1)
    );
    let volumes = compose
        .get("volumes")
        .and_then(|v| v.as_sequence())
        .unwrap();
    assert!(
        volumes.iter().any(|v| v.as_str() == Some("/srv/db")),
        "{volumes:?}"
    );
    assert!(
        volumes
            .iter()
            .any(|v| v.as_str()
                == Some("/profiles/web/landlock.json:/.profiler-seal/landlock.json:ro")),
        "{volumes:?}"
    );
    let pod = pod_template(
        &image,
        &caps,
        "web",
        "p.json",
        DEFAULT_HEADROOM,
        Some(&sealing),
    );
    let spec = pod.spec.unwrap();
    let c = &spec.containers[0];
    assert_eq!(
        c.command.as_deref(),
        Some(&["/.profiler-seal/profiler-seal".to_owned()][..])
    );
    assert!(
        c.args.is_none(),
        "the sealing binary runs the recorded command itself"
    );
    let hosts: Vec<String> = spec
        .volumes
        .unwrap()
        .iter()
        .filter_map(|v| v.host_path.as_ref().map(|h| h.path.clone()))
        .collect();
    assert_eq!(
        hosts,
        ["/opt/profiler/profiler-seal", "/profiles/web/landlock.json"]
    );
    let mounts = c.volume_mounts.as_ref().unwrap();
    assert!(
        mounts
            .iter()
            .filter(|m| m.mount_path.starts_with("/.profiler-seal/"))
            .all(|m| m.read_only == Some(true))
    );
}

#[test]
fn network_policy_parses_back_and_matches_the_recording() {
    let (mut image, _, _) = sample();
    let n = &mut image.network;
    n.sockets = ["AF_INET/SOCK_STREAM/0".to_owned()].into();
    n.bound = [
        "AF_INET 0.0.0.0:80".to_owned(),
        "AF_INET 127.0.0.1:9090".to_owned(),
    ]
    .into();
    n.listens = true;
    n.connected = [
        "AF_INET 10.0.0.5:5432".to_owned(),
        "AF_INET 127.0.0.1:11211".to_owned(),
        "AF_INET 10.96.0.10:53".to_owned(),
    ]
    .into();
    let yaml = super::network_policy::network_policy_yaml("web", &image.network).unwrap();
    snapshot("networkpolicy.yaml", &yaml);
    let p: k8s_openapi::api::networking::v1::NetworkPolicy =
        serde_yaml_ng::from_str(&yaml).unwrap();
    let v: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
    assert_eq!(v["kind"], "NetworkPolicy");
    let spec = p.spec.unwrap();
    assert_eq!(
        spec.pod_selector.unwrap().match_labels.unwrap()["app"],
        "web"
    );
    let ingress = spec.ingress.unwrap();
    assert_eq!(ingress.len(), 1);
    let ports: Vec<String> = ingress[0]
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| format!("{:?}/{:?}", p.protocol, p.port))
        .collect();
    // 9090 was bound on loopback only: pod-local.
    assert_eq!(ports, [r#"Some("TCP")/Some(Int(80))"#]);
    let egress = spec.egress.unwrap();
    // The database (an ipBlock of one host) and DNS; memcached on loopback needs nothing.
    assert_eq!(egress.len(), 2, "{yaml}");
    let to = egress[0].to.as_ref().unwrap()[0].ip_block.as_ref().unwrap();
    assert_eq!(to.cidr, "10.0.0.5/32");
    assert_eq!(
        egress[0].ports.as_ref().unwrap()[0].port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(5432))
    );
    let dns = &egress[1];
    assert_eq!(dns.ports.as_ref().unwrap().len(), 2);
    assert!(!yaml.contains("10.96.0.10"), "{yaml}");
}

#[test]
fn node_agent_snapshot() {
    let o = super::node_agent::NodeAgentOptions {
        image: "registry.example/profiler:0.1".to_owned(),
        ..Default::default()
    };
    let yaml = super::node_agent::node_agent_yaml(&o).unwrap();
    snapshot("node-agent.yaml", &yaml);
    let docs: Vec<serde_json::Value> = serde_yaml_ng::Deserializer::from_str(&yaml)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .collect();
    let kinds: Vec<&str> = docs.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["Namespace", "ConfigMap", "DaemonSet"]);
    // The hook file in the ConfigMap is the one the install step copies.
    let hook: serde_json::Value =
        serde_json::from_str(docs[1]["data"]["profiler.json"].as_str().unwrap()).unwrap();
    assert_eq!(hook["hook"]["args"][1], "hook");
}
