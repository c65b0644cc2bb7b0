//! Capability checks: the `cap_capable` tracepoint (`cap_capable_btf`, Linux 6.14+), else
//! fexit on `cap_capable()` (`cap_capable_fexit`).
use aya_ebpf::{
    macros::{btf_tracepoint, fexit},
    programs::{BtfTracePointContext, FExitContext},
};
use profiler_common::{CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN};

use crate::capabilities::{CAP_OPT_NOAUDIT, record_cap_check};

/// tp_btf `cap_capable(const struct cred *cred, struct user_namespace *target_ns,
/// const struct user_namespace *capable_ns, int cap, int ret)`
/// (include/trace/events/capability.h). The tracepoint does not carry the opts, so whether
/// the check was audited is decided in userspace from the stack.
#[btf_tracepoint(function = "cap_capable")]
pub fn cap_capable_btf(ctx: BtfTracePointContext) -> i32 {
    let cap: i32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    let cred: *const u8 = ctx.arg(0);
    record_cap_check(&ctx, cap, ret, 0, cred);
    0
}

/// fexit `int cap_capable(const struct cred *cred, struct user_namespace *ns, int cap,
/// unsigned int opts)` (security/commoncap.c), for kernels without the tracepoint. Here the
/// opts are known, so CAP_OPT_NOAUDIT is exact.
#[fexit(function = "cap_capable")]
pub fn cap_capable_fexit(ctx: FExitContext) -> i32 {
    let cap: i32 = ctx.arg(2);
    let opts: u32 = ctx.arg(3);
    let ret: i32 = ctx.arg(4);
    let mut flags = CAP_FLAG_OPTS_KNOWN;
    if opts & CAP_OPT_NOAUDIT != 0 {
        flags |= CAP_FLAG_NOAUDIT;
    }
    record_cap_check(&ctx, cap, ret, flags, core::ptr::null());
    0
}
