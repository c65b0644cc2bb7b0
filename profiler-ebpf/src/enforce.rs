//! `profiler enforce` on the kernel side: an exec of a program the profile does not list is
//! killed in sched_process_exec, once it has succeeded and before the program runs. It is
//! judged there by the file the kernel executed (`bprm->file`'s inode, see
//! programs/sched_process.rs); only without BTF by the path read here when it is attempted.
use aya_ebpf::helpers::{bpf_get_current_pid_tgid, bpf_probe_read_user_str_bytes};
use profiler_common::{
    CgroupRecord, ENFORCE_CONTAINERS, EVENT_PATH_LEN, EXEC_PATH_LISTED, EXEC_PATH_UNKNOWN,
    EXEC_PATH_UNLISTED, PHASE_SETUP,
};

use crate::{
    globals::ENFORCE,
    maps::{ALLOWED_EXECS, EXEC_VERDICT, PATH_SCRATCH},
    record::current_cgroup_id,
};

/// Whether `profiler enforce` judges this exec (decided only for execs, not every syscall).
/// In container mode, neither the engine's own CLI (the recording cgroup itself) nor the
/// runtime's set-up is judged: runc re-executes itself from a memfd inside the container's
/// cgroup before it loads the filter. From the filter load on, every exec (the entrypoint's
/// first) is the container's.
#[inline(always)]
pub(crate) fn enforcing(record: *mut CgroupRecord, phase: usize) -> bool {
    let enforce = unsafe { core::ptr::read_volatile(&ENFORCE) };
    enforce != 0
        && (enforce != ENFORCE_CONTAINERS
            || (phase != PHASE_SETUP && unsafe { (*record).recording_id != current_cgroup_id() }))
}

/// Remembers, for this thread, whether the program it is about to exec is in the profile by
/// the path it asks for; the verdict is carried out in sched_process_exec, once the exec has
/// succeeded. The path alone is not enough (another thread can rewrite it before the kernel
/// reads it again), so sched_process_exec also checks the file the kernel ran; the path
/// still matters for multi-call programs (busybox: `/bin/cat` and `/bin/echo` are one file).
#[inline(always)]
pub(crate) fn judge_exec(path: u64) {
    // Still taken where sched_process_exec judges by the executed file: if only its raw_tp
    // fallback attached, the file is unknown there and this path is all there is.
    let Some(buf) = PATH_SCRATCH.get_ptr_mut(0) else {
        return;
    };
    // Zeroed 8 bytes at a time (32 stores, not 256): the key must be fully initialised.
    let words = buf as *mut u64;
    for i in 0..(EVENT_PATH_LEN / 8) {
        unsafe { *words.add(i) = 0 };
    }
    let buf = unsafe { &mut *buf };
    let tid = bpf_get_current_pid_tgid() as u32;
    // Only an absolute path says which program is meant: a relative one (`./tool`) is
    // resolved against a working directory this probe does not know, an empty one names
    // an fd (a memfd), and an unreadable one says nothing: for those only the file itself
    // (device and inode) can pass in sched_process_exec.
    let verdict = if unsafe { bpf_probe_read_user_str_bytes(path as *const u8, buf) }.is_err()
        || buf[0] != b'/'
    {
        EXEC_PATH_UNKNOWN
    } else if unsafe { ALLOWED_EXECS.get(*buf) }.is_some() {
        EXEC_PATH_LISTED
    } else {
        EXEC_PATH_UNLISTED
    };
    let _ = EXEC_VERDICT.insert(tid, verdict, 0);
}
