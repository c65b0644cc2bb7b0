//! Kernel side of profiler.
//!
//! Everything is aggregated here, in maps keyed by the cgroup2 id of the recorded workload:
//! no event is streamed per syscall, only rare events (execs, writes, endpoints...) through a
//! ring buffer. A syscall of a process outside every recorded cgroup costs a look in a
//! per-CPU cache of the tasks that last ran there (`record::cached_record`); on a
//! miss, reading its cgroup id and one slot of an array.
//!
//! Programs, by hook family (one file each in `programs/`; userspace picks one program per
//! hook, see `profiler/src/kernel/`):
//! - `sys_enter` (`programs/sys_enter.rs`): `sys_enter_btf` (tp_btf) or `sys_enter_raw`
//!   (raw_tp, for kernels without BTF) marks the syscall number, per architecture and phase, in
//!   the cgroup's [`profiler_common::CgroupRecord`], records the deciding argument of a few
//!   syscalls and emits the rare events. `sys_enter_floor` (tp_btf) does nothing: the cost
//!   floor of `profiler bench-floor`.
//! - `sched_process` (`programs/sched_process.rs`): `sched_process_exec_btf` (tp_btf) or
//!   `sched_process_exec_raw` (raw_tp) marks where the workload starts and carries out
//!   `profiler enforce`'s verdict on an exec; `sched_process_fork_btf` (tp_btf, optional)
//!   reports new processes.
//! - `cgroup` (`programs/cgroup.rs`): `cgroup_attach_task_btf` (tp_btf, optional) reports a
//!   task moved into a cgroup outside the recordings.
//! - `cap_capable` (`programs/cap_capable.rs`): `cap_capable_btf` (tp_btf on the
//!   `capability:cap_capable` tracepoint, Linux 6.14+) or `cap_capable_fexit` (fexit on
//!   `cap_capable()`, for kernels that allow fexit and lack the tracepoint) aggregates
//!   capability checks with their outcome, syscall and kernel stack.
//! - `sched_migrate` (`programs/sched_migrate.rs`): `sched_migrate_task_btf` (tp_btf,
//!   optional) forgets a moved task's syscall stack depth on its new CPU, which lets the
//!   capability hook tell call paths apart without walking the stack.
//! - `epoch` (`programs/epoch.rs`): `profiler_epoch` (raw_tp, never attached) is how userspace
//!   changes the record table's epoch, with `BPF_PROG_TEST_RUN`.
//!
//! The helpers they share: [`maps`] and [`globals`] (the names userspace finds), [`record`]
//! (the cgroup's record), [`syscalls`], [`events`], [`enforce`], [`capabilities`] and
//! [`diagnostics`] (aya-log lines for losses, off unless userspace asks).
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod capabilities;
mod diagnostics;
mod enforce;
mod events;
mod globals;
mod maps;
mod programs;
mod record;
mod syscalls;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
