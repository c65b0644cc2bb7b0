//! `cargo xtask test`: every test of the workspace, unit and privileged integration tests,
//! against the debug build of profiler (`PROFILER_BIN`).
use crate::run::{build, cargo, run, workspace_root};

pub fn test(args: &[String]) -> anyhow::Result<()> {
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
