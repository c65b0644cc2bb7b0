//! `cargo xtask bench [--quick] [--only PART,...]`: profiler's cost measured side by side with its baselines,
//! runs alternated (A B A B ...) so drift on the machine hits every variant alike. Prints a
//! table of medians and ratios and writes it, with the machine, to benchmarks/<cpu vendor>.md;
//! BENCHMARKS.md gathers each vendor's targets.
//!
//! One file per [`Part`], in the report's order: syscall_loop.rs (1), make.rs (2),
//! stress.rs (3), scale.rs (4), startup.rs (5), idle.rs (6), paths.rs (7), landlock.rs (8),
//! watch.rs (9); measure.rs holds
//! what they measure with (clocks, medians, alternation, memory, the machine).
mod idle;
mod landlock;
mod make;
mod measure;
mod paths;
mod sampled;
mod scale;
mod startup;
mod stress;
mod syscall_loop;
mod watch;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::bail;

struct Config {
    rounds: usize,
    /// The loop is the noisiest comparison and the quickest run: more rounds.
    loop_rounds: usize,
    /// The build's samples vary by ±5% on these VMs (a 3% target): more rounds too.
    make_rounds: usize,
    loop_syscalls: u64,
    strace_divisor: u64,
    make_files: usize,
    stress_seconds: u32,
    scale_cgroups: usize,
    /// Files the workload of part 7 creates.
    paths_files: usize,
    /// Written paths in the trace part 7 generates from.
    paths_big_trace: usize,
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
    /// `profiler run` with and without Landlock.
    Landlock,
    /// `profiler watch` next to `record --attach` of a running workload.
    Watch,
}

/// What every part measures with: the sizes, the release build of profiler, the small C
/// programs and the scratch folder (target/bench).
struct Bench {
    cfg: Config,
    profiler: PathBuf,
    bins: Bins,
    dir: PathBuf,
    /// The performance targets (issue #15) as the parts measured them: (target, measured,
    /// met), written as one table at the top of the report.
    targets: std::cell::RefCell<Vec<(String, String, bool)>>,
    /// What part 1 measured of any `sys_enter` program, for part 2's accounting: (the
    /// floor's added cost per syscall, the floor's run time a run under `BPF_ENABLE_STATS`,
    /// i.e. the count's own clock), in ns.
    floor_costs: std::cell::Cell<Option<(f64, f64)>>,
}

impl Bench {
    /// Notes how a performance target fared.
    fn target(&self, target: &str, measured: String, met: bool) {
        self.targets
            .borrow_mut()
            .push((target.to_owned(), measured, met));
    }

    /// `profiler record --quiet --out OUT --`, the workload's argv to be added.
    fn record(&self, out: &Path) -> Command {
        let mut c = Command::new(&self.profiler);
        c.args(["record", "--quiet", "--out"]).arg(out).arg("--");
        c
    }

    /// `profiler bench-floor --` (the do-nothing program on `sys_enter`), the command to be
    /// added.
    fn floor(&self) -> Command {
        let mut c = Command::new(&self.profiler);
        c.args(["bench-floor", "--"]);
        c
    }

    /// The same in container mode, which also looks for new cgroups below the recording one.
    fn record_containers(&self, out: &Path) -> Command {
        let mut c = Command::new(&self.profiler);
        c.args(["record", "--quiet", "--containers", "--out"])
            .arg(out)
            .arg("--");
        c
    }
}

pub fn bench(root: &Path, quick: bool, only: &[Part]) -> anyhow::Result<()> {
    let runs = |part: Part| only.is_empty() || only.contains(&part);
    let cfg = if quick {
        Config {
            rounds: 2,
            loop_rounds: 3,
            make_rounds: 2,
            loop_syscalls: 1_000_000,
            strace_divisor: 100,
            make_files: 40,
            stress_seconds: 1,
            scale_cgroups: 50,
            paths_files: 10_000,
            paths_big_trace: 200_000,
        }
    } else {
        Config {
            rounds: 5,
            loop_rounds: 15,
            make_rounds: 21,
            loop_syscalls: 5_000_000,
            strace_divisor: 200,
            make_files: 200,
            stress_seconds: 4,
            scale_cgroups: 200,
            paths_files: 50_000,
            paths_big_trace: 1_600_000,
        }
    };
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let profiler = root.join("target/release/profiler");
    let bins = Bins::build(root, &dir)?;
    let b = Bench {
        cfg,
        profiler,
        bins,
        dir,
        targets: Default::default(),
        floor_costs: Default::default(),
    };
    let mut report = String::new();
    writeln!(report, "# Benchmarks\n")?;
    writeln!(report, "{}\n", measure::machine()?)?;
    writeln!(
        report,
        "`cargo xtask bench{}`: {} alternating rounds per comparison ({} for the loop, {} for \
         the build), medians (the loop's and the build's added costs: medians of differences \
         within a round, see part 1). Release build.\n",
        if quick { " --quick" } else { "" },
        b.cfg.rounds,
        b.cfg.loop_rounds,
        b.cfg.make_rounds
    )?;

    let before = measure::untraced_loop(&b)?;
    if runs(Part::Loop) {
        syscall_loop::run(&b, &mut report)?;
    }
    if runs(Part::Make) {
        make::run(&b, &mut report)?;
    }
    if runs(Part::Stress) {
        stress::run(&b, &mut report)?;
    }
    if runs(Part::Scale) {
        scale::run(&b, &mut report)?;
    }
    if runs(Part::Startup) {
        startup::run(&b, &mut report)?;
    }
    if runs(Part::Idle) {
        idle::run(&b, &mut report, before)?;
    }
    if runs(Part::Paths) {
        paths::run(&b, &mut report)?;
    }
    if runs(Part::Landlock) {
        landlock::run(&b, &mut report)?;
    }
    if runs(Part::Watch) {
        watch::run(&b, &mut report)?;
    }

    // The targets first: each part noted its own.
    let targets = b.targets.borrow();
    if !targets.is_empty() {
        let mut table =
            String::from("## Targets\n\n| target | measured | met |\n| --- | --- | --- |\n");
        for (target, measured, met) in targets.iter() {
            writeln!(
                table,
                "| {target} | {measured} | {} |",
                if *met { "yes" } else { "**no**" }
            )?;
        }
        table.push('\n');
        let at = report.find("## ").unwrap_or(report.len());
        report.insert_str(at, &table);
    }
    drop(targets);
    print!("{report}");
    // BENCHMARKS.md holds full runs only; quick and partial runs (CI, work on one number)
    // leave it alone.
    let out = if !only.is_empty() {
        b.dir.join("partial.md")
    } else if quick {
        b.dir.join("quick.md")
    } else {
        // The machine changes between sessions and the costs differ by CPU vendor (issue
        // #15 sets its targets on both): each vendor's last full run is kept in its own file,
        // and BENCHMARKS.md gathers their targets.
        let runs = root.join("benchmarks");
        std::fs::create_dir_all(&runs)?;
        let run = runs.join(format!("{}.md", measure::cpu_vendor()?));
        std::fs::write(&run, &report)?;
        eprintln!("xtask: wrote {}", run.display());
        let index = benchmarks_index(root, &runs)?;
        std::fs::write(root.join("BENCHMARKS.md"), &index)?;
        eprintln!("xtask: wrote {}", root.join("BENCHMARKS.md").display());
        return Ok(());
    };
    std::fs::write(&out, &report)?;
    eprintln!("xtask: wrote {}", out.display());
    Ok(())
}

/// BENCHMARKS.md: each vendor's last full run (benchmarks/*.md) by its machine line and
/// targets table, then the design measurements that the code's comments cite by id.
fn benchmarks_index(root: &Path, runs: &Path) -> anyhow::Result<String> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(runs)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    // A vendor's file: `<name>.md`, the name as `measure::cpu_vendor` makes them (anything
    // else there is not a run).
    files.retain(|p| {
        p.is_file()
            && p.extension().is_some_and(|e| e == "md")
            && p.file_stem()
                .and_then(|s| s.to_str())
                .is_some_and(|s| !s.is_empty() && s.bytes().all(|c| c.is_ascii_alphanumeric()))
    });
    files.sort();
    let mut index = String::from(
        "# Benchmarks\n\n`cargo xtask bench` on each CPU vendor this project's machines have \
         had, the last full run of each: its targets here, the whole run in its file. Costs per \
         syscall differ by vendor (the kernel's mitigations: AMD's SRSO \"safe RET\", Intel's \
         retpolines and return thunks), so each target is judged on each.\n\n",
    );
    for file in &files {
        let text = std::fs::read_to_string(file)?;
        let name = file.file_name().unwrap_or_default().to_string_lossy();
        let machine = text
            .lines()
            .find(|l| l.starts_with("Machine: "))
            .unwrap_or("Machine: unknown.");
        writeln!(index, "## [{name}](benchmarks/{name})\n\n{machine}\n")?;
        match section(&text, "## Targets") {
            Some(targets) => writeln!(index, "{}\n", targets.trim())?,
            None => writeln!(index, "(no targets table in this run)\n")?,
        }
    }
    let design = std::fs::read_to_string(root.join("xtask/bench/design-measurements.md"))?;
    index.push_str(&design);
    Ok(index)
}

/// The body of the markdown section headed `heading` (to the next `## `), without the heading.
fn section<'a>(text: &'a str, heading: &str) -> Option<&'a str> {
    // At a line's start only (not inside `### Targets` or a sentence).
    let start = text.find(&format!("\n{heading}\n"))? + heading.len() + 2;
    let rest = &text[start..];
    let end = rest.find("\n## ").map_or(rest.len(), |e| e + 1);
    Some(&rest[..end])
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

#[cfg(test)]
mod tests {
    use super::section;

    #[test]
    fn a_section_is_found_by_its_heading_at_a_line_start_only() {
        let run = "# Benchmarks\n\nsee ## Targets\n### Targets\nno\n## Targets\n\n| a |\n\n## 1. Loop\nrest\n";
        assert_eq!(section(run, "## Targets"), Some("\n| a |\n\n"));
        assert_eq!(
            section("# B\n## Targets\n| t |\n", "## Targets"),
            Some("| t |\n")
        );
        assert_eq!(section("# B\n### Targets\n| t |\n", "## Targets"), None);
    }
}
