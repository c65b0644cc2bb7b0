//! `cargo xtask`: set-up, build, test and demo for profiler.
//!
//! `setup` is idempotent and installs everything the build and the tests need on a fresh
//! Debian machine: the nightly toolchain's rust-src, bpf-linker built against nightly's own
//! libLLVM, and the Debian packages the tests use. It also mounts tracefs/bpffs/securityfs
//! and makes the container images the tests run: busybox, and a Debian image with
//! PostgreSQL, memcached and a Python service (images.rs).
mod bench;
mod images;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install the toolchain pieces and packages (idempotent).
    Setup,
    /// Set up, then build profiler (with its eBPF object).
    Build {
        #[arg(long)]
        release: bool,
    },
    /// Set up, build, and run every test (unit and privileged integration tests).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Record the demo workload and write its profiles under profiles/demo.
    Demo,
    /// Measure profiler's overhead against its baselines; writes BENCHMARKS.md.
    Bench {
        /// A short run that fits in CI time.
        #[arg(long)]
        quick: bool,
        /// Run only these parts (for working on one number); the report then goes to
        /// target/bench/partial.md, BENCHMARKS.md is left alone.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Part>,
    },
}

/// bpf-linker version the project builds with (see ../shared/platform.md for the recipe).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build and the tests need.
const APT_PACKAGES: &[&str] = &[
    "strace",
    "libseccomp-dev",
    "pkg-config",
    "python3",
    "tar",
    "gzip",
    "coreutils",
    "util-linux",
    // Container runtimes and the busybox the test images are made of.
    "runc",
    "crun",
    "podman",
    "busybox-static",
    "uidmap",
    // The Debian image with real services (images.rs).
    "debootstrap",
    // psql, the PostgreSQL client of the real-image tests.
    "postgresql-client",
    // 32-bit (i386) and x32 test binaries: gcc -m32 / -mx32 -static.
    "gcc",
    "gcc-multilib",
    "libc6-dev-x32",
];

/// Image the container tests run (no registry is reachable: made locally with docker import).
const BUSYBOX_IMAGE: &str = "profiler-test/busybox:latest";
/// The same image in the tests' private podman storage.
const PODMAN_IMAGE: &str = "localhost/profiler-busybox:latest";

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup(),
        Cmd::Build { release } => {
            setup()?;
            build(release)
        }
        Cmd::Test { args } => {
            setup()?;
            test(&args)
        }
        Cmd::Demo => {
            setup()?;
            demo()
        }
        Cmd::Bench { quick, only } => {
            setup()?;
            build(true)?;
            bench::bench(&workspace_root(), quick, &only)
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// PATH with cargo's bin folder first, so a freshly installed bpf-linker is found.
fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("valid PATH")
}

fn setup() -> anyhow::Result<()> {
    mount_kernel_filesystems();
    install_apt_packages()?;
    install_nightly()?;
    install_bpf_linker()?;
    setup_container_images()?;
    install_kubernetes_validate()?;
    Ok(())
}

/// `kubernetes-validate` (PyPI; it bundles the Kubernetes JSON schemas, so objects are
/// checked offline, as no API server runs here) in a virtual environment under target/.
fn install_kubernetes_validate() -> anyhow::Result<()> {
    let venv = workspace_root().join("target/tools/k8s-venv");
    let tool = venv.join("bin/kubernetes-validate");
    if tool.exists() {
        return Ok(());
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "-q", "kubernetes-validate"]))
}

/// A busybox root filesystem (static busybox, its applets as symlinks, minimal passwd/group)
/// under target/, imported into Docker as BUSYBOX_IMAGE when the engine lacks it.
fn setup_container_images() -> anyhow::Result<()> {
    let docker_up = Command::new("docker")
        .args(["info", "--format", "{{.ServerVersion}}"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !docker_up {
        eprintln!(
            "xtask: WARNING: the Docker Engine is not reachable (`docker info` failed): the container tests \
             will fail. Start it (e.g. `dockerd &`) and run again."
        );
        return Ok(());
    }
    let rootfs = busybox_rootfs()?;
    let have = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !have {
        run(Command::new("sh").args([
            "-c",
            &format!(
                "tar -C '{}' -c . | docker import - {BUSYBOX_IMAGE}",
                rootfs.display()
            ),
        ]))?;
    }
    setup_podman(&rootfs)?;
    images::setup_debian_apps()
}

/// Podman with private storage under target/, configured for this kind of host
/// (../shared/platform.md): cgroupfs, runc, file events, and default ulimits that fit under
/// the hard limits (otherwise runc fails with "error setting rlimit type 7").
fn setup_podman(rootfs: &Path) -> anyhow::Result<()> {
    let dir = podman_dir();
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("containers.conf"),
        "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=32768:32768\"]\n\
         [engine]\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\nruntime = \"runc\"\n",
    )?;
    let have = podman_cmd(&["image", "exists", PODMAN_IMAGE])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !have {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        run(podman_cmd(&["import", "-", PODMAN_IMAGE]).stdin(tar.stdout.context("tar stdout")?))?;
    }
    Ok(())
}

/// The tests' private podman storage and its containers.conf (written by setup_podman).
fn podman_dir() -> PathBuf {
    workspace_root().join("target/test-images/podman")
}

/// `podman ARGS` on the tests' private storage, with the containers.conf setup_podman writes.
fn podman_cmd(args: &[&str]) -> Command {
    let dir = podman_dir();
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .arg("--root")
        .arg(dir.join("root"))
        // podman refuses a runroot longer than 50 characters.
        .args(["--runroot", "/run/profiler-test-podman"])
        .args(args);
    c
}

fn busybox_rootfs() -> anyhow::Result<PathBuf> {
    let rootfs = workspace_root().join("target/test-images/busybox-rootfs");
    if rootfs.join("bin/busybox").exists() {
        return Ok(rootfs);
    }
    let tmp = rootfs.with_extension("tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    for d in ["bin", "etc", "tmp", "proc", "sys", "dev", "data"] {
        std::fs::create_dir_all(tmp.join(d))?;
    }
    std::fs::copy("/bin/busybox", tmp.join("bin/busybox"))
        .context("copying /bin/busybox (busybox-static)")?;
    let list = output(Command::new("/bin/busybox").arg("--list"))?;
    for applet in list.lines().filter(|a| !a.is_empty() && *a != "busybox") {
        std::os::unix::fs::symlink("busybox", tmp.join("bin").join(applet))?;
    }
    std::fs::write(
        tmp.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )?;
    std::fs::write(tmp.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(tmp.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    std::fs::rename(&tmp, &rootfs)?;
    Ok(rootfs)
}

fn mount_kernel_filesystems() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for (fstype, target) in [
        ("tracefs", "/sys/kernel/tracing"),
        ("bpf", "/sys/fs/bpf"),
        ("securityfs", "/sys/kernel/security"),
    ] {
        if !mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(fstype))
        {
            let ok = Command::new("mount")
                .args(["-t", fstype, fstype, target])
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            eprintln!(
                "xtask: mount {fstype} on {target}: {}",
                if ok { "done" } else { "failed" }
            );
        }
    }
}

fn install_apt_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| {
            !Command::new("dpkg-query")
                .args(["-W", "-f=${Status}", p])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let install = |update: bool| -> anyhow::Result<()> {
        if update {
            run(Command::new("apt-get").args(["update", "-q"]))?;
        }
        run(Command::new("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    install(false).or_else(|_| install(true))
}

fn install_nightly() -> anyhow::Result<()> {
    let toolchains = output(Command::new("rustup").args(["toolchain", "list"]))?;
    if !toolchains.lines().any(|l| l.starts_with("nightly")) {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]))?;
    }
    let components = output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))?;
    if !components.lines().any(|l| l.starts_with("rust-src")) {
        run(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))?;
    }
    Ok(())
}

/// bpf-linker against nightly's own libLLVM: a folder with `libLLVM.so` and the exact soname
/// pointing into the nightly sysroot, given as LLVM_PREFIX. The binary's rpath points at that
/// folder, so it lives under CARGO_HOME (stable across `cargo clean`), per LLVM version.
fn install_bpf_linker() -> anyhow::Result<()> {
    let works = Command::new("bpf-linker")
        .arg("--version")
        .env("PATH", path_with_cargo_bin())
        .output()
        .map(|o| {
            o.status.success() && String::from_utf8_lossy(&o.stdout).contains(BPF_LINKER_VERSION)
        })
        .unwrap_or(false);
    if works {
        return Ok(());
    }
    let version = output(Command::new("rustc").args(["+nightly", "-vV"]))?;
    let llvm_major = version
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .context("rustc +nightly -vV does not name its LLVM version")?
        .to_owned();
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))?;
    let sysroot_lib = Path::new(sysroot.trim()).join("lib");
    let prefix = cargo_home().join(format!("profiler-llvm-{llvm_major}"));
    let lib = prefix.join("lib");
    std::fs::create_dir_all(&lib)?;
    let mut soname = None;
    for entry in std::fs::read_dir(&sysroot_lib)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("libLLVM") && name.contains(".so") {
            let link = lib.join(&name);
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(entry.path(), &link)?;
            if name.starts_with("libLLVM.so.") {
                soname = Some(entry.path());
            }
        }
    }
    let soname = soname.with_context(|| format!("no libLLVM.so.* in {}", sysroot_lib.display()))?;
    let plain = lib.join("libLLVM.so");
    let _ = std::fs::remove_file(&plain);
    std::os::unix::fs::symlink(&soname, &plain)?;
    run(Command::new("cargo")
        .args([
            "install",
            "bpf-linker",
            "--locked",
            "--force",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            &format!("llvm-{llvm_major}"),
        ])
        .env("LLVM_PREFIX", &prefix))
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin());
    c
}

fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--package", "profiler"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)
}

fn test(args: &[String]) -> anyhow::Result<()> {
    build(false)?;
    let bin = workspace_root().join("target/debug/profiler");
    run(cargo()
        .args([
            "test",
            "--workspace",
            "--exclude",
            "profiler-ebpf",
            "--no-fail-fast",
        ])
        .args(args)
        .env("PROFILER_BIN", &bin))
}

/// The demo workload: a small Python program that keeps an SQLite inventory, exports JSON,
/// compresses it with a gzip subprocess and changes the export's owner (CAP_CHOWN).
fn demo() -> anyhow::Result<()> {
    build(false)?;
    let root = workspace_root();
    // A fixed folder, so the checked-in profiles do not change from run to run.
    let work = std::env::temp_dir().join("profiler-demo");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let out = root.join("profiles/demo");
    let status = Command::new(root.join("target/debug/profiler"))
        .args(["record", "--out"])
        .arg(&out)
        .args(["--", "/usr/bin/python3"])
        .arg(root.join("xtask/demo/inventory.py"))
        .arg(&work)
        .status()
        .context("cannot start profiler")?;
    let _ = std::fs::remove_dir_all(&work);
    if !status.success() {
        bail!("recording the demo failed: {status}");
    }
    eprintln!("xtask: demo profiles are in {}", out.display());

    // Profiling an application through its tests: profiler's own unit tests, as a user would
    // record `cargo test` (built first, so the profile is the tests' and cargo's, not rustc's).
    run(cargo().args(["test", "--package", "profiler", "--lib", "--no-run"]))?;
    let tests_out = root.join("profiles/profiler-unit-tests");
    let status = Command::new(root.join("target/debug/profiler"))
        .args(["record", "--out"])
        .arg(&tests_out)
        .args([
            "--",
            "cargo",
            "test",
            "--offline",
            "--package",
            "profiler",
            "--lib",
        ])
        .current_dir(&root)
        .env("PATH", path_with_cargo_bin())
        .status()
        .context("cannot start profiler")?;
    if !status.success() {
        bail!("recording `cargo test` failed: {status}");
    }
    eprintln!(
        "xtask: the test-suite profile is in {}",
        tests_out.display()
    );
    Ok(())
}
