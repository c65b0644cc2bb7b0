//! Containers recorded through the real Docker Engine, and their profiles enforced by
//! Docker itself (`--security-opt seccomp=`, `--cap-drop ALL --cap-add`).
use std::time::Duration;

use integration_tests::*;

/// Files, processes, signals and loopback networking inside one container.
const WORKLOAD: &str = "set -e
mkdir -p /tmp/work/sub
echo data > /tmp/work/sub/file
cp /tmp/work/sub/file /tmp/work/copy
cat /tmp/work/copy
rm -r /tmp/work/sub
(sleep 0.05; echo child-done) &
wait
trap 'echo got-usr1' USR1
kill -USR1 $$
# The server's stdin must stay open: busybox nc stops at stdin EOF, maybe before the data.
sleep 30 | nc -l -p 8080 > /tmp/received &
until echo over-loopback | nc -w 2 127.0.0.1 8080; do sleep 0.1; done
until [ -s /tmp/received ]; do sleep 0.05; done
cat /tmp/received
chown nobody /tmp/received
echo done";

fn record_container(out: &std::path::Path, docker_args: &[&str]) -> std::process::Output {
    profiler()
        .args(["record", "--containers", "--out"])
        .arg(out)
        .args(["--", "docker", "run", "--rm", "--network", "none"])
        .args(docker_args)
        .output()
        .unwrap()
}

fn run_under_profile(profile: &std::path::Path, nnp: bool, cmd: &[&str]) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "run".into(),
        "--rm".into(),
        "--network".into(),
        "none".into(),
        format!(
            "--security-opt=seccomp={}",
            profile.join("seccomp.json").display()
        ),
        "--cap-drop=ALL".into(),
    ];
    args.extend(cap_add_flags(&profile.join("capabilities.json")));
    if nnp {
        args.push("--security-opt=no-new-privileges".into());
    }
    args.push(BUSYBOX_IMAGE.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    docker(&args)
}

privileged_test!(
    fn docker_container_passes_under_its_profile_and_unrecorded_syscalls_are_denied() {
        require_docker();
        let dir = TempDir::new("docker");
        let profile = dir.join("profile");
        let o = record_container(&profile, &[BUSYBOX_IMAGE, "/bin/sh", "-c", WORKLOAD]);
        assert!(
            o.status.success(),
            "recording failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let expected = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(
            expected.contains("over-loopback") && expected.contains("got-usr1"),
            "{expected}"
        );

        let trace = read_json(&profile.join("trace.json"));
        assert_eq!(trace["cgroup"]["container"], true);
        assert!(
            trace["seccomp_filter_loads"].as_u64().unwrap() >= 1,
            "runtime's filter load not seen"
        );
        let names = allowed_names(&profile.join("seccomp.json"));
        for needed in [
            "socket", "bind", "listen", "connect", "kill", "mkdir", "execve",
        ] {
            assert!(names.contains(needed), "{needed} missing from the profile");
        }
        // The runtime's set-up before the filter is not the container's business.
        for setup_only in ["pivot_root", "mount", "unshare", "sethostname"] {
            assert!(
                !names.contains(setup_only),
                "{setup_only} (runtime set-up) leaked into the profile"
            );
        }
        // chown to another user needs CAP_CHOWN, and only that.
        let caps = read_json(&profile.join("capabilities.json"));
        assert_eq!(caps["add"], serde_json::json!(["CAP_CHOWN"]), "{caps:#}");

        for nnp in [false, true] {
            let o = run_under_profile(&profile, nnp, &["/bin/sh", "-c", WORKLOAD]);
            assert!(
                o.status.success(),
                "fails under its profile (no-new-privileges {nnp}): {}",
                String::from_utf8_lossy(&o.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&o.stdout),
                expected,
                "no-new-privileges {nnp}"
            );
        }

        // Something the container never did is denied.
        assert!(!names.contains("symlink") && !names.contains("symlinkat"));
        let o = run_under_profile(&profile, false, &["/bin/sh", "-c", "ln -s /a /tmp/b"]);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        // And without CAP_CHOWN the chown fails.
        let o = docker(&[
            "run",
            "--rm",
            &format!(
                "--security-opt=seccomp={}",
                profile.join("seccomp.json").display()
            ),
            "--cap-drop=ALL",
            BUSYBOX_IMAGE,
            "/bin/sh",
            "-c",
            "echo x > /tmp/f; chown nobody /tmp/f",
        ]);
        assert!(!o.status.success(), "chown worked without CAP_CHOWN");
    }
);

privileged_test!(
    fn container_exit_code_is_propagated_and_profile_written() {
        require_docker();
        let dir = TempDir::new("docker-exit");
        let profile = dir.join("profile");
        let o = record_container(
            &profile,
            &[BUSYBOX_IMAGE, "/bin/sh", "-c", "echo failing; exit 3"],
        );
        assert_eq!(
            o.status.code(),
            Some(3),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(profile.join("seccomp.json").exists());
        assert!(allowed_names(&profile.join("seccomp.json")).contains("exit_group"));
    }
);

privileged_test!(
    fn container_that_never_starts_is_a_clear_error_with_nothing_written() {
        require_docker();
        let dir = TempDir::new("docker-nostart");
        // No such image: the engine refuses (125) before any container exists.
        let profile = dir.join("no-image");
        let o = record_container(
            &profile,
            &["profiler-test/no-such-image:latest", "/bin/true"],
        );
        assert_eq!(o.status.code(), Some(125));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("no container was started"), "{err}");
        assert!(!profile.exists());
        // The image exists but its command does not: runc sets the container up and fails to exec.
        let profile = dir.join("no-command");
        let o = record_container(&profile, &[BUSYBOX_IMAGE, "/no/such/command"]);
        assert!(!o.status.success());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("never started its entrypoint"), "{err}");
        assert!(!profile.exists());
    }
);

privileged_test!(
    /// Three containers started in parallel by a script get one profile each, each with only its
    /// own syscalls; a container started outside the recording at the same time is not recorded.
    fn parallel_containers_get_one_profile_each() {
        require_docker();
        let dir = TempDir::new("docker-parallel");
        let out = dir.join("profiles");
        let tag = format!("{}", std::process::id());
        let (a, b, c, outsider) = (
            format!("prof-a-{tag}"),
            format!("prof-b-{tag}"),
            format!("prof-c-{tag}"),
            format!("prof-outsider-{tag}"),
        );
        // An unrelated container doing rmdir the whole time.
        let outside = std::process::Command::new("docker")
            .args([
                "run",
                "--rm",
                "--name",
                &outsider,
                BUSYBOX_IMAGE,
                "/bin/sh",
                "-c",
            ])
            .arg("for i in $(seq 60); do mkdir /tmp/o; rmdir /tmp/o; sleep 0.05; done")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        let run = |name: &str, script: &str| {
            format!(
                "docker run --name {name} --cgroup-parent \"$PROFILER_CGROUP_PARENT\" \
             --security-opt seccomp=\"$PROFILER_RECORDING_SECCOMP\" {BUSYBOX_IMAGE} /bin/sh -c '{script}' &"
            )
        };
        let script = format!(
            "{} {} {} wait",
            run(&a, "mkdir /tmp/only-a && echo a"),
            run(&b, "ln -s /x /tmp/only-b && echo b"),
            run(&c, "sleep 0.2; echo c"),
        );
        let o = profiler()
            .args(["record", "--containers", "--out"])
            .arg(&out)
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        let _ = docker(&["rm", "-f", &a, &b, &c]);
        let mut outside = outside;
        let _ = outside.wait();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let pa = allowed_names(&out.join(&a).join("seccomp.json"));
        let pb = allowed_names(&out.join(&b).join("seccomp.json"));
        let pc = allowed_names(&out.join(&c).join("seccomp.json"));
        assert!(pa.contains("mkdir") && !pa.contains("symlink"), "a: {pa:?}");
        assert!(pb.contains("symlink") && !pb.contains("mkdir"), "b: {pb:?}");
        assert!(
            !pc.contains("mkdir")
                && !pc.contains("symlink")
                && (pc.contains("nanosleep") || pc.contains("clock_nanosleep")),
            "c: {pc:?}"
        );
        for p in [&pa, &pb, &pc] {
            assert!(
                !p.contains("rmdir"),
                "the outsider container's syscalls leaked in"
            );
        }
    }
);
