//! What the parts measure with: wall, CPU and loop times, medians, alternation of variants,
//! memory, the host's cgroup2 mount, the machine, and the report's tables.
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};

use super::Bench;

pub(super) fn machine() -> anyhow::Result<String> {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")?
        .trim()
        .to_owned();
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_default();
    let cpus = cpuinfo
        .lines()
        .filter(|l| l.starts_with("processor"))
        .count();
    let mem = std::fs::read_to_string("/proc/meminfo")?
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .nth(1)
        .and_then(|k| k.parse::<u64>().ok())
        .unwrap_or(0);
    let lockdown = std::fs::read_to_string("/sys/kernel/security/lockdown").unwrap_or_default();
    Ok(format!(
        "Machine: Linux {kernel}, {cpus} CPUs ({model}), {} GiB RAM, lockdown: {}, measured {}.",
        mem / 1024 / 1024,
        lockdown.trim(),
        date()
    ))
}

/// The file name of this machine's runs: `amd`, `intel`, the CPU's vendor id, or (no vendor
/// id) the architecture.
pub(super) fn cpu_vendor() -> anyhow::Result<String> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")?;
    let vendor = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("vendor_id"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).trim())
        // Not x86 (no vendor_id line): the architecture names the machine's kind.
        .unwrap_or(std::env::consts::ARCH);
    Ok(match vendor {
        "AuthenticAMD" => "amd".to_owned(),
        "GenuineIntel" => "intel".to_owned(),
        other => {
            let name: String = other
                .chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .collect();
            if name.is_empty() {
                "unknown".to_owned()
            } else {
                name.to_ascii_lowercase()
            }
        }
    })
}

/// One program's run-time line of `PROFILER_TIMINGS`, "profiler: timing: ... eBPF
/// sys_enter_btf: 490944 runs, 40.8 ms, 83.0 ns a run" (profiler/src/kernel/mod.rs,
/// `mark_run_stats`).
pub(super) struct ProgramRunTime<'a> {
    pub name: &'a str,
    /// The figures as printed, for the report.
    pub figures: &'a str,
    pub runs: u64,
    pub ms: f64,
    pub ns_a_run: f64,
}

/// Every program's run-time line in `stderr`, unreadable ones left out.
pub(super) fn program_run_times(stderr: &str) -> Vec<ProgramRunTime<'_>> {
    stderr
        .lines()
        .filter_map(|line| {
            let (name, figures) = line.split("  eBPF ").nth(1)?.split_once(": ")?;
            let mut parts = figures.split(", ");
            let runs = parts.next()?.strip_suffix(" runs")?.parse().ok()?;
            let ms = parts.next()?.strip_suffix(" ms")?.parse().ok()?;
            let ns_a_run = parts.next()?.strip_suffix(" ns a run")?.parse().ok()?;
            Some(ProgramRunTime {
                name,
                figures,
                runs,
                ms,
                ns_a_run,
            })
        })
        .collect()
}

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The head of a report table: the column names and the `| --- |` line.
pub(super) fn table_head(report: &mut String, columns: &[&str]) -> std::fmt::Result {
    writeln!(report, "| {} |", columns.join(" | "))?;
    writeln!(report, "|{}", " --- |".repeat(columns.len()))
}

/// Wall time of `cmd`, its output dropped; an error when it fails.
pub(super) fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("{cmd:?}"))?;
    let elapsed = start.elapsed();
    if !status.success() {
        bail!("{cmd:?} failed: {status}");
    }
    Ok(elapsed)
}

/// The time of day in seconds since the epoch, as the workloads print it (`date +%s.%N`).
pub(super) fn unix_now() -> anyhow::Result<f64> {
    Ok(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs_f64())
}

/// Seconds from the workload's end to now: the workload's last output line is its end time
/// (`date +%s.%N`), read from the recorder's captured stdout.
pub(super) fn since_workload_end(stdout: &[u8]) -> anyhow::Result<f64> {
    let end: f64 = String::from_utf8_lossy(stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    Ok((unix_now()? - end).max(0.0))
}

/// CPU time (user + system) of all children waited for so far.
pub(super) fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

pub(super) fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

pub(super) fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A named way to run one measurement.
pub(super) type Variant<'a> = (&'a str, Box<dyn FnMut() -> anyhow::Result<Duration> + 'a>);

/// Runs the variants in alternation, `rounds` times, and returns each variant's median.
/// Each round starts one variant later than the previous one, so no variant always runs
/// right after the same other one (a heavy run can slow the next on a small VM).
pub(super) fn alternate(
    rounds: usize,
    variants: &mut [Variant<'_>],
) -> anyhow::Result<Vec<Duration>> {
    Ok(alternate_samples(rounds, variants)?
        .into_iter()
        .map(median)
        .collect())
}

/// Like [`alternate`], every sample: `[variant][round]`, each round running every variant
/// once (in a rotating order), so two variants' samples of one round are a pair taken
/// seconds apart.
pub(super) fn alternate_samples(
    rounds: usize,
    variants: &mut [Variant<'_>],
) -> anyhow::Result<Vec<Vec<Duration>>> {
    let count = variants.len();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); count];
    for round in 0..rounds {
        for k in 0..count {
            let i = (round + k) % count;
            samples[i].push((variants[i].1)()?);
        }
    }
    Ok(samples)
}

/// The median over rounds of `a`'s sample less `b`'s of the same round, in seconds. These
/// VMs drift between a fast and a slow state every few seconds (the untraced loop moved by
/// 10% between benches); a difference within one round cancels the drift that a difference
/// of two medians keeps.
pub(super) fn paired_difference(a: &[Duration], b: &[Duration]) -> f64 {
    middle(&mut differences(a, b))
}

/// Each round's `a` less its `b`, in seconds.
fn differences(a: &[Duration], b: &[Duration]) -> Vec<f64> {
    a.iter()
        .zip(b)
        .map(|(x, y)| x.as_secs_f64() - y.as_secs_f64())
        .collect()
}

/// The median of `v` (sorted in place), 0 for none.
fn middle(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The 95% interval of [`paired_difference`], by resampling the rounds (2000 bootstrap
/// resamples with a fixed seed, so the same samples give the same interval): how far the
/// median of differences could be from the one a longer run would give.
pub(super) fn paired_difference_interval(a: &[Duration], b: &[Duration]) -> (f64, f64) {
    let d = differences(a, b);
    if d.len() < 2 {
        let v = d.first().copied().unwrap_or(0.0);
        return (v, v);
    }
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        // xorshift64*
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut medians: Vec<f64> = (0..2000)
        .map(|_| {
            let mut r: Vec<f64> = (0..d.len())
                .map(|_| d[(next() % d.len() as u64) as usize])
                .collect();
            middle(&mut r)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    (medians[50], medians[1949])
}

/// The median loop time of the getppid loop, untraced (before and after all parts).
pub(super) fn untraced_loop(b: &Bench) -> anyhow::Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..b.cfg.rounds {
        v.push(loop_time(
            Command::new(&b.bins.getppid).arg(b.cfg.loop_syscalls.to_string()),
        )?);
    }
    Ok(median(v))
}

/// Runs a command whose workload is the getppid loop and returns the loop's own time, as the
/// loop measured it: start-up and shut-down of the tracer around it are left out.
pub(super) fn loop_time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let o = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .output()
        .with_context(|| format!("{cmd:?}"))?;
    if !o.status.success() {
        bail!("{cmd:?} failed: {}", o.status);
    }
    let text = String::from_utf8_lossy(&o.stdout);
    let secs: f64 = text
        .trim()
        .parse()
        .with_context(|| format!("{cmd:?}: no loop time in its output {text:?}"))?;
    Ok(Duration::from_secs_f64(secs))
}

/// Runs `cmd` and returns (success, its own peak RSS in KiB), from wait4's rusage.
pub(super) fn run_with_peak_rss(cmd: &mut Command) -> anyhow::Result<(bool, u64)> {
    let child = cmd.stdout(Stdio::null()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    let mut status = 0;
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointers; the child is ours and not yet reaped.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut u) };
    if r != pid {
        bail!("wait4 failed");
    }
    Ok((
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        u.ru_maxrss as u64,
    ))
}

/// The peak RSS (`VmHWM`, KiB) in a `/proc/PID/status` text.
pub(super) fn vm_hwm_kb(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Sum of `memlock` over the BPF maps a process holds.
pub(super) fn map_memlock_kb(pid: u32) -> u64 {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return 0;
    };
    let mut bytes = 0;
    for fd in fds.flatten() {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        if info.contains("map_type:") {
            bytes += info
                .lines()
                .find_map(|l| l.strip_prefix("memlock:"))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    bytes / 1024
}

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo (the only mountinfo
/// reading in xtask).
pub(super) fn cgroup2_mount() -> anyhow::Result<String> {
    let m = std::fs::read_to_string("/proc/self/mountinfo")?;
    m.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .context("no cgroup2 mount")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn program_run_times_are_read_from_profiler_timings_lines() {
        let stderr = "profiler: timing:   3707.5 ms  (cpu   151.6 ms)  eBPF sys_enter_btf: 464714 runs, 45.8 ms, 98.5 ns a run\n\
                      profiler: timing:   3707.4 ms  (cpu   151.5 ms)  eBPF profiler_epoch: 5 runs, 0.0 ms, 176.2 ns a run\n\
                      profiler: timing:     36.3 ms  (cpu    61.0 ms)  programs verified\n\
                      profiler: timing:   1.0 ms  (cpu 1.0 ms)  eBPF broken: many runs, 1 ms, 2 ns a run\n";
        let runs = super::program_run_times(stderr);
        assert_eq!(runs.len(), 2);
        assert_eq!((runs[0].name, runs[0].runs), ("sys_enter_btf", 464714));
        assert_eq!((runs[0].ms, runs[0].ns_a_run), (45.8, 98.5));
        assert_eq!(runs[0].figures, "464714 runs, 45.8 ms, 98.5 ns a run");
        assert_eq!((runs[1].name, runs[1].runs), ("profiler_epoch", 5));
    }

    #[test]
    fn table_head_is_the_markdown_head_the_parts_wrote() {
        let mut s = String::new();
        table_head(&mut s, &["measure", "value"]).unwrap();
        assert_eq!(s, "| measure | value |\n| --- | --- |\n");
        let mut s = String::new();
        table_head(
            &mut s,
            &["variant", "wall (median)", "CPU user+sys (median)"],
        )
        .unwrap();
        assert_eq!(
            s,
            "| variant | wall (median) | CPU user+sys (median) |\n| --- | --- | --- |\n"
        );
    }
}
