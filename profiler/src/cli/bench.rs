//! Hidden verbs the benchmarks use: the floor (a do-nothing program on the syscall
//! tracepoint, what any such probe costs) and the list of programs still loaded.
use std::os::unix::process::ExitStatusExt as _;

/// `profiler bench-floor -- CMD`.
pub fn bench_floor(cmd: &[String]) -> anyhow::Result<i32> {
    crate::kernel::check_privileges("profiler bench-floor")?;
    let _floor = crate::kernel::attach_floor()?;
    let status = std::process::Command::new(&cmd[0])
        .args(&cmd[1..])
        .status()?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}

/// `profiler bench-attached`: the programs of ours loaded right now (none should be while
/// nothing records).
pub fn attached() -> anyhow::Result<i32> {
    for name in crate::kernel::hooks::loaded_profiler_programs() {
        println!("{name}");
    }
    Ok(0)
}
