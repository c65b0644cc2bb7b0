//! `profiler_epoch`: userspace's way to change the record table's epoch (`crate::maps::EPOCH`).
use aya_ebpf::{macros::raw_tracepoint, programs::RawTracePointContext};

use crate::record::update_epoch;

/// Never attached: userspace runs it with `BPF_PROG_TEST_RUN` (net/bpf/test_run.c,
/// `bpf_prog_test_run_raw_tp`), arguments (`EPOCH_OP_*`, operand), to change the epoch with
/// the same atomic instructions the kernel side bumps it with. The epoch lives in `.bss`,
/// which userspace can neither map (aya creates it without `BPF_F_MMAPABLE`) nor update
/// atomically with a map update. Returns the epoch's low 32 bits before the change.
#[raw_tracepoint]
pub fn profiler_epoch(ctx: RawTracePointContext) -> i32 {
    let op: u64 = ctx.arg(0);
    let operand: u64 = ctx.arg(1);
    update_epoch(op, operand) as i32
}
