//! A real Debian bookworm image with real software for the integration tests, made by
//! `cargo xtask setup` (no registry is reachable: debootstrap, then `docker import`).
//!
//! Names (the tests refer to them):
//! - Docker: [`DOCKER_IMAGE`] = `profiler-test/debian-apps:latest`;
//! - podman, in the tests' private storage (`--root target/test-images/podman/root
//!   --runroot /run/profiler-test-podman`, `CONTAINERS_CONF=target/test-images/podman/containers.conf`):
//!   [`PODMAN_IMAGE`] = `localhost/profiler-debian-apps:latest`.
//!
//! Both carry the label [`STAMP_LABEL`] (`io.profiler.stamp`) with the cache key they were
//! built from. What is in the image (every command runs without a shell):
//! - PostgreSQL 15, cluster 15/main initialised at [`POSTGRES_DATA`]
//!   (`/var/lib/postgresql/15/main`), trust for every TCP client (`host all all 0.0.0.0/0
//!   trust`, `::/0`), `listen_addresses = '*'`, socket directory [`POSTGRES_RUN_DIR`]
//!   (`/var/run/postgresql`, postgres:postgres 2775). Run as `--user postgres`:
//!   `/usr/lib/postgresql/15/bin/postgres -D /var/lib/postgresql/15/main -c
//!   config_file=/etc/postgresql/15/main/postgresql.conf` ([`postgres_cmd`]); port 5432.
//!   Debian's `ssl = on` stays, with the snakeoil certificate made at build time (postgres is
//!   in group ssl-cert, which can read the key).
//! - memcached, as `--user memcache`: `/usr/bin/memcached -p 11211 -l 0.0.0.0 -U 0`
//!   ([`MEMCACHED_CMD`]): threads, no fork, no UDP.
//! - The threaded Python service tests/workloads/apps/service.py at [`APP_SERVICE`]
//!   (`/opt/app/service.py`), run as `--user app` (uid/gid [`APP_UID`]/[`APP_GID`] = 1500/1500,
//!   fixed): `python3 /opt/app/service.py`, port 8080; its data directory [`APP_DATA_DIR`]
//!   (`/var/lib/app`, 1500:1500 0750) is empty in the image. It never forks and starts a
//!   heartbeat thread (writes `/var/lib/app/.heartbeat` every 0.2 s) before the first request.
//!   With env `MEMCACHED=host:port` its `/cache/<key>` endpoints use memcached.
//! - tests/workloads/apps/docker-compose.yml runs the service and memcached together
//!   (`MEMCACHED=cache:11211`; image `${PROFILER_TEST_IMAGE:-profiler-test/debian-apps:latest}`).
//!
//! The postgres and memcache uids/gids are Debian's dynamic system ids (postgres 101:103,
//! memcache 100:102 when this was written): setup prints them; tests should look them up by
//! name in the image's /etc/passwd rather than hard-code them.
//!
//! Seen on this host (Docker 20.10 with the fuse-overlayfs storage driver): once a container
//! writes into /var/run/postgresql, the copy-up drops its setgid bit (2775 becomes 0775 inside
//! that container; the image keeps 2775, and podman's native overlay keeps it too). Compose
//! puts containers on their own network, where `.NetworkSettings.IPAddress` is empty: take
//! the address from `{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}`.
//!
//! Cache: the rootfs tarball target/test-images/debian-apps.tar and its key in
//! debian-apps.stamp (first line; the second line records the uids). The key covers the
//! package list, the chroot set-up script and service.py, so changing any of them rebuilds.
use std::fs::File;
use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::run::podman_cmd;
use crate::run::{output, run, workspace_root};

/// The image in Docker.
pub const DOCKER_IMAGE: &str = xtask::DEBIAN_APPS_IMAGE;
/// The image in the tests' private podman storage (see setup_podman in setup.rs).
pub const PODMAN_IMAGE: &str = xtask::PODMAN_DEBIAN_APPS_IMAGE;
/// Image label holding the cache key the image was imported from.
pub const STAMP_LABEL: &str = "io.profiler.stamp";

pub const POSTGRES_USER: &str = "postgres";
pub const POSTGRES_DATA: &str = "/var/lib/postgresql/15/main";
pub const POSTGRES_RUN_DIR: &str = "/var/run/postgresql";
pub const POSTGRES_PORT: u16 = 5432;

pub const MEMCACHED_USER: &str = "memcache";
pub use xtask::MEMCACHED_CMD;
pub const MEMCACHED_PORT: u16 = 11211;

pub const APP_USER: &str = "app";
pub const APP_UID: u32 = 1500;
pub const APP_GID: u32 = 1500;
pub const APP_DATA_DIR: &str = "/var/lib/app";
pub use xtask::{APP_CMD, APP_SERVICE};
pub const APP_PORT: u16 = 8080;
/// The service's source in the repository.
const APP_SOURCE: &str = "tests/workloads/apps/service.py";

const SUITE: &str = "bookworm";
const PACKAGES: &[&str] = &["postgresql", "memcached", "python3"];
const FALLBACK_MIRROR: &str = "http://deb.debian.org/debian";
/// Bump when the Rust side of the build changes what ends up in the tarball (the chroot
/// script and service.py are hashed as they are).
const BUILD_VERSION: &str = "debian-apps 1";

/// The postgres command line the tests run (as POSTGRES_USER, no shell).
pub fn postgres_cmd() -> Vec<String> {
    xtask::POSTGRES_CMD.iter().map(|a| a.to_string()).collect()
}

/// Run inside the fresh rootfs (chroot, /proc mounted) after service.py is copied in.
fn chroot_script() -> String {
    format!(
        r#"set -eu
# Debian's postinst creates cluster 15/main when it can; debootstrap does not promise it.
if [ ! -s {POSTGRES_DATA}/PG_VERSION ]; then
    pg_dropcluster 15 main 2>/dev/null || true
    pg_createcluster 15 main
fi
[ "$(stat -c %U {POSTGRES_DATA})" = postgres ]
conf=/etc/postgresql/15/main
# The tests connect to the container's IP address, without a password.
sed -i "s/^#\?listen_addresses *=.*/listen_addresses = '*'/" $conf/postgresql.conf
grep -q "^listen_addresses = '\*'" $conf/postgresql.conf
# First, so that it wins over Debian's scram-sha-256 lines (first match counts);
# rewritten in place to keep the file's owner and mode.
{{ printf '# cargo xtask setup: any TCP client, no password (tests only)\n'
  printf 'host all all 0.0.0.0/0 trust\nhost all all ::/0 trust\n'
  cat $conf/pg_hba.conf; }} > /tmp/pg_hba.conf
cat /tmp/pg_hba.conf > $conf/pg_hba.conf
rm /tmp/pg_hba.conf
# postgres is run directly, without pg_ctlcluster, which would create the socket directory.
install -d -o postgres -g postgres -m 2775 {POSTGRES_RUN_DIR}
[ "$(stat -L -c %U:%G:%a {POSTGRES_RUN_DIR})" = postgres:postgres:2775 ]
id {MEMCACHED_USER} >/dev/null
groupadd --gid {APP_GID} {APP_USER}
useradd --uid {APP_UID} --gid {APP_GID} --no-create-home --home-dir {APP_DATA_DIR} \
    --shell /usr/sbin/nologin {APP_USER}
install -d -o {APP_UID} -g {APP_GID} -m 0750 {APP_DATA_DIR}
chmod 0644 {APP_SERVICE}
python3 -m py_compile {APP_SERVICE}
rm -rf /opt/app/__pycache__
# Small-ish: apt's downloads and lists are not needed to run anything.
rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin
rm -rf /var/lib/apt/lists/*
"#
    )
}

/// The image step of `cargo xtask setup`: builds the tarball when its key changed, imports it
/// into Docker and podman when their image lacks the key, and checks freshly imported images.
pub fn setup_debian_apps() -> anyhow::Result<()> {
    let start = Instant::now();
    let root = workspace_root();
    let dir = root.join("target/test-images");
    std::fs::create_dir_all(&dir)?;
    // `cargo xtask build` runs setup too: two of them must not build into the same folder.
    let _lock = lock(&dir.join("debian-apps.lock"))?;
    let tar = dir.join("debian-apps.tar");
    let stamp_file = dir.join("debian-apps.stamp");
    let service =
        std::fs::read(root.join(APP_SOURCE)).with_context(|| format!("reading {APP_SOURCE}"))?;
    let script = chroot_script();
    let stamp = cache_key(&script, &service);

    let stored = std::fs::read_to_string(&stamp_file).unwrap_or_default();
    let ids = match stored.split_once('\n') {
        Some((key, ids)) if key == stamp && tar.exists() => ids.trim().to_owned(),
        _ => {
            // Removed first and written only after the new tarball is in place: a stamp
            // never vouches for a tarball other than its own, even after a crash.
            let _ = std::fs::remove_file(&stamp_file);
            let ids = build_tarball(&dir, &tar, &script, &service)?;
            std::fs::write(&stamp_file, format!("{stamp}\n{ids}\n"))?;
            ids
        }
    };

    if import(Engine::Docker, &tar, &stamp)? {
        check_docker()?;
    }
    if import(Engine::Podman, &tar, &stamp)? {
        check_podman()?;
    }
    eprintln!(
        "xtask: {DOCKER_IMAGE} and podman {PODMAN_IMAGE} are current (key {stamp}; {ids}) [{:.2} s]",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// FNV-1a (64 bits) over everything that decides the tarball's contents: enough for a cache
/// key, and stable across Rust versions (unlike DefaultHasher) without a new dependency.
fn cache_key(script: &str, service: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let packages = PACKAGES.join(",");
    for part in [
        BUILD_VERSION.as_bytes(),
        SUITE.as_bytes(),
        packages.as_bytes(),
        script.as_bytes(),
        service,
    ] {
        // A separator byte, so that moving bytes between parts changes the key.
        for &b in part.iter().chain(&[0u8]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

/// An exclusive flock held until the returned file is dropped.
fn lock(path: &Path) -> anyhow::Result<File> {
    let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        eprintln!(
            "xtask: waiting for another setup that holds {}",
            path.display()
        );
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("locking {}", path.display()));
        }
    }
    Ok(f)
}

/// debootstrap, service.py, the chroot script, then tar; returns the uids line.
fn build_tarball(dir: &Path, tar: &Path, script: &str, service: &[u8]) -> anyhow::Result<String> {
    let start = Instant::now();
    let tmp = dir.join("debian-apps.tmp");
    // A rootfs that still had /proc or a bind mount inside would be deleted through it.
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    if let Some(m) = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .find(|m| Path::new(m).starts_with(&tmp))
    {
        bail!("{m} is mounted inside {}: unmount it first", tmp.display());
    }
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    }
    std::fs::create_dir_all(&tmp)?;
    let rootfs = tmp.join("rootfs");
    let mirror = apt_mirror();
    let log = dir.join("debian-apps.log");
    let _ = std::fs::remove_file(&log);
    eprintln!(
        "xtask: building the {SUITE} image ({}) from {mirror}; log in {}",
        PACKAGES.join(", "),
        log.display()
    );
    // In a private mount namespace: whatever debootstrap mounts (proc, sys) goes away with it,
    // even if it fails half-way.
    let include = format!("--include={}", PACKAGES.join(","));
    run_logged(
        &format!(
            "debootstrap --variant=minbase {include} {SUITE} {} {mirror}",
            rootfs.display()
        ),
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "debootstrap"])
            .arg("--variant=minbase")
            .arg(&include)
            .arg(SUITE)
            .arg(&rootfs)
            .arg(&mirror),
        &log,
    )?;
    let debootstrap_secs = start.elapsed().as_secs_f64();

    let app = rootfs.join(APP_SERVICE.trim_start_matches('/'));
    std::fs::create_dir_all(app.parent().context("APP_SERVICE has a folder")?)?;
    std::fs::write(&app, service)?;
    std::fs::set_permissions(&app, std::fs::Permissions::from_mode(0o644))?;
    run_logged(
        "the set-up script (images.rs, chroot_script) in the rootfs",
        Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t proc proc "$1/proc" && exec chroot "$1" /bin/sh -c "$2""#)
            .arg("sh")
            .arg(&rootfs)
            .arg(script),
        &log,
    )
    .context("setting up the rootfs in a chroot")?;
    let ids = user_ids(&rootfs)?;

    let tmp_tar = tmp.join("debian-apps.tar");
    // Numeric owners: the image's ids, not whatever names the host gives them.
    run(Command::new("tar")
        .arg("-C")
        .arg(&rootfs)
        .args(["--numeric-owner", "-cf"])
        .arg(&tmp_tar)
        .arg("."))?;
    std::fs::rename(&tmp_tar, tar)?;
    std::fs::remove_dir_all(&tmp).with_context(|| format!("removing {}", tmp.display()))?;
    let size = std::fs::metadata(tar)?.len();
    eprintln!(
        "xtask: built {} ({} MB) in {:.0} s (debootstrap {debootstrap_secs:.0} s); {ids}",
        tar.display(),
        size >> 20,
        start.elapsed().as_secs_f64()
    );
    Ok(ids)
}

/// Runs cmd (described by what) with its output appended to log (debootstrap says a lot); on failure the error
/// carries the log's last lines.
fn run_logged(what: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<()> {
    eprintln!("xtask: running {what}");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    writeln!(f, "=== {what}: {cmd:?}")?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(f.try_clone()?)
        .stderr(f)
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        bail!(
            "{cmd:?} failed: {status}; end of {}:\n{tail}",
            log.display()
        );
    }
    Ok(())
}

/// "postgres=UID:GID memcache=UID:GID app=UID:GID" from the rootfs' /etc/passwd.
fn user_ids(rootfs: &Path) -> anyhow::Result<String> {
    let passwd = std::fs::read_to_string(rootfs.join("etc/passwd"))?;
    let mut out = Vec::new();
    for user in [POSTGRES_USER, MEMCACHED_USER, APP_USER] {
        let f: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .with_context(|| format!("no user {user} in the image's /etc/passwd"))?;
        out.push(format!("{user}={}:{}", f[2], f[3]));
    }
    let ids = out.join(" ");
    if !ids.contains(&format!("{APP_USER}={APP_UID}:{APP_GID}")) {
        bail!("{APP_USER} should be {APP_UID}:{APP_GID} in the image: {ids}");
    }
    Ok(ids)
}

/// The Debian archive this machine's apt uses for SUITE (so debootstrap goes where apt goes,
/// e.g. a local mirror); one-line .list and deb822 .sources files, as apt reads them.
fn apt_mirror() -> String {
    let mut found = Vec::new();
    if let Ok(text) = std::fs::read_to_string("/etc/apt/sources.list") {
        found.extend(one_line_sources(&text));
    }
    let mut files: Vec<_> = std::fs::read_dir("/etc/apt/sources.list.d")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        // apt ignores other names (e.g. "x.list.disabled"), so do we.
        match path.extension().and_then(|e| e.to_str()) {
            Some("list") => found.extend(one_line_sources(&text)),
            Some("sources") => found.extend(deb822_sources(&text)),
            _ => {}
        }
    }
    found
        .into_iter()
        .find(|(uri, suites)| {
            ["http://", "https://", "file:/"]
                .iter()
                .any(|s| uri.starts_with(s))
                && suites.iter().any(|s| s == SUITE)
        })
        .map(|(uri, _)| uri)
        .unwrap_or_else(|| FALLBACK_MIRROR.to_owned())
}

/// (URI, suites) of `deb [options] URI SUITE COMPONENT...` lines.
fn one_line_sources(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default();
        let mut words = line.split_whitespace();
        if words.next() != Some("deb") {
            continue;
        }
        let mut uri = words.next();
        if uri.is_some_and(|w| w.starts_with('[')) {
            // Options may contain spaces: "[ arch=amd64 signed-by=... ]".
            let mut w = uri.unwrap_or_default();
            while !w.ends_with(']') {
                match words.next() {
                    Some(next) => w = next,
                    None => break,
                }
            }
            uri = words.next();
        }
        if let (Some(uri), Some(suite)) = (uri, words.next()) {
            out.push((uri.to_owned(), vec![suite.to_owned()]));
        }
    }
    out
}

/// (URI, suites) of the enabled `Types: deb` stanzas of a deb822 .sources file.
fn deb822_sources(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut fields: Vec<(String, String)> = Vec::new();
        for line in stanza.lines().filter(|l| !l.starts_with('#')) {
            if line.starts_with([' ', '\t']) {
                // A continuation line.
                if let Some((_, v)) = fields.last_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
            } else if let Some((k, v)) = line.split_once(':') {
                fields.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
            }
        }
        let get = |k: &str| {
            fields
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.as_str())
                .unwrap_or_default()
        };
        if !get("types").split_whitespace().any(|t| t == "deb")
            || get("enabled").eq_ignore_ascii_case("no")
        {
            continue;
        }
        let suites: Vec<String> = get("suites").split_whitespace().map(String::from).collect();
        for uri in get("uris").split_whitespace() {
            out.push((uri.to_owned(), suites.clone()));
        }
    }
    out
}

#[derive(Clone, Copy)]
enum Engine {
    Docker,
    Podman,
}

impl Engine {
    fn cmd(self, args: &[&str]) -> Command {
        match self {
            Engine::Docker => {
                let mut c = Command::new("docker");
                c.args(args);
                c
            }
            Engine::Podman => podman_cmd(args),
        }
    }

    fn image(self) -> &'static str {
        match self {
            Engine::Docker => DOCKER_IMAGE,
            Engine::Podman => PODMAN_IMAGE,
        }
    }

    /// `image inspect -f FORMAT` of our image, or None when the engine lacks it.
    fn inspect(self, format: &str) -> Option<String> {
        let out = self
            .cmd(&["image", "inspect", "-f", format, self.image()])
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }
}

/// Imports the tarball unless the engine's image already carries this stamp; true when it
/// imported. The image it replaces is removed (500 MB each), unless a container still uses it.
fn import(engine: Engine, tar: &Path, stamp: &str) -> anyhow::Result<bool> {
    let image = engine.image();
    let label = format!("{{{{index .Config.Labels \"{STAMP_LABEL}\"}}}}");
    if engine.inspect(&label).as_deref() == Some(stamp) {
        return Ok(false);
    }
    let old = engine.inspect("{{.Id}}");
    let start = Instant::now();
    let tar = tar.to_str().context("tarball path is not UTF-8")?;
    let change = format!("LABEL {STAMP_LABEL}={stamp}");
    output(&mut engine.cmd(&["import", "--change", &change, tar, image]))
        .with_context(|| format!("importing {tar} as {image}"))?;
    eprintln!(
        "xtask: imported {image} in {:.1} s",
        start.elapsed().as_secs_f64()
    );
    if let Some(old) = old
        && engine.inspect("{{.Id}}").as_deref() != Some(old.as_str())
    {
        let _ = engine
            .cmd(&["rmi", &old])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
    Ok(true)
}

/// The podman side: the private storage runs the image (runc, this host's containers.conf).
fn check_podman() -> anyhow::Result<()> {
    let out = output(&mut Engine::Podman.cmd(&[
        "run",
        "--rm",
        PODMAN_IMAGE,
        "/usr/bin/python3",
        "-c",
        "print(1)",
    ]))
    .context("running python3 in the podman image")?;
    if out.trim() != "1" {
        bail!("python3 in {PODMAN_IMAGE} printed {out:?}, not 1");
    }
    Ok(())
}

/// Containers removed when dropped, also when a check fails half-way.
struct Containers(Vec<String>);

impl Drop for Containers {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&self.0)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Containers {
    /// `docker run -d --user USER IMAGE CMD...`; the container's IP address.
    fn start(&mut self, user: &str, env: &[String], cmd: &[&str]) -> anyhow::Result<String> {
        let mut c = Command::new("docker");
        c.args(["run", "-d", "--user", user]);
        for e in env {
            c.args(["-e", e]);
        }
        let id = output(c.arg(DOCKER_IMAGE).args(cmd))?.trim().to_owned();
        self.0.push(id.clone());
        let ip = output(Command::new("docker").args([
            "inspect",
            "-f",
            "{{.NetworkSettings.IPAddress}}",
            &id,
        ]))?;
        Ok(ip.trim().to_owned())
    }

    /// Retries check for up to 30 s (the services need a moment to start); on failure the
    /// error has the containers' logs.
    fn wait_for(
        &self,
        what: &str,
        mut check: impl FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match check() {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    let mut logs = String::new();
                    for id in &self.0 {
                        if let Ok(o) = Command::new("docker")
                            .args(["logs", "--tail", "20", id])
                            .output()
                        {
                            logs += &String::from_utf8_lossy(&o.stdout);
                            logs += &String::from_utf8_lossy(&o.stderr);
                        }
                    }
                    return Err(e).with_context(|| format!("{what}: containers' logs:\n{logs}"));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    }
}

/// A freshly imported Docker image runs its three services the way the tests run them, and
/// each answers over the network.
fn check_docker() -> anyhow::Result<()> {
    let start = Instant::now();
    let mut c = Containers(Vec::new());
    let pg_cmd = postgres_cmd();
    let pg_cmd: Vec<&str> = pg_cmd.iter().map(String::as_str).collect();
    let pg = c.start(POSTGRES_USER, &[], &pg_cmd)?;
    let mc = c.start(MEMCACHED_USER, &[], MEMCACHED_CMD)?;
    let app = c.start(
        APP_USER,
        &[format!("MEMCACHED={mc}:{MEMCACHED_PORT}")],
        APP_CMD,
    )?;

    c.wait_for("postgres", || {
        tcp(&pg, POSTGRES_PORT)?;
        // The image's own psql, from another container: over the network, as the tests do.
        let out = output(Command::new("docker").args([
            "run",
            "--rm",
            DOCKER_IMAGE,
            "psql",
            "-h",
            &pg,
            "-U",
            POSTGRES_USER,
            "-Atc",
            "select 1",
        ]))?;
        if out.trim() != "1" {
            bail!("psql printed {out:?}");
        }
        Ok(())
    })?;
    c.wait_for("memcached", || {
        let reply = exchange(
            &mc,
            MEMCACHED_PORT,
            b"set k 0 0 1\r\nv\r\nget k\r\nquit\r\n",
        )?;
        if reply != b"STORED\r\nVALUE k 0 1\r\nv\r\nEND\r\n" {
            bail!("memcached replied {:?}", String::from_utf8_lossy(&reply));
        }
        Ok(())
    })?;
    c.wait_for("the app service", || {
        expect_http(&app, "GET /health", "", "200", "ok")?;
        expect_http(&app, "POST /cache/xtask", "hello", "201", "stored\n")?;
        expect_http(&app, "GET /cache/xtask", "", "200", "hello")
    })?;
    eprintln!(
        "xtask: {DOCKER_IMAGE}: postgres, memcached and the app service answer [{:.1} s]",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

fn tcp(ip: &str, port: u16) -> anyhow::Result<TcpStream> {
    let addr: SocketAddr = format!("{ip}:{port}")
        .parse()
        .context("container address")?;
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    Ok(s)
}

/// Sends request, then reads until the peer closes.
fn exchange(ip: &str, port: u16, request: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut s = tcp(ip, port)?;
    s.write_all(request)?;
    let mut reply = Vec::new();
    s.read_to_end(&mut reply)?;
    Ok(reply)
}

/// One HTTP/1.0 request (the server closes after it) to the app service.
fn expect_http(
    ip: &str,
    request: &str,
    body: &str,
    status: &str,
    want: &str,
) -> anyhow::Result<()> {
    let req = format!(
        "{request} HTTP/1.0\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let reply = exchange(ip, APP_PORT, req.as_bytes())?;
    let reply = String::from_utf8_lossy(&reply);
    let (head, got) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    if head.split_whitespace().nth(1) != Some(status) || got != want {
        bail!("{request}: got {reply:?}, want {status} {want:?}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The command line the tests run uses the data folder the image build initialises.
    #[test]
    fn the_postgres_command_uses_the_initialised_data_folder() {
        assert_eq!(super::postgres_cmd()[1..3], ["-D", super::POSTGRES_DATA]);
    }

    use super::*;

    #[test]
    fn one_line_sources_skip_options_and_comments() {
        let text = "# deb http://commented.example/debian bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [ arch=amd64 signed-by=/k.gpg ] http://mirror.example/debian bookworm main\n\
                    deb [arch=amd64] http://other.example/debian bookworm-updates main # note\n";
        assert_eq!(
            one_line_sources(text),
            vec![
                (
                    "http://mirror.example/debian".to_owned(),
                    vec!["bookworm".to_owned()]
                ),
                (
                    "http://other.example/debian".to_owned(),
                    vec!["bookworm-updates".to_owned()]
                ),
            ]
        );
    }

    #[test]
    fn deb822_sources_read_enabled_deb_stanzas() {
        let text = "Types: deb\n\
                    # http://snapshot.debian.org/archive/debian/20250520T000000Z\n\
                    URIs: http://deb.debian.org/debian\n\
                    Suites: bookworm bookworm-updates\n\
                    Components: main\n\
                    \n\
                    Types: deb\n\
                    URIs: http://disabled.example/debian\n\
                    Suites: bookworm\n\
                    Enabled: no\n\
                    \n\
                    Types: deb-src\n\
                    URIs: http://src.example/debian\n\
                    Suites: bookworm\n";
        assert_eq!(
            deb822_sources(text),
            vec![(
                "http://deb.debian.org/debian".to_owned(),
                vec!["bookworm".to_owned(), "bookworm-updates".to_owned()]
            )]
        );
    }

    #[test]
    fn cache_key_follows_its_inputs() {
        let key = cache_key("script", b"service");
        assert_eq!(key.len(), 16);
        assert_eq!(key, cache_key("script", b"service"));
        assert_ne!(key, cache_key("script", b"service2"));
        assert_ne!(key, cache_key("scrip", b"tservice"));
    }
}
