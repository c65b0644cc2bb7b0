//! Real software in a real Debian image (`cargo xtask setup` builds it with debootstrap):
//! PostgreSQL (multi-process, shared memory, runs as `postgres`), memcached (threads, runs
//! as `memcache`), a threaded Python service that never forks and writes its data
//! directory (runs as `app`, 1500:1500), and a compose stack of the service and memcached.
//!
//! For each: record while a training client runs, then run the same image in production
//! with exactly the generated flags and the training client again; a second, legitimate
//! action on the trained paths; and what the profile must deny (an exec of `sh`, a write
//! outside the writable directories, an unrecorded syscall).
use std::io::{Read as _, Write as _};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use integration_tests::*;

/// The Debian image `cargo xtask setup` imports (xtask/src/images.rs).
const IMAGE: &str = DEBIAN_APPS_IMAGE;
const PODMAN_DEBIAN_IMAGE: &str = PODMAN_DEBIAN_APPS_IMAGE;
/// The services' command lines, named once with the image (xtask/src/lib.rs).
const POSTGRES: &[&str] = xtask::POSTGRES_CMD;
const MEMCACHED: &[&str] = xtask::MEMCACHED_CMD;
const SERVICE: &[&str] = xtask::APP_CMD;

fn require_image() {
    let ok = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(ok, "{IMAGE} is missing: run `cargo xtask setup`");
}

fn docker_removed(name: &str) -> Removed {
    Removed {
        argv: ["docker", "rm", "-f", name].map(str::to_owned).to_vec(),
        env: None,
    }
}

fn podman_removed(argv: &[String], conf: &Path, name: &str) -> Removed {
    let mut v = argv.to_vec();
    v.extend(["rm", "-f", name].map(str::to_owned));
    Removed {
        argv: v,
        env: Some(("CONTAINERS_CONF".into(), conf.to_path_buf())),
    }
}

fn compose_removed(project: &str, files: &[&Path]) -> Removed {
    let mut v = vec!["docker-compose".to_owned(), "-p".into(), project.to_owned()];
    for f in files {
        v.push("-f".into());
        v.push(f.display().to_string());
    }
    v.push("down".into());
    Removed { argv: v, env: None }
}

/// A unique container name per test run.
fn name(tag: &str) -> String {
    format!("profiler-real-{tag}-{}", std::process::id())
}

/// Polls `f` until it holds (30 s at most), with `what` in the failure message.
fn wait_until(what: &str, mut f: impl FnMut() -> bool, diag: &dyn Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}: {}",
            diag()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn container_ip(engine: &[&str], name: &str) -> Option<String> {
    let o = Command::new(engine[0])
        .args(&engine[1..])
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            name,
        ])
        .output()
        .ok()?;
    let ip = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    (o.status.success() && !ip.is_empty()).then_some(ip)
}

fn expect_http(addr: &str, method: &str, path: &str, body: &[u8], status: u16, reply: &[u8]) {
    let got = http(addr, method, path, body);
    assert_eq!(
        got.as_ref().map(|(s, b)| (*s, b.as_slice())),
        Some((status, reply)),
        "{method} {path} on {addr}: {:?}",
        got.as_ref()
            .map(|(s, b)| (*s, String::from_utf8_lossy(b).into_owned()))
    );
}

/// A memcached text-protocol exchange: sends `request`, reads until `end`.
fn memcache(addr: &str, request: &str, end: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(request.as_bytes()).ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(end) {
        let n = s.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(String::from_utf8_lossy(&got).into_owned())
}

fn psql(ip: &str, sql: &str) -> Output {
    with_timeout("psql")
        .args([
            "-h",
            ip,
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-v",
            "ON_ERROR_STOP=1",
        ])
        .args(["-A", "-t", "-c", sql])
        .output()
        .expect("psql (postgresql-client) is installed by cargo xtask setup")
}

fn psql_ok(ip: &str, sql: &str) -> String {
    let o = psql(ip, sql);
    assert!(
        o.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_owned()
}

/// `docker exec NAME ARGS...`.
fn exec(engine: &[&str], name: &str, args: &[&str]) -> Output {
    with_timeout(engine[0])
        .args(&engine[1..])
        .arg("exec")
        .arg(name)
        .args(args)
        .output()
        .unwrap()
}

fn stop(engine: &[&str], name: &str) {
    let _ = with_timeout(engine[0])
        .args(&engine[1..])
        .args(["stop", "-t", "10", name])
        .output();
}

/// `profiler record --containers --out OUT -- docker run --rm --name NAME ARGS... IMAGE CMD...`
/// in the background.
fn record_docker(dir: &TempDir, out: &Path, name: &str, args: &[&str], cmd: &[&str]) -> Background {
    let mut c = profiler();
    c.args(["record", "--containers", "--out"])
        .arg(out)
        .args(["--", "docker", "run", "--rm", "--name", name])
        .args(args)
        .arg(IMAGE)
        .args(cmd);
    Background::start(&mut c, dir, "record")
}

/// `docker run -d --name NAME FLAGS... IMAGE CMD...` under `profiler enforce` (the image
/// profile's exec check; the flags carry seccomp, capabilities and the rest), in the
/// background, logging violations to `log`.
fn production_docker(
    dir: &TempDir,
    profile: &Path,
    log: &Path,
    name: &str,
    cmd: &[&str],
) -> Background {
    let mut c = profiler();
    c.args(["enforce", "--containers", "--profile"])
        .arg(profile)
        .arg("--log")
        .arg(log)
        .args(["--", "docker", "run", "--rm", "--name", name])
        .args(docker_run_flags(profile))
        .arg(IMAGE)
        .args(cmd);
    Background::start(&mut c, dir, "production")
}

/// `sh` was never part of the recording: exec'ing it into the running container is killed
/// before it runs, and logged.
fn assert_exec_of_sh_is_killed(engine: &[&str], name: &str, log: &Path) {
    assert_sealed(engine, name);
    let o = exec(engine, name, &["/bin/sh", "-c", "echo should-not-run"]);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        !o.status.success() && !stdout.contains("should-not-run"),
        "sh ran: {o:?}"
    );
    // enforce writes the line when it drains the kernel's events (every 50 ms).
    let logged = |v: &[serde_json::Value]| {
        v.iter()
            .any(|l| l["rule"] == "exec-not-in-profile" && l["path"] == "/bin/sh")
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut v = json_lines(log);
    while !logged(&v) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        v = json_lines(log);
    }
    assert!(logged(&v), "no violation logged for /bin/sh: {v:?}");
}

/// The container started through the sealing entrypoint of its run flags, and the kernel
/// took the whole Landlock ruleset (its log's first lines).
fn assert_sealed(engine: &[&str], name: &str) {
    let o = with_timeout(engine[0])
        .args(&engine[1..])
        .args(["logs", name])
        .output()
        .unwrap();
    let logs = String::from_utf8_lossy(&o.stderr);
    assert!(
        logs.contains("profiler-seal: landlock (kernel ABI") && logs.contains("fully enforced"),
        "{name} is not sealed: {o:?}"
    );
}

/// The uid the container's main process runs as, from the host's /proc (an exec into the
/// container would itself be judged).
fn main_uid(name: &str) -> String {
    let o = run_ok(Command::new("docker").args(["inspect", "-f", "{{.State.Pid}}", name]));
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid = status.lines().find_map(|l| l.strip_prefix("Uid:")).unwrap();
    uid.split_whitespace().next().unwrap().to_owned()
}

fn flag_pairs(flags: &[String]) -> Vec<(String, String)> {
    flags
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

privileged_test!(
    /// The threaded Python service: runs as `app` and writes /var/lib/app (1500:1500, 0750,
    /// empty in the image). Its only clone calls are pthread_create's clone3.
    fn python_service_runs_non_root_under_its_docker_profile() {
        require_docker();
        require_image();
        let dir = TempDir::new("real-python");
        let profile = dir.join("app");
        let n = name("py");
        let _n_removed = docker_removed(&n);
        let rec = record_docker(&dir, &profile, &n, &["--user", "app"], SERVICE);
        let addr = service_addr(&["docker"], &n, &rec);
        // Training: store an item and read it back.
        expect_http(&addr, "POST", "/items/first", b"one", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/first", b"", 200, b"one");
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");

        let trace = read_json(&profile.join("trace.json"));
        assert_eq!(
            trace["cgroup"]["container_info"]["name"],
            n.as_str(),
            "{err}"
        );
        // python3 imports much of libc: an interpreter, in coverage.json and not in the summary.
        let cov = read_json(&profile.join("coverage.json"));
        let (python, program) = cov["programs"]
            .as_object()
            .unwrap()
            .iter()
            .find(|(p, _)| p.starts_with("/usr/bin/python3"))
            .unwrap_or_else(|| panic!("{cov:#}"));
        assert!(
            program["runtime"]
                .as_str()
                .is_some_and(|r| r.starts_with("interpreter"))
        );
        assert!(!program["imported_only"].as_object().unwrap().is_empty());
        assert!(
            !err.lines()
                .any(|l| l.contains("imported, never called") && l.contains(python.as_str())),
            "{err}"
        );
        let names = &traced_syscalls(&trace)["x86_64"];
        assert!(
            names.contains("clone3"),
            "threads are made with clone3: {names:?}"
        );
        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(image["run_as"], "1500:1500", "{image:#}");
        assert_eq!(
            image["directories"]["/var/lib/app"],
            serde_json::json!({"uid": 1500, "gid": 1500, "mode": 0o750, "has_image_content": false}),
            "{image:#}"
        );
        let flags = docker_run_flags(&profile);
        let pairs = flag_pairs(&flags);
        for (f, v) in [
            ("--user", "1500:1500"),
            (
                "--tmpfs",
                "/var/lib/app:rw,nosuid,nodev,uid=1500,gid=1500,mode=0750",
            ),
            ("--cap-drop", "ALL"),
        ] {
            assert!(
                pairs.contains(&(f.into(), v.into())),
                "{f} {v} not in {flags:?}"
            );
        }
        let seccomp = read_json(&profile.join("seccomp.json"));
        let clone_rule = seccomp["syscalls"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["names"] == serde_json::json!(["clone"]));
        assert!(
            clone_rule.is_some_and(|r| r["action"] == "SCMP_ACT_ALLOW"),
            "{seccomp:#}"
        );
        let allowed = allowed_names(&profile.join("seccomp.json"));
        assert!(
            !allowed.contains("getsid"),
            "the test needs an unrecorded syscall"
        );

        // Production: the same image with exactly the generated flags.
        let log = dir.join("violations.jsonl");
        let n2 = name("py-prod");
        let _n2_removed = docker_removed(&n2);
        let prod = production_docker(&dir, &profile, &log, &n2, SERVICE);
        let addr = service_addr(&["docker"], &n2, &prod);
        expect_http(&addr, "POST", "/items/first", b"one", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/first", b"", 200, b"one");
        // A second, legitimate action on the trained paths: another item, overwritten.
        expect_http(&addr, "POST", "/items/second", b"two", 201, b"stored\n");
        expect_http(&addr, "POST", "/items/second", b"2", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/second", b"", 200, b"2");
        // Threads keep being made under the profile (each request is served by a new one).
        let o = exec(
            &["docker"],
            &n2,
            &["python3", "-c", "import os; print(os.getuid())"],
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1500", "{o:?}");
        // A write outside the writable directories: the root is read-only.
        let o = exec(&["docker"], &n2, &["python3", "-c", "open('/etc/x', 'w')"]);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{o:?}"
        );
        // An unrecorded syscall is denied by the seccomp profile (EPERM).
        let o = exec(
            &["docker"],
            &n2,
            &["python3", "-c", "import os; os.getsid(0)"],
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("[Errno 1] Operation not permitted"),
            "{o:?}"
        );
        assert_exec_of_sh_is_killed(&["docker"], &n2, &log);
        stop(&["docker"], &n2);
        let (code, _, err) = prod.wait();
        // The service stopped cleanly, but `sh` was killed in it: enforce exits 5.
        assert_eq!(code, 5, "{err}");
    }
);

/// `uid:gid` of a user in the image, as its /etc/passwd says (Debian numbers package users
/// as they are installed).
fn image_ids(user: &str) -> String {
    let o = run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        user,
        IMAGE,
        "id",
        "-u",
    ]));
    let uid = String::from_utf8_lossy(&o.stdout).trim().to_owned();
    let o = run_ok(Command::new("docker").args([
        "run",
        "--rm",
        "--network",
        "none",
        "--user",
        user,
        IMAGE,
        "id",
        "-g",
    ]));
    format!("{uid}:{}", String::from_utf8_lossy(&o.stdout).trim())
}

fn ready_ip(engine: &[&str], name: &str, probe: &dyn Fn(&str) -> bool, bg: &Background) -> String {
    let mut found = String::new();
    wait_until(
        &format!("{name} to answer"),
        || {
            container_ip(engine, name).is_some_and(|ip| {
                found = ip;
                probe(&found)
            })
        },
        &|| bg.stderr(),
    );
    found
}

/// The Python service's address once its health check answers 200.
fn service_addr(engine: &[&str], name: &str, bg: &Background) -> String {
    let healthy = |ip: &str| {
        http(&format!("{ip}:8080"), "GET", "/health", b"").is_some_and(|(s, _)| s == 200)
    };
    format!("{}:8080", ready_ip(engine, name, &healthy, bg))
}

privileged_test!(
    /// PostgreSQL: a postmaster and its forked backends, shared memory, runs as `postgres`; its
    /// data folder comes with the image (an initialised cluster), its socket folder is empty.
    fn postgresql_serves_under_its_docker_profile() {
        require_docker();
        require_image();
        let ids = image_ids("postgres");
        let dir = TempDir::new("real-postgres");
        let profile = dir.join("db");
        let n = name("pg");
        let _n_removed = docker_removed(&n);
        let rec = record_docker(&dir, &profile, &n, &["--user", "postgres"], POSTGRES);
        let up = |ip: &str| psql(ip, "select 1").status.success();
        let ip = ready_ip(&["docker"], &n, &up, &rec);
        // Training: a table, rows, a query, from two connections.
        psql_ok(&ip, "create table items (id int primary key, name text)");
        psql_ok(&ip, "insert into items values (1, 'one')");
        assert_eq!(psql_ok(&ip, "select name from items where id = 1"), "one");
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");

        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(image["run_as"], ids.as_str(), "{image:#}");
        let (uid, gid) = ids.split_once(':').unwrap();
        let data = &image["directories"]["/var/lib/postgresql/15/main"];
        assert_eq!(data["has_image_content"], true, "{image:#}");
        let socket_dir = &image["directories"]["/var/run/postgresql"];
        assert_eq!(socket_dir["has_image_content"], false, "{image:#}");
        assert_eq!(socket_dir["uid"].to_string(), uid, "{image:#}");
        let flags = docker_run_flags(&profile);
        let pairs = flag_pairs(&flags);
        assert!(
            pairs.contains(&("--volume".into(), "/var/lib/postgresql/15/main".into())),
            "the data folder must keep the image's cluster: {flags:?}"
        );
        assert!(
            pairs.iter().any(|(f, v)| f == "--tmpfs"
                && v.starts_with(&format!(
                    "/var/run/postgresql:rw,nosuid,nodev,uid={uid},gid={gid},mode="
                ))),
            "{flags:?}"
        );
        assert!(pairs.contains(&("--user".into(), ids.clone())), "{flags:?}");
        // Debian's postgres is in ssl-cert, which lets it read its TLS key: a numeric --user
        // loses that membership unless the flags add it back.
        let ssl_cert = String::from_utf8_lossy(
            &run_ok(Command::new("docker").args([
                "run",
                "--rm",
                "--network",
                "none",
                IMAGE,
                "getent",
                "group",
                "ssl-cert",
            ]))
            .stdout,
        )
        .split(':')
        .nth(2)
        .unwrap()
        .to_owned();
        assert!(
            pairs.contains(&("--group-add".into(), ssl_cert)),
            "{flags:?}"
        );

        let log = dir.join("violations.jsonl");
        let n2 = name("pg-prod");
        let _n2_removed = docker_removed(&n2);
        let prod = production_docker(&dir, &profile, &log, &n2, POSTGRES);
        let ip = ready_ip(&["docker"], &n2, &up, &prod);
        // The training client again (the image's cluster is a fresh copy), then more of the
        // same: rows added and changed, an aggregate.
        psql_ok(&ip, "create table items (id int primary key, name text)");
        psql_ok(&ip, "insert into items values (1, 'one')");
        assert_eq!(psql_ok(&ip, "select name from items where id = 1"), "one");
        psql_ok(
            &ip,
            "insert into items values (2, 'two'); update items set name = 'uno' where id = 1",
        );
        assert_eq!(
            psql_ok(&ip, "select string_agg(name, ',' order by id) from items"),
            "uno,two"
        );
        assert_eq!(
            main_uid(&n2),
            uid,
            "postgres must run as postgres in production"
        );
        // The server writing outside its writable folders: the root is read-only.
        let o = psql(&ip, "copy (select 1) to '/etc/exported'");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{o:?}"
        );
        assert_exec_of_sh_is_killed(&["docker"], &n2, &log);
        stop(&["docker"], &n2);
        let (code, _, err) = prod.wait();
        // The service stopped cleanly, but `sh` was killed in it: enforce exits 5.
        assert_eq!(code, 5, "{err}");
    }
);

privileged_test!(
    /// memcached: one process, worker threads, runs as `memcache`, writes nothing.
    fn memcached_serves_under_its_docker_profile() {
        require_docker();
        require_image();
        let ids = image_ids("memcache");
        let dir = TempDir::new("real-memcached");
        let profile = dir.join("cache");
        let n = name("mc");
        let _n_removed = docker_removed(&n);
        let rec = record_docker(&dir, &profile, &n, &["--user", "memcache"], MEMCACHED);
        let up = |ip: &str| {
            memcache(&format!("{ip}:11211"), "version\r\n", "\r\n")
                .is_some_and(|r| r.starts_with("VERSION"))
        };
        let ip = ready_ip(&["docker"], &n, &up, &rec);
        let addr = format!("{ip}:11211");
        let train = |addr: &str| {
            assert_eq!(
                memcache(addr, "set k 0 0 3\r\none\r\n", "\r\n").as_deref(),
                Some("STORED\r\n")
            );
            assert_eq!(
                memcache(addr, "get k\r\n", "END\r\n").as_deref(),
                Some("VALUE k 0 3\r\none\r\nEND\r\n")
            );
        };
        train(&addr);
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");
        let image = read_json(&profile.join("image-profile.json"));
        assert_eq!(image["run_as"], ids.as_str(), "{image:#}");
        let flags = docker_run_flags(&profile);
        assert!(flags.contains(&"--read-only".to_owned()), "{flags:?}");

        let log = dir.join("violations.jsonl");
        let n2 = name("mc-prod");
        let _n2_removed = docker_removed(&n2);
        let prod = production_docker(&dir, &profile, &log, &n2, MEMCACHED);
        let ip = ready_ip(&["docker"], &n2, &up, &prod);
        let addr = format!("{ip}:11211");
        train(&addr);
        // More of the same: a larger value under another key, both read back in one get.
        let big = "x".repeat(5000);
        assert_eq!(
            memcache(
                &addr,
                &format!("set k2 0 0 {}\r\n{big}\r\n", big.len()),
                "\r\n"
            )
            .as_deref(),
            Some("STORED\r\n")
        );
        let got = memcache(&addr, "get k k2\r\n", "END\r\n").unwrap();
        assert!(
            got.contains("VALUE k 0 3\r\none") && got.contains(&big),
            "{got}"
        );
        assert_eq!(
            Some(main_uid(&n2).as_str()),
            ids.split(':').next(),
            "memcached must run as memcache in production"
        );
        assert_exec_of_sh_is_killed(&["docker"], &n2, &log);
        stop(&["docker"], &n2);
        let (code, _, err) = prod.wait();
        // The service stopped cleanly, but `sh` was killed in it: enforce exits 5.
        assert_eq!(code, 5, "{err}");
    }
);

fn compose_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("workloads/apps/docker-compose.yml")
}

fn compose(project: &str, files: &[&Path], args: &[&str]) -> Output {
    let mut c = with_timeout("docker-compose");
    c.args(["-p", project]);
    for f in files {
        c.arg("-f").arg(f);
    }
    c.args(args).output().unwrap()
}

privileged_test!(
    /// A compose stack recorded as it is started (`docker-compose up`, the user's file untouched),
    /// then run in production with the override profiler writes.
    fn compose_stack_recorded_and_run_with_its_override() {
        require_docker();
        require_image();
        let dir = TempDir::new("real-compose");
        let out = dir.join("stack");
        let project = format!("profilerreal{}", std::process::id());
        let file = compose_file();
        let mut c = profiler();
        c.args(["record", "--containers", "--out"])
            .arg(&out)
            .args(["--", "docker-compose", "-p", &project, "-f"])
            .arg(&file)
            .arg("up");
        let rec = Background::start(&mut c, &dir, "record");
        let _project_removed = compose_removed(&project, &[&file]);
        let app = format!("{project}_app_1");
        let up = |ip: &str| {
            http(&format!("{ip}:8080"), "GET", "/health", b"").is_some_and(|(s, _)| s == 200)
        };
        let ip = ready_ip(&["docker"], &app, &up, &rec);
        let cache_ip =
            container_ip(&["docker"], &format!("{project}_cache_1")).expect("cache container");
        let addr = format!("{ip}:8080");
        let train = |addr: &str| {
            expect_http(addr, "POST", "/items/first", b"one", 201, b"stored\n");
            expect_http(addr, "GET", "/items/first", b"", 200, b"one");
            expect_http(addr, "POST", "/cache/k", b"cached", 201, b"stored\n");
            expect_http(addr, "GET", "/cache/k", b"", 200, b"cached");
        };
        train(&addr);
        // Stopped from outside the recording, as a user would; `up` then returns.
        let o = compose(&project, &[&file], &["stop"]);
        assert!(o.status.success(), "{o:?}");
        let (code, _, err) = rec.wait();
        let o = compose(&project, &[&file], &["down"]);
        assert!(o.status.success(), "down after the recording: {o:?}");
        assert_eq!(code, 0, "{err}");

        // One folder per service, named after it, and the override for all of them.
        for service in ["app", "cache"] {
            let trace = read_json(&out.join(service).join("trace.json"));
            assert_eq!(
                trace["cgroup"]["container_info"]["compose_service"], service,
                "{err}"
            );
            assert!(out.join(service).join("seccomp.json").exists());
        }
        // Each service's NetworkPolicy (valid for Kubernetes 1.33) holds what it did on the
        // compose network: the app listens on 8080, resolves `cache` through Docker's DNS and
        // connects to memcached; memcached only listens.
        let policy = |service: &str| {
            let file = out.join(service).join("networkpolicy.yaml");
            kubernetes_validate_strict(&file);
            yaml_documents(&file).remove(0)
        };
        let ports = |rule: &serde_json::Value| -> Vec<String> {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| format!("{}/{}", p["protocol"].as_str().unwrap(), p["port"]))
                .collect()
        };
        let app_policy = policy("app");
        assert_eq!(
            app_policy["spec"]["podSelector"]["matchLabels"]["app"],
            "app"
        );
        let ingress = app_policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1, "{app_policy:#}");
        assert_eq!(ports(&ingress[0]), ["TCP/8080"], "{app_policy:#}");
        let egress = app_policy["spec"]["egress"].as_array().unwrap();
        let to_cache = egress
            .iter()
            .find(|r| r["to"][0]["ipBlock"]["cidr"] == format!("{cache_ip}/32"))
            .unwrap_or_else(|| panic!("no egress to the cache at {cache_ip}: {app_policy:#}"));
        assert!(
            ports(to_cache).contains(&"TCP/11211".to_owned()),
            "{app_policy:#}"
        );
        assert!(
            egress
                .iter()
                .any(|r| r["to"][0]["podSelector"]["matchLabels"]["k8s-app"] == "kube-dns"),
            "the app resolved `cache`: {app_policy:#}"
        );
        let cache_policy = policy("cache");
        let ingress = cache_policy["spec"]["ingress"].as_array().unwrap();
        assert_eq!(ingress.len(), 1, "{cache_policy:#}");
        assert_eq!(ports(&ingress[0]), ["TCP/11211"], "{cache_policy:#}");
        assert_eq!(
            cache_policy["spec"]["egress"],
            serde_json::json!([]),
            "{cache_policy:#}"
        );

        let override_file = out.join("docker-compose.profile.yml");
        let text = std::fs::read_to_string(&override_file).unwrap();
        // docker-compose itself must accept it, merged over the user's file.
        let o = compose(&project, &[&file, &override_file], &["config"]);
        assert!(o.status.success(), "{text}\n{o:?}");
        let config = String::from_utf8_lossy(&o.stdout);
        assert!(config.contains("read_only: true"), "{config}");
        assert!(config.contains("uid=1500,gid=1500,mode=0750"), "{config}");

        let project2 = format!("{project}prod");
        let _project2_removed = compose_removed(&project2, &[&file, &override_file]);
        let o = compose(&project2, &[&file, &override_file], &["up", "-d"]);
        assert!(o.status.success(), "{text}\n{o:?}");
        let app2 = format!("{project2}_app_1");
        let ip = container_ip(&["docker"], &app2).expect("app container");
        let addr = format!("{ip}:8080");
        let deadline = Instant::now() + Duration::from_secs(30);
        while !up(&ip) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        let logs = || {
            String::from_utf8_lossy(&compose(&project2, &[&file, &override_file], &["logs"]).stdout)
                .into_owned()
        };
        assert!(up(&ip), "{}", logs());
        train(&addr);
        expect_http(&addr, "POST", "/cache/k2", b"more", 201, b"stored\n");
        expect_http(&addr, "GET", "/cache/k2", b"", 200, b"more");
        expect_http(&addr, "POST", "/items/second", b"two", 201, b"stored\n");
        // Both services run sealed through the override's entrypoint.
        assert!(config.contains("/.profiler-seal/profiler-seal"), "{config}");
        assert_sealed(&["docker"], &app2);
        assert_sealed(&["docker"], &format!("{project2}_cache_1"));
        let o = exec(
            &["docker"],
            &app2,
            &["python3", "-c", "open('/etc/x', 'w')"],
        );
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{o:?}"
        );
        let o = compose(&project2, &[&file, &override_file], &["down"]);
        assert!(o.status.success(), "{o:?}");
    }
);

privileged_test!(
    /// The Python service under podman (runc), with podman-run.txt's flags: podman cannot give a
    /// tmpfs an owner, so the flags chown it to the container user (`U`).
    fn python_service_runs_under_its_podman_profile() {
        require_image();
        let (conf, argv) = podman_argv();
        let engine: Vec<&str> = argv.iter().map(String::as_str).collect();
        let dir = TempDir::new("real-podman");
        let profile = dir.join("app");
        let n = name("podman-py");
        let _n_removed = podman_removed(&argv, &conf, &n);
        let mut c = profiler();
        c.env("CONTAINERS_CONF", &conf)
            .args(["record", "--containers", "--out"])
            .arg(&profile)
            .arg("--")
            .args(&engine)
            .args([
                "run",
                "--rm",
                "--name",
                &n,
                "--user",
                "app",
                PODMAN_DEBIAN_IMAGE,
            ])
            .args(SERVICE);
        let rec = Background::start(&mut c, &dir, "record");
        // SAFETY of the environment: every podman call below needs the tests' configuration.
        let podman = |args: &[&str]| -> Output {
            with_timeout(engine[0])
                .env("CONTAINERS_CONF", &conf)
                .args(&engine[1..])
                .args(args)
                .output()
                .unwrap()
        };
        let ip_of = |name: &str| -> Option<String> {
            let o = podman(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]);
            let ip = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            (o.status.success() && !ip.is_empty()).then_some(ip)
        };
        let up = |ip: &str| {
            http(&format!("{ip}:8080"), "GET", "/health", b"").is_some_and(|(s, _)| s == 200)
        };
        let mut ip = String::new();
        wait_until(
            "the service under podman",
            || {
                ip_of(&n).is_some_and(|i| {
                    ip = i;
                    up(&ip)
                })
            },
            &|| rec.stderr(),
        );
        let addr = format!("{ip}:8080");
        expect_http(&addr, "POST", "/items/first", b"one", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/first", b"", 200, b"one");
        let o = podman(&["stop", "-t", "10", &n]);
        assert!(o.status.success(), "{o:?}");
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");
        let flags = podman_run_flags(&profile);
        let pairs = flag_pairs(&flags);
        assert!(
            pairs.contains(&(
                "--tmpfs".into(),
                "/var/lib/app:rw,nosuid,nodev,mode=0750,U".into()
            )),
            "{flags:?}"
        );
        assert!(
            pairs.contains(&("--user".into(), "1500:1500".into())),
            "{flags:?}"
        );

        let n2 = name("podman-py-prod");
        let _n2_removed = podman_removed(&argv, &conf, &n2);
        let mut args: Vec<&str> = vec!["run", "-d", "--rm", "--name", &n2];
        args.extend(flags.iter().map(String::as_str));
        args.push(PODMAN_DEBIAN_IMAGE);
        args.extend(SERVICE);
        let o = podman(&args);
        assert!(o.status.success(), "{flags:?}: {o:?}");
        let mut ip = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !(ip_of(&n2).is_some_and(|i| {
            ip = i;
            up(&ip)
        })) {
            assert!(Instant::now() < deadline, "{:?}", podman(&["logs", &n2]));
            std::thread::sleep(Duration::from_millis(100));
        }
        let addr = format!("{ip}:8080");
        expect_http(&addr, "POST", "/items/first", b"one", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/first", b"", 200, b"one");
        expect_http(&addr, "POST", "/items/second", b"two", 201, b"stored\n");
        expect_http(&addr, "GET", "/items/second", b"", 200, b"two");
        // It serves sealed: the run flags started it through profiler-seal.
        let o = podman(&["logs", &n2]);
        let logs = format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            logs.contains("profiler-seal: landlock (kernel ABI") && logs.contains("fully enforced"),
            "{logs}"
        );
        let o = podman(&["exec", &n2, "python3", "-c", "open('/etc/x', 'w')"]);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Read-only file system"),
            "{o:?}"
        );
        let o = podman(&["exec", &n2, "python3", "-c", "import os; os.getsid(0)"]);
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("Operation not permitted"),
            "{o:?}"
        );
        let o = podman(&["stop", "-t", "10", &n2]);
        assert!(o.status.success(), "{o:?}");
    }
);

privileged_test!(
    /// Recorded under Docker, which lets a container bind any port (it sets
    /// net.ipv4.ip_unprivileged_port_start=0), run under podman, which keeps 1024: the non-root
    /// service on port 80 needs no capability under Docker, and podman-run.txt must say what
    /// podman needs instead (the sysctl, not CAP_NET_BIND_SERVICE, which a non-root user would
    /// not even get as effective).
    fn port_80_recorded_under_docker_also_binds_under_podman() {
        require_docker();
        require_image();
        let dir = TempDir::new("real-port80");
        let profile = dir.join("web");
        let n = name("port80");
        let _n_removed = docker_removed(&n);
        let cmd = ["python3", "/opt/app/service.py", "80"];
        let rec = record_docker(&dir, &profile, &n, &["--user", "app"], &cmd);
        let up = |ip: &str| {
            http(&format!("{ip}:80"), "GET", "/health", b"").is_some_and(|(s, _)| s == 200)
        };
        let ip = ready_ip(&["docker"], &n, &up, &rec);
        expect_http(
            &format!("{ip}:80"),
            "POST",
            "/items/a",
            b"1",
            201,
            b"stored\n",
        );
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");
        let caps = read_json(&profile.join("capabilities.json"));
        assert_eq!(caps["add"], serde_json::json!([]), "{caps:#}");
        let docker_flags = docker_run_flags(&profile);
        assert!(
            !docker_flags.iter().any(|f| f == "--sysctl"),
            "{docker_flags:?}"
        );
        let flags = podman_run_flags(&profile);
        assert!(
            flag_pairs(&flags).contains(&(
                "--sysctl".into(),
                "net.ipv4.ip_unprivileged_port_start=80".into()
            )),
            "{flags:?}"
        );
        let k8s = std::fs::read_to_string(profile.join("kubernetes.yaml")).unwrap();
        assert!(k8s.contains("net.ipv4.ip_unprivileged_port_start"), "{k8s}");

        let (conf, argv) = podman_argv();
        let podman = |args: &[&str]| -> Output {
            with_timeout(&argv[0])
                .env("CONTAINERS_CONF", &conf)
                .args(&argv[1..])
                .args(args)
                .output()
                .unwrap()
        };
        let run = |flags: &[String], name: &str| {
            let mut args: Vec<&str> = vec!["run", "-d", "--rm", "--name", name];
            args.extend(flags.iter().map(String::as_str));
            args.push(PODMAN_DEBIAN_IMAGE);
            args.extend(cmd);
            let o = podman(&args);
            assert!(o.status.success(), "{flags:?}: {o:?}");
        };
        let serving = |name: &str| {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let o = podman(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]);
                let ip = String::from_utf8_lossy(&o.stdout).trim().to_owned();
                if !ip.is_empty() && up(&ip) {
                    return Some(ip);
                }
                let running = podman(&["inspect", "-f", "{{.State.Running}}", name]);
                if Instant::now() > deadline
                    || String::from_utf8_lossy(&running.stdout).trim() != "true"
                {
                    return None;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        };
        // Without the sysctl, podman's default breaks the bind: the difference is real here.
        let without = name("port80-no-sysctl");
        let _without_removed = podman_removed(&argv, &conf, &without);
        let mut docker_flags_for_podman: Vec<String> = Vec::new();
        let mut words = flags.iter();
        while let Some(w) = words.next() {
            if w == "--sysctl" {
                words.next();
            } else {
                docker_flags_for_podman.push(w.clone());
            }
        }
        run(&docker_flags_for_podman, &without);
        assert!(
            serving(&without).is_none(),
            "port 80 bound without the sysctl under podman"
        );
        let _ = podman(&["rm", "-f", &without]);
        let with = name("port80-podman-flags");
        let _with_removed = podman_removed(&argv, &conf, &with);
        run(&flags, &with);
        let ip = serving(&with).unwrap_or_else(|| panic!("{:?}", podman(&["logs", &with])));
        let got = http(&format!("{ip}:80"), "POST", "/items/a", b"1");
        assert_eq!(
            got.as_ref().map(|(s, b)| (*s, b.as_slice())),
            Some((201, &b"stored\n"[..])),
            "{:?}\n{}\nflags {flags:?}\n{:?}\nrecorded: {:#}\ntrace image: {}\nrecorder: {err}",
            got,
            String::from_utf8_lossy(&podman(&["logs", &with]).stderr),
            podman(&["exec", &with, "stat", "-c", "%u:%g %a", "/var/lib/app"]),
            read_json(&profile.join("image-profile.json"))["directories"],
            {
                let t = read_json(&profile.join("trace.json"));
                format!(
                    "{} {}",
                    t["image"]["written_paths"], t["workload"]["duration_ms"]
                )
            }
        );
        expect_http(&format!("{ip}:80"), "GET", "/items/a", b"", 200, b"1");
        let _ = podman(&["stop", "-t", "10", &with]);
    }
);

/// What `program` imports that the recording in `profile` never saw (coverage.json), after
/// checking what must hold of any such list: the summary (`summary`, the recording's stderr)
/// names the program; no syscall the workload made is in it; and the profile denies every
/// one it says it denies.
fn imported_only(
    profile: &Path,
    program: &str,
    summary: &str,
) -> std::collections::BTreeSet<String> {
    let cov = read_json(&profile.join("coverage.json"));
    let p = &cov["programs"][program];
    assert_eq!(p["import_table"], "dynamic", "{cov:#}");
    assert!(p["runtime"].is_null(), "{cov:#}");
    let only: std::collections::BTreeSet<String> = p["imported_only"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect();
    let trace = read_json(&profile.join("trace.json"));
    let made: Vec<&str> = trace["syscalls"]["x86_64"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["phases"].as_array().unwrap().iter().any(|p| p != "setup"))
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    for n in &made {
        assert!(
            !only.contains(*n),
            "{n} was made by the workload, yet listed as imported only"
        );
    }
    let allowed = allowed_names(&profile.join("seccomp.json"));
    for n in &only {
        if cov["imported_only"]["x86_64"][n]["profile"] == "denied" {
            assert!(
                !allowed.contains(n),
                "{n} is said to be denied, yet allowed"
            );
        }
    }
    assert!(
        summary
            .lines()
            .any(|l| l.contains("imported, never called during recording: ")
                && l.ends_with(&format!("({program})"))),
        "{summary}"
    );
    only
}

/// `profiler generate --include-imported allow` of the recording in `profile`, into `to`.
fn include_imported(profile: &Path, to: &Path) {
    run_ok(
        profiler()
            .args(["generate", "--include-imported", "allow", "--out"])
            .arg(to)
            .arg(profile.join("trace.json")),
    );
}

privileged_test!(
    /// PostgreSQL trained on table work only: what its binaries import but training never
    /// called (each checked by hand in `objdump -T postgres`: mkdir, rmdir, symlink, link,
    /// truncate, syncfs are undefined symbols of the executable itself). Production needs one
    /// of them: CREATE DATABASE makes its folder with mkdir, which the plain profile denies
    /// and `--include-imported allow` allows.
    fn postgresql_imports_what_create_database_needs() {
        require_docker();
        require_image();
        let dir = TempDir::new("real-pg-imports");
        let profile = dir.join("db");
        let n = name("pg-imp");
        let _n_removed = docker_removed(&n);
        let rec = record_docker(&dir, &profile, &n, &["--user", "postgres"], POSTGRES);
        let up = |ip: &str| psql(ip, "select 1").status.success();
        let ip = ready_ip(&["docker"], &n, &up, &rec);
        psql_ok(&ip, "create table items (id int primary key, name text)");
        psql_ok(&ip, "insert into items values (1, 'one')");
        assert_eq!(psql_ok(&ip, "select name from items where id = 1"), "one");
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");
        let only = imported_only(&profile, POSTGRES[0], &err);
        for s in ["mkdir", "rmdir", "symlink", "link", "truncate", "syncfs"] {
            assert!(only.contains(s), "{s} not in {only:?}");
        }
        let allowed = dir.join("db-allowed");
        include_imported(&profile, &allowed);
        for (p, works) in [(&profile, false), (&allowed, true)] {
            let log = dir.join(&format!("violations-{works}.jsonl"));
            let n2 = name(&format!("pg-imp-{works}"));
            let _n2_removed = docker_removed(&n2);
            let prod = production_docker(&dir, p, &log, &n2, POSTGRES);
            let ip = ready_ip(&["docker"], &n2, &up, &prod);
            let o = psql(&ip, "create database more");
            let stderr = String::from_utf8_lossy(&o.stderr);
            if works {
                assert!(o.status.success(), "{stderr}");
            } else {
                assert!(
                    !o.status.success()
                        && stderr.contains("could not create directory")
                        && stderr.contains("Operation not permitted"),
                    "{o:?}"
                );
            }
            stop(&["docker"], &n2);
            let (code, _, err) = prod.wait();
            assert_eq!(
                code,
                0,
                "{err}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
);

privileged_test!(
    /// memcached trained on set/get: what it imports but training never called (checked by
    /// hand in `objdump -T memcached`: getsockname, kill, mlockall, setsid are undefined
    /// symbols of the executable itself). Production needs one of them: `stats conns` names
    /// the listening socket's address with getsockname, which the plain profile denies (the
    /// address reads `?:<AF 0>`) and `--include-imported allow` allows.
    fn memcached_imports_what_its_client_list_needs() {
        require_docker();
        require_image();
        let dir = TempDir::new("real-mc-imports");
        let profile = dir.join("cache");
        let n = name("mc-imp");
        let _n_removed = docker_removed(&n);
        let rec = record_docker(&dir, &profile, &n, &["--user", "memcache"], MEMCACHED);
        let up = |ip: &str| {
            memcache(&format!("{ip}:11211"), "version\r\n", "\r\n")
                .is_some_and(|r| r.starts_with("VERSION"))
        };
        let ip = ready_ip(&["docker"], &n, &up, &rec);
        let addr = format!("{ip}:11211");
        assert_eq!(
            memcache(&addr, "set k 0 0 3\r\none\r\n", "\r\n").as_deref(),
            Some("STORED\r\n")
        );
        stop(&["docker"], &n);
        let (code, _, err) = rec.wait();
        assert_eq!(code, 0, "{err}");
        let only = imported_only(&profile, MEMCACHED[0], &err);
        for s in ["getsockname", "kill", "mlockall", "setsid"] {
            assert!(only.contains(s), "{s} not in {only:?}");
        }
        let allowed = dir.join("cache-allowed");
        include_imported(&profile, &allowed);
        for (p, works) in [(&profile, false), (&allowed, true)] {
            let log = dir.join(&format!("violations-{works}.jsonl"));
            let n2 = name(&format!("mc-imp-{works}"));
            let _n2_removed = docker_removed(&n2);
            let prod = production_docker(&dir, p, &log, &n2, MEMCACHED);
            let ip = ready_ip(&["docker"], &n2, &up, &prod);
            let conns = memcache(&format!("{ip}:11211"), "stats conns\r\n", "END\r\n").unwrap();
            let listening = conns
                .lines()
                .find(|l| l.contains(":addr ") && !l.contains("172."))
                .unwrap_or_else(|| panic!("{conns}"));
            assert_eq!(
                listening.ends_with(":addr tcp:0.0.0.0:11211"),
                works,
                "{conns}"
            );
            stop(&["docker"], &n2);
            let (code, _, err) = prod.wait();
            assert_eq!(
                code,
                0,
                "{err}\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    }
);
