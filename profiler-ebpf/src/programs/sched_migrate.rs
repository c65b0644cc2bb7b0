//! The `sched_migrate_task` tracepoint (`sched_migrate_task_btf`): keeps the syscall hook's
//! per-CPU stack depths right for the capability hook (see `crate::record::enter_depth`).
use aya_ebpf::{
    helpers::generated::bpf_task_pt_regs, macros::btf_tracepoint, programs::BtfTracePointContext,
};

use crate::record::forget_enter_depth;

/// tp_btf `sched_migrate_task(struct task_struct *p, int dest_cpu)`
/// (include/trace/events/sched.h), fired by `set_task_cpu()` before the task can run on
/// `dest_cpu`. A task that slept in a syscall on one CPU and wakes on another must not find
/// there the depth of an earlier syscall it made on that CPU.
#[btf_tracepoint(function = "sched_migrate_task")]
pub fn sched_migrate_task_btf(ctx: BtfTracePointContext) -> i32 {
    let task: *mut u8 = ctx.arg(0);
    let dest_cpu: i32 = ctx.arg(1);
    if dest_cpu < 0 {
        return 0;
    }
    // The same key the syscall hook uses: the address of the task's register frame.
    let regs = unsafe { bpf_task_pt_regs(task.cast()) } as u64;
    forget_enter_depth(regs, dest_cpu as u64);
    0
}
