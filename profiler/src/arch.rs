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

    /// Whether `name` is in this architecture's syscall table (the same sources as
    /// [`Arch::syscall_name`]).
    pub fn has_syscall(self, name: &str) -> bool {
        match self {
            Arch::X86_64 => name.parse::<syscalls::x86_64::Sysno>().is_ok(),
            Arch::I386 => name.parse::<syscalls::x86::Sysno>().is_ok(),
            Arch::X32 => {
                ScmpSyscall::from_name_by_arch(name, ScmpArch::X32).is_ok_and(|s| i32::from(s) >= 0)
            }
        }
    }

    /// Whether `name` is a syscall of any architecture profiler knows.
    pub fn any_has_syscall(name: &str) -> bool {
        Arch::ALL.into_iter().any(|a| a.has_syscall(name))
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The `syscalls` crate's names must mean the same numbers to libseccomp (which runc,
    /// podman and Docker resolve profile names with), wherever libseccomp knows the name.
    #[test]
    fn syscall_names_agree_with_libseccomp() {
        for arch in [Arch::X86_64, Arch::I386] {
            let mut checked = 0;
            for nr in 0..profiler_common::SYSCALL_SLOTS as u32 {
                let Some(name) = arch.syscall_name(nr) else {
                    continue;
                };
                // Negative numbers are libseccomp's pseudo-syscalls: on i386 the socket and
                // ipc calls exist both directly and through the socketcall/ipc multiplexers,
                // and libseccomp filters both forms under the one name.
                if let Ok(sc) = ScmpSyscall::from_name_by_arch(&name, arch.scmp())
                    && i32::from(sc) >= 0
                {
                    assert_eq!(i32::from(sc), nr as i32, "{arch} {name}");
                    checked += 1;
                }
            }
            assert!(checked > 300, "{arch}: only {checked} names checked");
        }
        assert_eq!(Arch::X86_64.syscall_name(0).as_deref(), Some("read"));
        assert_eq!(Arch::I386.syscall_name(3).as_deref(), Some("read"));
        assert_eq!(Arch::I386.syscall_name(102).as_deref(), Some("socketcall"));
        // x32: common entries share x86_64 numbers, its own entries start at 512.
        assert_eq!(Arch::X32.syscall_name(0).as_deref(), Some("read"));
        assert_eq!(Arch::X32.syscall_name(512).as_deref(), Some("rt_sigaction"));
    }
}
