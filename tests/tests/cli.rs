//! Command-line behaviour: exit codes, signals, bad input, privileges, cleanup.
use std::path::Path;
use std::time::Duration;

use integration_tests::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

privileged_test!(
    #[scratch = "notfound"]
    fn command_not_found_exits_127_and_writes_nothing(dir: TempDir) {
        let out = dir.join("profile");
        let o = profiler()
            .args(["record", "--out"])
            .arg(&out)
            .args(["--", "no-such-command-xyz"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(127), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("no-such-command-xyz: command not found"),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists(), "output folder was created");
    }
);

privileged_test!(
    /// The workload starts inside the recording cgroup (clone3 CLONE_INTO_CGROUP) or, on kernels
    /// without it, joins it before exec: both record the same syscalls, none of profiler's own
    /// (its child's prctl, signal mask and handler resets before exec), and keep the exit code.
    #[scratch = "spawn"]
    fn both_ways_of_starting_the_workload_record_the_same(dir: TempDir) {
        let script = format!("echo hi > {}; exit 3", dir.join("file").display());
        let mut sets = Vec::new();
        for (name, fallback) in [("clone3", false), ("fallback", true)] {
            let out = dir.join(name);
            let mut cmd = profiler();
            cmd.args(["record", "-q", "--out"])
                .arg(&out)
                .args(["--", "/bin/sh", "-c", &script]);
            if fallback {
                cmd.env("PROFILER_SPAWN_FALLBACK", "1");
            }
            let o = cmd.output().unwrap();
            assert_eq!(o.status.code(), Some(3), "{name}: {}", stderr(&o));
            let names = traced_syscalls(&read_json(&out.join("trace.json")))["x86_64"].clone();
            assert!(
                names.contains("execve") && names.contains("write"),
                "{name}: {names:?}"
            );
            assert!(
                !names.contains("prctl"),
                "{name}: profiler's own prctl was recorded"
            );
            sets.push(names);
        }
        assert_eq!(sets[0], sets[1]);
    }
);

privileged_test!(
    #[scratch = "exitcode"]
    fn workload_exit_code_and_signal_are_propagated_and_profile_written(dir: TempDir) {
        let out = dir.join("p1");
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(&out)
            .args(["--", "/bin/sh", "-c", "exit 7"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(7));
        assert!(out.join("seccomp.json").exists());
        assert_eq!(
            read_json(&out.join("trace.json"))["workload"]["exit"]["code"],
            7
        );

        let out2 = dir.join("p2");
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(&out2)
            .args(["--", "/bin/sh", "-c", "kill -KILL $$"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(128 + 9));
        assert_eq!(
            read_json(&out2.join("trace.json"))["workload"]["exit"]["signal"],
            9
        );
    }
);

privileged_test!(
    /// SIGTERM and SIGINT sent to profiler reach the workload, and the profile is still written
    /// with what was recorded up to then.
    fn termination_signals_are_forwarded_and_profile_flushed() {
        for (sig, name) in [(libc::SIGTERM, "TERM"), (libc::SIGINT, "INT")] {
            let dir = TempDir::new("signal");
            let out = dir.join("profile");
            let marker = dir.join("started");
            let script = format!(
                "trap 'mkdir {m}.trapped; exit 42' {name}; touch {m}; while :; do sleep 0.05; done",
                m = marker.display()
            );
            let mut child = profiler()
                .args(["record", "-q", "--out"])
                .arg(&out)
                .args(["--", "/bin/sh", "-c", &script])
                .stdin(std::process::Stdio::null())
                .spawn()
                .unwrap();
            for _ in 0..200 {
                if marker.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            assert!(marker.exists(), "workload did not start");
            unsafe { libc::kill(child.id() as i32, sig) };
            let status = child.wait().unwrap();
            assert_eq!(
                status.code(),
                Some(42),
                "SIG{name}: workload's trap exit code"
            );
            let trace = read_json(&out.join("trace.json"));
            let names = &traced_syscalls(&trace)["x86_64"];
            assert!(
                names.contains("mkdir"),
                "SIG{name}: the trap's mkdir was not recorded"
            );
            assert!(Path::new(&format!("{}.trapped", marker.display())).exists());
        }
    }
);

privileged_test!(
    #[scratch = "daemon"]
    fn grandchildren_and_daemons_are_recorded(dir: TempDir) {
        let out = dir.join("profile");
        let flag = dir.join("daemon-ran");
        // The daemon double-forks away from the shell and runs after the shell exited.
        let script = format!(
            "(sh -c 'sleep 0.3; mkdir {f}' &) ; exit 0",
            f = flag.display()
        );
        let o = profiler()
            .args(["record", "-q", "--wait-descendants", "--out"])
            .arg(&out)
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(flag.exists(), "daemon did not run");
        let trace = read_json(&out.join("trace.json"));
        assert!(traced_syscalls(&trace)["x86_64"].contains("mkdir"));
        assert!(trace["workload"]["leftover_processes"].as_u64().unwrap() >= 1);

        // Without --wait-descendants the leftover is stopped (like a container) and not waited for.
        let flag2 = dir.join("daemon2-ran");
        let script2 = format!(
            "(sh -c 'sleep 2; mkdir {f}' &) ; exit 0",
            f = flag2.display()
        );
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(dir.join("p2"))
            .args(["--", "/bin/sh", "-c", &script2])
            .output()
            .unwrap();
        assert!(o.status.success());
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!flag2.exists(), "leftover process was not stopped");
    }
);

privileged_test!(
    #[scratch = "cgroup"]
    fn recording_cgroup_is_removed_afterwards(dir: TempDir) {
        let out = dir.join("profile");
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(&out)
            .args(["--", "/bin/cat", "/proc/self/cgroup"])
            .output()
            .unwrap();
        assert!(o.status.success());
        let cgroup_line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .find(|l| l.starts_with("0::"))
            .expect("cgroup2 line")
            .to_owned();
        let rel = cgroup_line.trim_start_matches("0::");
        assert!(rel.contains("/profiler/rec-"), "workload ran in {rel}");
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap();
        assert!(
            !Path::new(&format!("{mount}{rel}")).exists(),
            "cgroup {rel} left behind"
        );
    }
);

#[test]
fn generate_rejects_malformed_trace_naming_file_and_position() {
    let dir = TempDir::new("badtrace");
    let bad = dir.join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"schema\": \"profiler.dev/trace/v1\",\n  \"syscalls\": [\n",
    )
    .unwrap();
    let out = dir.join("out");
    let o = profiler()
        .args(["generate", "--out"])
        .arg(&out)
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{}:4:", bad.display())),
        "no file:line in: {err}"
    );
    assert!(!out.exists(), "output written for a bad trace");

    let missing = dir.join("missing.json");
    let o = profiler()
        .args(["generate", "--out"])
        .arg(&out)
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("missing.json"));

    let wrong = dir.join("wrong.json");
    std::fs::write(&wrong, "{\"schema\": \"something/else\"}").unwrap();
    let o = profiler()
        .args(["generate", "--out"])
        .arg(&out)
        .arg(&wrong)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("unsupported trace schema"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
}

privileged_test!(
    #[scratch = "union"]
    fn generate_unions_traces(dir: TempDir) {
        let a = dir.join("a");
        let b = dir.join("b");
        record(&a, &["/bin/mkdir", &dir.join("m").to_string_lossy()]);
        record(&b, &["/bin/rmdir", &dir.join("m").to_string_lossy()]);
        let merged = dir.join("merged");
        run_ok(
            profiler()
                .args(["generate", "--out"])
                .arg(&merged)
                .arg(a.join("trace.json"))
                .arg(b.join("trace.json")),
        );
        let names: Vec<String> = read_json(&merged.join("seccomp.json"))["syscalls"][0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n.as_str().unwrap().to_owned())
            .collect();
        assert!(
            names.contains(&"mkdir".to_owned()) && names.contains(&"rmdir".to_owned()),
            "{names:?}"
        );
        // Regenerating from one trace reproduces the recorded profile byte for byte.
        let again = dir.join("again");
        run_ok(
            profiler()
                .args(["generate", "--out"])
                .arg(&again)
                .arg(a.join("trace.json")),
        );
        assert_eq!(
            std::fs::read(a.join("seccomp.json")).unwrap(),
            std::fs::read(again.join("seccomp.json")).unwrap()
        );
    }
);

#[test]
fn non_root_gets_a_clear_message() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: needs root to drop to an unprivileged user");
        return;
    }
    let o = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(profiler_bin())
        .args(["record", "--out", "/tmp/never-written", "--", "/bin/true"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("CAP_BPF") && err.contains("root"), "{err}");
    assert!(!Path::new("/tmp/never-written").exists());
}

privileged_test!(
    #[scratch = "deny"]
    fn unrecorded_syscall_is_denied_with_eperm(dir: TempDir) {
        let profile = dir.join("profile");
        record(&profile, &["/bin/ls", "/"]);
        // The seccomp layer alone (Landlock would refuse the exec of mkdir before it).
        let o = profiler()
            .args(["run", "--no-landlock", "--profile"])
            .arg(&profile)
            .args(["--", "/bin/mkdir", &dir.join("x").to_string_lossy()])
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(
            stderr(&o).contains("Operation not permitted"),
            "{}",
            stderr(&o)
        );
        // With Landlock (the default) the unrecorded program does not even start.
        let o = run_confined(&profile, &["/bin/mkdir", &dir.join("x").to_string_lossy()]);
        assert!(!o.status.success() && !dir.join("x").exists());
        assert!(stderr(&o).contains("Permission denied"), "{}", stderr(&o));
    }
);

privileged_test!(
    /// A profiler killed with SIGKILL cannot clean up: the kernel detaches its fd-owned links,
    /// the workload dies with it (PR_SET_PDEATHSIG), and the next recording removes the cgroup
    /// it left.
    #[scratch = "sigkill"]
    fn killed_profiler_leaves_nothing_running_and_its_cgroup_is_swept(dir: TempDir) {
        let marker = dir.join("started");
        let script = format!("touch {}; exec sleep 30", marker.display());
        let mut child = profiler()
            .args(["record", "-q", "--out"])
            .arg(dir.join("p"))
            .args(["--", "/bin/sh", "-c", &script])
            .spawn()
            .unwrap();
        for _ in 0..300 {
            if marker.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let profiler_pid = child.id();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mount = mountinfo
            .lines()
            .find(|l| l.contains(" - cgroup2 "))
            .and_then(|l| l.split_whitespace().nth(4))
            .unwrap()
            .to_owned();
        let stale: Vec<_> = std::fs::read_dir(format!("{mount}/profiler"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("rec-{profiler_pid}-"))
            })
            .collect();
        assert_eq!(
            stale.len(),
            1,
            "recording cgroup of {profiler_pid} not found"
        );
        let procs = std::fs::read_to_string(stale[0].join("cgroup.procs")).unwrap();
        let sleep_pid: i32 = procs
            .lines()
            .next()
            .expect("sleep in cgroup")
            .parse()
            .unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !Path::new(&format!("/proc/{sleep_pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{sleep_pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")),
            "workload survived its profiler"
        );
        assert!(
            !dir.join("p").exists(),
            "a killed profiler cannot have written profiles"
        );
        // The next recording sweeps the stale cgroup.
        record(&dir.join("p2"), &["/bin/true"]);
        assert!(
            !stale[0].exists(),
            "stale cgroup {} not removed",
            stale[0].display()
        );
    }
);

privileged_test!(
    #[scratch = "ebpflog"]
    fn kernel_side_diagnostics_appear_only_when_asked(dir: TempDir) {
        let run = |level: Option<&str>, out: &Path| {
            let mut cmd = profiler();
            cmd.env_remove("PROFILER_EBPF_LOG");
            if let Some(l) = level {
                cmd.env("PROFILER_EBPF_LOG", l);
            }
            cmd.args(["record", "--quiet", "--out"])
                .arg(out)
                .args(["--", "/bin/sh", "-c", "/bin/true; /bin/true"])
                .output()
                .unwrap()
        };
        // debug: each exec of the workload is logged by the kernel side, with the cgroup the
        // trace says was recorded.
        let out = dir.join("debug");
        let o = run(Some("debug"), &out);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let id = read_json(&out.join("trace.json"))["cgroup"]["id"]
            .as_u64()
            .expect("cgroup id in trace.json");
        let want = format!("profiler: ebpf: debug: exec in cgroup {id}, phase");
        let execs = stderr(&o).lines().filter(|l| l.starts_with(&want)).count();
        // sh and its two /bin/true (sh may exec the last one in place: still an exec).
        assert!(
            execs >= 3,
            "{execs} exec lines for cgroup {id}:\n{}",
            stderr(&o)
        );
        // warn: the debug lines are filtered in the kernel; unset: no eBPF line at all.
        for (level, out) in [(Some("warn"), dir.join("warn")), (None, dir.join("off"))] {
            let o = run(level, &out);
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert!(
                !stderr(&o).contains("profiler: ebpf:"),
                "{level:?}: {}",
                stderr(&o)
            );
            assert!(out.join("seccomp.json").exists());
        }
        // An unknown level is a usage error before anything runs or is written.
        let out = dir.join("bad");
        let o = run(Some("loud"), &out);
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("PROFILER_EBPF_LOG=\"loud\""),
            "{}",
            stderr(&o)
        );
        assert!(!out.exists());
    }
);

privileged_test!(
    /// A compose file with `include:` (compose v2.20+): the override profiler adds cannot be
    /// relied on to reach the included services, which would then run unrecorded. Refused
    /// before anything runs, with the file and line, and nothing written.
    #[scratch = "compose-include"]
    fn a_compose_include_is_refused_not_left_unrecorded(dir: TempDir) {
        let included = dir.join("included.yml");
        std::fs::write(&included, "services:\n  db:\n    image: busybox\n").unwrap();
        let file = dir.join("docker-compose.yml");
        std::fs::write(
            &file,
            "services:\n  app:\n    image: busybox\ninclude:\n  - included.yml\n",
        )
        .unwrap();
        let out = dir.join("profile");
        let o = profiler()
            .args(["record", "--containers", "--out"])
            .arg(&out)
            .args(["--", "docker-compose", "-f"])
            .arg(&file)
            .arg("up")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}:4:1", file.display())) && err.contains("include:"),
            "{err}"
        );
        assert!(!out.exists(), "output folder was created");
    }
);
