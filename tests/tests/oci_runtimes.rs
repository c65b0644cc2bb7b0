//! Plain OCI bundles under runc and crun: recorded with
//! `profiler record --containers -- runc|crun run`, then run by the same runtime with the
//! generated `linux.seccomp` and `process.capabilities`.
use std::path::{Path, PathBuf};
use std::process::Command;

use integration_tests::*;

const SCRIPT: &str = "set -e; mkdir -p /tmp/w; echo hello > /tmp/w/f; cat /tmp/w/f; \
    (echo from-child) & wait; trap 'echo got-term' TERM; kill -TERM $$; ls /tmp/w";

/// crun 1.8 refuses hybrid cgroup hosts ("cgroups in hybrid mode not supported, drop all
/// controllers from cgroupv2") unless cgroup2 looks controller-less: a wrapper named `crun`
/// runs it in a private mount namespace with an empty file over cgroup.controllers
/// (../shared/platform.md). On a unified host the real crun is used as is.
fn crun_command(dir: &Path) -> PathBuf {
    let controllers = Path::new("/sys/fs/cgroup/unified/cgroup.controllers");
    if !controllers.exists() {
        return PathBuf::from("crun");
    }
    let wrapper_dir = dir.join("crun-wrapper");
    std::fs::create_dir_all(&wrapper_dir).unwrap();
    let empty = wrapper_dir.join("empty");
    std::fs::write(&empty, "").unwrap();
    let wrapper = wrapper_dir.join("crun");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec unshare -m --propagation private sh -c 'mount --bind {} {} && exec crun \"$@\"' crun \"$@\"\n",
            empty.display(),
            controllers.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    wrapper
}

privileged_test!(
    #[scratch = "runc"]
    fn runc_bundle_passes_under_its_oci_profile_with_and_without_nnp(dir: TempDir) {
        check_runtime(&dir, PathBuf::from("runc"));
    }
);

privileged_test!(
    #[scratch = "crun"]
    fn crun_bundle_passes_under_its_oci_profile_with_and_without_nnp(dir: TempDir) {
        let crun = crun_command(dir.path());
        check_runtime(&dir, crun);
    }
);

fn check_runtime(dir: &TempDir, runtime: PathBuf) {
    // Recorded without no-new-privileges: runc then loads the filter earlier, so the profile
    // also holds what runc does after the load in that mode (a superset of the NNP mode's).
    let bundle = oci_bundle(dir.path(), SCRIPT, false);
    let profile = dir.join("profile");
    let name = runtime.file_name().unwrap().to_string_lossy().into_owned();
    let id = format!("profiler-test-{name}-{}", std::process::id());
    let o = profiler()
        .args(["record", "--containers", "--out"])
        .arg(&profile)
        .arg("--")
        .arg(&runtime)
        .args(["run", "--bundle"])
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
    // Both runtimes load the filter, then drop privileges and exec.
    for runtime_needs in ["capset", "execve"] {
        assert!(names.contains(runtime_needs), "{runtime_needs} missing");
    }

    for nnp in [false, true] {
        std::fs::remove_dir_all(bundle.join("rootfs/tmp/w")).unwrap();
        apply_oci_profile(&bundle, &profile, nnp);
        let o = Command::new(&runtime)
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
    let o = Command::new(&runtime)
        .args(["run", "--bundle"])
        .arg(&bundle)
        .arg(format!("{id}-deny"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"));
}

privileged_test!(
    /// `profiler enforce` on a runc bundle (its config.json is rewritten into a copy, as for
    /// recording): a program the recording never ran is killed before it runs.
    #[scratch = "oci-enforce"]
    fn enforce_kills_an_unrecorded_program_in_a_runc_bundle(dir: TempDir) {
        // `ls` is not the last command, so the shell forks for it (busybox sh execs a last
        // command in place): the profile must allow the forks of the run under enforcement.
        let recorded = "echo hello; ls / > /dev/null; echo done";
        let bundle = oci_bundle(dir.path(), recorded, false);
        let runc_run = |id: &str| -> Vec<std::ffi::OsString> {
            vec![
                "runc".into(),
                "run".into(),
                "--bundle".into(),
                bundle.clone().into(),
                format!("profiler-enforce-{id}-{}", std::process::id()).into(),
            ]
        };
        let profile = dir.join("profile");
        let o = profiler()
            .args(["record", "-q", "--containers", "--out"])
            .arg(&profile)
            .arg("--")
            .args(runc_run("record"))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

        let mut config = read_json(&bundle.join("config.json"));
        config["process"]["args"] = serde_json::json!([
            "/bin/sh",
            "-c",
            format!("{recorded}; /bin/cat /etc/passwd; echo after")
        ]);
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&config).unwrap(),
        )
        .unwrap();
        let log = dir.join("violations.jsonl");
        let o = profiler()
            .args(["enforce", "--containers", "--profile"])
            .arg(&profile)
            .arg("--log")
            .arg(&log)
            .arg("--")
            .args(runc_run("enforce"))
            .output()
            .unwrap();
        assert_cat_killed_and_run_went_on(&o, &log);
    }
);
