//! Part 6: while nothing records, nothing is attached and the host pays nothing (no
//! profiler program left in the kernel, the untraced loop as fast as before all parts).
use std::fmt::Write as _;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::bail;

use super::Bench;
use super::measure::{secs, table_head, untraced_loop};

/// 6. While nothing records, nothing is attached and the host pays nothing.
///
/// `before`: the untraced loop's time before all parts.
pub(super) fn run(b: &Bench, report: &mut String, before: Duration) -> anyhow::Result<()> {
    // The kernel frees a program some time after its last file descriptor is closed
    // (RCU-deferred): give it a moment before counting.
    let mut names = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = Command::new(&b.profiler).arg("bench-attached").output()?;
        names = String::from_utf8_lossy(&out.stdout).into_owned();
        if names.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let attached = names.lines().count();
    let after = untraced_loop(b)?;
    writeln!(report, "## 6. Nothing attached while not recording\n")?;
    table_head(report, &["measure", "value"])?;
    writeln!(
        report,
        "| profiler programs loaded in the kernel after all runs | {attached} |"
    )?;
    writeln!(
        report,
        "| untraced loop after / before all runs | {:.3} |",
        secs(after) / secs(before)
    )?;
    writeln!(report)?;
    if attached != 0 {
        bail!("profiler programs are still loaded after the benchmarks: {names}");
    }
    Ok(())
}
