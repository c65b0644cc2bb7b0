//! Helpers for the privileged integration tests: run the real `profiler` binary, real
//! workloads, and `strace -f` as ground truth.
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// What `cargo xtask setup` makes, named once in xtask/src/lib.rs: the busybox image in
/// Docker ([`BUSYBOX_IMAGE`]) and in the tests' private podman storage ([`PODMAN_IMAGE`]), the
/// Debian image with real services ([`DEBIAN_APPS_IMAGE`], [`PODMAN_DEBIAN_APPS_IMAGE`]), and
/// where podman keeps its run-time state ([`PODMAN_RUNROOT`]).
pub use xtask::{
    BUSYBOX_IMAGE, DEBIAN_APPS_IMAGE, PODMAN_BUSYBOX_IMAGE as PODMAN_IMAGE,
    PODMAN_DEBIAN_APPS_IMAGE, PODMAN_RUNROOT,
};

/// A path relative to the workspace root (as xtask/src/lib.rs names them), seen from here.
pub fn workspace_path(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

/// The profiler binary: `PROFILER_BIN` (set by `cargo xtask test`), else the workspace's
/// debug build.
pub fn profiler_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("PROFILER_BIN") {
        return PathBuf::from(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/profiler");
    assert!(
        p.exists(),
        "{} does not exist: run the tests with `cargo xtask test`",
        p.display()
    );
    p
}

pub fn profiler() -> Command {
    Command::new(profiler_bin())
}

/// Whether this process can record; prints why not and returns false when the kernel or
/// the privileges truly are not there (the tests then skip with that reason).
pub fn can_record() -> bool {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIP: not root; recording needs CAP_BPF/CAP_PERFMON or CAP_SYS_ADMIN");
        return false;
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        eprintln!("note: no kernel BTF; profiler will fall back to raw_tp");
    }
    true
}

/// A privileged integration test (after ripgrep's `rgtest!`): a `#[test]` that skips, with
/// the reason [`can_record`] prints, where this process cannot record. A test that takes a
/// `dir: TempDir` also gets a scratch folder, removed when the test ends, named by its
/// `#[scratch = "tag"]` (else by the test's name; paths under it then grow by that much,
/// which matters where they pile up in one argument or a socket address):
///
/// ```ignore
/// privileged_test!(
///     /// Doc comments and other attributes go on the test.
///     fn records_true() {
///         // runs only where can_record()
///     }
/// );
///
/// privileged_test!(
///     #[scratch = "true"]
///     fn records_true_into_a_folder(dir: TempDir) {
///         // dir = TempDir::new("true")
///         record(&dir.join("profile"), &["/bin/true"]);
///     }
/// );
/// ```
///
/// The shapes are Rust functions, so rustfmt formats the tests' bodies.
#[macro_export]
macro_rules! privileged_test {
    (
        $(#[doc = $doc:literal])*
        #[scratch = $tag:expr]
        $(#[$attr:meta])*
        fn $name:ident($dir:ident: TempDir) $body:block
    ) => {
        $(#[doc = $doc])*
        $(#[$attr])*
        #[test]
        fn $name() {
            if !$crate::can_record() {
                return;
            }
            let $dir = $crate::TempDir::new($tag);
            $body
        }
    };
    ($(#[$attr:meta])* fn $name:ident($dir:ident: TempDir) $body:block) => {
        $crate::privileged_test!(
            #[scratch = stringify!($name)]
            $(#[$attr])*
            fn $name($dir: TempDir) $body
        );
    };
    ($(#[$attr:meta])* fn $name:ident() $body:block) => {
        $(#[$attr])*
        #[test]
        fn $name() {
            if !$crate::can_record() {
                return;
            }
            $body
        }
    };
}

/// A scratch folder removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let p = std::env::temp_dir().join(format!(
            "profiler-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
    pub fn join(&self, p: &str) -> PathBuf {
        self.0.join(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `profiler record --out OUT -- CMD...`, asserting success.
pub fn record(out: &Path, cmd: &[&str]) -> Output {
    run_ok(
        profiler()
            .arg("record")
            .arg("--out")
            .arg(out)
            .arg("--")
            .args(cmd),
    )
}

pub fn read_json(p: &Path) -> Value {
    let text = std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Syscall names per architecture from a trace.json.
pub fn traced_syscalls(trace: &Value) -> BTreeMap<String, BTreeSet<String>> {
    trace["syscalls"]
        .as_object()
        .expect("syscalls object")
        .iter()
        .map(|(arch, list)| {
            let names = list
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned())
                .collect();
            (arch.clone(), names)
        })
        .collect()
}

/// Ground truth: the syscall names `strace -f -qq -c` counts for the same command.
pub fn strace_syscalls(cmd: &[&str]) -> BTreeSet<String> {
    let dir = TempDir::new("strace");
    let out = dir.join("strace.txt");
    run_ok(
        Command::new("strace")
            .args(["-f", "-qq", "-c", "-U", "name", "-o"])
            .arg(&out)
            .arg("--")
            .args(cmd),
    );
    let text = std::fs::read_to_string(&out).unwrap();
    text.lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("syscall") && !l.starts_with('-') && *l != "total"
        })
        .map(|l| l.split_whitespace().next().unwrap().to_owned())
        .collect()
}

/// Writes a copy of the profile folder `from` into `to` with `syscall` removed from the
/// seccomp allow-list (and `caps` as the capability whitelist when given).
pub fn edited_profile(from: &Path, to: &Path, remove_syscall: Option<&str>, caps: Option<&[&str]>) {
    std::fs::create_dir_all(to).unwrap();
    let mut seccomp = read_json(&from.join("seccomp.json"));
    if let Some(name) = remove_syscall {
        let mut removed = false;
        for rule in seccomp["syscalls"].as_array_mut().unwrap() {
            let names = rule["names"].as_array_mut().unwrap();
            let before = names.len();
            names.retain(|n| n.as_str() != Some(name));
            removed |= names.len() != before;
        }
        assert!(removed, "{name} was not in the profile");
    }
    std::fs::write(
        to.join("seccomp.json"),
        serde_json::to_vec_pretty(&seccomp).unwrap(),
    )
    .unwrap();
    let mut capabilities = read_json(&from.join("capabilities.json"));
    if let Some(c) = caps {
        capabilities["add"] = Value::from(c.to_vec());
    }
    std::fs::write(
        to.join("capabilities.json"),
        serde_json::to_vec_pretty(&capabilities).unwrap(),
    )
    .unwrap();
}

/// `profiler run --profile DIR -- CMD...`.
/// `profiler run` with seccomp and capabilities only (`--no-landlock`): for tests of what
/// the seccomp profile itself does to a program the recording never ran (Landlock would
/// refuse its exec first).
pub fn run_seccomp_only(profile: &Path, cmd: &[&str]) -> Output {
    profiler()
        .args(["run", "--quiet", "--no-landlock", "--profile"])
        .arg(profile)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run profiler")
}

pub fn run_confined(profile: &Path, cmd: &[&str]) -> Output {
    profiler()
        .arg("run")
        .arg("--quiet")
        .arg("--profile")
        .arg(profile)
        .arg("--")
        .args(cmd)
        .output()
        .expect("run profiler")
}

/// The Docker Engine must be up for the container tests: a machine where it is not is
/// misconfigured, not lacking a kernel feature, so this fails with what to do.
pub fn require_docker() {
    let ok = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "the Docker Engine is not reachable or lacks {BUSYBOX_IMAGE}: start dockerd and run `cargo xtask setup`"
    );
}

/// A container that hangs under a wrong profile must fail its test, not stall CI: engine
/// commands run under `timeout` (coreutils), 120 s.
pub fn with_timeout(program: &str) -> Command {
    let mut c = Command::new("timeout");
    c.args(["-k", "5", "120", program]);
    c
}

pub fn docker(args: &[&str]) -> Output {
    with_timeout("docker")
        .args(args)
        .output()
        .expect("run docker")
}

/// Seccomp names allowed by a generated profile.
pub fn allowed_names(seccomp: &Path) -> BTreeSet<String> {
    read_json(seccomp)["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW")
        .flat_map(|r| r["names"].as_array().unwrap().iter())
        .map(|n| n.as_str().unwrap().to_owned())
        .collect()
}

/// `--cap-add` flags for the capabilities a generated profile adds.
pub fn cap_add_flags(capabilities: &Path) -> Vec<String> {
    read_json(capabilities)["add"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            format!(
                "--cap-add={}",
                c.as_str().unwrap().trim_start_matches("CAP_")
            )
        })
        .collect()
}

/// The busybox root filesystem `cargo xtask setup` builds.
pub fn busybox_rootfs() -> PathBuf {
    let p = workspace_path(xtask::BUSYBOX_ROOTFS);
    assert!(
        p.join("bin/busybox").exists(),
        "{} missing: run `cargo xtask setup`",
        p.display()
    );
    p
}

/// An OCI bundle (busybox rootfs copy + `runc spec` config) running `sh -c SCRIPT`.
pub fn oci_bundle(dir: &Path, script: &str, no_new_privileges: bool) -> PathBuf {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(&bundle).unwrap();
    run_ok(
        Command::new("cp")
            .arg("-a")
            .arg(busybox_rootfs())
            .arg(bundle.join("rootfs")),
    );
    run_ok(Command::new("runc").args(["spec", "--bundle"]).arg(&bundle));
    let mut config = read_json(&bundle.join("config.json"));
    config["process"]["terminal"] = Value::Bool(false);
    config["process"]["args"] = serde_json::json!(["/bin/sh", "-c", script]);
    config["process"]["noNewPrivileges"] = Value::Bool(no_new_privileges);
    config["root"]["readonly"] = Value::Bool(false);
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
    bundle
}

/// Puts a profile's OCI seccomp and capabilities into a bundle's config.json.
pub fn apply_oci_profile(bundle: &Path, profile: &Path, no_new_privileges: bool) {
    let mut config = read_json(&bundle.join("config.json"));
    config["linux"]["seccomp"] = read_json(&profile.join("oci-seccomp.json"));
    config["process"]["capabilities"] = read_json(&profile.join("oci-capabilities.json"));
    config["process"]["noNewPrivileges"] = Value::Bool(no_new_privileges);
    config["linux"]
        .as_object_mut()
        .unwrap()
        .remove("cgroupsPath");
    std::fs::write(
        bundle.join("config.json"),
        serde_json::to_vec_pretty(&config).unwrap(),
    )
    .unwrap();
}

/// `podman` with the private storage and host configuration `cargo xtask setup` prepared:
/// (the CONTAINERS_CONF value, the podman argv).
pub fn podman_argv() -> (PathBuf, Vec<String>) {
    let dir = workspace_path(xtask::PODMAN_DIR);
    assert!(
        dir.join("containers.conf").exists(),
        "run `cargo xtask setup` first"
    );
    (
        dir.join("containers.conf"),
        vec![
            "podman".into(),
            "--root".into(),
            dir.join("root").display().to_string(),
            "--runroot".into(),
            PODMAN_RUNROOT.into(),
        ],
    )
}

/// The flags of a profile's `docker-run.txt`, as the shell a user pastes them into splits
/// them (every line is shell words; the seccomp path in it is absolute).
pub fn docker_run_flags(profile: &Path) -> Vec<String> {
    run_flags_file(&profile.join("docker-run.txt"))
}

/// The same for `podman-run.txt`.
pub fn podman_run_flags(profile: &Path) -> Vec<String> {
    run_flags_file(&profile.join("podman-run.txt"))
}

/// The flags of any run-flags file of a profile folder, split as the shell splits them.
pub fn run_flags_file(file: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .flat_map(|l| {
            shell_words::split(l).unwrap_or_else(|e| panic!("{}: {l:?}: {e}", file.display()))
        })
        .collect()
}

/// `profiler ARGS -- docker run --rm --network none BUSYBOX_IMAGE /bin/sh -c SCRIPT`.
pub fn profiler_on_busybox<S: AsRef<std::ffi::OsStr>>(args: &[S], script: &str) -> Output {
    profiler()
        .args(args)
        .args([
            "--",
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            BUSYBOX_IMAGE,
            "/bin/sh",
            "-c",
            script,
        ])
        .output()
        .expect("run profiler")
}

/// A run under `profiler enforce` of a script that goes on after `/bin/cat /etc/passwd`, a
/// program its profile lacks: the script went on ("hello" before, "after" after), cat never
/// ran, and the violations log (returned, one JSON value per line) says it was killed.
pub fn assert_cat_killed_and_run_went_on(o: &Output, log: &Path) -> Vec<Value> {
    // The workload succeeded, but something was killed: enforce says so (exit 5).
    assert_eq!(o.status.code(), Some(5), "{o:?}");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("hello") && stdout.contains("after"),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!stdout.contains("root:x:0:0"), "cat ran: {stdout}");
    let lines: Vec<Value> = std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        lines.iter().any(|v| v["rule"] == "exec-not-in-profile"
            && v["action"] == "killed"
            && v["path"] == "/bin/cat"),
        "{lines:?}"
    );
    lines
}

/// A profile's `kubernetes.yaml` as Kubernetes takes it: merged into a Deployment whose
/// container is `container` by kubectl's own strategic merge (`kubectl patch --local`, no API
/// server needed), and the result checked against the official schemas with
/// `kubernetes-validate --strict` (installed by `cargo xtask setup`). Returns the merged
/// Deployment (YAML).
pub fn kubernetes_patch_applied(profile: &Path, container: &str, image: &str) -> String {
    let dir = profile.join("..").join(format!("k8s-{container}"));
    std::fs::create_dir_all(&dir).unwrap();
    let deployment = dir.join("deployment.yaml");
    std::fs::write(
        &deployment,
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: app}}\nspec:\n  selector: {{matchLabels: {{app: app}}}}\n  \
             template:\n    metadata: {{labels: {{app: app}}}}\n    spec:\n      containers:\n      - name: {container}\n        image: {image}\n"
        ),
    )
    .unwrap();
    let o = run_ok(
        Command::new("kubectl")
            .args([
                "patch",
                "--local",
                "--type",
                "strategic",
                "-o",
                "yaml",
                "-f",
            ])
            .arg(&deployment)
            .arg("--patch-file")
            .arg(profile.join("kubernetes.yaml")),
    );
    let merged = String::from_utf8_lossy(&o.stdout).into_owned();
    let merged_file = dir.join("merged.yaml");
    std::fs::write(&merged_file, &merged).unwrap();
    let validate = workspace_path(xtask::KUBERNETES_VALIDATE_VENV).join("bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} missing: run `cargo xtask setup`",
        validate.display()
    );
    run_ok(
        Command::new(validate)
            .args(["--strict", "-k", "1.32.0"])
            .arg(&merged_file),
    );
    merged
}

/// The YAML documents of `file` as JSON values (PyYAML of the kubernetes-validate
/// environment, which `cargo xtask setup` installs).
pub fn yaml_documents(file: &Path) -> Vec<Value> {
    let python = workspace_path(xtask::KUBERNETES_VALIDATE_VENV).join("bin/python3");
    let o = run_ok(
        Command::new(python)
            .args([
                "-c",
                "import json, sys, yaml; print(json.dumps([d for d in yaml.safe_load_all(open(sys.argv[1])) if d is not None]))",
            ])
            .arg(file),
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Every object in `file` checked by `kubernetes-validate --strict` against the official
/// schemas of Kubernetes 1.33 (the k8s-openapi feature the renderers use). Objects of kinds it
/// has no schema for make it warn, and fail this check: pass only built-in kinds.
pub fn kubernetes_validate_strict(file: &Path) {
    let validate = workspace_path(xtask::KUBERNETES_VALIDATE_VENV).join("bin/kubernetes-validate");
    assert!(
        validate.exists(),
        "{} missing: run `cargo xtask setup`",
        validate.display()
    );
    let o = run_ok(
        Command::new(validate)
            .args(["--strict", "-k", "1.33.0"])
            .arg(file),
    );
    let text =
        String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr);
    let docs = yaml_documents(file).len();
    assert_eq!(
        text.matches(" passed for resource ").count(),
        docs,
        "not every object of {} passed:\n{text}",
        file.display()
    );
}

/// A JSON-lines file (an enforce or watch log) as values; a missing file is no lines.
pub fn json_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Removes a container however the test ends (a failed assertion must not leave a service
/// running on the host, or a podman mount that keeps the storage folder busy).
pub struct Removed {
    /// The command that removes it.
    pub argv: Vec<String>,
    /// One environment variable it needs (podman's `CONTAINERS_CONF`).
    pub env: Option<(String, PathBuf)>,
}

impl Drop for Removed {
    fn drop(&mut self) {
        let mut c = Command::new(&self.argv[0]);
        c.args(&self.argv[1..]);
        if let Some((k, v)) = &self.env {
            c.env(k, v);
        }
        let _ = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> Option<(u16, Vec<u8>)> {
    use std::io::{Read as _, Write as _};
    use std::time::Duration;
    let mut s =
        std::net::TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .ok()?;
    s.write_all(body).ok()?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).ok()?;
    let text = String::from_utf8_lossy(&reply);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let start = reply.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    Some((status, reply[start..].to_vec()))
}

/// A command running in the background, its output kept in files of `dir`; killed on drop.
pub struct Background {
    child: std::process::Child,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    pub fn start(cmd: &mut Command, dir: &TempDir, tag: &str) -> Background {
        let out = dir.join(&format!("{tag}.out"));
        let err = dir.join(&format!("{tag}.err"));
        let child = cmd
            .stdin(std::process::Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Background { child, out, err }
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// Waits until its standard output holds `marker` (at most `limit`).
    pub fn wait_for_output(&self, marker: &str, limit: std::time::Duration) {
        let deadline = std::time::Instant::now() + limit;
        while !self.stdout().contains(marker) {
            assert!(
                std::time::Instant::now() < deadline,
                "no {marker:?} on its output after {limit:?}: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Waits for the exit (at most `limit`): (code, stdout, stderr).
    pub fn wait_at_most(mut self, limit: std::time::Duration) -> (i32, String, String) {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status.code().unwrap_or(-1), self.stdout(), self.stderr());
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still running after {limit:?}: {}",
                self.stderr()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// [`Background::wait_at_most`] 60 s.
    pub fn wait(self) -> (i32, String, String) {
        self.wait_at_most(std::time::Duration::from_secs(60))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
