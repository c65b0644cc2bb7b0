//! The image profile of a small service in a Docker container, enforced with the generated
//! `docker run` flags: read-only root, tmpfs for the written directories, no capabilities but
//! the recorded ones, the seccomp profile, no-new-privileges, resource limits.
use std::ffi::OsStr;

use integration_tests::*;

const SERVICE: &str = "set -e
mkdir -p /tmp/www
echo 'hello from the image' > /tmp/www/index.html
echo started >> /data/app.log
httpd -p 127.0.0.1:8080 -h /tmp/www
until wget -q -O - http://127.0.0.1:8080/index.html; do sleep 0.1; done
cat /data/app.log";

privileged_test!(
    fn service_runs_under_its_generated_docker_flags() {
        require_docker();
        let dir = TempDir::new("image-profile");
        let profile = dir.join("web");
        let o = profiler_on_busybox(
            &[
                OsStr::new("record"),
                OsStr::new("--containers"),
                OsStr::new("--out"),
                profile.as_os_str(),
            ],
            SERVICE,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let expected = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(expected.contains("hello from the image"), "{expected}");

        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(image["schema"], "profiler.dev/image-profile/v1");
        assert_eq!(image["seccomp_profile"], "seccomp.json");
        assert_eq!(
            image["writable_directories"],
            serde_json::json!(["/data", "/tmp/www"]),
            "{image:#}"
        );
        assert!(
            image["executables"]
                .as_object()
                .unwrap()
                .contains_key("/bin/sh"),
            "{image:#}"
        );
        assert!(
            image["network"]["bound"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b == "AF_INET 127.0.0.1:8080"),
            "{image:#}"
        );
        assert_eq!(image["network"]["listens"], true);
        assert!(
            image["network"]["connected"]
                .as_array()
                .unwrap()
                .iter()
                .any(|b| b == "AF_INET 127.0.0.1:8080")
        );

        // The generated flags, as a user would paste them.
        let flags = docker_run_flags(&profile);
        let flags_text = flags.join(" ");
        for required in [
            "--read-only",
            "--security-opt",
            "no-new-privileges",
            "--cap-drop",
        ] {
            assert!(
                flags.iter().any(|f| f == required),
                "{required} not in {flags_text}"
            );
        }
        let mut args: Vec<String> = vec![
            "run".into(),
            "--rm".into(),
            "--network".into(),
            "none".into(),
        ];
        args.extend(flags);
        args.extend([
            BUSYBOX_IMAGE.to_owned(),
            "/bin/sh".into(),
            "-c".into(),
            SERVICE.into(),
        ]);
        let args_ref: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = docker(&args_ref);
        assert!(
            o.status.success(),
            "{:?}: {}",
            args,
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), expected);

        // The root filesystem really is read-only outside the recorded directories.
        let mut deny = args.clone();
        let n = deny.len();
        deny[n - 1] = "echo x > /etc/new-file".into();
        let deny_ref: Vec<&str> = deny.iter().map(String::as_str).collect();
        let o = docker(&deny_ref);
        assert!(!o.status.success());
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
);

privileged_test!(
    #[scratch = "paths"]
    fn relative_dotdot_and_dirfd_paths_resolve_to_absolute_paths(dir: TempDir) {
        let work = dir.join("work");
        std::fs::create_dir_all(work.join("sub")).unwrap();
        let profile = dir.join("profile");
        // relative, .. , cd into a subdirectory, a child process inheriting the directory,
        // openat relative to a directory fd (python's dir_fd).
        let script = "import os, subprocess\n\
        open('a.txt', 'w').write('a')\n\
        open('sub/../b.txt', 'w').write('b')\n\
        os.chdir('sub')\n\
        open('c.txt', 'w').write('c')\n\
        subprocess.run(['/bin/sh', '-c', 'echo d > ../d.txt'], check=True)\n\
        fd = os.open('/', os.O_RDONLY)\n\
        os.close(os.open('tmp/profiler-dirfd-test', os.O_WRONLY | os.O_CREAT, dir_fd=fd))\n\
        os.unlink('/tmp/profiler-dirfd-test')\n";
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(&profile)
            .args(["--", "/usr/bin/python3", "-c", script])
            .current_dir(&work)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let image = read_json(&profile.join("image-profile.json"));
        let written: Vec<String> = image["written_paths"]
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        let w = work.display().to_string();
        for expected in [
            format!("{w}/a.txt"),
            format!("{w}/b.txt"),
            format!("{w}/sub/c.txt"),
            format!("{w}/d.txt"),
        ] {
            assert!(written.contains(&expected), "{expected} not in {written:?}");
        }
        // A path relative to a directory fd cannot be resolved from the event stream: it is kept
        // apart, not guessed.
        assert!(
            image["unresolved_writes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|u| u.as_str().unwrap().starts_with("tmp/profiler-dirfd-test")),
            "{image:#}"
        );
        assert!(
            written.contains(&"/tmp/profiler-dirfd-test".to_owned()),
            "the unlink is absolute: {written:?}"
        );
    }
);

privileged_test!(
    /// A file created with openat2(2), whose flags are in a struct in user memory, is a write.
    #[scratch = "openat2"]
    fn openat2_writes_are_seen(dir: TempDir) {
        let bin = dir.join("openat2");
        let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/openat2.c");
        run_ok(
            std::process::Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&bin)
                .arg(&src),
        );
        let target = dir.join("made-by-openat2");
        let profile = dir.join("profile");
        record(
            &profile,
            &[&bin.to_string_lossy(), &target.to_string_lossy()],
        );
        assert!(target.exists());
        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(
            image["written_paths"][target.to_string_lossy().as_ref()],
            serde_json::json!(["openat2"]),
            "{image:#}"
        );
    }
);

privileged_test!(
    /// `profiler enforce` on a container: a program the recording never ran is killed before it
    /// runs (one JSON line says so), the rest of the container goes on.
    fn enforce_kills_an_unrecorded_program_in_a_container() {
        require_docker();
        let dir = TempDir::new("enforce");
        let profile = dir.join("profile");
        let recorded = "echo hello; ls / > /dev/null; echo ok > /tmp/state";
        let o = profiler_on_busybox(
            &[
                OsStr::new("record"),
                OsStr::new("-q"),
                OsStr::new("--containers"),
                OsStr::new("--out"),
                profile.as_os_str(),
            ],
            recorded,
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let log = dir.join("violations.jsonl");
        let drifted = format!("{recorded}; /bin/cat /etc/passwd; echo after; echo x > /etc/drift");
        let o = profiler_on_busybox(
            &[
                OsStr::new("enforce"),
                OsStr::new("--containers"),
                OsStr::new("--profile"),
                profile.as_os_str(),
                OsStr::new("--log"),
                log.as_os_str(),
            ],
            &drifted,
        );
        let lines = assert_cat_killed_and_run_went_on(&o, &log);
        assert!(
            lines
                .iter()
                .any(|v| v["rule"] == "write-outside-writable-directories"
                    && v["path"] == "/etc/drift"),
            "{lines:?}"
        );
        // The recorded run itself is no violation.
        let clean_log = dir.join("clean.jsonl");
        let o = profiler_on_busybox(
            &[
                OsStr::new("enforce"),
                OsStr::new("--containers"),
                OsStr::new("--profile"),
                profile.as_os_str(),
                OsStr::new("--log"),
                clean_log.as_os_str(),
            ],
            recorded,
        );
        assert!(o.status.success());
        assert_eq!(std::fs::read_to_string(&clean_log).unwrap_or_default(), "");
    }
);

privileged_test!(
    /// A program's supplementary groups are recorded even when it has exited and been reaped
    /// before profiler reads its events (the kernel gives them at the exec), and a process
    /// with more groups than the exec event carries still has them read from /proc while it
    /// runs. Ground truth: the `Groups:` line each process prints of itself.
    #[scratch = "exec-groups"]
    fn supplementary_groups_of_short_and_many_grouped_programs(dir: TempDir) {
        let few = "10,20,30,4000000000";
        let many: Vec<String> = (100..121).map(|g| g.to_string()).collect();
        let many = many.join(",");
        let script = format!(
            "setpriv --reuid 1000 --regid 1000 --groups {few} -- grep Groups: /proc/self/status; \
             setpriv --reuid 1000 --regid 1000 --groups {many} -- sh -c 'grep Groups: /proc/self/status; sleep 0.3'; \
             sleep 0.2"
        );
        let profile = dir.join("profile");
        let o = record(&profile, &["sh", "-c", &script]);
        let mut truth: Vec<u64> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.strip_prefix("Groups:"))
            .flat_map(|l| {
                l.split_whitespace()
                    .map(|g| g.parse::<u64>().unwrap())
                    .collect::<Vec<_>>()
            })
            .collect();
        truth.sort();
        truth.dedup();
        assert_eq!(
            truth.len(),
            4 + 21,
            "{}",
            String::from_utf8_lossy(&o.stdout)
        );
        let image = read_json(&profile.join("image-profile.json"));
        let recorded: Vec<u64> = image["users"]["supplementary_groups"]
            .as_array()
            .unwrap_or_else(|| panic!("no groups recorded: {image:#}"))
            .iter()
            .map(|g| g.as_u64().unwrap())
            .collect();
        assert_eq!(recorded, truth, "{image:#}");
    }
);
