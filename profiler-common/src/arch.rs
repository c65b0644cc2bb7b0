//! The architectures a syscall can enter by on x86_64, and how the kernel side tells them
//! apart (see `split_arch` in profiler-ebpf).

/// Architecture slots of [`CgroupRecord::syscalls`](crate::CgroupRecord::syscalls).
pub const ARCH_X86_64: usize = 0;
/// 32-bit compat entry (int 0x80 / sysenter / syscall from a 32-bit code segment).
pub const ARCH_I386: usize = 1;
/// x32: 64-bit entry with `__X32_SYSCALL_BIT` set in the syscall number.
pub const ARCH_X32: usize = 2;
pub const ARCH_COUNT: usize = 3;

/// arch/x86/include/uapi/asm/unistd.h
pub const X32_SYSCALL_BIT: u64 = 0x4000_0000;
/// arch/x86/include/asm/segment.h: `__USER32_CS` is GDT entry 4, RPL 3.
pub const USER32_CS: u64 = 0x23;
