//! Where a build's CPU goes, by sampling it in place: `perf record -g` over one build (the
//! recorder and every process it starts, nothing else on the host), each sample put in
//! the bucket its stack names.
//!
//! Timing a build with and without a recorder cannot resolve a cost of a few percent on
//! these small shared VMs: a build's CPU time moves by 5-10% from one run to the next (12
//! alternating pairs of `profiler record` against the floor, AMD EPYC 2026-12-04: ratio
//! 0.92-1.19, median 0.98), so the median of 21 paired differences still moves by a few
//! percent between benches (BENCHMARKS.md, M28). Sampling counts the cost where it is
//! spent, in the same build: the recorder's own process, and in the build's processes the
//! kernel's work for the hooks. What it cannot see is what the hooks cost the build
//! indirectly (caches they evict), which only the timed comparison bounds. Each sample's
//! own cost (the timer interrupt, the unwind) falls on whatever it interrupted, so the
//! shares, not the sample counts, are what to read.
use std::path::Path;
use std::process::{Command, Stdio};

/// Samples of one sampled build, by bucket.
#[derive(Default, Debug)]
pub(super) struct Shares {
    /// Every sample taken (the recorder and the processes it started).
    pub busy: u64,
    /// The recorder's own process (all its threads): start-up, recording, profile writing.
    /// (`profiler record`'s reaper is a process of its own and counts as the build's: a
    /// few milliseconds.)
    pub recorder: u64,
    /// In the build's processes, the kernel's syscall-entry work for the `sys_enter` hook:
    /// `syscall_trace_enter()` (kernel/entry/syscall-common.c), entered for a task's
    /// syscall work, which an attached syscall tracepoint sets on every task
    /// (`SYSCALL_WORK_SYSCALL_TRACEPOINT`), with the hook's call and program below it;
    /// where seccomp, audit or ptrace are the work instead, the sample is the build's.
    pub syscall_hook: u64,
    /// In the build's processes, any other eBPF program a tracepoint runs (a
    /// `bpf_trace_run*` frame): capability checks, exec, fork, cgroup moves, migrations.
    pub other_hooks: u64,
}

impl Shares {
    /// What `part` adds, in percent of the build's own CPU (the samples less every bucket).
    pub fn pct(&self, part: u64) -> f64 {
        let own = self
            .busy
            .saturating_sub(self.recorder + self.syscall_hook + self.other_hooks);
        if own == 0 {
            return 0.0;
        }
        part as f64 / own as f64 * 100.0
    }

    pub fn total_pct(&self) -> f64 {
        self.pct(self.recorder + self.syscall_hook + self.other_hooks)
    }
}

/// Whether `perf record` can sample here (the binary exists and the kernel lets it).
pub(super) fn available() -> bool {
    Command::new("perf")
        .args(["record", "-q", "-g", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Removes perf's files however the sampling ends.
struct Removed<'a>(&'a [&'a Path]);

impl Drop for Removed<'_> {
    fn drop(&mut self) {
        for path in self.0 {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Samples one run of `recorder` (a command whose program is the recorder's process, which
/// runs the build as its child) at `hz`; `data` is perf's output file. Only the
/// command's program and arguments are taken (not its environment or directory).
pub(super) fn sample(recorder: &Command, data: &Path, hz: u32) -> anyhow::Result<Shares> {
    // The recorder's pid: the shell writes its own and execs the recorder in its place.
    let pid_file = data.with_extension("pid");
    let _removed = Removed(&[data, &pid_file]);
    let _ = std::fs::remove_file(&pid_file);
    let status = Command::new("perf")
        .args(["record", "-q", "-g", "-F", &hz.to_string(), "-o"])
        .arg(data)
        .args(["--", "sh", "-c", "echo $$ > \"$0\"; exec \"$@\""])
        .arg(&pid_file)
        .arg(recorder.get_program())
        .args(recorder.get_args())
        .stdout(Stdio::null())
        .status()?;
    anyhow::ensure!(status.success(), "the sampled build failed ({status})");
    let recorder_pid: i64 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let script = Command::new("perf")
        .args(["script", "-F", "pid,ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(script.status.success(), "perf script failed");
    Ok(classify(
        &String::from_utf8_lossy(&script.stdout),
        recorder_pid,
    ))
}

/// Which bucket a stack is in.
#[derive(Clone, Copy, PartialEq)]
enum Bucket {
    Build,
    SyscallHook,
    OtherHook,
}

/// What one stack says, frame by frame.
#[derive(Default)]
struct Stack {
    syscall_work: bool,
    /// seccomp, audit or ptrace in the syscall work: not the hook's.
    other_syscall_work: bool,
    tracepoint_program: bool,
}

impl Stack {
    fn frame(&mut self, sym: &str) {
        // Compilers rename local copies (`syscall_trace_enter.constprop.0`).
        let function = sym.split('.').next().unwrap_or(sym);
        match function {
            "syscall_trace_enter" | "__bpf_trace_sys_enter" => self.syscall_work = true,
            // A program on sys_enter (`bpf_prog_<tag>_sys_enter_btf`) where the unwind
            // stopped inside it.
            f if f.starts_with("bpf_prog_") && f.contains("_sys_enter") => self.syscall_work = true,
            "__secure_computing"
            | "__audit_syscall_entry"
            | "ptrace_report_syscall"
            | "ptrace_report_syscall_entry" => self.other_syscall_work = true,
            // `bpf_trace_run1`..`12` run a tracepoint's programs (kernel/trace/bpf_trace.c);
            // the `__bpf_trace_<event>` frame above them is often gone (a tail call).
            f if f.starts_with("bpf_trace_run") || f.starts_with("__bpf_trace_") => {
                self.tracepoint_program = true
            }
            _ => {}
        }
    }

    fn bucket(&self) -> Bucket {
        if self.syscall_work && !self.other_syscall_work {
            Bucket::SyscallHook
        } else if self.tracepoint_program && !self.syscall_work {
            Bucket::OtherHook
        } else {
            Bucket::Build
        }
    }
}

/// `perf script -F pid,ip,sym`: a line with the pid (`  1234 `), then one line a frame
/// (`\tffffffff81234567 name`), innermost first, then a blank line.
fn classify(script: &str, recorder_pid: i64) -> Shares {
    let mut shares = Shares::default();
    let mut current: Option<(i64, Stack)> = None;
    let finish = |current: Option<(i64, Stack)>, shares: &mut Shares| {
        let Some((pid, stack)) = current else {
            return;
        };
        shares.busy += 1;
        if pid == recorder_pid {
            shares.recorder += 1;
            return;
        }
        match stack.bucket() {
            Bucket::SyscallHook => shares.syscall_hook += 1,
            Bucket::OtherHook => shares.other_hooks += 1,
            Bucket::Build => {}
        }
    };
    for line in script.lines() {
        if let Some(frame) = line.strip_prefix('\t') {
            if let Some((_, stack)) = current.as_mut() {
                stack.frame(frame.split_whitespace().nth(1).unwrap_or(""));
            }
        } else if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse().ok()) {
            finish(current.take(), &mut shares);
            current = Some((pid, Stack::default()));
        } else {
            finish(current.take(), &mut shares);
        }
    }
    finish(current.take(), &mut shares);
    shares
}

#[cfg(test)]
mod tests {
    #[test]
    fn stacks_fall_in_the_bucket_their_frames_name() {
        let frames = |names: &[&str]| -> String {
            names
                .iter()
                .map(|n| format!("\tffffffff81000000 {n}\n"))
                .collect()
        };
        let script = [
            ("17", frames(&["clear_page_erms", "do_anonymous_page"])),
            (
                "17",
                frames(&[
                    "bpf_prog_1234_sys_enter_btf",
                    "bpf_trace_run2",
                    "__bpf_trace_sys_enter",
                    "syscall_trace_enter.constprop.0",
                ]),
            ),
            // An unwind that stopped in the program still names the hook.
            (
                "17",
                frames(&["bpf_prog_1234_sys_enter_btf", "__bpf_trace_sys_enter"]),
            ),
            // The capability hook as perf shows it: `__bpf_trace_cap_capable` tail-called.
            (
                "17",
                frames(&[
                    "bpf_get_current_cgroup_id",
                    "bpf_prog_5678_cap_capable_btf",
                    "bpf_trace_run5",
                    "cap_capable",
                    "security_vm_enough_memory_mm",
                ]),
            ),
            // A device-cgroup program is not a tracepoint's.
            (
                "17",
                frames(&["bpf_prog_9abc_sd_devices", "bpf_prog_run_array_cg"]),
            ),
            // seccomp's syscall work is the build's.
            ("17", frames(&["__secure_computing", "syscall_trace_enter"])),
            ("9", frames(&["syscall_trace_enter"])),
        ]
        .iter()
        .map(|(pid, f)| format!("    {pid} \n{f}\n"))
        .collect::<String>();
        let s = super::classify(&script, 9);
        assert_eq!(
            (s.busy, s.recorder, s.syscall_hook, s.other_hooks),
            (7, 1, 2, 1)
        );
        assert!((s.pct(s.syscall_hook) - 200.0 / 3.0).abs() < 1e-9);
    }
}
