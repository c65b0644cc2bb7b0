//! Part 4, scale: many cgroups recorded at once by one profiler (one sub-cgroup per
//! workload): profiles written, kernel map memory, profiler's peak RSS, the time to write.
use std::fmt::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::bail;

use super::Bench;
use super::measure::{
    cgroup2_mount, map_memlock_kb, secs, since_workload_end, table_head, vm_hwm_kb,
};

/// 4. Scale: many cgroups recorded at once by one profiler (one sub-cgroup per workload).
pub(super) fn run(b: &Bench, report: &mut String) -> anyhow::Result<()> {
    let dir = &b.dir;
    let out = dir.join("scale-profiles");
    let _ = std::fs::remove_dir_all(&out);
    let n = b.cfg.scale_cgroups;
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
    let child = b
        .record_containers(&out)
        .args(["sh", "-c", &script])
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
    let after_end = since_workload_end(&output.stdout)?;
    let written = std::fs::read_dir(&out).map(|d| d.count()).unwrap_or(0);
    let _ = std::fs::remove_file(&marker);
    writeln!(
        report,
        "## 4. Scale: {n} cgroups recorded at once by one profiler\n"
    )?;
    table_head(report, &["measure", "value"])?;
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
        after_end
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
