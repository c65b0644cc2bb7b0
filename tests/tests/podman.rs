//! Containers recorded through podman (runc underneath, kernel overlayfs storage) and their
//! profiles enforced by podman itself.
use integration_tests::*;

const WORKLOAD: &str = "set -e; mkdir -p /tmp/w/d; echo data > /tmp/w/d/f; mv /tmp/w/d/f /tmp/w/g; \
    cat /tmp/w/g; (echo child) & wait; trap 'echo got-hup' HUP; kill -HUP $$; rm -r /tmp/w; echo done";

fn podman(args: &[&str]) -> std::process::Output {
    let (conf, argv) = podman_argv();
    with_timeout(&argv[0])
        .env("CONTAINERS_CONF", conf)
        .args(&argv[1..])
        .args(args)
        .output()
        .unwrap()
}

/// `podman GLOBAL... run --rm --network none FLAGS... IMAGE /bin/sh -c SCRIPT`.
fn podman_sh(global: &[&str], flags: &[&str], script: &str) -> std::process::Output {
    let mut args = global.to_vec();
    args.extend(["run", "--rm", "--network", "none"]);
    args.extend(flags);
    args.extend([PODMAN_IMAGE, "/bin/sh", "-c", script]);
    podman(&args)
}

/// The same container, recorded: `profiler record --containers --out OUT -- podman run ...`.
fn record_podman_sh(out: &std::path::Path, script: &str) -> std::process::Output {
    let (conf, argv) = podman_argv();
    profiler()
        .args(["record", "--containers", "--out"])
        .arg(out)
        .env("CONTAINERS_CONF", conf)
        .arg("--")
        .args(&argv)
        .args([
            "run",
            "--rm",
            "--network",
            "none",
            PODMAN_IMAGE,
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .unwrap()
}

privileged_test!(
    #[scratch = "podman"]
    fn podman_container_passes_under_its_profile(dir: TempDir) {
        let profile = dir.join("profile");
        let o = record_podman_sh(&profile, WORKLOAD);
        let expected = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            o.status.success() && expected.contains("got-hup"),
            "{}\n{expected}",
            String::from_utf8_lossy(&o.stderr)
        );
        let caps = read_json(&profile.join("capabilities.json"));
        // overlayfs checks CAP_SYS_ADMIN/CAP_DAC_* with its mounter's credentials for the
        // container's file operations: not the workload's capabilities.
        assert_eq!(caps["add"], serde_json::json!([]), "{caps:#}");
        let names = allowed_names(&profile.join("seccomp.json"));
        assert!(!names.contains("mount") && !names.contains("pivot_root"));

        for nnp in [false, true] {
            let seccomp = format!("seccomp={}", profile.join("seccomp.json").display());
            let mut flags = vec!["--security-opt", &seccomp, "--cap-drop", "ALL"];
            if nnp {
                flags.extend(["--security-opt", "no-new-privileges"]);
            }
            let o = podman_sh(&[], &flags, WORKLOAD);
            assert!(
                o.status.success(),
                "nnp {nnp}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
        }
        let seccomp = format!("seccomp={}", profile.join("seccomp.json").display());
        let o = podman_sh(&[], &["--security-opt", &seccomp], "ln -s /a /tmp/b");
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"));
    }
);

privileged_test!(
    /// The OCI-hook path: `profiler serve` records a container podman starts on its own, when
    /// `profiler hook` is installed as a createRuntime hook; the profile then passes under podman.
    #[scratch = "podman-hook"]
    fn podman_container_recorded_through_oci_hook(dir: TempDir) {
        let socket = dir.join("profiler.sock");
        let hooks = dir.join("hooks.d");
        std::fs::create_dir_all(&hooks).unwrap();
        let hook = serde_json::json!({
            "version": "1.0.0",
            "hook": {
                "path": profiler_bin(),
                "args": ["profiler", "hook", "--required", "--socket", socket],
            },
            "when": { "annotations": { "io\\.profiler\\.record": "true" } },
            "stages": ["createRuntime"],
        });
        std::fs::write(hooks.join("profiler.json"), hook.to_string()).unwrap();
        let out = dir.join("profiles");
        let mut server = profiler()
            .args(["serve", "--quiet", "--socket"])
            .arg(&socket)
            .arg("--out")
            .arg(&out)
            .spawn()
            .unwrap();
        for _ in 0..500 {
            if socket.exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(socket.exists(), "profiler serve did not start");
        let hooks_dir = hooks.display().to_string();
        let o = podman_sh(
            &["--hooks-dir", &hooks_dir],
            &[
                "--annotation",
                "io.profiler.record=true",
                "--annotation",
                "io.profiler.name=hooked",
            ],
            WORKLOAD,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let expected = String::from_utf8_lossy(&o.stdout).into_owned();
        // A container without the annotation is not recorded.
        let o = podman_sh(&["--hooks-dir", &hooks_dir], &[], "true");
        assert!(o.status.success());
        let profile = out.join("hooked");
        for _ in 0..300 {
            if profile.join("seccomp.json").exists() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        unsafe { libc::kill(server.id() as i32, libc::SIGTERM) };
        assert!(server.wait().unwrap().success());
        assert!(
            profile.join("seccomp.json").exists(),
            "no profile written for the hooked container"
        );
        assert_eq!(
            std::fs::read_dir(&out).unwrap().count(),
            1,
            "only the annotated container is recorded"
        );
        let trace = read_json(&profile.join("trace.json"));
        assert!(trace["seccomp_filter_loads"].as_u64().unwrap() >= 1);
        let image = read_json(&profile.join("image-profile.json"));
        assert!(
            image["executables"]
                .as_object()
                .unwrap()
                .contains_key("/bin/sh"),
            "{image:#}"
        );
        assert!(
            image["written_paths"]
                .as_object()
                .unwrap()
                .contains_key("/tmp/w/g"),
            "{image:#}"
        );

        let seccomp = format!("seccomp={}", profile.join("seccomp.json").display());
        let o = podman_sh(
            &[],
            &["--security-opt", &seccomp, "--cap-drop", "ALL"],
            WORKLOAD,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
    }
);

/// Installed on a node where nobody records, the hook must not break containers.
#[test]
fn hook_without_server_lets_the_container_run() {
    let o = profiler()
        .args(["hook", "--socket", "/nonexistent/profiler.sock"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write as _;
            c.stdin.take().unwrap().write_all(
                br#"{"ociVersion":"1.0.2","id":"x","status":"creating","pid":1,"bundle":"/"}"#,
            )?;
            c.wait_with_output()
        })
        .unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("not recording"));
}

privileged_test!(
    /// The generated `podman-run.txt` flags hold (read-only root, tmpfs for the written
    /// directories, capabilities, seccomp, no-new-privileges).
    fn podman_runs_the_service_under_its_generated_flags() {
        let script = "set -e; mkdir -p /tmp/www; echo served > /tmp/www/index.html; echo started >> /data/app.log; \
        httpd -p 127.0.0.1:8080 -h /tmp/www; until wget -q -O - http://127.0.0.1:8080/index.html; do sleep 0.1; done";
        let dir = TempDir::new("podman-image");
        let profile = dir.join("web");
        let o = record_podman_sh(&profile, script);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(String::from_utf8_lossy(&o.stdout).contains("served"));
        let flags = podman_run_flags(&profile);
        assert!(flags.iter().any(|a| a == "--read-only"), "{flags:?}");
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let o = podman_sh(&[], &flags, script);
        assert!(
            o.status.success(),
            "{flags:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(String::from_utf8_lossy(&o.stdout).contains("served"));
    }
);
