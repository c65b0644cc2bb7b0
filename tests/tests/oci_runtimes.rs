//! Plain OCI bundles under runc: recorded with `profiler record --containers -- runc run`,
//! then run by runc with the generated `linux.seccomp` and `process.capabilities`.
use std::process::Command;

use integration_tests::*;

const SCRIPT: &str = "set -e; mkdir -p /tmp/w; echo hello > /tmp/w/f; cat /tmp/w/f; \
    (echo from-child) & wait; trap 'echo got-term' TERM; kill -TERM $$; ls /tmp/w";

#[test]
fn runc_bundle_passes_under_its_oci_profile_with_and_without_nnp() {
    if !can_record() {
        return;
    }
    let dir = TempDir::new("runc");
    // Recorded without no-new-privileges: runc then loads the filter earlier, so the profile
    // also holds what runc does after the load in that mode (a superset of the NNP mode's).
    let bundle = oci_bundle(dir.path(), SCRIPT, false);
    let profile = dir.join("profile");
    let id = format!("profiler-test-{}", std::process::id());
    let o = profiler()
        .args(["record", "--containers", "--out"])
        .arg(&profile)
        .args(["--", "runc", "run", "--bundle"])
        .arg(&bundle)
        .arg(&id)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let expected = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(
        expected.contains("got-term") && expected.contains("from-child"),
        "{expected}"
    );
    // The user's bundle is untouched.
    let config = read_json(&bundle.join("config.json"));
    assert!(config["linux"].get("seccomp").is_none());

    let names = allowed_names(&profile.join("seccomp.json"));
    assert!(
        !names.contains("pivot_root") && !names.contains("mount"),
        "runc set-up leaked in"
    );
    // What runc 1.1 does after loading the filter without NNP (../shared/platform.md).
    for runtime_needs in ["setgroups", "setuid", "setgid", "capset", "execve", "futex"] {
        assert!(names.contains(runtime_needs), "{runtime_needs} missing");
    }

    for nnp in [false, true] {
        std::fs::remove_dir_all(bundle.join("rootfs/tmp/w")).unwrap();
        apply_oci_profile(&bundle, &profile, nnp);
        let o = Command::new("runc")
            .args(["run", "--bundle"])
            .arg(&bundle)
            .arg(format!("{id}-{nnp}"))
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "nnp {nnp}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), expected, "nnp {nnp}");
    }

    // A syscall the container never made is denied.
    let mut config = read_json(&bundle.join("config.json"));
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", "ln -s /a /tmp/b"]);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    let o = Command::new("runc")
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("{id}-deny"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"));
}
