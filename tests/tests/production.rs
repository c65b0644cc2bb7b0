//! The production loop on real containers: `record --attach` a running service, `watch` it
//! against its profile (log mode lets new behaviour through, so the probes see it), and
//! `--promote` the next profile, under which the new behaviour passes, with `diff` naming
//! exactly what was added.
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use integration_tests::*;

const SERVICE: &[&str] = xtask::APP_CMD;

fn engine_cmd(engine: &[String], conf: Option<&Path>) -> Command {
    let mut c = Command::new(&engine[0]);
    c.args(&engine[1..]);
    if let Some(conf) = conf {
        c.env("CONTAINERS_CONF", conf);
    }
    c
}

fn removed(engine: &[String], conf: Option<&Path>, name: &str) -> Removed {
    let _ = engine_cmd(engine, conf)
        .args(["rm", "-f", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut argv = engine.to_vec();
    argv.extend(["rm".into(), "-f".into(), name.into()]);
    Removed {
        argv,
        env: conf.map(|c| ("CONTAINERS_CONF".to_owned(), c.to_path_buf())),
    }
}

fn ip_of(engine: &[String], conf: Option<&Path>, name: &str) -> Option<String> {
    let o = engine_cmd(engine, conf)
        .args(["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name])
        .output()
        .ok()?;
    let ip = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (!ip.is_empty()).then_some(ip)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn service_up(engine: &[String], conf: Option<&Path>, name: &str) -> String {
    let mut addr = String::new();
    wait_for("the service", || {
        ip_of(engine, conf, name).is_some_and(|ip| {
            addr = format!("{ip}:8080");
            http(&addr, "GET", "/health", b"").is_some_and(|(s, _)| s == 200)
        })
    });
    addr
}

fn train(addr: &str) {
    assert_eq!(
        http(addr, "POST", "/items/first", b"one").map(|r| r.0),
        Some(201)
    );
    assert_eq!(
        http(addr, "GET", "/items/first", b""),
        Some((200, b"one".to_vec()))
    );
}

/// A profiler command in the background whose stderr is read until a line says it is ready.
struct Started {
    child: Child,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

fn start_profiler(args: &[&str], envs: &[(&str, String)], ready: &str) -> Started {
    let mut c = profiler();
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    let mut child = c.spawn().unwrap();
    let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let stderr = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        let ready = ready.to_owned();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if line.contains(&ready) {
                    let _ = tx.send(());
                }
                let mut s = stderr.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
    }
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        let _ = child.kill();
        panic!("profiler never said {ready:?}: {}", stderr.lock().unwrap());
    }
    Started { child, stderr }
}

impl Started {
    fn wait(mut self) -> (i32, String, String) {
        let mut out = String::new();
        if let Some(mut o) = self.child.stdout.take() {
            let _ = o.read_to_string(&mut out);
        }
        let status = self.child.wait().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let err = self.stderr.lock().unwrap().clone();
        (status.code().unwrap_or(-1), out, err)
    }
}

/// The syscalls a profile folder's trace saw in the workload (and runtime) phases.
fn workload_syscalls(profile: &Path) -> std::collections::BTreeSet<String> {
    let trace = read_json(&profile.join("trace.json"));
    trace["syscalls"]["x86_64"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["phases"].as_array().unwrap().iter().any(|p| p != "setup"))
        .map(|e| e["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Records the service while a training client runs, started by the recording (from its
/// first syscall), then attached to a second run of the same service after it started,
/// with an outsider container making a syscall the service never makes, all the while.
fn attach_matches_a_full_recording(
    engine: Vec<String>,
    conf: Option<PathBuf>,
    image: &str,
    dir: &TempDir,
) {
    let conf = conf.as_deref();
    let envs: Vec<(&str, String)> = if engine[0] == "podman" {
        vec![("PROFILER_PODMAN", shell_words::join(&engine))]
    } else {
        Vec::new()
    };
    let pid = std::process::id();
    // The full recording, for comparison.
    let full = dir.join("full");
    let n1 = format!("att-full-{pid}");
    let _r1 = removed(&engine, conf, &n1);
    let mut run: Vec<String> = vec!["--".into()];
    run.extend(engine.iter().cloned());
    run.extend(["run", "--rm", "--name", &n1, "--user", "app", image].map(String::from));
    run.extend(SERVICE.iter().map(|s| s.to_string()));
    let mut args: Vec<&str> = vec![
        "record",
        "-q",
        "--containers",
        "--out",
        full.to_str().unwrap(),
    ];
    args.extend(run.iter().map(String::as_str));
    let mut c = profiler();
    c.args(&args).stdout(Stdio::null()).stderr(Stdio::piped());
    if let Some(conf) = conf {
        c.env("CONTAINERS_CONF", conf);
    }
    let rec = c.spawn().unwrap();
    let addr = service_up(&engine, conf, &n1);
    train(&addr);
    let o = engine_cmd(&engine, conf)
        .args(["stop", "-t", "5", &n1])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let o = rec.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    // The outsider: busy with getsid, which the service never calls.
    let outsider = format!("att-outsider-{pid}");
    let _ro = removed(&engine, conf, &outsider);
    let o = engine_cmd(&engine, conf)
        .args([
            "run", "-d", "--rm", "--name", &outsider, image, "python3", "-c",
        ])
        .arg("import os, time\nwhile True:\n    os.getsid(0)\n    time.sleep(0.01)\n")
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    // The service, started without profiler.
    let n2 = format!("att-{pid}");
    let _r2 = removed(&engine, conf, &n2);
    let o = engine_cmd(&engine, conf)
        .args(["run", "-d", "--rm", "--name", &n2, "--user", "app", image])
        .args(SERVICE)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let addr = service_up(&engine, conf, &n2);
    let attached = dir.join("attached");
    let target = format!("{}:{n2}", engine[0]);
    let mut envs = envs;
    if let Some(conf) = conf {
        envs.push(("CONTAINERS_CONF", conf.display().to_string()));
    }
    let session = start_profiler(
        &[
            "record",
            "--attach",
            &target,
            "--out",
            attached.to_str().unwrap(),
        ],
        &envs,
        "from now on",
    );
    train(&addr);
    let o = engine_cmd(&engine, conf)
        .args(["stop", "-t", "5", &n2])
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let (code, _, err) = session.wait();
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("the workload exited"), "{err}");

    let trace = read_json(&attached.join("trace.json"));
    assert_eq!(trace["cgroup"]["attached"], true, "{err}");
    assert_eq!(trace["cgroup"]["container_info"]["name"], n2.as_str());
    let seen = workload_syscalls(&attached);
    let all = workload_syscalls(&full);
    assert!(!seen.contains("getsid"), "the outsider leaked in: {seen:?}");
    assert!(
        !all.contains("getsid"),
        "the service calls getsid itself: {all:?}"
    );
    // Started by the engine without profiler, the service runs under the engine's default
    // seccomp profile, which answers clone3 with ENOSYS: glibc then makes its threads with
    // clone (the recording's permissive filter let clone3 through).
    let extra: Vec<&String> = seen
        .difference(&all)
        .filter(|n| !(*n == "clone" && all.contains("clone3")))
        .collect();
    assert!(
        extra.is_empty(),
        "attached saw what the full recording did not: {extra:?}"
    );
    // The training traffic itself was seen: accepted, read, answered, written.
    for call in ["accept4", "recvfrom", "sendto", "openat", "write"] {
        assert!(seen.contains(call), "{call} missing from {seen:?}");
    }
    let image_profile = read_json(&attached.join("image-profile.json"));
    assert_eq!(image_profile["run_as"], "1500:1500", "{image_profile:#}");
    assert!(
        image_profile["executables"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("/usr/bin/python3")),
        "the running program: {image_profile:#}"
    );
    assert!(
        image_profile["writable_directories"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d == "/var/lib/app"),
        "{image_profile:#}"
    );
    eprintln!(
        "{}: attached saw {} of the full recording's {} syscalls",
        engine[0],
        seen.len(),
        all.len()
    );
}

privileged_test!(
    #[scratch = "attach-docker"]
    fn attach_records_a_running_docker_container_from_now_on(dir: TempDir) {
        require_docker();
        attach_matches_a_full_recording(vec!["docker".into()], None, DEBIAN_APPS_IMAGE, &dir);
    }
);

privileged_test!(
    #[scratch = "attach-podman"]
    fn attach_records_a_running_podman_container_from_now_on(dir: TempDir) {
        let (conf, argv) = podman_argv();
        attach_matches_a_full_recording(argv, Some(conf), PODMAN_DEBIAN_APPS_IMAGE, &dir);
    }
);

fn drift_script() -> String {
    std::fs::read_to_string(workspace_path("tests/workloads/apps/drift_probe.py")).unwrap()
}

/// Runs the drift probe in a container (`mode` train or drift) with `flags`, connects to its
/// trigger port once `ready` says so, and returns the container's output.
fn run_probe(name: &str, flags: &[String], mode: &str, ready: &mut dyn FnMut()) -> Output {
    let _r = removed(&["docker".into()], None, name);
    let child = Command::new("docker")
        .args(["run", "--rm", "--name", name])
        .args(flags)
        .arg(DEBIAN_APPS_IMAGE)
        .args(["python3", "-c", &drift_script(), mode, "/tmp"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let docker = vec!["docker".to_owned()];
    let mut ip = String::new();
    wait_for("the probe", || {
        ip_of(&docker, None, name).is_some_and(|i| {
            ip = i;
            true
        })
    });
    ready();
    let mut trigger = None;
    wait_for("the probe's port", || {
        trigger = TcpStream::connect(format!("{ip}:9000")).ok();
        trigger.is_some()
    });
    let mut t = trigger.unwrap();
    t.write_all(b"go").unwrap();
    let mut ok = [0u8; 2];
    let _ = t.read_exact(&mut ok);
    child.wait_with_output().unwrap()
}

privileged_test!(
    #[scratch = "watch-drift"]
    fn watch_reports_exactly_the_drift_and_promote_makes_it_pass(dir: TempDir) {
        require_docker();
        let pid = std::process::id();
        // Training: recorded from the start.
        let profile = dir.join("p");
        let train_name = format!("drift-train-{pid}");
        let _rt = removed(&["docker".into()], None, &train_name);
        let script = drift_script();
        let mut rec = profiler()
            .args(["record", "-q", "--containers", "--out"])
            .arg(&profile)
            .args(["--", "docker", "run", "--rm", "--name", &train_name])
            .arg(DEBIAN_APPS_IMAGE)
            .args(["python3", "-c", &script, "train", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let docker = vec!["docker".to_owned()];
        let mut ip = String::new();
        wait_for("the training probe", || {
            ip_of(&docker, None, &train_name).is_some_and(|i| {
                ip = i;
                true
            })
        });
        let mut t = None;
        wait_for("its port", || {
            t = TcpStream::connect(format!("{ip}:9000")).ok();
            t.is_some()
        });
        t.unwrap().write_all(b"go").unwrap();
        assert!(rec.wait().unwrap().success());
        // The same profile in log mode: what it does not list is let through, and logged.
        let log_mode = dir.join("p-log");
        run_ok(
            profiler()
                .args(["generate", "--default-action", "log", "--out"])
                .arg(&log_mode)
                .arg(profile.join("trace.json")),
        );
        // Production: the probe in drift mode under the log-mode seccomp profile, watched.
        let prod = format!("drift-prod-{pid}");
        let log = dir.join("watch.jsonl");
        let next = dir.join("next");
        let seccomp = vec![
            "--security-opt".to_owned(),
            format!("seccomp={}", log_mode.join("seccomp.json").display()),
        ];
        let mut watcher: Option<Started> = None;
        let o = {
            let (log, next, prod_name, profile) =
                (log.clone(), next.clone(), prod.clone(), profile.clone());
            run_probe(&prod, &seccomp, "drift", &mut || {
                watcher = Some(start_profiler(
                    &[
                        "watch",
                        "--profile",
                        profile.to_str().unwrap(),
                        "--attach",
                        &format!("docker:{prod_name}"),
                        "--log",
                        log.to_str().unwrap(),
                        "--promote",
                        next.to_str().unwrap(),
                    ],
                    &[],
                    "watching",
                ));
            })
        };
        assert!(o.status.success(), "the drift ran under log mode: {o:?}");
        let (code, diff_text, err) = watcher.unwrap().wait();
        assert_eq!(code, 5, "watch exits 5 on drift: {err}");
        let lines = json_lines(&log);
        assert_eq!(
            drift_kinds(&log),
            FOUR,
            "exactly the four drift lines: {lines:?}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l["kind"] == "summary" && l["final"] == true)
        );
        // promote's diff, on watch's stdout: exactly the four additions.
        let added: Vec<&str> = diff_text.lines().filter(|l| l.starts_with('+')).collect();
        assert_eq!(
            added,
            [
                "+ x86_64 syscalls: getsid",
                "+ capability CAP_CHOWN",
                // The file /bin/true is (/bin links to usr/bin in the image).
                "+ executable \"/usr/bin/true\"",
                "+ bind port 9001"
            ],
            "{diff_text}"
        );
        // The promoted profile, enforced (errno default, its capabilities), lets the new
        // behaviour pass; the old one does not.
        let enforced = |p: &Path| -> Vec<String> {
            let mut f = vec![
                "--security-opt".to_owned(),
                format!("seccomp={}", p.join("seccomp.json").display()),
            ];
            f.extend(cap_add_flags(&p.join("capabilities.json")));
            f
        };
        let o = run_probe(
            &format!("drift-next-{pid}"),
            &enforced(&next),
            "drift",
            &mut || {},
        );
        assert!(o.status.success(), "under the promoted profile: {o:?}");
        let o = run_probe(
            &format!("drift-old-{pid}"),
            &enforced(&profile),
            "drift",
            &mut || {},
        );
        assert!(
            !o.status.success(),
            "the old profile let the drift through: {o:?}"
        );
        // `profiler promote` from the log alone gives the same profile.
        let again = dir.join("again");
        let o = profiler()
            .args(["promote", "--out"])
            .arg(&again)
            .arg(&profile)
            .arg(&log)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{o:?}");
        assert_eq!(
            std::fs::read_to_string(again.join("seccomp.json")).unwrap(),
            std::fs::read_to_string(next.join("seccomp.json")).unwrap()
        );
        let coverage = read_json(&next.join("coverage.json"));
        assert_eq!(
            coverage["runs"].as_array().unwrap().len(),
            2,
            "{coverage:#}"
        );
    }
);

/// The four drift lines of the probe, whatever else the line says.
fn drift_kinds(log: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| !matches!(l["kind"].as_str(), Some("summary" | "trace")))
        .map(|mut l| {
            let m = l.as_object_mut().unwrap();
            m.remove("time");
            m.remove("cgroup");
            serde_json::to_string(&l).unwrap()
        })
        .collect();
    v.sort();
    v
}

const FOUR: [&str; 4] = [
    r#"{"arch":"x86_64","kind":"syscall","name":"getsid"}"#,
    r#"{"kind":"bind","port":9001}"#,
    r#"{"kind":"capability","name":"CAP_CHOWN"}"#,
    r#"{"kind":"exec","path":"/bin/true"}"#,
];

privileged_test!(
    #[scratch = "watch-started"]
    /// `watch -- CMD` and `watch --containers -- CMD`: the workload watch starts itself.
    fn watch_starts_a_command_or_its_containers_and_reports_the_same_drift(dir: TempDir) {
        require_docker();
        let script = drift_script();
        let data = dir.join("data");
        std::fs::create_dir(&data).unwrap();
        let trigger = |addr: String| {
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(30);
                loop {
                    if let Ok(mut t) = TcpStream::connect(&addr) {
                        let _ = t.write_all(b"go");
                        let mut ok = [0u8; 2];
                        let _ = t.read_exact(&mut ok);
                        return;
                    }
                    assert!(Instant::now() < deadline, "no probe at {addr}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            })
        };
        // A command: trained, then watched in drift mode.
        let profile = dir.join("cmd");
        let t = trigger("127.0.0.1:9000".into());
        run_ok(
            profiler()
                .args(["record", "-q", "--out"])
                .arg(&profile)
                .args(["--", "/usr/bin/python3", "-c", &script, "train"])
                .arg(&data),
        );
        t.join().unwrap();
        let log = dir.join("cmd.jsonl");
        let t = trigger("127.0.0.1:9000".into());
        let o = profiler()
            .args(["watch", "--profile"])
            .arg(&profile)
            .arg("--log")
            .arg(&log)
            .args(["--", "/usr/bin/python3", "-c", &script, "drift"])
            .arg(&data)
            .output()
            .unwrap();
        t.join().unwrap();
        assert_eq!(o.status.code(), Some(5), "{o:?}");
        assert_eq!(drift_kinds(&log), FOUR, "{o:?}");

        // Containers: the profile recorded from a container, the production container
        // started by watch under the log-mode profile.
        let pid = std::process::id();
        let cprofile = dir.join("container");
        let n1 = format!("wc-train-{pid}");
        let _r1 = removed(&["docker".into()], None, &n1);
        let rec = profiler()
            .args(["record", "-q", "--containers", "--out"])
            .arg(&cprofile)
            .args(["--", "docker", "run", "--rm", "--name", &n1])
            .arg(DEBIAN_APPS_IMAGE)
            .args(["python3", "-c", &script, "train", "/tmp"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let docker = vec!["docker".to_owned()];
        let mut ip = String::new();
        wait_for("the training container", || {
            ip_of(&docker, None, &n1).is_some_and(|i| {
                ip = i;
                true
            })
        });
        trigger(format!("{ip}:9000")).join().unwrap();
        assert!(rec.wait_with_output().unwrap().status.success());
        let log_mode = dir.join("container-log");
        run_ok(
            profiler()
                .args(["generate", "--default-action", "log", "--out"])
                .arg(&log_mode)
                .arg(cprofile.join("trace.json")),
        );
        let n2 = format!("wc-prod-{pid}");
        let _r2 = removed(&["docker".into()], None, &n2);
        let clog = dir.join("containers.jsonl");
        let seccomp = format!("seccomp={}", log_mode.join("seccomp.json").display());
        let watch = profiler()
            .args(["watch", "--profile"])
            .arg(&cprofile)
            .arg("--log")
            .arg(&clog)
            .args([
                "--containers",
                "--",
                "docker",
                "run",
                "--rm",
                "--name",
                &n2,
                "--security-opt",
                &seccomp,
            ])
            .arg(DEBIAN_APPS_IMAGE)
            .args(["python3", "-c", &script, "drift", "/tmp"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        wait_for("the production container", || {
            ip_of(&docker, None, &n2).is_some_and(|i| {
                ip = i;
                true
            })
        });
        trigger(format!("{ip}:9000")).join().unwrap();
        let o = watch.wait_with_output().unwrap();
        assert_eq!(o.status.code(), Some(5), "{o:?}");
        assert_eq!(drift_kinds(&clog), FOUR, "{o:?}");
        // Each line names the container's cgroup, below the recording cgroup.
        let text = std::fs::read_to_string(&clog).unwrap();
        assert!(
            text.lines()
                .filter(|l| l.contains("\"kind\":\"bind\""))
                .all(|l| l.contains("\"cgroup\":\"profiler/rec-")),
            "{text}"
        );
    }
);

privileged_test!(
    #[scratch = "watch-args"]
    /// A syscall the profile allows only for some argument values, made with another value:
    /// a drift line with the arguments the profile would need.
    fn watch_reports_new_argument_values(dir: TempDir) {
        let profile = dir.join("p");
        let program = "import socket, sys, time\nfamily = {'4': socket.AF_INET, '6': socket.AF_INET6}[sys.argv[1]]\nsocket.socket(family).close()\ntime.sleep(1.5)\n";
        run_ok(
            profiler()
                .args(["record", "-q", "--out"])
                .arg(&profile)
                .args(["--", "/usr/bin/python3", "-c", program, "4"]),
        );
        let log = dir.join("args.jsonl");
        let o = profiler()
            .args(["watch", "--profile"])
            .arg(&profile)
            .arg("--log")
            .arg(&log)
            .args(["--", "/usr/bin/python3", "-c", program, "6"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(5), "{o:?}");
        let lines = drift_kinds(&log);
        assert!(
            lines.contains(&format!(
                r#"{{"arch":"x86_64","arguments":"arg0 == {}","kind":"syscall","name":"socket"}}"#,
                libc::AF_INET6
            )),
            "{lines:?}"
        );
    }
);
