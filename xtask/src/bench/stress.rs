//! Part 3, stress: 64 threads and 1,000 short-lived processes; the recorded set must equal
//! the ground truth (strace -f of a small run of the same program), the loss counters be 0.
use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::bail;

use super::Bench;
use super::measure::{secs, table_head};

/// 3. Stress: the recorded syscalls against strace -f, and the loss counters.
pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let (cfg, bins, dir) = (&b.cfg, &b.bins, &b.dir);
    let out = dir.join("stress-profile");
    let start = Instant::now();
    let status = b
        .record(&out)
        .arg(&bins.stress)
        .args(["64", "1000", &cfg.stress_seconds.to_string()])
        .stdout(Stdio::null())
        .status()?;
    let wall = start.elapsed();
    let (recorded, losses) = trace_names(&out.join("trace.json"))?;
    let truth_file = dir.join("stress-strace.txt");
    Command::new("strace")
        .args(["-f", "-qq", "-c", "-U", "name", "-o"])
        .arg(&truth_file)
        .arg(&bins.stress)
        .args(["4", "10", "0"])
        .stdout(Stdio::null())
        .status()?;
    let truth: std::collections::BTreeSet<String> = std::fs::read_to_string(&truth_file)?
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("syscall") && !l.starts_with('-') && *l != "total"
        })
        .filter_map(|l| l.split_whitespace().next().map(str::to_owned))
        .collect();
    // strace -c counts a syscall when it returns: exit/exit_group never do.
    let never_return = ["exit", "exit_group"];
    let missing: Vec<_> = truth.difference(&recorded).collect();
    let extra: Vec<_> = recorded
        .difference(&truth)
        .filter(|n| !never_return.contains(&n.as_str()))
        .collect();
    let lossless = losses.contains("\"syscalls_out_of_range\": 0")
        && losses.contains("\"capability_map_full\": 0")
        && losses.contains("\"cgroup_map_full\": 0");
    writeln!(
        report,
        "## 3. Stress: 64 threads + 1000 short-lived processes, {} s\n",
        cfg.stress_seconds
    )?;
    table_head(report, &["check", "result"])?;
    writeln!(
        report,
        "| profiler exit status | {status} ({:.2} s) |",
        secs(wall)
    )?;
    writeln!(
        report,
        "| recorded syscalls vs strace -f ground truth | {} recorded, {} in truth, missing {:?}, extra {:?} |",
        recorded.len(),
        truth.len(),
        missing,
        extra
    )?;
    writeln!(
        report,
        "| loss counters | {} |",
        if lossless { "all 0" } else { "NOT ZERO" }
    )?;
    writeln!(report)?;
    if !missing.is_empty() || !extra.is_empty() || !lossless || !status.success() {
        bail!("stress benchmark failed: the recording is not exact");
    }
    Ok(())
}

fn trace_names(trace: &Path) -> anyhow::Result<(std::collections::BTreeSet<String>, String)> {
    let text = std::fs::read_to_string(trace)?;
    let mut names = std::collections::BTreeSet::new();
    // Plain string scanning keeps xtask free of a JSON dependency: entries are
    // `"name": "..."` inside the x86_64 syscall list.
    let syscalls = text.split("\"capability_checks\"").next().unwrap_or("");
    for part in syscalls.split("\"name\": \"").skip(1) {
        if let Some(end) = part.find('"') {
            names.insert(part[..end].to_owned());
        }
    }
    let losses = text.split("\"losses\"").nth(1).unwrap_or("").to_owned();
    Ok((names, losses))
}
