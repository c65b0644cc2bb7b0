//! Running commands, and cargo: the workspace root, cargo's bin folder on PATH, and the
//! build of profiler that `build`, `test`, `demo` and `bench` start from.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

pub fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cargo")
        })
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    eprintln!("xtask: running {cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(())
}

pub fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot start {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `cmd` runs and succeeds, its output captured and dropped (a probe, not a step).
pub fn succeeds_quietly(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

/// Whether `cmd` runs and succeeds, its output going where ours goes.
pub fn succeeds(cmd: &mut Command) -> bool {
    cmd.status().map(|s| s.success()).unwrap_or(false)
}

/// PATH with cargo's bin folder first, so a freshly installed bpf-linker is found.
pub fn path_with_cargo_bin() -> std::ffi::OsString {
    let mut paths = vec![cargo_home().join("bin")];
    if let Some(p) = std::env::var_os("PATH") {
        paths.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(paths).expect("valid PATH")
}

pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    c.current_dir(workspace_root())
        .env("PATH", path_with_cargo_bin());
    c
}

pub fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cargo();
    c.args(["build", "--package", "profiler"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)?;
    build_seal()
}

/// The sealing entrypoint mounted into containers: static (musl), since it runs inside
/// images whose C library is not the host's. profiler finds it at
/// target/x86_64-unknown-linux-musl/release/profiler-seal.
pub const SEAL_TARGET: &str = "x86_64-unknown-linux-musl";

pub fn build_seal() -> anyhow::Result<()> {
    run(cargo().args([
        "build",
        "--package",
        "profiler-seal",
        "--release",
        "--target",
        SEAL_TARGET,
    ]))
}

/// The tests' private podman storage and its containers.conf (written by setup_podman).
pub fn podman_dir() -> std::path::PathBuf {
    workspace_root().join(xtask::PODMAN_DIR)
}

/// `podman ARGS` on the tests' private storage, with the containers.conf setup_podman writes.
pub fn podman_cmd(args: &[&str]) -> std::process::Command {
    let dir = podman_dir();
    let mut c = std::process::Command::new("podman");
    c.env("CONTAINERS_CONF", dir.join("containers.conf"))
        .arg("--root")
        .arg(dir.join("root"))
        // podman refuses a runroot longer than 50 characters.
        .args(["--runroot", xtask::PODMAN_RUNROOT])
        .args(args);
    c
}
