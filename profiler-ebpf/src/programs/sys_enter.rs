//! The `sys_enter` tracepoint: `sys_enter_btf` (tp_btf), else `sys_enter_raw` (raw_tp), and
//! the benchmarks' floor `sys_enter_floor`.
use aya_ebpf::{
    EbpfContext,
    helpers::bpf_probe_read_kernel,
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
};
use profiler_common::{
    CgroupRecord, PT_REGS_BX_OFFSET, PT_REGS_CS_OFFSET, PT_REGS_CX_OFFSET, PT_REGS_DI_OFFSET,
    PT_REGS_DX_OFFSET, PT_REGS_R10_OFFSET, PT_REGS_SI_OFFSET,
};

use crate::{
    record::{Cached, cached_record, current_record, current_record_caching, this_cpu},
    syscalls::{on_sys_enter, seen_before, sign_extended, syscall_number, syscall_number_bits},
};

/// tp_btf `sys_enter(struct pt_regs *regs, long id)` (include/trace/events/syscalls.h).
///
/// Only the common cases are here, without a call of our own: a task this CPU's cache knows
/// as not recorded (every other process on the host), and a recorded syscall seen before.
/// The rest is in two BPF-to-BPF subprograms, so this frame holds fewer values across calls
/// and the x86-64 JIT saves fewer callee-saved registers for it (arch/x86/net/
/// bpf_jit_comp.c, `detect_reg_usage`; LLVM still counts the helper calls that the verifier
/// inlines).
// `inline(always)`: the macro wraps this function in the program's entry; grown past LLVM's
// inlining threshold, it became a BPF-to-BPF call, one more call and return per syscall.
#[btf_tracepoint(function = "sys_enter")]
#[inline(always)]
pub fn sys_enter_btf(ctx: BtfTracePointContext) -> i32 {
    // The CPU's id first. LLVM takes its helper for a real call that clobbers r1-r5 (the
    // verifier inlines it, kernel/bpf/verifier.c `do_misc_fixups`): made before anything
    // else is read, only the context lives across it, and the JIT saves one callee-saved
    // register fewer at every run.
    let cpu = this_cpu();
    let regs: *const u8 = ctx.arg(0);
    // How deep in the kernel stack this runs: the register frame is at the stack's top, the
    // context (the tracepoint's argument array, kernel/trace/bpf_trace.c `bpf_trace_run2()`)
    // in a frame below. Pointer difference: the verifier allows it to programs loaded with
    // CAP_PERFMON (kernel/bpf/verifier.c, `adjust_reg_min_max_vals`, allow_ptr_leaks).
    let depth = (regs as u64).wrapping_sub(ctx.as_ptr() as u64);
    // The syscall's number from the register frame, not from the context: the context is
    // then dead after `depth`, one value fewer to hold.
    let load = |off: usize| unsafe { *(regs.add(off) as *const u64) };
    // Filter first: for every process that is not recorded this is the only work done (the
    // syscall number is read only for a recorded one).
    match cached_record(cpu, regs as u64, depth, || syscall_number_bits(regs)) {
        Cached::NotRecorded => 0,
        Cached::Recorded(record, id) => {
            // `regs` is a BTF pointer: direct loads, no bpf_probe_read_kernel (refused under
            // lockdown).
            if seen_before(record, id, load(PT_REGS_CS_OFFSET)) {
                return 0;
            }
            sys_enter_record(regs, record, id)
        }
        Cached::Unknown => sys_enter_uncached(regs, depth),
    }
}

/// [`sys_enter_btf`] for a task its CPU's cache does not know (or with the cache off).
/// A static BPF-to-BPF subprogram: verified with its caller's register types, so `regs`
/// stays a trusted BTF pointer.
#[inline(never)]
fn sys_enter_uncached(regs: *const u8, depth: u64) -> i32 {
    let Some((record, id)) = current_record_caching(regs as u64, depth, || syscall_number(regs))
    else {
        return 0;
    };
    sys_enter_record(regs, record, id)
}

/// [`sys_enter_btf`] for a recorded syscall that is not simply seen before: its first call,
/// the special few, other architectures, the child before its exec.
#[inline(never)]
fn sys_enter_record(regs: *const u8, record: *mut CgroupRecord, id: i64) -> i32 {
    // The hit path hands the number zero-extended (`syscall_number_bits`).
    let id = sign_extended(id);
    let load = |off: usize| unsafe { *(regs.add(off) as *const u64) };
    let cs = load(PT_REGS_CS_OFFSET);
    let args = || {
        [
            load(PT_REGS_DI_OFFSET),
            load(PT_REGS_SI_OFFSET),
            load(PT_REGS_DX_OFFSET),
            load(PT_REGS_BX_OFFSET),
            load(PT_REGS_R10_OFFSET),
            load(PT_REGS_CX_OFFSET),
        ]
    };
    on_sys_enter(record, id, cs, args);
    0
}

/// The cost floor for benchmarks (`profiler bench-floor`): attached to the same tracepoint,
/// does nothing. What every sys_enter program costs every syscall on the host just by being
/// there; the recording program's own work is measured against it.
#[btf_tracepoint(function = "sys_enter")]
pub fn sys_enter_floor(_ctx: BtfTracePointContext) -> i32 {
    0
}

/// raw_tp `sys_enter` for kernels without BTF. The register frame has to be read with
/// bpf_probe_read_kernel here; if that is refused the syscall is still recorded, as x86_64
/// unless the x32 bit says otherwise.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn sys_enter_raw(ctx: RawTracePointContext) -> i32 {
    let Some(record) = current_record() else {
        return 0;
    };
    let regs: *const u8 = ctx.arg(0);
    let id: i64 = ctx.arg(1);
    let read =
        |off: usize| unsafe { bpf_probe_read_kernel(regs.add(off) as *const u64) }.unwrap_or(0);
    let args = || {
        [
            read(PT_REGS_DI_OFFSET),
            read(PT_REGS_SI_OFFSET),
            read(PT_REGS_DX_OFFSET),
            read(PT_REGS_BX_OFFSET),
            read(PT_REGS_R10_OFFSET),
            read(PT_REGS_CX_OFFSET),
        ]
    };
    on_sys_enter(record, id, read(PT_REGS_CS_OFFSET), args);
    0
}
