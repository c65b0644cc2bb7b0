//! Part 7, many written paths (issue 11): a real workload creating N files under `profiler
//! record` (what the time after its end costs), and `profiler generate` from a trace holding
//! millions of written paths (time and memory).
use std::fmt::Write as _;
use std::process::Command;
use std::time::Instant;

use anyhow::bail;

use super::Bench;
use super::measure::{run_with_peak_rss, since_workload_end, table_head};

/// 7. Many written paths: `record` of a workload creating files, `generate` from a huge trace.
pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let dir = &b.dir;
    let files = b.cfg.paths_files;
    let work = dir.join("paths-work");
    let out = dir.join("paths-profile");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    // 100 folders of files, made by one shell (no process per file).
    let script = format!(
        "cd {w}; for d in $(seq 100); do mkdir d$d; done; i=0; while [ $i -lt {files} ]; do : > d$((i % 100 + 1))/f$i; i=$((i+1)); done; date +%s.%N",
        w = work.display()
    );
    let start = Instant::now();
    let o = b.record(&out).args(["sh", "-c", &script]).output()?;
    let total = start.elapsed();
    if !o.status.success() {
        bail!(
            "paths: recording failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let after_end = since_workload_end(&o.stdout)?;
    let trace = std::fs::read_to_string(out.join("trace.json"))?;
    let v: serde_json::Value = serde_json::from_str(&trace)?;
    let kept = v["image"]["written_paths"]
        .as_object()
        .map_or(0, |m| m.len());
    let folded = v["image"]["written_paths_folded"].as_u64().unwrap_or(0);

    // A trace with millions of written paths, as a hand-made or hostile input could be.
    let big = b.cfg.paths_big_trace;
    let mut t = v.clone();
    let mut written = serde_json::Map::new();
    for i in 0..big {
        written.insert(
            format!("/srv/data/d{}/e{}/f{i}", i % 1000, i % 7),
            serde_json::json!(["openat"]),
        );
    }
    t["image"]["written_paths"] = serde_json::Value::Object(written);
    let big_trace = dir.join("paths-big-trace.json");
    std::fs::write(&big_trace, serde_json::to_vec(&t)?)?;
    let size_mb = std::fs::metadata(&big_trace)?.len() as f64 / 1e6;
    let gen_out = dir.join("paths-generated");
    let _ = std::fs::remove_dir_all(&gen_out);
    let start = Instant::now();
    let (ok, rss) = run_with_peak_rss(
        Command::new(&b.profiler)
            .args(["generate", "--out"])
            .arg(&gen_out)
            .arg(&big_trace),
    )?;
    let gen_time = start.elapsed();
    if !ok {
        bail!("paths: generate from {} failed", big_trace.display());
    }
    writeln!(report, "## 7. Many written paths\n")?;
    table_head(report, &["measure", "value"])?;
    writeln!(
        report,
        "| `record` of a shell creating {files} files in 100 folders: whole run | {:.2} s |",
        total.as_secs_f64()
    )?;
    writeln!(
        report,
        "| of which after the workload ended (profiles built and written) | {:.2} s |",
        after_end
    )?;
    writeln!(
        report,
        "| written paths kept one by one / folded into their folder | {kept} / {folded} |"
    )?;
    writeln!(
        report,
        "| `generate` from a trace with {big} written paths ({size_mb:.0} MB) | {:.2} s, peak RSS {:.0} MiB |\n",
        gen_time.as_secs_f64(),
        rss as f64 / 1024.0
    )?;
    let _ = std::fs::remove_file(&big_trace);
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
