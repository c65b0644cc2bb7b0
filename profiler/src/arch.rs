//! Syscall architectures on x86_64 hosts and the names of their syscalls.
//!
//! Names come from the `syscalls` crate (generated from the kernel's syscall tables) for
//! x86_64 and i386. x32 shares the x86_64 table for its "common" entries and has its own
//! numbers from 512 up (arch/x86/entry/syscalls/syscall_64.tbl), which the `syscalls` crate
//! does not carry, so x32 names come from libseccomp, the library runc and podman resolve
//! names with. `tests/` cross-checks both sources.
use libseccomp::{ScmpArch, ScmpSyscall};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    I386,
    X32,
}

impl Arch {
    pub const ALL: [Arch; 3] = [Arch::X86_64, Arch::I386, Arch::X32];

    /// Slot in `profiler_common::CgroupRecord::syscalls`.
    pub fn slot(self) -> usize {
        match self {
            Arch::X86_64 => profiler_common::ARCH_X86_64,
            Arch::I386 => profiler_common::ARCH_I386,
            Arch::X32 => profiler_common::ARCH_X32,
        }
    }

    pub fn from_slot(slot: usize) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.slot() == slot)
    }

    /// Name in seccomp profiles (`architectures` of the Docker/OCI format).
    pub fn seccomp_name(self) -> &'static str {
        match self {
            Arch::X86_64 => "SCMP_ARCH_X86_64",
            Arch::I386 => "SCMP_ARCH_X86",
            Arch::X32 => "SCMP_ARCH_X32",
        }
    }

    pub fn from_seccomp_name(name: &str) -> Option<Arch> {
        Arch::ALL.into_iter().find(|a| a.seccomp_name() == name)
    }

    pub fn scmp(self) -> ScmpArch {
        match self {
            Arch::X86_64 => ScmpArch::X8664,
            Arch::I386 => ScmpArch::X86,
            Arch::X32 => ScmpArch::X32,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::I386 => "i386",
            Arch::X32 => "x32",
        }
    }

    /// The syscall's name in this architecture's table, `None` for a number the table lacks.
    pub fn syscall_name(self, nr: u32) -> Option<String> {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::new(nr as usize).map(|s| s.name().to_owned()),
            Arch::I386 => syscalls::x86::Sysno::new(nr as usize).map(|s| s.name().to_owned()),
            Arch::X32 => {
                let raw = nr as i32 | profiler_common::X32_SYSCALL_BIT as i32;
                ScmpSyscall::from(raw).get_name_by_arch(ScmpArch::X32).ok()
            }
        }
    }

    /// Syscall name for display and profiles: the table name, or `syscall_<nr>` when unknown.
    pub fn display_name(self, nr: u32) -> String {
        self.syscall_name(nr)
            .unwrap_or_else(|| format!("syscall_{nr}"))
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}
