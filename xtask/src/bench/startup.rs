//! Part 5, start-up and shut-down: `profiler record` invoked to the workload's first
//! instruction (load, verify, attach), and its last instruction to profiles written.
use std::fmt::Write as _;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;

use super::Bench;
use super::measure::{median, secs, table_head, unix_now};

/// 5. Start-up: invocation to the workload's first instruction, and exit to profiles written.
pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let out = b.dir.join("startup-profile");
    let mut to_first = Vec::new();
    let mut to_written = Vec::new();
    for _ in 0..b.cfg.rounds.max(3) {
        let t0 = unix_now()?;
        let o = b
            .record(&out)
            .arg(&b.bins.stamp)
            .stderr(Stdio::null())
            .output()?;
        let t_end = unix_now()?;
        let text = String::from_utf8_lossy(&o.stdout);
        let mut it = text
            .split_whitespace()
            .filter_map(|v| v.parse::<f64>().ok());
        let (first, last) = (
            it.next().context("stamp output")?,
            it.next().context("stamp output")?,
        );
        to_first.push(Duration::from_secs_f64((first - t0).max(0.0)));
        to_written.push(Duration::from_secs_f64((t_end - last).max(0.0)));
    }
    let first_ms = secs(median(to_first.clone())) * 1e3;
    b.target(
        "start-up (invocation → workload's first instruction) ≤ 40 ms",
        format!("{first_ms:.0} ms"),
        first_ms <= 40.0,
    );
    writeln!(report, "## 5. Start-up and shut-down\n")?;
    table_head(report, &["measure", "median"])?;
    writeln!(
        report,
        "| `profiler record` invoked → workload's first instruction (load, verify, attach) | {:.0} ms |",
        secs(median(to_first)) * 1e3
    )?;
    writeln!(
        report,
        "| workload's last instruction → profiles written, profiler exited | {:.0} ms |",
        secs(median(to_written)) * 1e3
    )?;
    writeln!(report)?;
    Ok(())
}
