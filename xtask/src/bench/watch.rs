//! Part 9: what `profiler watch` costs the workload it watches, next to `record --attach`
//! of the same running process (issue 14: watching must cost what recording costs; both
//! aggregate in the kernel, and watch only reads the aggregate once a second) and next to
//! the loop untraced. The loop runs in a cgroup of its own, started before profiler attaches.
use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::Bench;
use super::measure::{Variant, alternate, secs, table_head};

/// A cgroup2 folder for the watched loop, removed on drop.
struct LoopCgroup(PathBuf);

impl Drop for LoopCgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// Runs the getppid loop in `cg` (it waits `delay` first, for profiler to attach), with
/// `attach` (profiler's argv, `--attach cgroup:PATH` added) next to it; the loop's own clock.
fn watched_loop(
    b: &Bench,
    cg: &LoopCgroup,
    rel: &str,
    attach: Option<Vec<String>>,
) -> anyhow::Result<Duration> {
    let n = b.cfg.loop_syscalls.to_string();
    let script = format!(
        "echo $$ > {}/cgroup.procs && sleep 1.5 && exec {} {n}",
        cg.0.display(),
        b.bins.getppid.display()
    );
    let loop_child = Command::new("sh")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut watcher = None;
    if let Some(args) = attach {
        std::thread::sleep(Duration::from_millis(300));
        let mut c = Command::new(&b.profiler);
        c.args(&args)
            .arg("--attach")
            .arg(format!("cgroup:{rel}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        watcher = Some(c.spawn()?);
    }
    let o = loop_child.wait_with_output()?;
    if let Some(mut w) = watcher {
        let _ = w.wait();
    }
    anyhow::ensure!(o.status.success(), "the watched loop failed");
    let s: f64 = String::from_utf8_lossy(&o.stdout).trim().parse()?;
    Ok(Duration::from_secs_f64(s))
}

pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let root = PathBuf::from("/sys/fs/cgroup/unified");
    let root = if root.join("cgroup.procs").exists() {
        root
    } else {
        PathBuf::from("/sys/fs/cgroup")
    };
    let name = format!("profiler-bench-watch-{}", std::process::id());
    let dir = root.join(&name);
    std::fs::create_dir_all(&dir)?;
    let cg = LoopCgroup(dir);
    let rel = format!("/{name}");
    // The profile watch compares against: the loop recorded once.
    let profile = b.dir.join("watch-loop-profile");
    let o = b
        .record(&profile)
        .arg(&b.bins.getppid)
        .arg(b.cfg.loop_syscalls.to_string())
        .output()?;
    anyhow::ensure!(o.status.success(), "recording the loop failed");
    let out = b.dir.join("watch-attached-out");
    let log = b.dir.join("watch.jsonl");
    let mut variants: Vec<Variant> = vec![
        ("untraced", Box::new(|| watched_loop(b, &cg, &rel, None))),
        (
            "record --attach",
            Box::new(|| {
                watched_loop(
                    b,
                    &cg,
                    &rel,
                    Some(vec![
                        "record".into(),
                        "-q".into(),
                        "--out".into(),
                        out.display().to_string(),
                    ]),
                )
            }),
        ),
        (
            "watch --attach",
            Box::new(|| {
                let _ = std::fs::remove_file(&log);
                watched_loop(
                    b,
                    &cg,
                    &rel,
                    Some(vec![
                        "watch".into(),
                        "--profile".into(),
                        profile.display().to_string(),
                        "--log".into(),
                        log.display().to_string(),
                    ]),
                )
            }),
        ),
    ];
    let r = alternate(b.cfg.rounds, &mut variants)?;
    drop(variants);
    let per = |d: Duration| secs(d) * 1e9 / b.cfg.loop_syscalls as f64;
    writeln!(report, "## 9. Watching a running workload\n")?;
    table_head(
        report,
        &[
            "getppid loop, ns per syscall",
            "untraced",
            "record --attach",
            "watch --attach",
            "watch / record",
        ],
    )?;
    writeln!(
        report,
        "| {} syscalls, in a cgroup profiler attaches to | {:.1} | {:.1} | {:.1} | {:.3} |\n",
        b.cfg.loop_syscalls,
        per(r[0]),
        per(r[1]),
        per(r[2]),
        secs(r[2]) / secs(r[1])
    )?;
    Ok(())
}
