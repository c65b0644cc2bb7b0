//! Containers recorded through podman (runc underneath, kernel overlayfs storage) and their
//! profiles enforced by podman itself.
use std::process::Command;

use integration_tests::*;

const WORKLOAD: &str = "set -e; mkdir -p /tmp/w/d; echo data > /tmp/w/d/f; mv /tmp/w/d/f /tmp/w/g; \
    cat /tmp/w/g; (echo child) & wait; trap 'echo got-hup' HUP; kill -HUP $$; rm -r /tmp/w; echo done";

fn podman(args: &[&str]) -> std::process::Output {
    let (conf, argv) = podman_argv();
    Command::new(&argv[0])
        .env("CONTAINERS_CONF", conf)
        .args(&argv[1..])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn podman_container_passes_under_its_profile() {
    if !can_record() {
        return;
    }
    let (conf, argv) = podman_argv();
    let dir = TempDir::new("podman");
    let profile = dir.join("profile");
    let o = profiler()
        .args(["record", "--containers", "--out"])
        .arg(&profile)
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
            WORKLOAD,
        ])
        .output()
        .unwrap();
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
        let mut args = vec![
            "run",
            "--rm",
            "--network",
            "none",
            "--security-opt",
            &seccomp,
            "--cap-drop",
            "ALL",
        ];
        if nnp {
            args.extend(["--security-opt", "no-new-privileges"]);
        }
        args.extend([PODMAN_IMAGE, "/bin/sh", "-c", WORKLOAD]);
        let o = podman(&args);
        assert!(
            o.status.success(),
            "nnp {nnp}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), expected);
    }
    let seccomp = format!("seccomp={}", profile.join("seccomp.json").display());
    let o = podman(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--security-opt",
        &seccomp,
        PODMAN_IMAGE,
        "/bin/sh",
        "-c",
        "ln -s /a /tmp/b",
    ]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"));
}
