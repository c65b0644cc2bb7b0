//! Rare events (execs, file writes, network endpoints, user switches, forks, cgroup moves),
//! put in the [`crate::maps::EVENTS`] ring buffer: which syscalls make which events, and the
//! one BPF subprogram, [`emit_spec`], that writes them.
use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_pid_tgid, bpf_probe_read_user, bpf_probe_read_user_buf,
        bpf_probe_read_user_str_bytes,
    },
};
use profiler_common::{
    CgroupRecord, EVENT_AUX_LEN, EVENT_BIND, EVENT_CHDIR, EVENT_CONNECT, EVENT_EXEC_ATTEMPT,
    EVENT_FCHDIR, EVENT_LISTEN, EVENT_SETID, EVENT_SOCKET, EVENT_WRITE, Event, LOSS_EVENTS, nr,
};

use crate::{
    enforce::{enforcing, judge_exec},
    globals::ENFORCE,
    maps::{EVENTS, EVENTS_WAKEUP_BYTES, count_loss},
    record::current_cgroup_id,
};

const AT_FDCWD: u64 = -100i64 as u64;

/// O_WRONLY | O_RDWR | O_CREAT | O_TRUNC | O_APPEND (include/uapi/asm-generic/fcntl.h).
const OPEN_WRITE_FLAGS: u64 = 0o1 | 0o2 | 0o100 | 0o1000 | 0o2000;

/// What one event carries besides its kind and phase.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EventSpec {
    args: [u64; 4],
    /// User pointer to a path (or a sockaddr when `sockaddr_len` > 0), 0 for none.
    path: u64,
    /// User pointer to a second string (argv[0]), 0 for none.
    aux: u64,
    sockaddr_len: u64,
}

/// Puts one event in the ring buffer: `path` (a user pointer, may be 0) is read as a string
/// into `data`, `aux` likewise into `aux`; `sockaddr` (with its length) instead reads raw
/// bytes into `data`.
#[inline(always)]
pub(crate) fn emit(
    kind: u32,
    phase: usize,
    args: [u64; 4],
    path: u64,
    aux: u64,
    sockaddr_len: u64,
) {
    // Every field is stored on its own, volatile: LLVM merges an event's zero fields
    // (`[nr, dirfd, 0, 0]`, no aux, no sockaddr) into a call of the object's `memset`, a
    // byte at a time for this target, which the verifier walks 16 or 32 times for every state
    // that reaches it (BENCHMARKS.md, M29).
    let mut spec = core::mem::MaybeUninit::<EventSpec>::uninit();
    let p = spec.as_mut_ptr();
    // SAFETY: every field of `spec` (four u64 arguments and three u64s, no padding) is
    // written before it is passed on.
    unsafe {
        let stored = (&raw mut (*p).args).cast::<u64>();
        for (i, arg) in args.into_iter().enumerate() {
            core::ptr::write_volatile(stored.add(i), arg);
        }
        core::ptr::write_volatile(&raw mut (*p).path, path);
        core::ptr::write_volatile(&raw mut (*p).aux, aux);
        core::ptr::write_volatile(&raw mut (*p).sockaddr_len, sockaddr_len);
    }
    emit_spec(kind, phase as u64, spec.as_ptr());
}

/// A BPF subprogram (BPF calls take at most five arguments, hence the struct): verified
/// without being inlined at every call site.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn emit_spec(kind: u32, phase: u64, spec: *const EventSpec) -> i32 {
    if spec.is_null() {
        return 0;
    }
    let EventSpec {
        args,
        path,
        aux,
        sockaddr_len,
    } = unsafe { *spec };
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_loss(LOSS_EVENTS);
        crate::diagnostics::warn!(
            &(),
            "event ring buffer full: an event of kind {} was lost",
            kind
        );
        return 0;
    };
    let e = entry.as_mut_ptr();
    fill_head(e, kind, phase, args);
    unsafe {
        (*e).data[0] = 0;
        (*e).aux[0] = 0;
        if path != 0 {
            if sockaddr_len > 0 {
                // Constant sizes keep the verifier's work small: sockaddr_in (16),
                // sockaddr_in6 (28), anything else (sockaddr_un: 110).
                let data = &mut (*e).data;
                let _ = if sockaddr_len <= 16 {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..16])
                } else if sockaddr_len <= 28 {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..28])
                } else {
                    bpf_probe_read_user_buf(path as *const u8, &mut data[..110])
                };
            } else {
                let _ = bpf_probe_read_user_str_bytes(path as *const u8, &mut (*e).data);
            }
        }
        if aux != 0 {
            let aux_buf = &mut (*e).aux;
            let _ = bpf_probe_read_user_str_bytes(aux as *const u8, &mut aux_buf[..EVENT_AUX_LEN]);
        }
    }
    entry.submit(wakeup_flags());
    0
}

/// An event of the current task without strings: `aux` is its raw bytes (an exec's groups,
/// [`profiler_common::EXEC_GROUPS_KNOWN`]). Only the exec hook emits it, with its own
/// reserve: the groups are read in that program alone, so no other program's verification
/// checks those loads.
#[inline(always)]
pub(crate) fn emit_raw(kind: u32, phase: usize, args: [u64; 4], aux: &[u8; EVENT_AUX_LEN]) {
    let Some(mut entry) = EVENTS.reserve::<Event>(0) else {
        count_loss(LOSS_EVENTS);
        return;
    };
    let e = entry.as_mut_ptr();
    fill_head(e, kind, phase as u64, args);
    unsafe {
        (*e).data[0] = 0;
        (*e).aux = *aux;
    }
    entry.submit(wakeup_flags());
}

/// The fields every event has: the current task's cgroup, process and thread.
#[inline(always)]
fn fill_head(e: *mut Event, kind: u32, phase: u64, args: [u64; 4]) {
    let pid_tgid = bpf_get_current_pid_tgid();
    unsafe {
        (*e).cgroup_id = current_cgroup_id();
        (*e).kind = kind;
        (*e).pid = (pid_tgid >> 32) as u32;
        (*e).tid = pid_tgid as u32;
        (*e).phase = phase as u32;
        (*e).args = args;
    }
}

/// Waking the reader for every event costs more than the event (an epoll wake-up and a
/// context switch each; BENCHMARKS.md, M6).
/// The reader drains on a timer (`EVENT_DRAIN_INTERVAL_MS`) and is woken only once a
/// quarter of the buffer is used, long before it can fill. `profiler enforce` reports
/// violations as they happen, so it keeps a wake-up per event.
#[inline(always)]
fn wakeup_flags() -> u64 {
    let enforcing = unsafe { core::ptr::read_volatile(&ENFORCE) } != 0;
    let flags = if enforcing || EVENTS.query(BPF_RB_AVAIL_DATA as u64) >= EVENTS_WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    flags as u64
}

/// The rare syscalls the image profile is made of (x86_64 numbers). a = di, si, dx, r10.
#[inline(always)]
pub(crate) fn emit_events(
    record: *mut CgroupRecord,
    phase: usize,
    nr: i64,
    a: [u64; 4],
    compat: bool,
) {
    // Each event is described first and emitted at one of two call sites (the verifier checks
    // `emit` once per site and path, at start-up: BENCHMARKS.md, M7).
    // (kind, args, user pointer, aux pointer, sockaddr length)
    type Spec = (u32, [u64; 4], u64, u64, u64);
    let write =
        |dirfd: u64, path: u64| -> Spec { (EVENT_WRITE, [nr as u64, dirfd, 0, 0], path, 0, 0) };
    let (first, second): (Option<Spec>, Option<Spec>) = match nr {
        nr::X86_64_EXECVE | nr::X86_64_EXECVEAT => {
            let (dirfd, path, argv) = if nr == nr::X86_64_EXECVE {
                (AT_FDCWD, a[0], a[1])
            } else {
                (a[0], a[1], a[2])
            };
            // argv[0]: a pointer of the process's own width.
            let argv0 = match (argv, compat) {
                (0, _) => 0,
                (_, true) => unsafe { bpf_probe_read_user(argv as *const u32) }.unwrap_or(0) as u64,
                (_, false) => unsafe { bpf_probe_read_user(argv as *const u64) }.unwrap_or(0),
            };
            if enforcing(record, phase) {
                judge_exec(path);
            }
            (
                Some((EVENT_EXEC_ATTEMPT, [dirfd, 0, 0, 0], path, argv0, 0)),
                None,
            )
        }
        nr::X86_64_OPEN if a[1] & OPEN_WRITE_FLAGS != 0 => (
            Some((EVENT_WRITE, [nr as u64, AT_FDCWD, a[1], 0], a[0], 0, 0)),
            None,
        ),
        nr::X86_64_OPENAT2 => {
            // openat2(dirfd, path, struct open_how *how, size): the flags are how->flags, the
            // first u64 of the struct (include/uapi/linux/openat2.h).
            let flags = unsafe { bpf_probe_read_user(a[2] as *const u64) }.unwrap_or(0);
            if flags & OPEN_WRITE_FLAGS != 0 {
                (
                    Some((EVENT_WRITE, [nr as u64, a[0], flags, 0], a[1], 0, 0)),
                    None,
                )
            } else {
                (None, None)
            }
        }
        nr::X86_64_OPENAT if a[2] & OPEN_WRITE_FLAGS != 0 => (
            Some((EVENT_WRITE, [nr as u64, a[0], a[2], 0], a[1], 0, 0)),
            None,
        ),
        nr::X86_64_CREAT
        | nr::X86_64_MKDIR
        | nr::X86_64_RMDIR
        | nr::X86_64_UNLINK
        | nr::X86_64_TRUNCATE
        | nr::X86_64_MKNOD => (Some(write(AT_FDCWD, a[0])), None),
        nr::X86_64_MKDIRAT | nr::X86_64_UNLINKAT | nr::X86_64_MKNODAT => {
            (Some(write(a[0], a[1])), None)
        }
        nr::X86_64_RENAME => (Some(write(AT_FDCWD, a[0])), Some(write(AT_FDCWD, a[1]))),
        nr::X86_64_RENAMEAT | nr::X86_64_RENAMEAT2 => {
            (Some(write(a[0], a[1])), Some(write(a[2], a[3])))
        }
        nr::X86_64_LINK | nr::X86_64_SYMLINK => (Some(write(AT_FDCWD, a[1])), None),
        nr::X86_64_LINKAT => (Some(write(a[2], a[3])), None),
        nr::X86_64_SYMLINKAT => (Some(write(a[1], a[2])), None),
        nr::X86_64_CHDIR => (Some((EVENT_CHDIR, [0; 4], a[0], 0, 0)), None),
        nr::X86_64_FCHDIR => (Some((EVENT_FCHDIR, [a[0], 0, 0, 0], 0, 0, 0)), None),
        nr::X86_64_BIND | nr::X86_64_CONNECT => {
            let kind = if nr == nr::X86_64_BIND {
                EVENT_BIND
            } else {
                EVENT_CONNECT
            };
            (Some((kind, [a[0], a[2], 0, 0], a[1], 0, a[2].max(1))), None)
        }
        nr::X86_64_LISTEN => (Some((EVENT_LISTEN, [a[0], a[1], 0, 0], 0, 0, 0)), None),
        nr::X86_64_SOCKET => (Some((EVENT_SOCKET, [a[0], a[1], a[2], 0], 0, 0, 0)), None),
        nr::X86_64_SETUID
        | nr::X86_64_SETGID
        | nr::X86_64_SETREUID
        | nr::X86_64_SETREGID
        | nr::X86_64_SETRESUID
        | nr::X86_64_SETRESGID => (
            Some((EVENT_SETID, [nr as u64, a[0], a[1], a[2]], 0, 0, 0)),
            None,
        ),
        _ => (None, None),
    };
    if let Some((kind, args, ptr, aux, len)) = first {
        emit(kind, phase, args, ptr, aux, len);
    }
    if let Some((kind, args, ptr, aux, len)) = second {
        emit(kind, phase, args, ptr, aux, len);
    }
}

/// An i386 syscall that produces events, as the x86_64 syscall taking the same arguments in
/// the same order; `a` is ebx, ecx, edx, esi (zero-extended by the compat entry). File
/// descriptors are sign-extended (AT_FDCWD is -100), pointers are not.
#[inline(always)]
pub(crate) fn i386_event_form(nr: i64, a: [u64; 4]) -> Option<(i64, [u64; 4])> {
    let fd = |v: u64| v as u32 as i32 as i64 as u64;
    let [a0, a1, a2, a3] = a;
    Some(match nr {
        nr::I386_EXECVE => (nr::X86_64_EXECVE, a),
        nr::I386_EXECVEAT => (nr::X86_64_EXECVEAT, [fd(a0), a1, a2, a3]),
        nr::I386_OPEN => (nr::X86_64_OPEN, a),
        nr::I386_OPENAT => (nr::X86_64_OPENAT, [fd(a0), a1, a2, a3]),
        nr::I386_OPENAT2 => (nr::X86_64_OPENAT2, [fd(a0), a1, a2, a3]),
        nr::I386_CREAT => (nr::X86_64_CREAT, a),
        nr::I386_MKDIR => (nr::X86_64_MKDIR, a),
        nr::I386_MKDIRAT => (nr::X86_64_MKDIRAT, [fd(a0), a1, a2, a3]),
        nr::I386_RMDIR => (nr::X86_64_RMDIR, a),
        nr::I386_UNLINK => (nr::X86_64_UNLINK, a),
        nr::I386_UNLINKAT => (nr::X86_64_UNLINKAT, [fd(a0), a1, a2, a3]),
        nr::I386_RENAME => (nr::X86_64_RENAME, a),
        nr::I386_RENAMEAT => (nr::X86_64_RENAMEAT, [fd(a0), a1, fd(a2), a3]),
        nr::I386_RENAMEAT2 => (nr::X86_64_RENAMEAT2, [fd(a0), a1, fd(a2), a3]),
        nr::I386_LINK => (nr::X86_64_LINK, a),
        nr::I386_LINKAT => (nr::X86_64_LINKAT, [fd(a0), a1, fd(a2), a3]),
        nr::I386_SYMLINK => (nr::X86_64_SYMLINK, a),
        nr::I386_SYMLINKAT => (nr::X86_64_SYMLINKAT, [a0, fd(a1), a2, a3]),
        nr::I386_MKNOD => (nr::X86_64_MKNOD, a),
        nr::I386_MKNODAT => (nr::X86_64_MKNODAT, [fd(a0), a1, a2, a3]),
        nr::I386_TRUNCATE | nr::I386_TRUNCATE64 => (nr::X86_64_TRUNCATE, a),
        nr::I386_CHDIR => (nr::X86_64_CHDIR, a),
        nr::I386_FCHDIR => (nr::X86_64_FCHDIR, [fd(a0), a1, a2, a3]),
        nr::I386_SOCKET => (nr::X86_64_SOCKET, a),
        nr::I386_BIND => (nr::X86_64_BIND, [fd(a0), a1, a2, a3]),
        nr::I386_CONNECT => (nr::X86_64_CONNECT, [fd(a0), a1, a2, a3]),
        nr::I386_LISTEN => (nr::X86_64_LISTEN, [fd(a0), a1, a2, a3]),
        nr::I386_SOCKETCALL => {
            // socketcall(call, args): the arguments are an array of 32-bit values in memory.
            let call_args = unsafe { bpf_probe_read_user(a1 as *const [u32; 3]) }.ok()?;
            let [b0, b1, b2] = call_args.map(|v| v as u64);
            match a0 {
                nr::SYS_SOCKET => (nr::X86_64_SOCKET, [b0, b1, b2, 0]),
                nr::SYS_BIND => (nr::X86_64_BIND, [fd(b0), b1, b2, 0]),
                nr::SYS_CONNECT => (nr::X86_64_CONNECT, [fd(b0), b1, b2, 0]),
                nr::SYS_LISTEN => (nr::X86_64_LISTEN, [fd(b0), b1, b2, 0]),
                _ => return None,
            }
        }
        nr::I386_SETUID16 | nr::I386_SETUID32 => (nr::X86_64_SETUID, a),
        nr::I386_SETGID16 | nr::I386_SETGID32 => (nr::X86_64_SETGID, a),
        nr::I386_SETREUID16 | nr::I386_SETREUID32 => (nr::X86_64_SETREUID, a),
        nr::I386_SETREGID16 | nr::I386_SETREGID32 => (nr::X86_64_SETREGID, a),
        nr::I386_SETRESUID16 | nr::I386_SETRESUID32 => (nr::X86_64_SETRESUID, a),
        nr::I386_SETRESGID16 | nr::I386_SETRESGID32 => (nr::X86_64_SETRESGID, a),
        _ => return None,
    })
}
