//! Byte offsets in x86_64 `struct pt_regs` (arch/x86/include/asm/ptrace.h; it is the
//! user-visible register frame layout, so they do not move between kernel versions).

/// `di`: the first argument of an x86_64 syscall.
pub const PT_REGS_DI_OFFSET: usize = 112;
/// `si`: the second argument of an x86_64 syscall.
pub const PT_REGS_SI_OFFSET: usize = 104;
/// `dx`: the third argument (of both entries).
pub const PT_REGS_DX_OFFSET: usize = 96;
/// `r10`: the fourth argument of an x86_64 syscall.
pub const PT_REGS_R10_OFFSET: usize = 56;
/// `bx`: the first argument of an i386 syscall.
pub const PT_REGS_BX_OFFSET: usize = 40;
/// `cx`: the second argument of an i386 syscall.
pub const PT_REGS_CX_OFFSET: usize = 88;
/// `orig_ax`: the syscall number (-1 outside a syscall; an exception's error code in an
/// exception's frame).
pub const PT_REGS_ORIG_AX_OFFSET: usize = 120;
/// `cs`: the code segment the syscall was made from ([`USER32_CS`](crate::USER32_CS) for a
/// 32-bit one).
pub const PT_REGS_CS_OFFSET: usize = 136;
/// `ip`: where user space resumes. On a syscall's own frame it equals `cx`, where the
/// `syscall` instruction left the return address (arch/x86/entry/entry_64.S,
/// `entry_SYSCALL_64` pushes rcx as `ip` and keeps it as `cx`); an exception's frame holds
/// the faulting task's rcx there.
pub const PT_REGS_IP_OFFSET: usize = 128;
