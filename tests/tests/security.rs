//! profiler runs as root next to users who may not be friendly: a real unprivileged user
//! (created by the test) plants symlinks and files where root writes, hostile workloads name
//! their paths to inject flags, and the CI gate is handed permissive profiles.
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration_tests::*;

const HOSTILE: &str = "profiler-hostile";

/// The test's unprivileged user (created once, kept: tests run in parallel).
fn hostile_ids() -> (u32, u32) {
    let id = |flag: &str| {
        Command::new("id")
            .args([flag, HOSTILE])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
    };
    if id("-u").is_none() {
        let _ = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                HOSTILE,
            ])
            .output();
    }
    (
        id("-u").expect("useradd profiler-hostile"),
        id("-g").expect("group of profiler-hostile"),
    )
}

/// Runs `args` as the hostile user.
fn as_hostile(args: &[&str]) -> Output {
    let (uid, gid) = hostile_ids();
    run_ok(
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .args(["--clear-groups", "--"])
            .args(args),
    )
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A folder the hostile user can write in (the scratch folder itself stays root's).
fn hostile_folder(dir: &TempDir, name: &str) -> std::path::PathBuf {
    let (uid, gid) = hostile_ids();
    let p = dir.join(name);
    std::fs::create_dir(&p).unwrap();
    std::os::unix::fs::chown(&p, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

privileged_test!(
    /// A user who owns the output folder plants symlinks at the names root will write (and
    /// could not predict the staging names): root replaces the links, never writes through them.
    #[scratch = "sec-planted"]
    fn symlinks_planted_in_the_output_folder_never_redirect_root(dir: TempDir) {
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let out = hostile_folder(&dir, "out");
        for name in ["seccomp.json", "trace.json", "docker-run.txt"] {
            as_hostile(&[
                "ln",
                "-s",
                victim.to_str().unwrap(),
                out.join(name).to_str().unwrap(),
            ]);
        }
        // Staging names made of a pid (`.seccomp.json.tmp-PID`) would be predictable: links at
        // every name the next few hundred pids would give.
        let last: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // A loop in the shell, not a line per link: the script stays short whatever the
        // folder's name (one argument is limited to 128 KiB).
        let script = format!(
            "for pid in $(seq {} {}); do for n in seccomp.json trace.json; do ln -s '{}' \"{}/.$n.tmp-$pid\"; done; done",
            last + 1,
            last + 400,
            victim.display(),
            out.display()
        );
        as_hostile(&["/bin/sh", "-c", &script]);
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(&out)
            .args(["--", "/bin/true"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        for name in ["seccomp.json", "trace.json", "docker-run.txt"] {
            let m = std::fs::symlink_metadata(out.join(name)).unwrap();
            assert!(m.file_type().is_file(), "{name} is still a link");
        }
        let leftovers: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| {
                e.file_name().to_string_lossy().contains(".tmp-")
                    && !std::fs::symlink_metadata(e.path())
                        .unwrap()
                        .file_type()
                        .is_symlink()
            })
            .collect();
        assert!(leftovers.is_empty(), "staging files left: {leftovers:?}");
    }
);

privileged_test!(
    /// `--out` through a symlink another user planted is refused before the workload runs;
    /// `--follow-symlinks` follows it.
    #[scratch = "sec-outlink"]
    fn an_output_path_through_another_users_symlink_is_refused(dir: TempDir) {
        let target = dir.join("root-owned");
        std::fs::create_dir(&target).unwrap();
        let theirs = hostile_folder(&dir, "theirs");
        let link = theirs.join("out");
        as_hostile(&["ln", "-s", target.to_str().unwrap(), link.to_str().unwrap()]);
        let marker = dir.join("ran");
        let script = format!("touch {}", marker.display());
        let o = profiler()
            .args(["record", "-q", "--out"])
            .arg(link.join("profile"))
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("refusing to follow the symbolic link"),
            "{}",
            stderr(&o)
        );
        assert!(
            !marker.exists(),
            "the workload ran before the output was checked"
        );
        assert!(!target.join("profile").exists());
        let o = profiler()
            .args(["record", "-q", "--follow-symlinks", "--out"])
            .arg(link.join("profile"))
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(target.join("profile/seccomp.json").exists());
    }
);

privileged_test!(
    /// An unusable `--out` (a file, a read-only or a full filesystem) stops profiler before the
    /// workload starts.
    #[scratch = "sec-unusable"]
    fn an_unusable_output_is_found_before_the_workload_runs(dir: TempDir) {
        let file = dir.join("a-file");
        std::fs::write(&file, "x").unwrap();
        let ro = dir.join("ro");
        let full = dir.join("full");
        for (m, opts) in [(&ro, "ro,size=1m"), (&full, "size=64k")] {
            std::fs::create_dir(m).unwrap();
            run_ok(
                Command::new("mount")
                    .args(["-t", "tmpfs", "-o", opts, "tmpfs"])
                    .arg(m),
            );
        }
        // Fill the small one.
        let _ = Command::new("dd")
            .args(["if=/dev/zero", "bs=4k", "count=64"])
            .arg(format!("of={}", full.join("fill").display()))
            .output();
        let marker = dir.join("ran");
        let script = format!("touch {}", marker.display());
        for out in [file.clone(), ro.join("p"), full.join("p")] {
            let o = profiler()
                .args(["record", "-q", "--out"])
                .arg(&out)
                .args(["--", "/bin/sh", "-c", &script])
                .output()
                .unwrap();
            assert_eq!(
                o.status.code(),
                Some(2),
                "{}: {}",
                out.display(),
                stderr(&o)
            );
            assert!(!marker.exists(), "{}: the workload ran", out.display());
        }
        for m in [&ro, &full] {
            let _ = Command::new("umount").arg(m).output();
        }
    }
);

privileged_test!(
    /// A directory where an output file must go: nothing is written (no half-renamed folder, no
    /// staging files), and the workload's own exit code is kept.
    #[scratch = "sec-inway"]
    fn a_directory_in_the_way_writes_nothing_and_keeps_the_exit_code(dir: TempDir) {
        let out = dir.join("out");
        std::fs::create_dir_all(out.join("seccomp.json")).unwrap();
        for (script, code) in [("exit 0", 4), ("exit 7", 7)] {
            let o = profiler()
                .args(["record", "-q", "--out"])
                .arg(&out)
                .args(["--", "/bin/sh", "-c", script])
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(code), "{}", stderr(&o));
            assert!(stderr(&o).contains("is a directory"), "{}", stderr(&o));
            let names: Vec<String> = std::fs::read_dir(&out)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names, ["seccomp.json"], "something was written");
        }
    }
);

privileged_test!(
    /// A workload names a directory so that pasting docker-run.txt into a shell would add
    /// `--privileged` and mount the host: every flag stays one shell word, and the YAML outputs
    /// parse back with their consumers' rules (kubectl's strategic merge).
    fn hostile_path_names_cannot_inject_flags() {
        require_docker();
        let dir = TempDir::new("sec-inject");
        let out = dir.join("p");
        let script = "d=\"$(printf '/tmp/x\\n--privileged\\n--volume=/:/host\\n')\"; mkdir -p \"$d\"; echo > \"$d/f\"; \
                  mkdir -p \"/tmp/a b \\$(reboot)\"; echo > \"/tmp/a b \\$(reboot)/f\"; \
                  mkdir -p '/tmp/c,uid=0' && echo > '/tmp/c,uid=0/f'";
        let o = profiler_on_busybox(
            &[
                "record",
                "-q",
                "--containers",
                "--out",
                out.to_str().unwrap(),
            ],
            script,
        );
        assert!(o.status.success(), "{}", stderr(&o));
        for file in ["docker-run.txt", "podman-run.txt"] {
            // The shell's own word splitting, on the README's one-liner.
            let shell = format!(
                "eval \"set -- $(grep -v '^#' {} | tr '\\n' ' ')\"; printf '%s\\n' \"$@\"",
                out.join(file).display()
            );
            let words = run_ok(Command::new("/bin/sh").args(["-c", &shell]));
            let words = String::from_utf8_lossy(&words.stdout).into_owned();
            assert!(
                !words
                    .lines()
                    .any(|w| w == "--privileged" || w.starts_with("--volume=/:")),
                "{file} injects flags:\n{words}"
            );
            assert!(
                words
                    .lines()
                    .any(|w| w.starts_with("/tmp/a b $(reboot):rw,nosuid,nodev")),
                "a path with a space and $( ) stays one word: {words}"
            );
            assert!(
                !words.contains("uid=0:rw") && !words.contains("/tmp/c,uid=0"),
                "{words}"
            );
        }
        let merged = kubernetes_patch_applied(&out, "app", BUSYBOX_IMAGE);
        assert!(!merged.contains("privileged: true"), "{merged}");
    }
);

/// `profiler diff` is a CI gate: a NEW profile that lets more run (an allow-all default, a
/// logging default) fails it.
#[test]
fn the_diff_gate_fails_permissive_profiles() {
    let dir = TempDir::new("sec-diff");
    let old = dir.join("old");
    let new = dir.join("new");
    for d in [&old, &new] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(
            d.join("capabilities.json"),
            r#"{"schema":"profiler.dev/capabilities/v1","drop":["ALL"],"add":[]}"#,
        )
        .unwrap();
    }
    std::fs::write(
        old.join("seccomp.json"),
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64"],
            "syscalls":[{"names":["read","write","exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    for default in ["SCMP_ACT_ALLOW", "SCMP_ACT_LOG"] {
        std::fs::write(
            new.join("seccomp.json"),
            format!(r#"{{"defaultAction":"{default}","architectures":["SCMP_ARCH_X86_64"],"syscalls":[]}}"#),
        )
        .unwrap();
        let o = profiler().arg("diff").arg(&old).arg(&new).output().unwrap();
        assert_eq!(
            o.status.code(),
            Some(1),
            "{default}: {}",
            String::from_utf8_lossy(&o.stdout)
        );
    }
}

/// Talks to a server socket: sends `line`, returns the reply line.
fn ask(socket: &Path, line: &str) -> String {
    use std::io::{BufRead as _, Write as _};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(line.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut reply = String::new();
    std::io::BufReader::new(&s).read_line(&mut reply).unwrap();
    reply
}

privileged_test!(
    /// `profiler serve` keeps what is not its own, does not take over a live server, does not
    /// record the host, lets no silent client stall the others, and keeps each container's
    /// folder inside --out, whatever the container is called.
    #[scratch = "sec-serve"]
    fn serve_holds_against_hostile_clients_and_names(dir: TempDir) {
        let out = dir.join("profiles");
        std::fs::create_dir(&out).unwrap();
        // A regular file at the socket path is never deleted.
        let file = dir.join("not-a-socket");
        std::fs::write(&file, "keep me").unwrap();
        let o = profiler()
            .args(["serve", "-q", "--socket"])
            .arg(&file)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(!o.status.success());
        assert!(stderr(&o).contains("not a socket"), "{}", stderr(&o));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");

        let socket = dir.join("serve.sock");
        let server = profiler()
            .args(["serve", "--socket"])
            .arg(&socket)
            .arg("--out")
            .arg(&out)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Stopped however the test ends.
        struct Server(Option<std::process::Child>);
        impl Drop for Server {
            fn drop(&mut self) {
                if let Some(c) = &mut self.0 {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
        let mut server = Server(Some(server));
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::os::unix::net::UnixStream::connect(&socket).is_err() {
            assert!(Instant::now() < deadline, "serve did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(std::fs::metadata(&socket).unwrap().mode() & 0o777, 0o600);
        // A second server does not take the socket over.
        let o = profiler()
            .args(["serve", "-q", "--socket"])
            .arg(&socket)
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        assert!(stderr(&o).contains("already listens"), "{}", stderr(&o));
        // Clients that connect and say nothing (served one after the other, three of them would
        // hold the next client for three request timeouts)...
        let _silent: Vec<_> = (0..3)
            .map(|_| std::os::unix::net::UnixStream::connect(&socket).unwrap())
            .collect();
        // ...do not hold up the next one, which asks for the root cgroup: refused at once.
        let started = Instant::now();
        let root_id = std::fs::metadata("/sys/fs/cgroup/unified")
            .or_else(|_| std::fs::metadata("/sys/fs/cgroup"))
            .unwrap()
            .ino();
        let reply = ask(
            &socket,
            &format!(
                r#"{{"container_id":"x","name":"host","cgroup_id":{root_id},"cgroup_path":"/"}}"#
            ),
        );
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "stalled by the silent clients"
        );
        assert!(reply.contains("root cgroup"), "{reply}");
        // A container named "..": its folder stays inside --out.
        let mount = cgroup2_root();
        let cg = mount.join(format!("profiler-sec-{}", std::process::id()));
        std::fs::create_dir(&cg).unwrap();
        let id = std::fs::metadata(&cg).unwrap().ino();
        let rel = format!("/{}", cg.file_name().unwrap().to_string_lossy());
        let reply = ask(
            &socket,
            &format!(
                r#"{{"container_id":"c1","name":"..","cgroup_id":{id},"cgroup_path":"{rel}"}}"#
            ),
        );
        assert!(reply.contains("\"ok\":true"), "{reply}");
        let reply = ask(
            &socket,
            &format!(
                "{{\"container_id\":\"c2\",\"name\":\"..\\u001b[2J\",\"cgroup_id\":{id},\"cgroup_path\":\"{rel}\"}}"
            ),
        );
        // Recording the same cgroup twice is refused or lands in its own folder; either way, not
        // outside --out.
        let _ = reply;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::fs::read_dir(&out).unwrap().count() == 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        let child = server.0.take().unwrap();
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let o = child.wait_with_output().unwrap();
        let log = stderr(&o);
        let _ = std::fs::remove_dir(&cg);
        assert!(
            !log.contains('\u{1b}'),
            "raw control characters in the log: {log:?}"
        );
        let folders: Vec<String> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(!folders.is_empty(), "{log}");
        for f in &folders {
            assert!(f != "." && f != ".." && !f.contains('/'), "{folders:?}");
        }
        assert!(
            !dir.join("seccomp.json").exists(),
            "written into the parent of --out"
        );
        assert!(
            std::fs::read_dir(&out).unwrap().all(|e| e
                .unwrap()
                .path()
                .join("seccomp.json")
                .exists()),
            "{log}"
        );
    }
);

fn cgroup2_root() -> std::path::PathBuf {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    mounts
        .lines()
        .find(|l| l.split_whitespace().nth(2) == Some("cgroup2"))
        .and_then(|l| l.split_whitespace().nth(1))
        .map(std::path::PathBuf::from)
        .expect("a cgroup2 mount")
}

/// Profiles that `profiler run` cannot apply as asked fail with a clear message and the
/// right code, never a panic: a profile denying execve (and write, so nothing could be said
/// after the filter is loaded) is 126; a Docker-valid profile without `architectures` applies
/// to the native one; an unknown comparison or argument index is bad input (2).
#[test]
fn run_reports_unusable_profiles_clearly() {
    let dir = TempDir::new("sec-run");
    std::fs::write(
        dir.join("capabilities.json"),
        r#"{"schema":"profiler.dev/capabilities/v1","drop":["ALL"],"add":[]}"#,
    )
    .unwrap();
    let run = |profile: &str| {
        std::fs::write(dir.join("seccomp.json"), profile).unwrap();
        profiler()
            .args(["run", "--profile"])
            .arg(dir.path())
            .args(["--", "/bin/echo", "ran"])
            .output()
            .unwrap()
    };
    let o = run(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_X86_64"],
                    "syscalls":[{"names":["exit_group"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("does not allow execve"),
        "{}",
        stderr(&o)
    );
    let o = run(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["ptrace"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "ran\n");
    for (bad, says) in [
        (
            r#"{"index":0,"value":1,"op":"SCMP_CMP_SOMETIMES"}"#,
            "unsupported argument comparison",
        ),
        (
            r#"{"index":6,"value":1,"op":"SCMP_CMP_EQ"}"#,
            "argument index 6 out of range",
        ),
    ] {
        let o = run(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{bad}]}}]}}"#
        ));
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains(says), "{}", stderr(&o));
    }
}

/// A trace is input: names its architecture does not have (quotes, newlines), unknown
/// capabilities and impossible peaks are refused with the file and position, exit 2, and
/// nothing is written.
#[test]
fn hostile_traces_are_refused_with_their_position() {
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/demo/trace.json");
    let original: serde_json::Value = read_json(&demo);
    let dir = TempDir::new("sec-trace");
    type Edit = fn(&mut serde_json::Value);
    let cases: [(&str, Edit, &str); 4] = [
        (
            "name",
            |t| t["syscalls"]["x86_64"][0]["name"] = "read\"\n--privileged".into(),
            "is not x86_64 syscall",
        ),
        (
            "nul",
            |t| t["syscalls"]["x86_64"][1]["name"] = "open\u{0}at".into(),
            "is not x86_64 syscall",
        ),
        (
            "cap",
            |t| t["capability_checks"][0]["capability"] = "CAP_EVERYTHING".into(),
            "unknown capability",
        ),
        (
            "peak",
            |t| t["image"]["resources"]["peak_tasks"] = u64::MAX.into(),
            "not a measurement",
        ),
    ];
    for (tag, edit, says) in cases {
        let mut t = original.clone();
        edit(&mut t);
        let file = dir.join(&format!("{tag}.json"));
        std::fs::write(&file, serde_json::to_vec_pretty(&t).unwrap()).unwrap();
        let out = dir.join(&format!("{tag}-out"));
        for verb in ["generate", "merge"] {
            let o = profiler()
                .arg(verb)
                .arg("--out")
                .arg(&out)
                .arg(&file)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(2), "{tag} {verb}: {}", stderr(&o));
            let err = stderr(&o);
            assert!(
                err.contains(says) && err.contains(&file.display().to_string()),
                "{tag}: {err}"
            );
            assert!(!out.exists(), "{tag} {verb}: output written");
        }
    }
}

/// A watch log is input too (`profiler promote`): a line that is not JSON, bytes that are not
/// UTF-8, and a trace with a hostile name are refused with the log and line, exit 2, and
/// nothing is written.
#[test]
fn hostile_watch_logs_are_refused_with_their_position() {
    let profile = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/demo");
    let mut hostile: serde_json::Value = read_json(&profile.join("trace.json"));
    hostile["syscalls"]["x86_64"][0]["name"] = "read\"\n--privileged".into();
    let trace_line = |t: &serde_json::Value| {
        serde_json::to_vec(&serde_json::json!({"kind": "trace", "trace": t})).unwrap()
    };
    let report = br#"{"kind":"syscall","syscall":"getppid"}"#.to_vec();
    let dir = TempDir::new("sec-promote");
    let cases: [(&str, Vec<Vec<u8>>, &str); 4] = [
        (
            "json",
            vec![report.clone(), b"{\"kind\": tr".to_vec()],
            ":2:",
        ),
        (
            "utf8",
            vec![report.clone(), b"{\"kind\":\"\xff\"}".to_vec()],
            ":2:",
        ),
        (
            "name",
            vec![report.clone(), trace_line(&hostile)],
            ":2: the trace, at",
        ),
        ("none", vec![report.clone()], "no production trace"),
    ];
    for (tag, lines, says) in cases {
        let log = dir.join(&format!("{tag}.log"));
        std::fs::write(&log, lines.join(&b'\n')).unwrap();
        let out = dir.join(&format!("{tag}-out"));
        let o = profiler()
            .args(["promote", "--out"])
            .arg(&out)
            .arg(&profile)
            .arg(&log)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{tag}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(says), "{tag}: {err}");
        if tag != "none" {
            assert!(err.contains(&log.display().to_string()), "{tag}: {err}");
        }
        assert!(!out.exists(), "{tag}: output written");
    }
}

privileged_test!(
    /// io_uring carries operations seccomp cannot see: a workload recorded doing one NOP must
    /// not be able to create directories through it under its profile, while mkdir(2) itself is
    /// denied. Generated profiles refuse io_uring unless asked, and say so.
    #[scratch = "sec-iouring"]
    fn io_uring_cannot_bypass_the_profile(dir: TempDir) {
        let bin = dir.join("io_uring");
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/io_uring.c");
        run_ok(Command::new("gcc").args(["-O2", "-o"]).arg(&bin).arg(&src));
        let bin_s = bin.to_str().unwrap();
        let profile = dir.join("p");
        let o = profiler()
            .args(["record", "--out"])
            .arg(&profile)
            .args(["--", bin_s, "nop"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("the workload used io_uring"),
            "{}",
            stderr(&o)
        );
        let trace = read_json(&profile.join("trace.json"));
        // The operations the ring carried are recorded (io_uring_submit_req).
        assert_eq!(
            trace["io_uring_ops"],
            serde_json::json!(["NOP"]),
            "{trace:#}"
        );
        let names = traced_syscalls(&trace)["x86_64"].clone();
        assert!(
            names.contains("io_uring_setup") && !names.contains("mkdir"),
            "{names:?}"
        );
        let target = dir.join("made-through-io_uring");
        let o = run_confined(&profile, &[bin_s, "mkdir", target.to_str().unwrap()]);
        assert_eq!(
            o.status.code(),
            Some(11),
            "io_uring_setup must be refused: {}",
            stderr(&o)
        );
        assert!(!target.exists(), "a directory was made through io_uring");
        let o = run_confined(&profile, &["/bin/mkdir", target.to_str().unwrap()]);
        assert!(!o.status.success() && !target.exists());

        // With the opt-in the ring is allowed, and with it, as far as seccomp goes, what it
        // carries: that is the risk the summary names (Landlock, on by default in `profiler
        // run`, still refuses it: tests/tests/landlock.rs).
        let allowed = dir.join("allowed");
        let o = profiler()
            .args(["record", "-q", "--allow-io-uring", "--out"])
            .arg(&allowed)
            .args(["--", bin_s, "nop"])
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        let o = profiler()
            .args(["run", "-q", "--no-landlock", "--profile"])
            .arg(&allowed)
            .args(["--", bin_s, "mkdir", target.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(o.status.success() && target.exists(), "{}", stderr(&o));
    }
);

privileged_test!(
    /// `kill -9` of profiler: the workload, its background children included, does not go on
    /// in a cgroup nobody records; the cgroup is removed, and the user is told.
    #[scratch = "sec-kill9"]
    fn a_killed_recorder_takes_its_workload_with_it(dir: TempDir) {
        let pids = dir.join("pids");
        let script = format!(
            "sleep 1000 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
            p = pids.display()
        );
        let mut child = profiler()
            .args(["record", "-q", "--out"])
            .arg(dir.join("p"))
            .args(["--", "/bin/sh", "-c", &script])
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !pids.exists() {
            assert!(Instant::now() < deadline, "the workload did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let workload: Vec<u32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        let cgroup = std::fs::read_to_string(format!("/proc/{}/cgroup", workload[0])).unwrap();
        let rel = cgroup
            .lines()
            .find_map(|l| l.strip_prefix("0::"))
            .unwrap()
            .to_owned();
        let cgroup_dir = cgroup2_root().join(rel.trim_start_matches('/'));
        assert!(cgroup_dir.exists());
        child.kill().unwrap();
        let o = child.wait_with_output().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while workload
            .iter()
            .any(|p| Path::new(&format!("/proc/{p}")).exists())
            || cgroup_dir.exists()
        {
            assert!(
                Instant::now() < deadline,
                "workload {workload:?} outlived its recorder (cgroup {} exists: {})",
                cgroup_dir.display(),
                cgroup_dir.exists()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = o;
    }
);

/// Runs `script(other cgroup)` under `record` and checks that the process it moves out of
/// its recording cgroup is seen leaving, moved back, reported as lost data (exit 3), and
/// leaves nothing running in the cgroup it went to.
fn leaving_process_is_brought_back(tag: &str, script: impl Fn(&std::path::Path) -> String) {
    let elsewhere = cgroup2_root().join(format!("profiler-{tag}-{}", std::process::id()));
    std::fs::create_dir(&elsewhere).unwrap();
    let dir = TempDir::new(&format!("sec-{tag}"));
    let o = profiler()
        .args(["record", "-q", "--out"])
        .arg(dir.join("p"))
        .args(["--", "/bin/sh", "-c", &script(&elsewhere)])
        .output()
        .unwrap();
    let left = std::fs::read_to_string(elsewhere.join("cgroup.procs")).unwrap();
    let removed = std::fs::remove_dir(&elsewhere);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("moved itself into cgroup"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        left, "",
        "processes of the workload stayed in the other cgroup"
    );
    assert!(removed.is_ok());
}

privileged_test!(
    /// The workload's first process moves itself out of its recording cgroup (writes its pid
    /// into another cgroup's cgroup.procs).
    fn a_workload_leaving_its_cgroup_is_brought_back_and_reported() {
        leaving_process_is_brought_back("escape", |elsewhere| {
            format!(
                "echo $$ > {}/cgroup.procs; sleep 0.5; sleep 30 & echo left",
                elsewhere.display()
            )
        });
    }
);

privileged_test!(
    /// A process the workload forked moves itself out: profiler knows it by the start time
    /// the kernel's fork event gave (not read from /proc), which must name the same process
    /// /proc names when it leaves.
    fn a_forked_process_leaving_its_cgroup_is_brought_back_and_reported() {
        leaving_process_is_brought_back("escape-child", |elsewhere| {
            format!(
                "/bin/sh -c 'sleep 0.2; echo $$ > {}/cgroup.procs; sleep 0.5; sleep 30 & echo left'; sleep 0.1",
                elsewhere.display()
            )
        });
    }
);

privileged_test!(
    /// `enforce --log` into a folder another user owns: a symlink planted at the log's name
    /// is refused (exit 2, before the workload runs), never followed to the file it names.
    #[scratch = "sec-log"]
    fn a_planted_log_symlink_is_refused(dir: TempDir) {
        let profile = dir.join("p");
        record(&profile, &["/bin/true"]);
        let victim = dir.join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let theirs = hostile_folder(&dir, "theirs");
        let log = theirs.join("violations.jsonl");
        as_hostile(&["ln", "-s", victim.to_str().unwrap(), log.to_str().unwrap()]);
        let marker = dir.join("ran");
        let o = profiler()
            .args(["enforce", "--profile"])
            .arg(&profile)
            .arg("--log")
            .arg(&log)
            .args(["--", "/bin/touch", marker.to_str().unwrap()])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
        assert!(stderr(&o).contains("--log"), "{}", stderr(&o));
        assert!(!marker.exists(), "the workload ran");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
    }
);

privileged_test!(
    /// A workload that repoints the symlink it executes cannot keep the program it really
    /// ran out of the profile: the first program exits before profiler reads it, the link
    /// then names a harmless file (which profiler finds by the path instead), and the same
    /// link executed again runs the first program for long enough to be read. The profile
    /// lists that program's own file (ground truth: its inode and size on disk), and not the
    /// harmless one, which never ran.
    #[scratch = "exec-relink"]
    fn a_repointed_exec_link_does_not_hide_the_program_it_ran(dir: TempDir) {
        let hidden = dir.join("hidden");
        let harmless = dir.join("harmless");
        std::fs::copy("/bin/sleep", &hidden).unwrap();
        std::fs::copy("/bin/true", &harmless).unwrap();
        let link = dir.join("run");
        let script = format!(
            "ln -sf {hidden} {link}; {link} 0; ln -sf {harmless} {link}; sleep 0.3; \
             ln -sf {hidden} {link}; {link} 0.3",
            hidden = hidden.display(),
            harmless = harmless.display(),
            link = link.display(),
        );
        let profile = dir.join("profile");
        record(&profile, &["sh", "-c", &script]);
        let trace = read_json(&profile.join("trace.json"));
        let files = &trace["image"]["executable_files"];
        let meta = std::fs::metadata(&hidden).unwrap();
        let found = files
            .as_object()
            .unwrap()
            .values()
            .any(|f| f["inode"] == meta.ino() && f["size"] == meta.len());
        assert!(found, "{} missing from {files:#}", hidden.display());
        // Nor is the file the link named only while nothing ran it.
        let harmless = std::fs::metadata(&harmless).unwrap();
        assert!(
            !files
                .as_object()
                .unwrap()
                .values()
                .any(|f| f["inode"] == harmless.ino()),
            "a file never executed is listed: {files:#}"
        );
    }
);
