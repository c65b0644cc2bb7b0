//! The `io_uring_submit_req` tracepoint (`io_uring_submit_req_btf`): which io_uring
//! operations a recorded cgroup submits. seccomp sees only `io_uring_enter`; the operations
//! (open, connect, mkdir...) are what a ring actually does.
use aya_ebpf::{macros::btf_tracepoint, programs::BtfTracePointContext};

use crate::{
    globals::IO_KIOCB_OPCODE_OFFSET,
    maps::IO_URING_OPS,
    record::{current_cgroup_id, find_record},
};

/// tp_btf `io_uring_submit_req(struct io_kiocb *req)` (include/trace/events/io_uring.h),
/// fired for every request submitted (io_uring/io_uring.c, io_submit_sqe()). The submitter
/// is the task that called io_uring_enter, or the ring's SQ thread, which runs in the
/// creator's cgroup. One map update per distinct (cgroup, operation): read before write.
#[btf_tracepoint(function = "io_uring_submit_req")]
pub fn io_uring_submit_req_btf(ctx: BtfTracePointContext) -> i32 {
    let offset = unsafe { core::ptr::read_volatile(&IO_KIOCB_OPCODE_OFFSET) } as usize;
    if offset == 0 {
        return 0;
    }
    let cgroup_id = current_cgroup_id();
    if find_record(cgroup_id).is_none() {
        return 0;
    }
    let req: *const u8 = ctx.arg(0);
    if req.is_null() {
        return 0;
    }
    let opcode = unsafe { *req.add(offset) } as u64;
    if opcode >= 64 {
        return 0;
    }
    let bit = 1u64 << opcode;
    match IO_URING_OPS.get_ptr_mut(&cgroup_id) {
        Some(bits) => unsafe {
            if *bits & bit == 0 {
                *bits |= bit;
            }
        },
        None => {
            let _ = IO_URING_OPS.insert(&cgroup_id, &bit, 0);
        }
    }
    0
}
