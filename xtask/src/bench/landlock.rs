//! Part 8: what Landlock adds under `profiler run` (issue 13): the syscall loop and
//! `make -j2`, each confined by its own recorded profile, with and without the Landlock
//! ruleset, side by side.
use std::fmt::Write as _;
use std::process::Command;

use super::Bench;
use super::measure::{Variant, alternate, loop_time, secs, table_head, time};

pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let cfg = &b.cfg;
    let confined = |profile: &std::path::Path, landlock: bool| {
        let mut c = Command::new(&b.profiler);
        c.args(["run", "-q"]);
        if !landlock {
            c.arg("--no-landlock");
        }
        c.arg("--profile").arg(profile).arg("--");
        c
    };
    // The loop: recorded once, then run confined.
    let loop_profile = b.dir.join("landlock-loop-profile");
    let n = cfg.loop_syscalls.to_string();
    let o = b
        .record(&loop_profile)
        .arg(&b.bins.getppid)
        .arg(&n)
        .output()?;
    anyhow::ensure!(o.status.success(), "recording the loop failed");
    let mut variants: Vec<Variant> = vec![
        (
            "seccomp + capabilities",
            Box::new(|| loop_time(confined(&loop_profile, false).arg(&b.bins.getppid).arg(&n))),
        ),
        (
            "+ Landlock",
            Box::new(|| loop_time(confined(&loop_profile, true).arg(&b.bins.getppid).arg(&n))),
        ),
    ];
    let l = alternate(cfg.loop_rounds, &mut variants)?;
    drop(variants);
    // make -j2: recorded once (a clean build), then built confined from clean.
    let proj = super::make::project(b)?;
    let make_profile = b.dir.join("landlock-make-profile");
    let clean = || super::make::clean(&proj);
    clean()?;
    let o = b
        .record(&make_profile)
        .arg("make")
        .args(["-s", "-j2", "-C"])
        .arg(&proj)
        .output()?;
    anyhow::ensure!(o.status.success(), "recording make failed");
    let mut variants: Vec<Variant> = vec![
        (
            "seccomp + capabilities",
            Box::new(|| {
                clean()?;
                time(
                    confined(&make_profile, false)
                        .arg("make")
                        .args(["-s", "-j2", "-C"])
                        .arg(&proj),
                )
            }),
        ),
        (
            "+ Landlock",
            Box::new(|| {
                clean()?;
                time(
                    confined(&make_profile, true)
                        .arg("make")
                        .args(["-s", "-j2", "-C"])
                        .arg(&proj),
                )
            }),
        ),
    ];
    let m = alternate(cfg.rounds, &mut variants)?;
    writeln!(report, "## 8. Landlock under profiler run\n")?;
    table_head(
        report,
        &["workload", "seccomp + capabilities", "+ Landlock", "ratio"],
    )?;
    let per = |d: std::time::Duration| secs(d) * 1e9 / cfg.loop_syscalls as f64;
    writeln!(
        report,
        "| getppid loop, ns per syscall | {:.1} | {:.1} | {:.3} |",
        per(l[0]),
        per(l[1]),
        secs(l[1]) / secs(l[0])
    )?;
    writeln!(
        report,
        "| make -j2 of {} files, wall | {:.3} s | {:.3} s | {:.3} |\n",
        cfg.make_files + 1,
        secs(m[0]),
        secs(m[1]),
        secs(m[1]) / secs(m[0])
    )?;
    Ok(())
}
