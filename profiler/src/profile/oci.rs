//! OCI runtime-spec outputs (`linux.seccomp`, `process.capabilities`), built with the
//! `oci-spec` types.
use std::str::FromStr as _;

use anyhow::Context as _;
use oci_spec::runtime::{
    Arch as OciArch, Capabilities, Capability, LinuxCapabilities, LinuxCapabilitiesBuilder,
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscallBuilder,
};

use crate::arch::Arch;
use crate::profile::capabilities::CapabilityProfile;
use crate::profile::seccomp::DockerSeccomp;

fn oci_action(name: &str) -> anyhow::Result<LinuxSeccompAction> {
    LinuxSeccompAction::from_str(name)
        .map_err(|_| anyhow::anyhow!("unsupported seccomp action {name:?}"))
}

fn oci_arch(arch: Arch) -> OciArch {
    match arch {
        Arch::X86_64 => OciArch::ScmpArchX86_64,
        Arch::I386 => OciArch::ScmpArchX86,
        Arch::X32 => OciArch::ScmpArchX32,
    }
}

/// The profile as an OCI `linux.seccomp` object (what runc and crun read from config.json).
pub fn seccomp(profile: &DockerSeccomp) -> anyhow::Result<LinuxSeccomp> {
    let mut architectures = Vec::new();
    for name in &profile.architectures {
        let arch = Arch::from_seccomp_name(name)
            .with_context(|| format!("unsupported architecture {name:?}"))?;
        architectures.push(oci_arch(arch));
    }
    let mut syscalls = Vec::new();
    for rule in &profile.syscalls {
        let mut b = LinuxSyscallBuilder::default()
            .names(rule.names.clone())
            .action(oci_action(&rule.action)?);
        if let Some(e) = rule.errno_ret {
            b = b.errno_ret(e);
        }
        syscalls.push(b.build()?);
    }
    let mut b = LinuxSeccompBuilder::default()
        .default_action(oci_action(&profile.default_action)?)
        .architectures(architectures)
        .syscalls(syscalls);
    if let Some(e) = profile.default_errno_ret {
        b = b.default_errno_ret(e);
    }
    Ok(b.build()?)
}

/// The whitelist as OCI `process.capabilities`: the same set bounding, permitted and
/// effective (what runc keeps for a root process), nothing inheritable or ambient.
pub fn capabilities(profile: &CapabilityProfile) -> anyhow::Result<LinuxCapabilities> {
    let set: Capabilities = profile
        .add
        .iter()
        .map(|c| {
            Capability::from_str(c.trim_start_matches("CAP_")).or_else(|_| Capability::from_str(c))
        })
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("capability not known to the OCI spec: {e}"))?;
    Ok(LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .permitted(set.clone())
        .effective(set)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()?)
}

pub fn to_json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    let mut out = serde_json::to_vec_pretty(v).expect("serialises");
    out.push(b'\n');
    out
}
