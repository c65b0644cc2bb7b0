//! Capability checks: from raw kernel observations to a whitelist with evidence.
//!
//! The `capability:cap_capable` tracepoint (security/commoncap.c, `cap_capable()`) fires for
//! every check, but it does not carry the `opts` argument, so it cannot say whether the check
//! was made with `CAP_OPT_NOAUDIT`. Unaudited checks are the kernel asking "would you have
//! it?" to pick a behaviour, not to allow an operation: `cap_vm_enough_memory()` asks for
//! CAP_SYS_ADMIN on every mmap/brk to size overcommit headroom, `ptrace_may_access()` asks
//! for CAP_SYS_PTRACE when /proc decides what to show, and so on. Such checks must never
//! reach a whitelist (CAP_SYS_ADMIN would be in every profile).
//!
//! The robust signal is the kernel call stack, taken in the probe with `bpf_get_stackid`:
//! every unaudited check passes through one of the few kernel functions that pass
//! `CAP_OPT_NOAUDIT` (kernel/capability.c: `has_ns_capability_noaudit`,
//! `has_capability_noaudit`, `ns_capable_noaudit`; security/commoncap.c:
//! `cap_vm_enough_memory`; kernel/ksyms_common.c: `kallsyms_show_value`), all of them
//! exported or called out of line, so they appear as frames. The syscall context alone would
//! not do: the same `mmap` that makes an unaudited CAP_SYS_ADMIN check can make an audited
//! CAP_IPC_LOCK one. Where the fexit fallback is used the opts are read directly and the stack
//! is only evidence.
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use caps::Capability;
use profiler_common::{
    CAP_FLAG_GRANTED, CAP_FLAG_NO_SYSCALL, CAP_FLAG_NOAUDIT, CAP_FLAG_OPTS_KNOWN,
    CAP_FLAG_OTHER_CRED, CAP_FLAG_PHASE_SHIFT, CapKey,
};
use serde::Serialize;

use crate::arch::Arch;
use crate::trace::{Audit, CapabilityCheck, Phase, SyscallRef};

/// Kernel functions that make their capability check with CAP_OPT_NOAUDIT.
const NOAUDIT_FUNCTIONS: &[&str] = &[
    "has_ns_capability_noaudit",
    "has_capability_noaudit",
    "ns_capable_noaudit",
    "cap_vm_enough_memory",
    "security_vm_enough_memory_mm",
    "__vm_enough_memory",
    "kallsyms_show_value",
];

/// Frames of the tracing machinery and of the check itself, skipped when naming the caller.
fn is_plumbing(function: &str) -> bool {
    function.starts_with("bpf_")
        || function.starts_with("__bpf_")
        || function.starts_with("__traceiter_")
        || function.starts_with("perf_")
        || function.starts_with("trace_")
        || matches!(
            function,
            "cap_capable" | "security_capable" | "ns_capable_common"
        )
}

/// /proc/kallsyms, sorted, for symbolising kernel stack addresses. The names stay in one
/// string (some 120,000 of them): no allocation per symbol.
pub struct Kallsyms {
    text: String,
    /// (address, byte range of the name in `text`), sorted by address.
    symbols: Vec<(u64, u32, u32)>,
}

/// Where the text symbols of /proc/kallsyms are kept between runs. The kernel formats
/// /proc/kallsyms a page per read(): ~37 ms of system time here, the largest part of
/// profiler's own CPU use on a short workload, for a table that changes only when a module
/// is loaded or unloaded, or at the next boot (new KASLR offset).
const KALLSYMS_CACHE: &str = "kallsyms.cache";
const KALLSYMS_CACHE_MAGIC: &[u8; 8] = b"PRKSYM01";

impl Kallsyms {
    /// The symbol table, from the cache when it belongs to this boot and module set.
    pub fn load() -> anyhow::Result<Kallsyms> {
        let key = kallsyms_cache_key();
        // The runtime folder is checked (root's, 0700) before anything in it is trusted.
        let dir = crate::private_dir::runtime_dir().ok();
        if let (Some(key), Some(dir)) = (key, &dir)
            && let Some(k) = Self::from_cache(dir, key)
        {
            return Ok(k);
        }
        let k = Self::from_proc()?;
        if let (Some(key), Some(dir)) = (key, &dir) {
            // Best effort: without a cache the next run reads /proc/kallsyms again.
            let _ = k.save_cache(dir, key);
        }
        Ok(k)
    }

    fn from_proc() -> anyhow::Result<Kallsyms> {
        let raw = std::fs::read_to_string("/proc/kallsyms").context("reading /proc/kallsyms")?;
        // Only the names are kept (the lines are three times as long).
        let mut text = String::with_capacity(raw.len() / 3);
        let mut symbols = Vec::with_capacity(raw.len() / 40);
        for line in raw.lines() {
            let bytes = line.as_bytes();
            // "ffffffff81000000 T _stext [module]"
            if bytes.len() < 20
                || bytes[16] != b' '
                || !matches!(bytes[17], b't' | b'T' | b'w' | b'W')
            {
                continue;
            }
            let Ok(addr) = u64::from_str_radix(&line[..16], 16) else {
                continue;
            };
            if addr == 0 {
                // kptr_restrict hides addresses: nothing to symbolise with.
                continue;
            }
            let name = &line[19..];
            let name = &name[..name.find(char::is_whitespace).unwrap_or(name.len())];
            symbols.push((addr, text.len() as u32, name.len() as u32));
            text.push_str(name);
        }
        if symbols.is_empty() {
            anyhow::bail!(
                "/proc/kallsyms shows no kernel addresses (kernel.kptr_restrict hides them): kernel stacks \
                 cannot be symbolised"
            );
        }
        symbols.sort_unstable_by_key(|(a, _, _)| *a);
        Ok(Kallsyms { text, symbols })
    }

    /// Layout: magic, key (u64), symbol count (u64), symbols (u64 address, u32 name start,
    /// u32 name length), names. Native endianness: the file never leaves this machine.
    /// Into `dir`, a folder only this user can write.
    fn save_cache(&self, dir: &Path, key: u64) -> anyhow::Result<()> {
        let mut bytes = Vec::with_capacity(24 + self.symbols.len() * 16 + self.text.len());
        bytes.extend_from_slice(KALLSYMS_CACHE_MAGIC);
        bytes.extend_from_slice(&key.to_ne_bytes());
        bytes.extend_from_slice(&(self.symbols.len() as u64).to_ne_bytes());
        for (addr, start, len) in &self.symbols {
            bytes.extend_from_slice(&addr.to_ne_bytes());
            bytes.extend_from_slice(&start.to_ne_bytes());
            bytes.extend_from_slice(&len.to_ne_bytes());
        }
        bytes.extend_from_slice(self.text.as_bytes());
        // Kernel addresses: readable by root only, like /proc/kallsyms's real addresses;
        // created exclusively, never through a link.
        let tmp = dir.join(format!(".kallsyms.cache.tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?
            .write_all(&bytes)?;
        std::fs::rename(&tmp, dir.join(KALLSYMS_CACHE))?;
        Ok(())
    }

    /// From `dir`, a folder only this user can write: the file is trusted only as a regular
    /// file of this user's that nobody else can write (a planted cache would choose what the
    /// kernel stacks say, and so which checks count as unaudited).
    fn from_cache(dir: &Path, key: u64) -> Option<Kallsyms> {
        let path = dir.join(KALLSYMS_CACHE);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(path)
            .ok()?;
        let meta = file.metadata().ok()?;
        use std::os::unix::fs::MetadataExt as _;
        if !meta.is_file()
            || meta.uid() != nix::unistd::geteuid().as_raw()
            || meta.mode() & 0o077 != 0
        {
            return None;
        }
        let mut bytes = Vec::with_capacity(meta.len() as usize);
        std::io::Read::read_to_end(&mut &file, &mut bytes).ok()?;
        let u64_at = |at: usize| Some(u64::from_ne_bytes(bytes.get(at..at + 8)?.try_into().ok()?));
        if bytes.get(..8)? != KALLSYMS_CACHE_MAGIC || u64_at(8)? != key {
            return None;
        }
        let count = usize::try_from(u64_at(16)?).ok()?;
        let names_at = count.checked_mul(16)?.checked_add(24)?;
        let text = std::str::from_utf8(bytes.get(names_at..)?).ok()?.to_owned();
        let mut symbols = Vec::with_capacity(count);
        for entry in bytes.get(24..names_at)?.chunks_exact(16) {
            let addr = u64::from_ne_bytes(entry[..8].try_into().ok()?);
            let start = u32::from_ne_bytes(entry[8..12].try_into().ok()?);
            let len = u32::from_ne_bytes(entry[12..].try_into().ok()?);
            text.get(start as usize..(start + len) as usize)?;
            symbols.push((addr, start, len));
        }
        Some(Kallsyms { text, symbols })
    }

    /// `function+0xoffset`, or [`UNKNOWN_FRAME`] for an address below every symbol: a raw
    /// kernel address never goes into a trace (trace.json is readable by others, and the
    /// addresses would give away the kernel's KASLR offset).
    pub fn symbolize(&self, ip: u64) -> String {
        match self.symbols.partition_point(|(a, _, _)| *a <= ip) {
            0 => UNKNOWN_FRAME.to_owned(),
            i => {
                let (base, start, len) = self.symbols[i - 1];
                let name = &self.text[start as usize..(start + len) as usize];
                format!("{name}+{:#x}", ip - base)
            }
        }
    }
}

/// What the symbol table depends on: this boot (KASLR offset, built-in symbols) and the
/// loaded modules with their addresses.
fn kallsyms_cache_key() -> Option<u64> {
    use std::hash::{Hash as _, Hasher as _};
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    // Absent on kernels built without module support (this project's machines).
    let modules = match std::fs::read_to_string("/proc/modules") {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(_) => return None,
    };
    let mut h = std::hash::DefaultHasher::new();
    boot_id.hash(&mut h);
    modules.hash(&mut h);
    Some(h.finish())
}

fn function_of(frame: &str) -> &str {
    frame.split('+').next().unwrap_or(frame)
}

/// A kernel stack frame that could not be symbolised.
pub const UNKNOWN_FRAME: &str = "?";

/// Decides audited/unaudited for one check, with the reason.
pub fn classify(flags: u32, stack: &[String]) -> (Audit, String) {
    if flags & CAP_FLAG_OPTS_KNOWN != 0 {
        return if flags & CAP_FLAG_NOAUDIT != 0 {
            (
                Audit::Noaudit,
                "cap_capable() was called with CAP_OPT_NOAUDIT".to_owned(),
            )
        } else {
            (
                Audit::Audited,
                "cap_capable() was called without CAP_OPT_NOAUDIT".to_owned(),
            )
        };
    }
    if let Some(f) = stack
        .iter()
        .map(|f| function_of(f))
        .find(|f| NOAUDIT_FUNCTIONS.contains(f) || f.ends_with("_noaudit"))
    {
        return (
            Audit::Noaudit,
            format!("checked by {f}(), which passes CAP_OPT_NOAUDIT"),
        );
    }
    if stack.is_empty() {
        return (
            Audit::Audited,
            "no kernel stack was recorded; treated as audited to be safe".to_owned(),
        );
    }
    if stack.iter().all(|f| f == UNKNOWN_FRAME) {
        return (
            Audit::Unclassified,
            "the kernel stack could not be symbolised (kernel addresses hidden): audited or not cannot be told"
                .to_owned(),
        );
    }
    let caller = stack
        .iter()
        .map(|f| function_of(f))
        .find(|f| !is_plumbing(f))
        .unwrap_or("?");
    (
        Audit::Audited,
        format!("checked by {caller}() with auditing"),
    )
}

pub fn capability_name(number: u32) -> String {
    caps::all()
        .into_iter()
        .find(|c| c.index() as u32 == number)
        .map(|c| c.to_string())
        .unwrap_or_else(|| format!("CAP_{number}"))
}

pub fn parse_capability(name: &str) -> anyhow::Result<Capability> {
    let canonical = caps::to_canonical(name);
    canonical
        .parse::<Capability>()
        .map_err(|_| anyhow::anyhow!("unknown capability {name:?}"))
}

/// Turns the kernel's aggregated keys into trace entries.
pub fn checks_from_kernel(
    raw: Vec<(CapKey, u64, Vec<u64>)>,
    kallsyms: Option<&Kallsyms>,
    cred_check_enabled: bool,
) -> Vec<CapabilityCheck> {
    type Key = (
        String,
        u32,
        bool,
        Phase,
        Option<bool>,
        Option<SyscallRef>,
        Vec<String>,
    );
    let mut merged: BTreeMap<Key, (u64, u32)> = BTreeMap::new();
    for (key, count, ips) in raw {
        let mut stack: Vec<String> = match kallsyms {
            Some(k) => ips.iter().map(|ip| k.symbolize(*ip)).collect(),
            None => ips.iter().map(|_| UNKNOWN_FRAME.to_owned()).collect(),
        };
        // Drop the frames of the probe and the tracepoint machinery: the stack starts at
        // cap_capable(), the function the kernel checks in.
        if let Some(start) = stack.iter().position(|f| function_of(f) == "cap_capable") {
            stack.drain(..start);
        }
        let syscall = if key.flags & CAP_FLAG_NO_SYSCALL != 0 {
            None
        } else {
            let arch = Arch::from_slot(key.arch as usize).unwrap_or(Arch::X86_64);
            let nr = key.syscall_nr as u32;
            Some(SyscallRef {
                arch,
                nr,
                name: arch.display_name(nr),
            })
        };
        let granted = key.flags & CAP_FLAG_GRANTED != 0;
        let phase = Phase::from_index(((key.flags >> CAP_FLAG_PHASE_SHIFT) & 0xff) as usize)
            .unwrap_or(Phase::Workload);
        let own_credentials = match (
            key.flags & CAP_FLAG_OPTS_KNOWN,
            key.flags & CAP_FLAG_OTHER_CRED,
        ) {
            (0, 0) if cred_check_enabled => Some(true),
            (0, _) if cred_check_enabled => Some(false),
            _ => None,
        };
        let e = merged
            .entry((
                capability_name(key.cap),
                key.cap,
                granted,
                phase,
                own_credentials,
                syscall,
                stack,
            ))
            .or_insert((0, key.flags));
        e.0 += count;
    }
    merged
        .into_iter()
        .map(
            |(
                (capability, number, granted, phase, own_credentials, syscall, kernel_stack),
                (count, flags),
            )| {
                let (audit, audit_reason) = classify(flags, &kernel_stack);
                CapabilityCheck {
                    capability,
                    number,
                    granted,
                    phase,
                    own_credentials,
                    audit,
                    audit_reason,
                    syscall,
                    count,
                    kernel_stack,
                }
            },
        )
        .collect()
}

/// `capabilities.json`. Only `add` is required to read one back (`profiler run`), so a
/// hand-written `{"add": [...]}` works too.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq)]
pub struct CapabilityProfile {
    #[serde(default)]
    pub schema: String,
    /// Drop everything, then add these: `--cap-drop ALL --cap-add ...`.
    #[serde(default)]
    pub drop: Vec<String>,
    pub add: Vec<String>,
    /// Why each added capability is needed.
    #[serde(default)]
    pub evidence: BTreeMap<String, Vec<Evidence>>,
    /// Audited checks that failed during recording: the workload asked and coped without it.
    /// Not added; listed so a person can decide.
    #[serde(default)]
    pub denied: BTreeMap<String, Vec<Evidence>>,
    /// Unaudited checks (never needed), with counts, kept for transparency.
    #[serde(default)]
    pub ignored_unaudited: BTreeMap<String, u64>,
    /// For capabilities whose need depends on the environment more than on the program: what
    /// decides it, so a person can judge whether the target environment needs it too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notes: BTreeMap<String, String>,
    /// Checks of credentials other than the workload's own (overlayfs acting as its mounter,
    /// another task's), with counts: the workload's capabilities do not decide them.
    #[serde(default)]
    pub ignored_other_credentials: BTreeMap<String, u64>,
    /// Checks that could not be classified (kernel addresses hidden): not added, since a
    /// guess would put CAP_SYS_ADMIN into every whitelist; a person must decide.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub unclassified: BTreeMap<String, Vec<Evidence>>,
}

pub const CAPABILITIES_SCHEMA: &str = "profiler.dev/capabilities/v1";

#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Clone)]
pub struct Evidence {
    pub syscall: Option<String>,
    pub checked_by: String,
    pub count: u64,
}

/// Capabilities whose need is decided by the environment (sysctls, rlimits, file ownership)
/// as much as by the program.
fn environment_note(cap: &str) -> Option<&'static str> {
    Some(match cap {
        "CAP_NET_BIND_SERVICE" => {
            "needed to bind ports below net.ipv4.ip_unprivileged_port_start (1024 by default); Docker sets it \
             to 0 inside containers, where this capability is then not needed (podman and Kubernetes keep \
             1024: podman-run.txt and kubernetes.yaml set the sysctl instead)"
        }
        "CAP_NET_RAW" => {
            "raw and packet sockets; ICMP echo also works without it through ping sockets when the group is in \
             net.ipv4.ping_group_range (Docker sets 0 2147483647 in containers)"
        }
        "CAP_IPC_LOCK" => {
            "locking memory beyond RLIMIT_MEMLOCK: raising that limit removes the need"
        }
        "CAP_SYS_RESOURCE" => {
            "exceeding resource limits (RLIMIT_*, quotas): higher limits remove the need"
        }
        "CAP_SYS_NICE" => {
            "raising priority or real-time scheduling beyond RLIMIT_NICE/RLIMIT_RTPRIO"
        }
        "CAP_DAC_OVERRIDE" | "CAP_DAC_READ_SEARCH" | "CAP_FOWNER" | "CAP_CHOWN" => {
            "decided by the owners and modes of the files touched: files owned by the workload's user need none"
        }
        "CAP_SETUID" | "CAP_SETGID" => {
            "switching users: a workload started as its final user needs neither"
        }
        _ => return None,
    })
}

pub fn whitelist(checks: &[CapabilityCheck]) -> CapabilityProfile {
    let mut evidence: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    let mut denied: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    let mut ignored: BTreeMap<String, u64> = BTreeMap::new();
    let mut other_creds: BTreeMap<String, u64> = BTreeMap::new();
    let mut unclassified: BTreeMap<String, Vec<Evidence>> = BTreeMap::new();
    for c in checks {
        if c.audit == Audit::Noaudit {
            *ignored.entry(c.capability.clone()).or_default() += c.count;
            continue;
        }
        if c.audit == Audit::Unclassified {
            unclassified
                .entry(c.capability.clone())
                .or_default()
                .push(Evidence {
                    syscall: c.syscall.as_ref().map(|s| format!("{}/{}", s.arch, s.name)),
                    checked_by: c.audit_reason.clone(),
                    count: c.count,
                });
            continue;
        }
        // access()/faccessat() check through an override copy of the caller's own
        // credentials (fs/open.c, access_override_creds()): their answer still depends on
        // the workload's capabilities, so they count.
        let access_family = c
            .syscall
            .as_ref()
            .is_some_and(|s| matches!(s.name.as_str(), "access" | "faccessat" | "faccessat2"));
        if c.own_credentials == Some(false) && !access_family {
            *other_creds.entry(c.capability.clone()).or_default() += c.count;
            continue;
        }
        let ev = Evidence {
            syscall: c.syscall.as_ref().map(|s| format!("{}/{}", s.arch, s.name)),
            checked_by: c.audit_reason.clone(),
            count: c.count,
        };
        let target = if c.granted {
            &mut evidence
        } else {
            &mut denied
        };
        let list = target.entry(c.capability.clone()).or_default();
        if let Some(existing) = list
            .iter_mut()
            .find(|e| e.syscall == ev.syscall && e.checked_by == ev.checked_by)
        {
            existing.count += ev.count;
        } else {
            list.push(ev);
        }
    }
    let add: BTreeSet<String> = evidence.keys().cloned().collect();
    denied.retain(|k, _| !add.contains(k));
    let notes = add
        .iter()
        .chain(denied.keys())
        .filter_map(|c| environment_note(c).map(|n| (c.clone(), n.to_owned())))
        .collect();
    CapabilityProfile {
        schema: CAPABILITIES_SCHEMA.to_owned(),
        drop: vec!["ALL".to_owned()],
        add: add.into_iter().collect(),
        evidence,
        denied,
        ignored_unaudited: ignored,
        notes,
        ignored_other_credentials: other_creds,
        unclassified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stack(frames: &[&str]) -> Vec<String> {
        frames.iter().map(|f| format!("{f}+0x10")).collect()
    }

    #[test]
    fn memory_accounting_check_is_unaudited() {
        let (audit, reason) = classify(
            CAP_FLAG_GRANTED,
            &stack(&[
                "cap_capable",
                "security_vm_enough_memory_mm",
                "do_brk_flags",
                "__do_sys_brk",
            ]),
        );
        assert_eq!(audit, Audit::Noaudit);
        assert!(reason.contains("security_vm_enough_memory_mm"));
        let (audit, _) = classify(
            0,
            &stack(&[
                "cap_capable",
                "security_capable",
                "ns_capable_noaudit",
                "ptrace_has_cap",
            ]),
        );
        assert_eq!(audit, Audit::Noaudit);
    }

    #[test]
    fn ordinary_check_is_audited_and_names_the_caller() {
        let (audit, reason) = classify(
            CAP_FLAG_GRANTED,
            &stack(&[
                "cap_capable",
                "security_capable",
                "capable_wrt_inode_uidgid",
                "setattr_prepare",
            ]),
        );
        assert_eq!(audit, Audit::Audited);
        assert!(reason.contains("capable_wrt_inode_uidgid"), "{reason}");
        // No stack: assume it matters.
        assert_eq!(classify(0, &[]).0, Audit::Audited);
    }

    #[test]
    fn fexit_opts_decide_when_known() {
        let s = stack(&["cap_capable", "capable_wrt_inode_uidgid"]);
        assert_eq!(
            classify(CAP_FLAG_OPTS_KNOWN | CAP_FLAG_NOAUDIT, &s).0,
            Audit::Noaudit
        );
        assert_eq!(
            classify(
                CAP_FLAG_OPTS_KNOWN,
                &stack(&["cap_capable", "ns_capable_noaudit"])
            )
            .0,
            Audit::Audited
        );
    }

    #[test]
    fn whitelist_takes_granted_audited_checks_only() {
        let check = |cap: &str, granted, audit| CapabilityCheck {
            capability: cap.into(),
            number: 0,
            granted,
            phase: Phase::Workload,
            own_credentials: Some(true),
            audit,
            audit_reason: "r".into(),
            syscall: None,
            count: 1,
            kernel_stack: vec![],
        };
        let p = whitelist(&[
            check("CAP_CHOWN", true, Audit::Audited),
            check("CAP_SYS_ADMIN", true, Audit::Noaudit),
            check("CAP_NET_ADMIN", false, Audit::Audited),
        ]);
        assert_eq!(p.add, vec!["CAP_CHOWN"]);
        assert!(p.denied.contains_key("CAP_NET_ADMIN"));
        assert_eq!(p.ignored_unaudited.get("CAP_SYS_ADMIN"), Some(&1));
    }

    #[test]
    fn capability_names_round_trip() {
        assert_eq!(capability_name(0), "CAP_CHOWN");
        assert_eq!(capability_name(21), "CAP_SYS_ADMIN");
        assert_eq!(parse_capability("CAP_CHOWN").unwrap().index(), 0);
        assert!(parse_capability("CAP_NOPE").is_err());
    }
}

#[cfg(test)]
mod kallsyms_cache_tests {
    use super::Kallsyms;

    /// A table read back from the cache symbolises exactly as the one it was saved from; a
    /// cache of another boot or module set, or a damaged one, is not used.
    #[test]
    fn cache_round_trip_and_rejection() {
        let symbols = vec![
            (0xffff_ffff_8100_0000, 0, 6),
            (0xffff_ffff_8100_0100, 6, 11),
        ];
        let k = Kallsyms {
            text: "_stextcap_capable".to_owned(),
            symbols,
        };
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../target/kallsyms-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(super::KALLSYMS_CACHE);
        k.save_cache(&dir, 42).unwrap();
        let back = Kallsyms::from_cache(&dir, 42).expect("cache read back");
        for ip in [0xffff_ffff_8100_0010, 0xffff_ffff_8100_0183, 0x10] {
            assert_eq!(back.symbolize(ip), k.symbolize(ip));
        }
        assert_eq!(back.symbolize(0xffff_ffff_8100_0183), "cap_capable+0x83");
        assert!(
            Kallsyms::from_cache(&dir, 43).is_none(),
            "other key accepted"
        );
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "truncated cache accepted"
        );
        // A cache others could have written is not trusted.
        k.save_cache(&dir, 42).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "world-writable cache accepted"
        );
        std::fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink("/proc/kallsyms", &path).unwrap();
        assert!(
            Kallsyms::from_cache(&dir, 42).is_none(),
            "a symlink accepted"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
