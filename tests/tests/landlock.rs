//! `profiler run` holds a command to its image profile in the kernel with Landlock: writes
//! outside the recorded writable directories, execs of programs the recording never ran,
//! TCP ports it never used, a move to another cgroup and io_uring file operations are
//! refused by the kernel (EACCES), while what was recorded goes on working.
use std::path::Path;
use std::process::{Command, Output};

use integration_tests::*;

fn landlock_abi() -> i64 {
    // landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)
    unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, 0usize, 0usize, 1u32) }
}

/// Landlock with TCP rules (ABI 4); tests skip with the reason where the kernel lacks it.
fn has_landlock() -> bool {
    let abi = landlock_abi();
    if abi < 4 {
        eprintln!("SKIP: Landlock ABI {abi} on this kernel (4 needed for TCP rules)");
        return false;
    }
    true
}

fn record(dir: &TempDir, name: &str, cmd: &[&str]) -> std::path::PathBuf {
    let profile = dir.join(name);
    let o = profiler()
        .args(["record", "-q", "--out"])
        .arg(&profile)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    profile
}

fn run(profile: &Path, cmd: &[&str]) -> Output {
    profiler()
        .args(["run", "--profile"])
        .arg(profile)
        .arg("--")
        .args(cmd)
        .output()
        .unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

privileged_test!(
    #[scratch = "ll-writes"]
    fn writes_outside_the_writable_directories_are_refused_by_the_kernel(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        let script = |target: &str| format!("echo hello > {target} && echo wrote || echo refused");
        let profile = record(
            &dir,
            "p",
            &[
                "/bin/sh",
                "-c",
                &script(&data.join("y").display().to_string()),
            ],
        );
        let o = run(
            &profile,
            &[
                "/bin/sh",
                "-c",
                &script(&data.join("y2").display().to_string()),
            ],
        );
        assert!(text(&o).contains("wrote"), "{}", text(&o));
        assert_eq!(std::fs::read_to_string(data.join("y2")).unwrap(), "hello\n");
        assert!(text(&o).contains("landlock (kernel ABI"), "{}", text(&o));
        for outside in [
            dir.join("x"),
            Path::new("/tmp").join(format!("profiler-ll-{}", std::process::id())),
        ] {
            let o = run(
                &profile,
                &["/bin/sh", "-c", &script(&outside.display().to_string())],
            );
            assert!(
                text(&o).contains("refused"),
                "{}: {}",
                outside.display(),
                text(&o)
            );
            assert!(text(&o).contains("Permission denied"), "{}", text(&o));
            assert!(!outside.exists(), "{} was written", outside.display());
        }
        // Without Landlock the same write goes through (the difference is the ruleset's).
        let o = profiler()
            .args(["run", "-q", "--no-landlock", "--profile"])
            .arg(&profile)
            .args([
                "--",
                "/bin/sh",
                "-c",
                &script(&dir.join("x").display().to_string()),
            ])
            .output()
            .unwrap();
        assert!(text(&o).contains("wrote"), "{}", text(&o));
    }
);

privileged_test!(
    #[scratch = "ll-exec"]
    fn only_recorded_programs_run(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        // Recorded: python3 copying itself into data/ (and so writing there) and saying so;
        // nothing else run.
        let copy = data.join("python3-copy");
        let py = format!(
            "import shutil, os\nshutil.copy('/usr/bin/python3', '{c}')\nos.chmod('{c}', 0o755)\nprint('copied')\n",
            c = copy.display()
        );
        let profile = record(&dir, "p", &["/usr/bin/python3", "-c", &py]);
        std::fs::remove_file(&copy).unwrap();
        let o = run(&profile, &["/usr/bin/python3", "-c", &py]);
        assert!(o.status.success(), "{}", text(&o));
        // A program the recording never ran.
        let exec = |path: &str| {
            format!(
                "import os, sys\ntry:\n    os.execv('{path}', ['{path}', '-c', 'true'])\nexcept OSError as e:\n    print('refused', e.errno); sys.exit(3)"
            )
        };
        let o = run(&profile, &["/usr/bin/python3", "-c", &exec("/bin/sh")]);
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("refused 13"), "{}", text(&o));
        // A copy of an allowed program, written where writes are allowed, cannot run either.
        let script = format!("{py}{}", exec(&copy.display().to_string()));
        let o = run(&profile, &["/usr/bin/python3", "-c", &script]);
        assert!(copy.exists(), "the copy was not made: {}", text(&o));
        assert_eq!(o.status.code(), Some(3), "{}", text(&o));
        assert!(text(&o).contains("refused 13"), "{}", text(&o));
    }
);

privileged_test!(
    #[scratch = "ll-net"]
    fn only_recorded_tcp_ports_bind_and_connect(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let port = 20000 + (std::process::id() % 20000) as u16;
        // Recorded: a server on `port` that a client in the same program connects to.
        let serve = format!(
            "import socket\ns=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('127.0.0.1', {port})); s.listen(1)\nc=socket.create_connection(('127.0.0.1', {port}))\nprint('ok')"
        );
        let profile = record(&dir, "p", &["/usr/bin/python3", "-c", &serve]);
        let o = run(&profile, &["/usr/bin/python3", "-c", &serve]);
        assert!(text(&o).contains("ok"), "{}", text(&o));
        let other = port + 1;
        let bind_other = format!(
            "import socket\ns=socket.socket()\ntry:\n    s.bind(('127.0.0.1', {other})); print('bound')\nexcept OSError as e:\n    print('refused', e.errno)"
        );
        let o = run(&profile, &["/usr/bin/python3", "-c", &bind_other]);
        assert!(text(&o).contains("refused 13"), "{}", text(&o));
        let connect_other = format!(
            "import socket\ntry:\n    socket.create_connection(('127.0.0.1', {other}), timeout=2); print('connected')\nexcept OSError as e:\n    print('refused', e.errno)"
        );
        let o = run(&profile, &["/usr/bin/python3", "-c", &connect_other]);
        assert!(text(&o).contains("refused 13"), "{}", text(&o));
    }
);

privileged_test!(
    #[scratch = "ll-cgroup"]
    fn a_confined_workload_cannot_leave_its_cgroup(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let profile = record(&dir, "p", &["/bin/sh", "-c", "echo $$ > /dev/null"]);
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        let cg2 = mounts
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap()
            .to_owned();
        let elsewhere = Path::new(&cg2).join(format!("profiler-ll-{}", std::process::id()));
        std::fs::create_dir(&elsewhere).unwrap();
        let o = run(
            &profile,
            &[
                "/bin/sh",
                "-c",
                &format!(
                    "echo $$ > {}/cgroup.procs || echo refused",
                    elsewhere.display()
                ),
            ],
        );
        let procs = std::fs::read_to_string(elsewhere.join("cgroup.procs")).unwrap();
        let _ = std::fs::remove_dir(&elsewhere);
        assert!(text(&o).contains("refused"), "{}", text(&o));
        assert_eq!(procs, "", "the workload moved into another cgroup");
    }
);

privileged_test!(
    #[scratch = "ll-iouring"]
    fn io_uring_cannot_create_what_the_profile_refuses(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let bin = dir.join("io_uring");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/io_uring.c");
        run_ok(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
        let bin_s = bin.to_str().unwrap();
        // io_uring allowed in the seccomp profile (the opt-in): Landlock still checks what
        // the ring creates.
        let profile = dir.join("p");
        let o = profiler()
            .args(["record", "-q", "--allow-io-uring", "--out"])
            .arg(&profile)
            .args(["--", bin_s, "nop"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let target = dir.join("made-through-io_uring");
        let o = run(&profile, &[bin_s, "mkdir", target.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(14),
            "the operation itself must fail: {}",
            text(&o)
        );
        assert!(text(&o).contains("Permission denied"), "{}", text(&o));
        assert!(!target.exists());
    }
);

privileged_test!(
    #[scratch = "ll-drift"]
    fn a_program_replaced_since_the_recording_does_not_run(dir: TempDir) {
        if !has_landlock() {
            return;
        }
        let tool = dir.join("tool");
        std::fs::copy("/bin/true", &tool).unwrap();
        let tool_s = tool.to_str().unwrap();
        let profile = record(&dir, "p", &[tool_s]);
        let image = read_json(&profile.join("image-profile.json"));
        let recorded = &image["executable_files"][tool_s];
        assert_eq!(recorded["format"], "elf64 x86_64", "{image:#}");
        assert_eq!(recorded["sha256"].as_str().unwrap().len(), 64, "{image:#}");
        // The same file runs.
        let o = run(&profile, &[tool_s]);
        assert!(o.status.success(), "{}", text(&o));
        // Another file at the same path (a binary swapped in at run time) does not.
        std::fs::remove_file(&tool).unwrap();
        std::fs::copy("/bin/echo", &tool).unwrap();
        let o = run(&profile, &[tool_s]);
        assert!(!o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("changed since the recording"),
            "{}",
            text(&o)
        );
        // profiler's exec of it fails (EACCES: 126); /bin/true's profile has no write(2),
        // so nothing more can be said once the filter is in.
        assert_eq!(o.status.code(), Some(126), "{}", text(&o));
    }
);
