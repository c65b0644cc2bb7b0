//! Where a build's CPU goes, by sampling it in place: `perf record -a -g` over one build,
//! each sample put in the bucket its stack names.
//!
//! Timing a build with and without a recorder cannot resolve a cost of a few percent on
//! these small shared VMs: a build's CPU time moves by 5-10% from one run to the next (12
//! alternating pairs of `profiler record` against the floor, AMD EPYC 2026-12-04: ratio
//! 0.92-1.19, median 0.98), so the median of 15 paired differences still moves by about
//! two percent between benches. Sampling counts the cost where it is spent, in the same
//! build: the recorder's own process, and in every other process the kernel's work for the
//! hooks. What it cannot see is what the hooks cost the build indirectly (caches they
//! evict), which the timed comparison bounds.
use std::path::Path;
use std::process::{Command, Stdio};

/// Samples of one sampled build, by bucket.
#[derive(Default, Debug)]
pub(super) struct Shares {
    /// Every sample of a process at work (the idle task and perf itself left out).
    pub busy: u64,
    /// The recorder's own process (all its threads): start-up, recording, profile writing.
    pub recorder: u64,
    /// In any other process, the kernel's syscall-entry work for the `sys_enter` hook
    /// (`syscall_trace_enter`, arch-independent entry code kernel/entry/syscall-common.c,
    /// which runs only while a syscall tracepoint is attached): its call and the program.
    pub syscall_hook: u64,
    /// In any other process, any other eBPF program run by a tracepoint (`__bpf_trace_*`,
    /// `bpf_prog_*` frames): capability checks, exec, fork, cgroup moves, migrations.
    pub other_hooks: u64,
}

impl Shares {
    /// What `part` adds, in percent of the build's own CPU (the busy samples less every
    /// bucket).
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
        .args(["record", "-q", "-a", "-o", "/dev/null", "--", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Samples one run of `recorder` (a command whose first word is the recorder's process,
/// which runs the build as its child) at `hz` per CPU; `data` is perf's output file.
pub(super) fn sample(recorder: &mut Command, data: &Path, hz: u32) -> anyhow::Result<Shares> {
    // The recorder's pid: the shell writes its own and execs the recorder in its place.
    let pid_file = data.with_extension("pid");
    let _ = std::fs::remove_file(&pid_file);
    let program = recorder.get_program().to_owned();
    let args: Vec<_> = recorder.get_args().map(|a| a.to_owned()).collect();
    let mut perf = Command::new("perf")
        .args(["record", "-q", "-a", "-g", "-F", &hz.to_string(), "-o"])
        .arg(data)
        .args(["--", "sh", "-c", "echo $$ > \"$0\"; exec \"$@\""])
        .arg(&pid_file)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .spawn()?;
    let perf_pid = i64::from(perf.id());
    let status = perf.wait()?;
    anyhow::ensure!(status.success(), "the sampled build failed ({status})");
    let recorder_pid: i64 = std::fs::read_to_string(&pid_file)?.trim().parse()?;
    let script = Command::new("perf")
        .args(["script", "-F", "pid,ip,sym", "-i"])
        .arg(data)
        .stderr(Stdio::null())
        .output()?;
    anyhow::ensure!(script.status.success(), "perf script failed");
    let _ = std::fs::remove_file(data);
    let _ = std::fs::remove_file(&pid_file);
    Ok(classify(
        &String::from_utf8_lossy(&script.stdout),
        recorder_pid,
        perf_pid,
    ))
}

/// Which bucket a stack is in.
#[derive(Clone, Copy, PartialEq)]
enum Bucket {
    Build,
    SyscallHook,
    OtherHook,
}

/// `perf script -F pid,ip,sym`: a line with the pid (`  1234 `), then one line a frame
/// (`\tffffffff81234567 name`), innermost first, then a blank line. The idle task (pid 0)
/// and perf's own process are left out.
fn classify(script: &str, recorder_pid: i64, perf_pid: i64) -> Shares {
    let mut shares = Shares::default();
    let mut current: Option<(i64, Bucket)> = None;
    let finish = |current: Option<(i64, Bucket)>, shares: &mut Shares| {
        let Some((pid, bucket)) = current else {
            return;
        };
        if pid == 0 || pid == perf_pid {
            return;
        }
        shares.busy += 1;
        if pid == recorder_pid {
            shares.recorder += 1;
            return;
        }
        match bucket {
            Bucket::SyscallHook => shares.syscall_hook += 1,
            Bucket::OtherHook => shares.other_hooks += 1,
            Bucket::Build => {}
        }
    };
    for line in script.lines() {
        if let Some(frame) = line.strip_prefix('\t') {
            let Some((_, bucket)) = current.as_mut() else {
                continue;
            };
            let sym = frame.split_whitespace().nth(1).unwrap_or("");
            if sym == "syscall_trace_enter" {
                *bucket = Bucket::SyscallHook;
            } else if *bucket == Bucket::Build
                && (sym.starts_with("__bpf_trace_") || sym.starts_with("bpf_prog_"))
            {
                *bucket = Bucket::OtherHook;
            }
        } else if let Some(pid) = line.split_whitespace().next().and_then(|p| p.parse().ok()) {
            finish(current.take(), &mut shares);
            current = Some((pid, Bucket::Build));
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
        let script = "\
    17 \n\tffffffff81000000 clear_page_erms\n\tffffffff81000001 do_anonymous_page\n\n\
    17 \n\tffffffff81000002 bpf_prog_1234_sys_enter_btf\n\tffffffff81000003 bpf_trace_run2\n\tffffffff81000004 __bpf_trace_sys_enter\n\tffffffff81000005 syscall_trace_enter\n\n\
    17 \n\tffffffff81000006 bpf_prog_5678_cap_capable_btf\n\tffffffff81000007 __bpf_trace_cap_capable\n\n\
    9 \n\tffffffff81000005 syscall_trace_enter\n\n\
    8 \n\tffffffff81000009 record__mmap_read_evlist\n\n\
    0 \n\tffffffff81000008 pv_native_safe_halt\n\n";
        let s = super::classify(script, 9, 8);
        assert_eq!(
            (s.busy, s.recorder, s.syscall_hook, s.other_hooks),
            (4, 1, 1, 1)
        );
        assert!((s.pct(s.syscall_hook) - 100.0).abs() < 1e-9);
    }
}
