//! What every recorded syscall does: its architecture and number, its mark in the cgroup's
//! record, the arguments recorded for the few syscalls whose power depends on one, its events,
//! and the phase change at a seccomp filter load.
use aya_ebpf::helpers::bpf_probe_read_user;
use profiler_common::{
    ARCH_I386, ARCH_X32, ARCH_X86_64, ArgRecord, CgroupRecord, LOSS_SYSCALL_OUT_OF_RANGE,
    MARK_SEEN, MARK_SEEN_SPECIAL, PERSONALITY_OTHER, PERSONALITY_VALUES, PHASE_COUNT,
    PHASE_RUNTIME, PHASE_SETUP, PRCTL_OTHER, PT_REGS_ORIG_AX_OFFSET, SYSCALL_SLOTS, USER32_CS,
    X32_SYSCALL_BIT, nr,
    nr::{I386_SPECIAL, X86_64_SPECIAL, special_bits},
};

use crate::{
    events::{emit_events, i386_event_form},
    maps::count_loss,
};

/// The number of the syscall whose register frame `regs` is, as the tracepoint's `id` has
/// it: `syscall_get_nr()`, the low 32 bits of `orig_ax` as an `int`
/// (arch/x86/include/asm/syscall.h; kernel/entry/syscall-common.c `syscall_trace_enter()`
/// reads it just before the tracepoint, after seccomp and ptrace had their say). The 64-bit
/// entry keeps all of rax in `orig_ax` and dispatches on its low 32 bits
/// (arch/x86/entry/syscall_64.c, `do_syscall_x64`): a number with its upper half set is
/// still that syscall.
#[inline(always)]
pub(crate) fn syscall_number(regs: *const u8) -> i64 {
    sign_extended(syscall_number_bits(regs))
}

/// [`syscall_number`] zero-extended: its 32 bits as a 32-bit load gives them. The syscall
/// hook's hit path takes this: the sign extension is two more instructions on the way to
/// the mark (the BPF ISA before cpu v4 has no sign-extending move), and the mark's bounds
/// test (`< SYSCALL_SLOTS`, unsigned) is the same for both forms. [`sign_extended`] makes
/// it [`syscall_number`] again, off that path.
#[inline(always)]
pub(crate) fn syscall_number_bits(regs: *const u8) -> i64 {
    unsafe { *(regs.add(PT_REGS_ORIG_AX_OFFSET) as *const u32) as i64 }
}

/// [`syscall_number`] from either form.
#[inline(always)]
pub(crate) fn sign_extended(nr: i64) -> i64 {
    nr as u32 as i32 as i64
}

/// Splits the raw syscall id into (architecture slot, number).
///
/// x32 syscalls enter through the 64-bit path with `__X32_SYSCALL_BIT` set in the number
/// (arch/x86/entry/syscall_64.c, `do_syscall_x32`). Compat i386 syscalls enter from a 32-bit
/// code segment, so the saved `cs` is `__USER32_CS`. The one case this misses is a 64-bit
/// process issuing `int $0x80` from 64-bit code (the kernel treats it as i386 through
/// TS_COMPAT); that is recorded as x86_64.
#[inline(always)]
pub(crate) fn split_arch(id: i64, cs: u64) -> (usize, i64) {
    if id >= 0 && (id as u64) & X32_SYSCALL_BIT != 0 {
        (ARCH_X32, ((id as u64) & !X32_SYSCALL_BIT) as i64)
    } else if cs == USER32_CS {
        (ARCH_I386, id)
    } else {
        (ARCH_X86_64, id)
    }
}

/// The byte of (`phase`, `arch`, `nr`) in the record, None (counted as a loss) for a number
/// outside the table.
#[inline(always)]
fn syscall_mark(
    record: *mut CgroupRecord,
    phase: usize,
    arch: usize,
    nr: i64,
) -> Option<&'static mut u8> {
    // `get_mut` instead of indexing: a failed bounds check must not become a panic call,
    // which the verifier rejects.
    let slot = if (0..SYSCALL_SLOTS as i64).contains(&nr) {
        unsafe { (*record).syscalls.get_mut(phase) }
            .and_then(|p| p.get_mut(arch))
            .and_then(|row| row.get_mut(nr as usize))
    } else {
        None
    };
    if slot.is_none() {
        unsafe { (*record).out_of_range += 1 };
        count_loss(LOSS_SYSCALL_OUT_OF_RANGE);
    }
    slot
}

#[inline(always)]
fn mark(slots: &mut [u8], index: u64) {
    if let Some(slot) = slots.get_mut(index as usize)
        && *slot == 0
    {
        *slot = 1;
    }
}

#[inline(always)]
fn mark_bits(slots: &mut [u8; 32], flags: u64) {
    for (bit, slot) in slots.iter_mut().enumerate() {
        if flags & (1 << bit) != 0 {
            *slot = 1;
        }
    }
}

/// Records the argument that decides what the syscall may do, for the few syscalls whose
/// power depends on it (see `profiler_common::ArgRecord`). `a0` is the first argument of the
/// syscall's own ABI: `di` on the 64-bit entry, `bx` on the compat one.
///
/// A BPF global subprogram of its own: verified once, not once for every path through the
/// event code that follows it in [`on_special_syscall`] (start-up, BENCHMARKS.md M15).
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn record_args(
    record: *mut CgroupRecord,
    phase: u64,
    arch: u64,
    nr: i64,
    a0: u64,
) -> i32 {
    if record.is_null() {
        return 0;
    }
    let arch = arch as usize;
    let Some(args) = (unsafe { (*record).args.get_mut(phase as usize) }) else {
        return 0;
    };
    if arch == ARCH_I386 {
        match nr {
            nr::I386_SOCKET => mark(&mut args.socket_families, a0),
            nr::I386_SOCKETPAIR => mark(&mut args.socketpair_families, a0),
            nr::I386_CLONE => mark_bits(&mut args.clone_flag_bits, a0),
            nr::CLONE3 => mark_clone3_flags(args, a0),
            nr::I386_UNSHARE => mark_bits(&mut args.unshare_flag_bits, a0),
            nr::I386_PERSONALITY => mark_personality(args, a0),
            nr::I386_PRCTL => mark(&mut args.prctl_options, a0.min(PRCTL_OTHER as u64)),
            nr::I386_SOCKETCALL => mark(&mut args.socketcall_calls, a0),
            nr::I386_IPC => mark(&mut args.ipc_calls, a0 & 0xffff),
            _ => {}
        }
    } else {
        match nr {
            nr::X86_64_SOCKET => mark(&mut args.socket_families, a0),
            nr::X86_64_SOCKETPAIR => mark(&mut args.socketpair_families, a0),
            nr::X86_64_CLONE => mark_bits(&mut args.clone_flag_bits, a0),
            nr::CLONE3 => mark_clone3_flags(args, a0),
            nr::X86_64_UNSHARE => mark_bits(&mut args.unshare_flag_bits, a0),
            nr::X86_64_PERSONALITY => mark_personality(args, a0),
            nr::X86_64_PRCTL => mark(&mut args.prctl_options, a0.min(PRCTL_OTHER as u64)),
            _ => {}
        }
    }
    0
}

/// clone3(2) passes its flags in memory (`struct clone_args`, whose first member is the u64
/// `flags`, include/uapi/linux/sched.h), where seccomp cannot look: the generated profile
/// answers clone3 with ENOSYS and allows libc's fallback, clone(2), filtered on its flags
/// argument. glibc's fallback passes the same flags, so they count as clone's.
#[inline(always)]
fn mark_clone3_flags(args: &mut ArgRecord, clone_args: u64) {
    if let Ok(flags) = unsafe { bpf_probe_read_user(clone_args as *const u64) } {
        mark_bits(&mut args.clone_flag_bits, flags);
    }
}

#[inline(always)]
fn mark_personality(args: &mut ArgRecord, value: u64) {
    let value = value & 0xffff_ffff;
    let mut slot = PERSONALITY_OTHER;
    for (i, v) in PERSONALITY_VALUES.iter().enumerate() {
        if *v == value {
            slot = i;
        }
    }
    mark(&mut args.personality, slot as u64);
}

/// The syscalls that need more than their mark, one bit per number: x86_64 (and x32), i386.
/// One load and a bit test instead of the dozens of compares that `record_args`,
/// `emit_events` and the filter-load check make for every syscall (BENCHMARKS.md, M14).
static SPECIAL: [[u8; SYSCALL_SLOTS / 8]; 2] =
    [special_bits(X86_64_SPECIAL), special_bits(I386_SPECIAL)];

#[inline(always)]
fn is_special(arch: usize, nr: i64) -> bool {
    let table = if arch == ARCH_I386 { 1 } else { 0 };
    let Some(bits) = SPECIAL.get(table) else {
        return false;
    };
    // Out-of-range numbers were counted by `syscall_mark`; none of them is special.
    (0..SYSCALL_SLOTS as i64).contains(&nr)
        && bits
            .get(nr as usize / 8)
            .is_some_and(|b| b >> (nr as usize % 8) & 1 != 0)
}

/// The phase, and whether this is profiler's child before it execs the workload (see
/// `CgroupRecord::awaiting_exec`), in one load: past the exec the high half is 0.
#[inline(always)]
fn record_state(record: *mut CgroupRecord) -> u64 {
    unsafe {
        core::ptr::read_volatile(
            (record as *const u8).add(CgroupRecord::state_offset()) as *const u64
        )
    }
}

/// Whether syscall `id` (entered from code segment `cs`) is already marked in `record` and
/// needs nothing more: nearly every syscall, a 64-bit one within the table (which the x32
/// bit is not), past the exec, made before. Three compares bound the mark's address for the
/// verifier, one load and compare decide (BENCHMARKS.md, M22); false sends it to
/// [`on_sys_enter`]. `id` may be either form of [`syscall_number`].
#[inline(always)]
pub(crate) fn seen_before(record: *mut CgroupRecord, id: i64, cs: u64) -> bool {
    let state = record_state(record);
    if (id as u64) < SYSCALL_SLOTS as u64 && cs != USER32_CS && state < PHASE_COUNT as u64 {
        // SAFETY: both indices were just bounded.
        let mark = unsafe {
            (*record)
                .syscalls
                .get_unchecked(state as usize)
                .get_unchecked(ARCH_X86_64)
                .get_unchecked(id as usize)
        };
        return *mark == MARK_SEEN;
    }
    false
}

#[inline(always)]
/// `regs` reads the syscall's argument registers (di, si, dx, bx, r10, cx): only for the
/// special syscalls, most syscalls never need them.
pub(crate) fn on_sys_enter(
    record: *mut CgroupRecord,
    id: i64,
    cs: u64,
    regs: impl FnOnce() -> [u64; 6],
) {
    let state = record_state(record);
    let (arch, nr) = split_arch(id, cs);
    let phase = if state < PHASE_COUNT as u64 {
        state as usize
    } else {
        // Before the exec only that execve is recorded.
        if (state >> 32) != 0 && (arch, nr) != (ARCH_X86_64, nr::X86_64_EXECVE) {
            return;
        }
        state as u32 as usize
    };
    let Some(mark) = syscall_mark(record, phase, arch, nr) else {
        return;
    };
    // Read before writing: after a syscall's first call this is a read-only hit and the
    // cache line stays shared between CPUs. The byte also says whether the syscall is one of
    // the special few (see `MARK_SEEN`): the common case is this one load and compare.
    let mut seen = *mark;
    if seen == MARK_SEEN {
        return;
    }
    if seen == 0 {
        seen = if is_special(arch, nr) {
            MARK_SEEN_SPECIAL
        } else {
            MARK_SEEN
        };
        *mark = seen;
    }
    if seen != MARK_SEEN_SPECIAL {
        return;
    }
    // The syscall's first four arguments in its own ABI's order (x86_64 and x32: di, si,
    // dx, r10; i386: bx, cx, dx, si), all that the special syscalls look at.
    let [di, si, dx, bx, r10, cx] = regs();
    let args = if arch == ARCH_I386 {
        [bx, cx, dx, si]
    } else {
        [di, si, dx, r10]
    };
    on_special_syscall(
        record,
        &SpecialSyscall {
            nr: nr as u32,
            phase: phase as u16,
            arch: arch as u16,
            args,
        },
    );
}

/// What [`on_special_syscall`] is told (BPF calls take at most five arguments). Small: with
/// it on the stack the syscall hook stays below 64 bytes of stack, which the kernel would
/// otherwise give a private per-CPU stack, set up at every run (kernel/bpf/verifier.c,
/// `BPF_PRIV_STACK_MIN_SIZE`). Special syscalls are all below `SYSCALL_SLOTS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SpecialSyscall {
    nr: u32,
    phase: u16,
    arch: u16,
    /// The first four arguments, in the syscall's own ABI order.
    args: [u64; 4],
}

/// The few syscalls that need more than their mark: their arguments, their events, the
/// seccomp filter load. A BPF global subprogram: the verifier checks it once, on its own,
/// instead of once for every path through the syscall hook that leads here (start-up,
/// BENCHMARKS.md M15); at run time it costs one call, on these syscalls only.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn on_special_syscall(
    record: *mut CgroupRecord,
    call: *const SpecialSyscall,
) -> i32 {
    if record.is_null() || call.is_null() {
        return 0;
    }
    let SpecialSyscall {
        phase,
        arch,
        nr,
        args,
    } = unsafe { *call };
    let (phase, arch, nr) = (phase as usize, arch as usize, nr as i64);
    let [a0, a1, a2, _] = args;
    record_args(record, phase as u64, arch as u64, nr, a0);
    // Events come from both 64-bit and 32-bit processes, told in x86_64 terms. (x32 has its
    // own numbers for a few of these; it cannot run on this project's kernels.)
    let event_form = if arch == ARCH_X86_64 {
        Some((nr, args, false))
    } else if arch == ARCH_I386 {
        i386_event_form(nr, args).map(|(n, a)| (n, a, true))
    } else {
        None
    };
    if let Some((nr, a, compat)) = event_form {
        emit_events(record, phase, nr, a, compat);
    }
    // A seccomp filter being loaded before the first exec is the runtime locking the
    // container down: what follows until the exec must be allowed by the profile. The filter
    // pointer must be set: libseccomp probes which flags the kernel supports with
    // seccomp(SECCOMP_SET_MODE_FILTER, flag, NULL), which loads nothing (EFAULT).
    if arch == ARCH_X86_64
        && ((nr == nr::X86_64_SECCOMP && a0 == nr::SECCOMP_SET_MODE_FILTER && a2 != 0)
            || (nr == nr::X86_64_PRCTL
                && a0 == nr::PR_SET_SECCOMP
                && a1 == nr::SECCOMP_MODE_FILTER
                && a2 != 0))
    {
        unsafe {
            (*record).seccomp_loads += 1;
            if phase == PHASE_SETUP {
                (*record).phase = PHASE_RUNTIME as u32;
            }
        }
    }
    0
}
