//! What the host must give before anything loads: the privileges, and the kernel
//! filesystems.
use anyhow::bail;

/// Refuses early, with the privilege that is missing, instead of failing in the middle.
pub fn check_privileges(what: &str) -> anyhow::Result<()> {
    use caps::{CapSet, Capability};
    let eff = caps::read(None, CapSet::Effective).unwrap_or_default();
    let bpf_ok = eff.contains(&Capability::CAP_SYS_ADMIN)
        || (eff.contains(&Capability::CAP_BPF) && eff.contains(&Capability::CAP_PERFMON));
    if !bpf_ok {
        bail!(
            "{what} needs privileges to load eBPF programs (CAP_BPF and CAP_PERFMON, or \
             CAP_SYS_ADMIN) and to create cgroups; this process (uid {}) has neither: run it as root, e.g. with sudo",
            nix::unistd::geteuid()
        );
    }
    Ok(())
}

/// Mounts tracefs and bpffs where they are missing (classic tracepoints need tracefs; hosts
/// like this project's machines boot without either). Best effort: tp_btf needs neither.
pub fn ensure_kernel_filesystems() {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for (fstype, target) in [
        ("tracefs", "/sys/kernel/tracing"),
        ("bpf", "/sys/fs/bpf"),
        ("securityfs", "/sys/kernel/security"),
    ] {
        let mounted = mounts
            .lines()
            .any(|l| l.split_whitespace().nth(2) == Some(fstype));
        if !mounted && std::path::Path::new(target).is_dir() {
            let _ = nix::mount::mount(
                Some(fstype),
                target,
                Some(fstype),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            );
        }
    }
}
