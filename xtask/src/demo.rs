//! `cargo xtask demo`: records the demo workload, and profiler's own unit tests as a user
//! would record `cargo test`; the profiles are checked in under profiles/.
use std::process::Command;

use anyhow::{Context as _, bail};

use crate::run::{build, cargo, path_with_cargo_bin, run, workspace_root};

/// The demo workload: a small Python program that keeps an SQLite inventory, exports JSON,
/// compresses it with a gzip subprocess and changes the export's owner (CAP_CHOWN).
pub fn demo() -> anyhow::Result<()> {
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
