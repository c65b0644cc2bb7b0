//! The syscall numbers the kernel side looks at, x86_64 (also x32's common numbers) and i386
//! (arch/x86/entry/syscalls/syscall_{64,32}.tbl), and the argument values it looks for.

// Syscalls whose arguments are recorded.
pub const X86_64_SOCKET: i64 = 41;
pub const X86_64_SOCKETPAIR: i64 = 53;
pub const X86_64_CLONE: i64 = 56;
/// clone3: 435 in both tables (syscalls added after 4.20 share numbers across arches).
pub const CLONE3: i64 = 435;
pub const X86_64_PERSONALITY: i64 = 135;
pub const X86_64_UNSHARE: i64 = 272;
pub const I386_SOCKETCALL: i64 = 102;
pub const I386_IPC: i64 = 117;
pub const I386_CLONE: i64 = 120;
pub const I386_PERSONALITY: i64 = 136;
pub const I386_PRCTL: i64 = 172;
pub const I386_UNSHARE: i64 = 310;
pub const I386_SOCKET: i64 = 359;
pub const I386_SOCKETPAIR: i64 = 360;

// x86_64 syscalls that produce events.
pub const X86_64_OPEN: i64 = 2;
pub const X86_64_CONNECT: i64 = 42;
pub const X86_64_BIND: i64 = 49;
pub const X86_64_LISTEN: i64 = 50;
pub const X86_64_EXECVE: i64 = 59;
pub const X86_64_TRUNCATE: i64 = 76;
pub const X86_64_CHDIR: i64 = 80;
pub const X86_64_FCHDIR: i64 = 81;
pub const X86_64_RENAME: i64 = 82;
pub const X86_64_MKDIR: i64 = 83;
pub const X86_64_RMDIR: i64 = 84;
pub const X86_64_CREAT: i64 = 85;
pub const X86_64_LINK: i64 = 86;
pub const X86_64_UNLINK: i64 = 87;
pub const X86_64_SYMLINK: i64 = 88;
pub const X86_64_SETUID: i64 = 105;
pub const X86_64_SETGID: i64 = 106;
pub const X86_64_SETREUID: i64 = 113;
pub const X86_64_SETREGID: i64 = 114;
pub const X86_64_SETRESUID: i64 = 117;
pub const X86_64_SETRESGID: i64 = 119;
pub const X86_64_MKNOD: i64 = 133;
pub const X86_64_OPENAT: i64 = 257;
pub const X86_64_MKDIRAT: i64 = 258;
pub const X86_64_MKNODAT: i64 = 259;
pub const X86_64_UNLINKAT: i64 = 263;
pub const X86_64_RENAMEAT: i64 = 264;
pub const X86_64_LINKAT: i64 = 265;
pub const X86_64_SYMLINKAT: i64 = 266;
pub const X86_64_RENAMEAT2: i64 = 316;
pub const X86_64_EXECVEAT: i64 = 322;
pub const X86_64_OPENAT2: i64 = 437;

// i386 syscalls that produce events (arch/x86/entry/syscalls/syscall_32.tbl), each
// reported as the x86_64 syscall with the same arguments.
pub const I386_LINK: i64 = 9;
pub const I386_UNLINK: i64 = 10;
pub const I386_EXECVE: i64 = 11;
pub const I386_CHDIR: i64 = 12;
pub const I386_MKNOD: i64 = 14;
pub const I386_OPEN: i64 = 5;
pub const I386_CREAT: i64 = 8;
pub const I386_SETUID16: i64 = 23;
pub const I386_RENAME: i64 = 38;
pub const I386_MKDIR: i64 = 39;
pub const I386_RMDIR: i64 = 40;
pub const I386_SETGID16: i64 = 46;
pub const I386_SETREUID16: i64 = 70;
pub const I386_SETREGID16: i64 = 71;
pub const I386_SYMLINK: i64 = 83;
pub const I386_TRUNCATE: i64 = 92;
pub const I386_FCHDIR: i64 = 133;
pub const I386_SETRESUID16: i64 = 164;
pub const I386_SETRESGID16: i64 = 170;
pub const I386_TRUNCATE64: i64 = 193;
pub const I386_SETREUID32: i64 = 203;
pub const I386_SETREGID32: i64 = 204;
pub const I386_SETRESUID32: i64 = 208;
pub const I386_SETRESGID32: i64 = 210;
pub const I386_SETUID32: i64 = 213;
pub const I386_SETGID32: i64 = 214;
pub const I386_OPENAT: i64 = 295;
pub const I386_MKDIRAT: i64 = 296;
pub const I386_MKNODAT: i64 = 297;
pub const I386_UNLINKAT: i64 = 301;
pub const I386_RENAMEAT: i64 = 302;
pub const I386_LINKAT: i64 = 303;
pub const I386_SYMLINKAT: i64 = 304;
pub const I386_RENAMEAT2: i64 = 353;
pub const I386_EXECVEAT: i64 = 358;
pub const I386_BIND: i64 = 361;
pub const I386_CONNECT: i64 = 362;
pub const I386_LISTEN: i64 = 363;
pub const I386_OPENAT2: i64 = 437;
/// socketcall(2) call numbers (include/uapi/linux/net.h).
pub const SYS_SOCKET: u64 = 1;
pub const SYS_BIND: u64 = 2;
pub const SYS_CONNECT: u64 = 3;
pub const SYS_LISTEN: u64 = 4;

/// x86_64 syscall numbers the probe watches to find the seccomp filter load
/// (arch/x86/entry/syscalls/syscall_64.tbl) and their arguments (include/uapi/linux/).
pub const X86_64_PRCTL: i64 = 157;
pub const X86_64_SECCOMP: i64 = 317;
pub const PR_SET_SECCOMP: u64 = 22;
pub const SECCOMP_MODE_FILTER: u64 = 2;
pub const SECCOMP_SET_MODE_FILTER: u64 = 1;

/// Every x86_64 number above: the syscalls `sys_enter` does more for than mark them (their
/// arguments, their events, the seccomp filter load). Anything else is marked and left at
/// once (`SPECIAL_X86_64`); a test checks that no number above is missing here.
pub const X86_64_SPECIAL: &[i64] = &[
    X86_64_SOCKET,
    X86_64_SOCKETPAIR,
    X86_64_CLONE,
    X86_64_PERSONALITY,
    X86_64_UNSHARE,
    X86_64_OPEN,
    X86_64_CONNECT,
    X86_64_BIND,
    X86_64_LISTEN,
    X86_64_EXECVE,
    X86_64_TRUNCATE,
    X86_64_CHDIR,
    X86_64_FCHDIR,
    X86_64_RENAME,
    X86_64_MKDIR,
    X86_64_RMDIR,
    X86_64_CREAT,
    X86_64_LINK,
    X86_64_UNLINK,
    X86_64_SYMLINK,
    X86_64_SETUID,
    X86_64_SETGID,
    X86_64_SETREUID,
    X86_64_SETREGID,
    X86_64_SETRESUID,
    X86_64_SETRESGID,
    X86_64_MKNOD,
    X86_64_OPENAT,
    X86_64_MKDIRAT,
    X86_64_MKNODAT,
    X86_64_UNLINKAT,
    X86_64_RENAMEAT,
    X86_64_LINKAT,
    X86_64_SYMLINKAT,
    X86_64_RENAMEAT2,
    X86_64_EXECVEAT,
    X86_64_OPENAT2,
    X86_64_PRCTL,
    X86_64_SECCOMP,
    CLONE3,
];

/// Every i386 number above, likewise.
pub const I386_SPECIAL: &[i64] = &[
    I386_SOCKETCALL,
    I386_IPC,
    I386_CLONE,
    I386_PERSONALITY,
    I386_PRCTL,
    I386_UNSHARE,
    I386_SOCKET,
    I386_SOCKETPAIR,
    I386_LINK,
    I386_UNLINK,
    I386_EXECVE,
    I386_CHDIR,
    I386_MKNOD,
    I386_OPEN,
    I386_CREAT,
    I386_SETUID16,
    I386_RENAME,
    I386_MKDIR,
    I386_RMDIR,
    I386_SETGID16,
    I386_SETREUID16,
    I386_SETREGID16,
    I386_SYMLINK,
    I386_TRUNCATE,
    I386_FCHDIR,
    I386_SETRESUID16,
    I386_SETRESGID16,
    I386_TRUNCATE64,
    I386_SETREUID32,
    I386_SETREGID32,
    I386_SETRESUID32,
    I386_SETRESGID32,
    I386_SETUID32,
    I386_SETGID32,
    I386_OPENAT,
    I386_MKDIRAT,
    I386_MKNODAT,
    I386_UNLINKAT,
    I386_RENAMEAT,
    I386_LINKAT,
    I386_SYMLINKAT,
    I386_RENAMEAT2,
    I386_EXECVEAT,
    I386_BIND,
    I386_CONNECT,
    I386_LISTEN,
    I386_OPENAT2,
    CLONE3,
];

/// One bit per syscall number below [`crate::SYSCALL_SLOTS`]: set for the numbers in `list`.
pub const fn special_bits(list: &[i64]) -> [u8; crate::SYSCALL_SLOTS / 8] {
    let mut bits = [0u8; crate::SYSCALL_SLOTS / 8];
    let mut i = 0;
    while i < list.len() {
        let nr = list[i] as usize;
        bits[nr / 8] |= 1 << (nr % 8);
        i += 1;
    }
    bits
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every syscall number this file names is in its architecture's special list: one
    /// left out would be marked and never looked at (no events, no arguments).
    #[test]
    fn every_named_syscall_is_special() {
        let source = include_str!("nr.rs");
        let mut checked = 0;
        for line in source.lines() {
            let Some(rest) = line.strip_prefix("pub const ") else {
                continue;
            };
            let Some((name, value)) = rest.split_once(": i64 = ") else {
                continue;
            };
            let value: i64 = value.trim_end_matches(';').parse().unwrap();
            let list = if name.starts_with("X86_64_") {
                X86_64_SPECIAL
            } else if name.starts_with("I386_") {
                I386_SPECIAL
            } else {
                assert_eq!(name, "CLONE3", "a syscall number of no known table");
                assert!(X86_64_SPECIAL.contains(&value) && I386_SPECIAL.contains(&value));
                continue;
            };
            assert!(
                list.contains(&value),
                "{name} ({value}) is not in its special list"
            );
            checked += 1;
        }
        assert!(
            checked > 80,
            "only {checked} numbers found: the parse is broken"
        );
        let bits = special_bits(X86_64_SPECIAL);
        assert_eq!(
            bits[X86_64_OPENAT as usize / 8] >> (X86_64_OPENAT % 8) & 1,
            1
        );
        assert_eq!(bits[110 / 8] >> (110 % 8) & 1, 0, "getppid is not special");
    }
}
