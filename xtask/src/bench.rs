//! `cargo xtask bench [--quick] [--only PART,...]`: profiler's cost measured side by side with its baselines,
//! runs alternated (A B A B ...) so drift on the machine hits every variant alike. Prints a
//! table of medians and ratios and writes it, with the machine, to BENCHMARKS.md.
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

struct Config {
    rounds: usize,
    /// The loop is the noisiest comparison and the quickest run: more rounds.
    loop_rounds: usize,
    loop_syscalls: u64,
    strace_divisor: u64,
    make_files: usize,
    stress_seconds: u32,
    scale_cgroups: usize,
}

/// The parts of the benchmark, in the order.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Part {
    Loop,
    Make,
    Stress,
    Scale,
    Startup,
    Idle,
    /// Many written paths: a workload creating files, and generating from a huge trace.
    Paths,
}

pub fn bench(root: &Path, quick: bool, only: &[Part]) -> anyhow::Result<()> {
    let runs = |part: Part| only.is_empty() || only.contains(&part);
    let cfg = if quick {
        Config {
            rounds: 2,
            loop_rounds: 3,
            loop_syscalls: 1_000_000,
            strace_divisor: 100,
            make_files: 40,
            stress_seconds: 1,
            scale_cgroups: 50,
        }
    } else {
        Config {
            rounds: 5,
            loop_rounds: 9,
            loop_syscalls: 5_000_000,
            strace_divisor: 200,
            make_files: 200,
            stress_seconds: 4,
            scale_cgroups: 200,
        }
    };
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let profiler = root.join("target/release/profiler");
    let bins = Bins::build(root, &dir)?;
    let mut report = String::new();
    writeln!(report, "# Benchmarks\n")?;
    writeln!(report, "{}\n", machine()?)?;
    writeln!(
        report,
        "`cargo xtask bench{}`: {} alternating rounds per comparison ({} for the loop), medians. \
         Release build.\n",
        if quick { " --quick" } else { "" },
        cfg.rounds,
        cfg.loop_rounds
    )?;

    let before = untraced_loop(&bins, &cfg)?;
    if runs(Part::Loop) {
        syscall_loop(&mut report, &cfg, &profiler, &bins, &dir)?;
    }
    if runs(Part::Make) {
        realistic(&mut report, &cfg, &profiler, &dir)?;
    }
    if runs(Part::Stress) {
        stress(&mut report, &cfg, &profiler, &bins, &dir)?;
    }
    if runs(Part::Scale) {
        scale(&mut report, &cfg, &profiler, &dir)?;
    }
    if runs(Part::Startup) {
        startup(&mut report, &cfg, &profiler, &bins, &dir)?;
    }
    if runs(Part::Idle) {
        idle(&mut report, &cfg, &profiler, &bins, before)?;
    }
    if runs(Part::Paths) {
        paths(&mut report, quick, &profiler, &dir)?;
    }

    print!("{report}");
    // BENCHMARKS.md holds full runs only; quick and partial runs (CI, work on one number)
    // leave it alone.
    let out = if !only.is_empty() {
        dir.join("partial.md")
    } else if quick {
        dir.join("quick.md")
    } else {
        root.join("BENCHMARKS.md")
    };
    std::fs::write(&out, &report)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

fn machine() -> anyhow::Result<String> {
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

fn date() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// Small C programs the benchmarks run, built with gcc.
struct Bins {
    getppid: PathBuf,
    stress: PathBuf,
    stamp: PathBuf,
}

impl Bins {
    fn build(root: &Path, dir: &Path) -> anyhow::Result<Bins> {
        let src = root.join("xtask/bench");
        let build = |name: &str, extra: &[&str]| -> anyhow::Result<PathBuf> {
            let out = dir.join(name);
            let status = Command::new("gcc")
                .args(["-O2", "-o"])
                .arg(&out)
                .arg(src.join(format!("{name}.c")))
                .args(extra)
                .status()?;
            if !status.success() {
                bail!("gcc {name}.c failed");
            }
            Ok(out)
        };
        Ok(Bins {
            getppid: build("getppid", &[])?,
            stress: build("stress", &["-pthread"])?,
            stamp: build("stamp", &["-static"])?,
        })
    }
}

fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
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

/// CPU time (user + system) of all children waited for so far.
fn children_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A named way to run one measurement.
type Variant<'a> = (&'a str, Box<dyn FnMut() -> anyhow::Result<Duration> + 'a>);

/// Runs the variants in alternation, `rounds` times, and returns each variant's median.
/// Each round starts one variant later than the previous one, so no variant always runs
/// right after the same other one (a heavy run can slow the next on a small VM).
fn alternate(rounds: usize, variants: &mut [Variant<'_>]) -> anyhow::Result<Vec<Duration>> {
    let count = variants.len();
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); count];
    for round in 0..rounds {
        for k in 0..count {
            let i = (round + k) % count;
            samples[i].push((variants[i].1)()?);
        }
    }
    Ok(samples.into_iter().map(median).collect())
}

/// SIGTERM: profiler forwards it to the workload and writes its profile.
fn terminate(pid: u32) {
    let _ = Command::new("kill").arg(pid.to_string()).status();
}

fn untraced_loop(bins: &Bins, cfg: &Config) -> anyhow::Result<Duration> {
    let mut v = Vec::new();
    for _ in 0..cfg.rounds {
        v.push(loop_time(
            Command::new(&bins.getppid).arg(cfg.loop_syscalls.to_string()),
        )?);
    }
    Ok(median(v))
}

/// Runs a command whose workload is the getppid loop and returns the loop's own time, as the
/// loop measured it: start-up and shut-down of the tracer around it are left out.
fn loop_time(cmd: &mut Command) -> anyhow::Result<Duration> {
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

fn record(profiler: &Path, out: &Path) -> Command {
    let mut c = Command::new(profiler);
    c.args(["record", "--quiet", "--out"]).arg(out).arg("--");
    c
}

/// 1. A syscall-bound loop: untraced, the floor, profiler, strace -f.
fn syscall_loop(
    report: &mut String,
    cfg: &Config,
    profiler: &Path,
    bins: &Bins,
    dir: &Path,
) -> anyhow::Result<()> {
    let dir = dir.to_path_buf();
    let n = cfg.loop_syscalls;
    let out = dir.join("loop-profile");
    let ns = n.to_string();
    let strace_n = (n / cfg.strace_divisor).to_string();
    let getppid = || {
        let mut c = Command::new(&bins.getppid);
        c.arg(&ns);
        c
    };
    // Another process's loop while something is attached elsewhere: what every other
    // process on the host pays.
    let beside = |mut bg: Command, settle_ms: u64| -> anyhow::Result<Duration> {
        let mut bg = bg.stdout(Stdio::null()).stderr(Stdio::null()).spawn()?;
        std::thread::sleep(Duration::from_millis(settle_ms));
        let d = loop_time(&mut getppid());
        terminate(bg.id());
        let _ = bg.wait();
        d
    };
    let mut variants: Vec<Variant> = vec![
        ("untraced", Box::new(|| loop_time(&mut getppid()))),
        (
            "floor",
            Box::new(|| {
                loop_time(
                    Command::new(profiler)
                        .args(["bench-floor", "--"])
                        .arg(&bins.getppid)
                        .arg(&ns),
                )
            }),
        ),
        (
            "profiler record",
            Box::new(|| loop_time(record(profiler, &out).arg(&bins.getppid).arg(&ns))),
        ),
        (
            "strace -f",
            Box::new(|| {
                loop_time(
                    Command::new("strace")
                        .args(["-f", "-qq", "-o", "/dev/null", "--"])
                        .arg(&bins.getppid)
                        .arg(&strace_n),
                )
            }),
        ),
        (
            "untraced, while profiler records another cgroup",
            Box::new(|| {
                let mut bg = record(profiler, &dir.join("idle-profile"));
                bg.args(["sleep", "30"]);
                beside(bg, 400)
            }),
        ),
        (
            "untraced, while profiler records containers elsewhere",
            Box::new(|| {
                // Container mode also looks for new cgroups below the recording one.
                let mut bg = Command::new(profiler);
                bg.args(["record", "--quiet", "--containers", "--out"])
                    .arg(dir.join("idle-containers-profile"))
                    .args(["--", "sleep", "30"]);
                beside(bg, 400)
            }),
        ),
        (
            "untraced, floor attached elsewhere",
            Box::new(|| {
                let mut bg = Command::new(profiler);
                bg.args(["bench-floor", "--", "sleep", "30"]);
                beside(bg, 300)
            }),
        ),
    ];
    let m = alternate(cfg.loop_rounds, &mut variants)?;
    drop(variants);
    let untraced = secs(m[0]);
    let per_syscall = |d: Duration| (secs(d) - untraced) / n as f64 * 1e9;
    let (floor_ns, profiler_ns) = (per_syscall(m[1]), per_syscall(m[2]));
    let untraced_ns = untraced / n as f64 * 1e9;
    let strace_ns = secs(m[3]) / (n / cfg.strace_divisor) as f64 * 1e9 - untraced_ns;
    writeln!(report, "## 1. Syscall-bound loop ({n} getppid)\n")?;
    writeln!(
        report,
        "Times are the loop's own (clock_gettime around it, inside the process): start-up and \
         profile writing are in part 5.\n"
    )?;
    writeln!(
        report,
        "| variant | loop time (median) | added per syscall |"
    )?;
    writeln!(report, "| --- | --- | --- |")?;
    writeln!(
        report,
        "| untraced | {untraced:.3} s | {untraced_ns:.0} ns per syscall itself |"
    )?;
    writeln!(
        report,
        "| floor (do-nothing program on sys_enter) | {:.3} s | +{floor_ns:.0} ns |",
        secs(m[1])
    )?;
    writeln!(
        report,
        "| profiler record | {:.3} s | +{profiler_ns:.0} ns |",
        secs(m[2])
    )?;
    writeln!(
        report,
        "| strace -f ({} syscalls, scaled) | {:.3} s | +{strace_ns:.0} ns |",
        n / cfg.strace_divisor,
        secs(m[3])
    )?;
    writeln!(
        report,
        "| another process while profiler records (host cost) | {:.3} s | +{:.0} ns |",
        secs(m[4]),
        per_syscall(m[4])
    )?;
    writeln!(
        report,
        "| another process while profiler records containers | {:.3} s | +{:.0} ns |",
        secs(m[5]),
        per_syscall(m[5])
    )?;
    writeln!(
        report,
        "| another process while the floor is attached | {:.3} s | +{:.0} ns |",
        secs(m[6]),
        per_syscall(m[6])
    )?;
    writeln!(
        report,
        "\nprofiler / floor = **{:.3}** (goal ≤ 1.10); added cost profiler / floor = {:.2}; \
         strace -f / profiler per syscall = **{:.0}x** (goal ≥ 100x).\n",
        secs(m[2]) / secs(m[1]),
        profiler_ns / floor_ns.max(1e-9),
        strace_ns / profiler_ns.max(1e-9)
    )?;
    Ok(())
}

/// 2. A realistic workload: `make -j2` of a generated C project.
fn realistic(report: &mut String, cfg: &Config, profiler: &Path, dir: &Path) -> anyhow::Result<()> {
    let proj = dir.join("cproject");
    let _ = std::fs::remove_dir_all(&proj);
    std::fs::create_dir_all(&proj)?;
    let mut objs = Vec::new();
    for i in 0..cfg.make_files {
        let mut src = format!(
            "#include <stdio.h>\n#include <string.h>\n#include <stdlib.h>\nint f{i}(int x) {{\n"
        );
        for j in 0..400 {
            src.push_str(&format!(
                "  x = (x * {j} + {i}) ^ (int)strlen(\"{i}-{j}\");\n"
            ));
        }
        src.push_str("  return x;\n}\n");
        std::fs::write(proj.join(format!("f{i}.c")), src)?;
        objs.push(format!("f{i}.o"));
    }
    let calls: String = (0..cfg.make_files)
        .map(|i| format!("  s += f{i}(s);\n"))
        .collect();
    let decls: String = (0..cfg.make_files)
        .map(|i| format!("int f{i}(int);\n"))
        .collect();
    std::fs::write(
        proj.join("main.c"),
        format!(
            "#include <stdio.h>\n{decls}int main(void) {{ int s = 1;\n{calls}  printf(\"%d\\n\", s); return 0; }}\n"
        ),
    )?;
    std::fs::write(
        proj.join("Makefile"),
        format!(
            "app: main.o {o}\n\tcc -o app main.o {o}\n%.o: %.c\n\tcc -O2 -c $< -o $@\nclean:\n\trm -f *.o app\n",
            o = objs.join(" ")
        ),
    )?;
    let make = |p: &Path| -> Command {
        let mut c = Command::new("make");
        c.args(["-s", "-j2", "-C"]).arg(p);
        c
    };
    let clean = || {
        Command::new("make")
            .args(["-s", "-C"])
            .arg(&proj)
            .arg("clean")
            .status()
            .map(|_| ())
    };
    let out = dir.join("make-profile");
    // Wall time and CPU time (user + system of the whole process tree, profiler included):
    // the CPU time is the steadier of the two on a small, shared VM.
    let cpu = std::cell::RefCell::new(vec![Vec::new(), Vec::new()]);
    let measured = |i: usize, cmd: &mut Command| -> anyhow::Result<Duration> {
        let before = children_cpu();
        let d = time(cmd)?;
        cpu.borrow_mut()[i].push(children_cpu() - before);
        Ok(d)
    };
    let mut variants: Vec<Variant> = vec![
        (
            "untraced",
            Box::new(|| {
                clean()?;
                measured(0, &mut make(&proj))
            }),
        ),
        (
            "profiler record",
            Box::new(|| {
                clean()?;
                let mut c = record(profiler, &out);
                c.arg("make").args(["-s", "-j2", "-C"]).arg(&proj);
                measured(1, &mut c)
            }),
        ),
    ];
    let m = alternate(cfg.rounds, &mut variants)?;
    drop(variants);
    let cpu = cpu.into_inner();
    let (cpu0, cpu1) = (median(cpu[0].clone()), median(cpu[1].clone()));
    writeln!(
        report,
        "## 2. Realistic workload: make -j2, {} C files\n",
        cfg.make_files + 1
    )?;
    writeln!(
        report,
        "| variant | wall (median) | CPU user+sys (median) |"
    )?;
    writeln!(report, "| --- | --- | --- |")?;
    writeln!(
        report,
        "| untraced | {:.3} s | {:.3} s |",
        secs(m[0]),
        secs(cpu0)
    )?;
    writeln!(
        report,
        "| profiler record (start-up and profile writing included) | {:.3} s | {:.3} s |",
        secs(m[1]),
        secs(cpu1)
    )?;
    writeln!(
        report,
        "\nOverhead: wall **{:+.1}%**, CPU **{:+.1}%** (goal < 5%).\n",
        (secs(m[1]) / secs(m[0]) - 1.0) * 100.0,
        (secs(cpu1) / secs(cpu0) - 1.0) * 100.0
    )?;
    if secs(m[0]) < 1.0 {
        writeln!(
            report,
            "(A build this short is mostly profiler's fixed start-up and profile writing, part \
             5; the goal is judged on the full run's 201 files.)\n"
        )?;
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

/// Part 3, stress: 64 threads and 1,000 short-lived processes; the recorded set must equal
/// the ground truth (strace -f of a small run of the same program), the loss counters be 0.
fn stress(
    report: &mut String,
    cfg: &Config,
    profiler: &Path,
    bins: &Bins,
    dir: &Path,
) -> anyhow::Result<()> {
    let out = dir.join("stress-profile");
    let start = Instant::now();
    let status = record(profiler, &out)
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
    writeln!(report, "| check | result |")?;
    writeln!(report, "| --- | --- |")?;
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

/// Runs `cmd` and returns (success, its own peak RSS in KiB), from wait4's rusage.
fn run_with_peak_rss(cmd: &mut Command) -> anyhow::Result<(bool, u64)> {
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

/// Many written paths (issue 11): a real workload creating N files under `profiler record`
/// (what the time after its end costs), and `profiler generate` from a trace holding
/// millions of written paths (time and memory).
fn paths(report: &mut String, quick: bool, profiler: &Path, dir: &Path) -> anyhow::Result<()> {
    let files = if quick { 10_000 } else { 50_000 };
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
    let o = Command::new(profiler)
        .args(["record", "--quiet", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .output()?;
    let total = start.elapsed();
    if !o.status.success() {
        bail!(
            "paths: recording failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let end: f64 = String::from_utf8_lossy(&o.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let after_end = (now - end).max(0.0);
    let trace = std::fs::read_to_string(out.join("trace.json"))?;
    let v: serde_json::Value = serde_json::from_str(&trace)?;
    let kept = v["image"]["written_paths"]
        .as_object()
        .map_or(0, |m| m.len());
    let folded = v["image"]["written_paths_folded"].as_u64().unwrap_or(0);

    // A trace with millions of written paths, as a hand-made or hostile input could be.
    let big = if quick { 200_000 } else { 1_600_000 };
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
        Command::new(profiler)
            .args(["generate", "--out"])
            .arg(&gen_out)
            .arg(&big_trace),
    )?;
    let gen_time = start.elapsed();
    if !ok {
        bail!("paths: generate from {} failed", big_trace.display());
    }
    writeln!(report, "## 7. Many written paths\n")?;
    writeln!(report, "| measure | value |")?;
    writeln!(report, "| --- | --- |")?;
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

fn vm_hwm_kb(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// 4. Scale: many cgroups recorded at once by one profiler (one sub-cgroup per workload).
fn scale(report: &mut String, cfg: &Config, profiler: &Path, dir: &Path) -> anyhow::Result<()> {
    let out = dir.join("scale-profiles");
    let _ = std::fs::remove_dir_all(&out);
    let n = cfg.scale_cgroups;
    let cg2 = cgroup2_mount()?;
    // Each workload moves itself into its own child cgroup, then lists a folder; the script
    // waits on a marker so every cgroup is alive at once, which lets the harness read the
    // map memory meanwhile.
    let marker = dir.join("scale-go");
    let _ = std::fs::remove_file(&marker);
    let script = format!(
        "for i in $(seq {n}); do d={cg2}$PROFILER_CGROUP_PARENT/w$i; mkdir $d; \
         sh -c \"echo \\$\\$ > $d/cgroup.procs; while [ ! -e {m} ]; do sleep 0.05; done; exec ls /usr/bin\" > /dev/null & done; wait; date +%s.%N",
        m = marker.display()
    );
    let start = Instant::now();
    let child = Command::new(profiler)
        .args(["record", "--quiet", "--containers", "--out"])
        .arg(&out)
        .args(["--", "sh", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()?;
    let pid = child.id();
    // Wait until every workload sits in its cgroup.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let procs = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "cat {cg2}/profiler/rec-{pid}-*/w*/cgroup.procs 2>/dev/null | wc -l"
            ))
            .output()?;
        let count: usize = String::from_utf8_lossy(&procs.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        if count >= n || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let map_kb = map_memlock_kb(pid);
    std::fs::write(&marker, "")?;
    let status_at_end = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let output = child.wait_with_output()?;
    let total = start.elapsed();
    let workload_end: f64 = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0.0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs_f64();
    let written = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_file(&marker);
    writeln!(
        report,
        "## 4. Scale: {n} cgroups recorded at once by one profiler\n"
    )?;
    writeln!(report, "| measure | value |")?;
    writeln!(report, "| --- | --- |")?;
    writeln!(report, "| profiles written | {written} of {n} |")?;
    writeln!(
        report,
        "| kernel map memory (memlock of the profiler's maps) | {:.1} MiB |",
        map_kb as f64 / 1024.0
    )?;
    writeln!(
        report,
        "| profiler peak RSS while recording | {:.1} MiB |",
        vm_hwm_kb(&status_at_end) as f64 / 1024.0
    )?;
    writeln!(
        report,
        "| time from the workloads' end to all profiles written | {:.2} s |",
        (now - workload_end).max(0.0)
    )?;
    writeln!(report, "| whole run | {:.2} s |", secs(total))?;
    writeln!(
        report,
        "\nBound: the kernel's record table has {} slots (the recording's own cgroup and the ones found below it); \
         a cgroup may take any of {} consecutive slots from its id. A cgroup that finds none free is not recorded: \
         the kernel counts it (`losses.cgroup_map_full`), profiler prints an error and exits 3; a recording that \
         cannot start says so. Nothing is lost silently.\n",
        profiler_common::RECORD_SLOTS,
        profiler_common::RECORD_PROBES
    )?;
    if written != n {
        bail!("scale benchmark: {written} profiles for {n} cgroups");
    }
    Ok(())
}

fn cgroup2_mount() -> anyhow::Result<String> {
    let m = std::fs::read_to_string("/proc/self/mountinfo")?;
    m.lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_owned))
        .context("no cgroup2 mount")
}

/// Sum of `memlock` over the BPF maps a process holds.
fn map_memlock_kb(pid: u32) -> u64 {
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

/// 5. Start-up: invocation to the workload's first instruction, and exit to profiles written.
fn startup(
    report: &mut String,
    cfg: &Config,
    profiler: &Path,
    bins: &Bins,
    dir: &Path,
) -> anyhow::Result<()> {
    let out = dir.join("startup-profile");
    let mut to_first = Vec::new();
    let mut to_written = Vec::new();
    for _ in 0..cfg.rounds.max(3) {
        let t0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let o = record(profiler, &out)
            .arg(&bins.stamp)
            .stderr(Stdio::null())
            .output()?;
        let t_end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
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
    writeln!(report, "## 5. Start-up and shut-down\n")?;
    writeln!(report, "| measure | median |")?;
    writeln!(report, "| --- | --- |")?;
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

/// 6. While nothing records, nothing is attached and the host pays nothing.
fn idle(
    report: &mut String,
    cfg: &Config,
    profiler: &Path,
    bins: &Bins,
    before: Duration,
) -> anyhow::Result<()> {
    // The kernel frees a program some time after its last file descriptor is closed
    // (RCU-deferred): give it a moment before counting.
    let mut names = String::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        let out = Command::new(profiler).arg("bench-attached").output()?;
        names = String::from_utf8_lossy(&out.stdout).into_owned();
        if names.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let attached = names.lines().count();
    let after = untraced_loop(bins, cfg)?;
    writeln!(report, "## 6. Nothing attached while not recording\n")?;
    writeln!(report, "| measure | value |")?;
    writeln!(report, "| --- | --- |")?;
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
