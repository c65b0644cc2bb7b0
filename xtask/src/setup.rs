//! `cargo xtask setup`, idempotent: everything the build and the tests need on a fresh Debian
//! machine. The Debian packages the tests use, the nightly toolchain's rust-src, bpf-linker
//! built against nightly's own libLLVM, the kernel filesystems (tracefs, bpffs, securityfs),
//! the container images the tests run (busybox here, the Debian image with real services in
//! images.rs) in Docker and in the tests' private podman storage, and kubernetes-validate.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use xtask::{BUSYBOX_IMAGE, BUSYBOX_ROOTFS, KUBERNETES_VALIDATE_VENV, PODMAN_BUSYBOX_IMAGE};

use crate::images;
use crate::run::{
    cargo_home, output, path_with_cargo_bin, podman_cmd, podman_dir, run, succeeds,
    succeeds_quietly, workspace_root,
};

/// bpf-linker version the project builds with (see ../shared/platform.md for the recipe).
const BPF_LINKER_VERSION: &str = "0.13.0";

/// Debian packages the build and the tests need.
const APT_PACKAGES: &[&str] = &[
    "strace",
    // perf: the build benchmark samples where its CPU goes (bench/sampled.rs).
    "linux-perf",
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

pub fn setup() -> anyhow::Result<()> {
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
    let venv = workspace_root().join(KUBERNETES_VALIDATE_VENV);
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
    let docker_up =
        succeeds_quietly(Command::new("docker").args(["info", "--format", "{{.ServerVersion}}"]));
    if !docker_up {
        eprintln!(
            "xtask: WARNING: the Docker Engine is not reachable (`docker info` failed): the container tests \
             will fail. Start it (e.g. `dockerd &`) and run again."
        );
        return Ok(());
    }
    let rootfs = busybox_rootfs()?;
    let have = succeeds_quietly(Command::new("docker").args(["image", "inspect", BUSYBOX_IMAGE]));
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
    let have = succeeds(&mut podman_cmd(&["image", "exists", PODMAN_BUSYBOX_IMAGE]));
    if !have {
        let tar = Command::new("tar")
            .arg("-C")
            .arg(rootfs)
            .args(["-c", "."])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        run(podman_cmd(&["import", "-", PODMAN_BUSYBOX_IMAGE])
            .stdin(tar.stdout.context("tar stdout")?))?;
    }
    Ok(())
}

fn busybox_rootfs() -> anyhow::Result<PathBuf> {
    let rootfs = workspace_root().join(BUSYBOX_ROOTFS);
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
            let ok = succeeds(Command::new("mount").args(["-t", fstype, fstype, target]));
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
    // The static sealing binary's target, for the stable toolchain that builds it.
    let targets = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !targets.lines().any(|l| l == crate::run::SEAL_TARGET) {
        run(Command::new("rustup").args(["target", "add", crate::run::SEAL_TARGET]))?;
    }
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
