//! Landlock's denials, as the kernel itself reports them: audit records read from the audit
//! netlink socket's read-only multicast group (`AUDIT_NLGRP_READLOG`, which takes
//! `CAP_AUDIT_READ` and leaves any audit daemon alone).
//!
//! Landlock (ABI 7, security/landlock/audit.c) writes one `AUDIT_LANDLOCK_ACCESS` record per
//! denied request (`domain=… blockers=fs.execute path="/usr/bin/dash" dev="vda" ino=…`), an
//! `AUDIT_LANDLOCK_DOMAIN` record when a domain first denies something (`status=allocated
//! … pid=` of the process that created it), and the audit context adds the `AUDIT_SYSCALL`
//! record of the same event (its `pid=` is the denied process). Records are logged only
//! while audit is enabled (kernel/audit.c `audit_enabled`): if it is off, it is switched on
//! for the session and back off at the end, and the caller says so.
use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd};

/// include/uapi/linux/audit.h
const AUDIT_GET: u16 = 1000;
const AUDIT_SET: u16 = 1001;
const AUDIT_ADD_RULE: u16 = 1011;
const AUDIT_FILTER_TASK: u32 = 0x01;
const AUDIT_NEVER: u32 = 0;
/// `struct audit_rule_data` without fields: flags, action, field_count, mask[64],
/// fields[64], values[64], fieldflags[64], buflen.
const AUDIT_RULE_DATA_LEN: usize = 4 * (3 + 64 * 4 + 1);
const AUDIT_SYSCALL: u16 = 1300;
const AUDIT_EOE: u16 = 1320;
const AUDIT_LANDLOCK_ACCESS: u16 = 1423;
const AUDIT_LANDLOCK_DOMAIN: u16 = 1424;
const AUDIT_STATUS_ENABLED: u32 = 1;
const AUDIT_NLGRP_READLOG: u32 = 1;
const NLMSG_ERROR: u16 = 2;

/// One Landlock denial.
#[derive(Clone, Debug, PartialEq)]
pub struct Denial {
    /// The Landlock domain (hex, as the kernel writes it).
    pub domain: String,
    /// What refused it: `fs.execute`, `fs.write_file`, `fs.make_reg`, `net.bind_tcp`, …
    pub blockers: String,
    /// The denied process, from the event's syscall record.
    pub pid: Option<u32>,
    pub syscall: Option<u64>,
    /// The object: `path=` for the filesystem, the port for TCP.
    pub path: Option<String>,
    pub port: Option<String>,
    /// The process that created the domain (from its `status=allocated` record).
    pub domain_creator: Option<u32>,
}

/// A connection to the kernel's audit records for the session.
pub struct LandlockAudit {
    control: OwnedFd,
    records: OwnedFd,
    /// Audit was off and this session switched it on: it is switched off again on drop.
    enabled_here: bool,
    /// Events (by serial) still being assembled.
    pending: BTreeMap<u64, Vec<(u16, String)>>,
    /// Domain id -> creator pid.
    creators: BTreeMap<String, u32>,
    /// Events pending since the previous drain.
    waited: BTreeSet<u64>,
}

fn netlink_socket() -> std::io::Result<OwnedFd> {
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_AUDIT,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct audit_status` up to `backlog_wait_time` (include/uapi/linux/audit.h); the kernel
/// accepts shorter versions of it.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct AuditStatus {
    mask: u32,
    enabled: u32,
    failure: u32,
    pid: u32,
    rate_limit: u32,
    backlog_limit: u32,
    lost: u32,
    backlog: u32,
}

fn send(fd: &OwnedFd, kind: u16, payload: &[u8]) -> std::io::Result<()> {
    let len = 16 + payload.len();
    let mut msg = Vec::with_capacity(len);
    msg.extend_from_slice(&(len as u32).to_ne_bytes());
    msg.extend_from_slice(&kind.to_ne_bytes());
    // NLM_F_REQUEST | NLM_F_ACK
    msg.extend_from_slice(&(0x1u16 | 0x4).to_ne_bytes());
    msg.extend_from_slice(&1u32.to_ne_bytes());
    msg.extend_from_slice(&0u32.to_ne_bytes());
    msg.extend_from_slice(payload);
    let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Reads replies until one of `kind` (or an error other than the ACK) arrives.
fn reply(fd: &OwnedFd, kind: u16) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 8192];
    for _ in 0..8 {
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let n = n as usize;
        if n < 16 {
            continue;
        }
        let t = u16::from_ne_bytes([buf[4], buf[5]]);
        if t == NLMSG_ERROR && n >= 20 {
            let err = i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]);
            if err != 0 {
                return Err(std::io::Error::from_raw_os_error(-err));
            }
            if kind == NLMSG_ERROR {
                return Ok(Vec::new());
            }
            continue;
        }
        if t == kind {
            return Ok(buf[16..n].to_vec());
        }
    }
    Err(std::io::Error::other("no reply from the audit subsystem"))
}

fn status(fd: &OwnedFd) -> std::io::Result<AuditStatus> {
    send(fd, AUDIT_GET, &[])?;
    let data = reply(fd, AUDIT_GET)?;
    let mut s = AuditStatus::default();
    let words: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_ne_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    if words.len() >= 4 {
        s.mask = words[0];
        s.enabled = words[1];
        s.failure = words[2];
        s.pid = words[3];
    }
    Ok(s)
}

fn set_enabled(fd: &OwnedFd, enabled: u32) -> std::io::Result<()> {
    let s = AuditStatus {
        mask: AUDIT_STATUS_ENABLED,
        enabled,
        ..Default::default()
    };
    let bytes: &[u8] = unsafe {
        std::slice::from_raw_parts(
            (&raw const s).cast::<u8>(),
            std::mem::size_of::<AuditStatus>(),
        )
    };
    send(fd, AUDIT_SET, bytes)?;
    reply(fd, NLMSG_ERROR).map(|_| ())
}

/// `-a never,task` (auditctl's words): no task forked from now on gets a syscall audit
/// context. Without it, once audit has been enabled even once, every new process on the host
/// carries one until reboot (kernel/auditsc.c `audit_alloc()` tests `audit_ever_enabled`)
/// and every syscall takes the audit slow path: measured here, a getppid loop went from
/// ~120 ns to ~210 ns per call in processes started after an enforce session. Landlock's
/// records do not need a syscall context. Fedora's and RHEL's default audit rules carry the
/// same rule for the same reason; it is left in place (it costs nothing, and removing it
/// would bring the cost back).
fn add_never_task_rule(fd: &OwnedFd) -> std::io::Result<()> {
    let mut rule = vec![0u8; AUDIT_RULE_DATA_LEN];
    rule[0..4].copy_from_slice(&AUDIT_FILTER_TASK.to_ne_bytes());
    rule[4..8].copy_from_slice(&AUDIT_NEVER.to_ne_bytes());
    // field_count 0; every syscall in the mask, as auditctl writes a task rule.
    for i in 0..64 {
        let at = 12 + i * 4;
        rule[at..at + 4].copy_from_slice(&u32::MAX.to_ne_bytes());
    }
    send(fd, AUDIT_ADD_RULE, &rule)?;
    match reply(fd, NLMSG_ERROR) {
        Ok(_) => Ok(()),
        // Already there (an earlier session, or the distribution's rules).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        Err(e) => Err(e),
    }
}

impl LandlockAudit {
    /// Starts reading; says in `note` what it changed on the host.
    pub fn start() -> std::io::Result<(LandlockAudit, Option<String>)> {
        let control = netlink_socket()?;
        let records = netlink_socket()?;
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        addr.nl_groups = AUDIT_NLGRP_READLOG;
        let r = unsafe {
            libc::bind(
                records.as_raw_fd(),
                (&raw const addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = unsafe { libc::fcntl(records.as_raw_fd(), libc::F_GETFL) };
        unsafe { libc::fcntl(records.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) };
        let before = status(&control)?;
        let mut note = None;
        let enabled_here = before.enabled == 0;
        if enabled_here {
            // Before audit goes on: processes forked meanwhile must not get syscall contexts.
            add_never_task_rule(&control)?;
            set_enabled(&control, 1)?;
            note = Some(
                "audit was off on this host: switched on while enforcing, so that the kernel reports Landlock's denials, and off again after (a `never,task` rule keeps processes from paying for syscall auditing, and stays)".to_owned(),
            );
        }
        Ok((
            LandlockAudit {
                control,
                records,
                enabled_here,
                pending: BTreeMap::new(),
                creators: BTreeMap::new(),
                waited: BTreeSet::new(),
            },
            note,
        ))
    }

    /// The denials of events the kernel has finished reporting (with `flush`, of every event
    /// read so far: the last drain).
    pub fn drain(&mut self, flush: bool) -> Vec<Denial> {
        let mut buf = vec![0u8; 65536];
        let mut finished = BTreeSet::new();
        loop {
            let n = unsafe {
                libc::recv(
                    self.records.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                )
            };
            if n <= 0 {
                break;
            }
            let n = n as usize;
            if n < 16 {
                continue;
            }
            let len = (u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize).min(n);
            let kind = u16::from_ne_bytes([buf[4], buf[5]]);
            let text = String::from_utf8_lossy(&buf[16..len.max(16)])
                .trim_end_matches('\0')
                .to_owned();
            if !matches!(
                kind,
                AUDIT_SYSCALL | AUDIT_EOE | AUDIT_LANDLOCK_ACCESS | AUDIT_LANDLOCK_DOMAIN
            ) {
                continue;
            }
            if std::env::var_os("PROFILER_AUDIT_DEBUG").is_some() {
                eprintln!("audit record {kind}: {text}");
            }
            let Some(serial) = serial(&text) else {
                continue;
            };
            if kind == AUDIT_EOE {
                finished.insert(serial);
            } else {
                self.pending.entry(serial).or_default().push((kind, text));
            }
        }
        // An event is complete at its end-of-event record; one without (no syscall
        // context) once a whole drain interval has passed since it was first read, or at
        // the final drain (`flush`). An event whose records are split across two reads
        // must not be taken half (its syscall record names the denied process).
        let ready: Vec<u64> = self
            .pending
            .keys()
            .filter(|serial| flush || finished.contains(*serial) || self.waited.contains(*serial))
            .copied()
            .collect();
        self.waited = self
            .pending
            .keys()
            .filter(|s| !ready.contains(s))
            .copied()
            .collect();
        let events: Vec<Vec<(u16, String)>> = ready
            .iter()
            .map(|serial| self.pending.remove(serial).unwrap_or_default())
            .collect();
        // Domains first: without a syscall context (the `never,task` rule) a domain's
        // `status=allocated` record is an event of its own, after the first denial's.
        for (kind, text) in events.iter().flatten() {
            if *kind == AUDIT_LANDLOCK_DOMAIN {
                let f = fields(text);
                if f.get("status").map(String::as_str) == Some("allocated")
                    && let (Some(d), Some(p)) =
                        (f.get("domain"), f.get("pid").and_then(|p| p.parse().ok()))
                {
                    self.creators.insert(d.clone(), p);
                }
            }
        }
        let mut out = Vec::new();
        for records in &events {
            let syscall = records
                .iter()
                .find(|(k, _)| *k == AUDIT_SYSCALL)
                .map(|(_, t)| fields(t));
            for (kind, text) in records {
                if *kind != AUDIT_LANDLOCK_ACCESS {
                    continue;
                }
                let f = fields(text);
                let domain = f.get("domain").cloned().unwrap_or_default();
                let creator = self.creators.get(&domain).copied();
                out.push(Denial {
                    domain_creator: creator,
                    domain,
                    blockers: f.get("blockers").cloned().unwrap_or_default(),
                    // The denied process where the syscall record names it; else the
                    // domain's creator (the workload's first process, or the sealing
                    // entrypoint that became it).
                    pid: syscall
                        .as_ref()
                        .and_then(|s| s.get("pid"))
                        .and_then(|p| p.parse().ok())
                        .or(creator),
                    syscall: syscall
                        .as_ref()
                        .and_then(|s| s.get("syscall"))
                        .and_then(|p| p.parse().ok()),
                    path: f.get("path").cloned(),
                    port: f
                        .get("dest")
                        .or_else(|| f.get("src"))
                        .or_else(|| f.get("lport"))
                        .cloned(),
                });
            }
        }
        out
    }
}

impl Drop for LandlockAudit {
    fn drop(&mut self) {
        // Off again only if nothing else took audit over meanwhile (an audit daemon that
        // registered, which wants it on). A SIGKILL skips this: audit then stays on, as
        // the start-up note said it would be while enforcing.
        if self.enabled_here && status(&self.control).is_ok_and(|s| s.enabled == 1 && s.pid == 0) {
            let _ = set_enabled(&self.control, 0);
        }
    }
}

/// The serial of `audit(1796144854.576:6): …`.
fn serial(text: &str) -> Option<u64> {
    let head = text.strip_prefix("audit(")?;
    let end = head.find(')')?;
    head[..end].rsplit(':').next()?.parse().ok()
}

/// `key=value` and `key="quoted value"` pairs of a record; a value the kernel wrote in hex
/// (untrusted strings with spaces or quotes, `audit_log_untrustedstring`) is decoded.
fn fields(text: &str) -> BTreeMap<String, String> {
    let body = text.split_once("): ").map(|(_, b)| b).unwrap_or(text);
    let mut out = BTreeMap::new();
    let mut rest = body;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_owned();
        let after = &rest[eq + 1..];
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            match q.find('"') {
                Some(end) => (q[..end].to_owned(), &q[end + 1..]),
                None => (q.to_owned(), ""),
            }
        } else {
            let end = after.find(' ').unwrap_or(after.len());
            let raw = &after[..end];
            let decoded = (key == "path" || key == "exe" || key == "comm")
                .then(|| hex_string(raw))
                .flatten()
                .unwrap_or_else(|| raw.to_owned());
            (decoded, &after[end..])
        };
        if !key.is_empty() && !key.contains(' ') {
            out.insert(key, value);
        }
        rest = next;
    }
    out
}

fn hex_string(raw: &str) -> Option<String> {
    if raw.len() % 2 != 0 || raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..raw.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&raw[i..i + 2], 16).ok())
        .collect();
    Some(String::from_utf8_lossy(&bytes?).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_read_as_the_kernel_writes_them() {
        // Records as kernel 6.18 wrote them here (ABI 7).
        let access = r#"audit(1796144854.576:7): domain=110e3d070 blockers=fs.execute path="/usr/bin/dash" dev="vda" ino=247076"#;
        assert_eq!(serial(access), Some(7));
        let f = fields(access);
        assert_eq!(f["blockers"], "fs.execute");
        assert_eq!(f["path"], "/usr/bin/dash");
        assert_eq!(f["ino"], "247076");
        let syscall = r#"audit(1796144854.576:7): arch=c000003e syscall=59 success=no exit=-13 pid=1906 comm="python3" exe="/usr/bin/python3.11" key=(null)"#;
        let s = fields(syscall);
        assert_eq!(s["pid"], "1906");
        assert_eq!(s["syscall"], "59");
        // A path with a space is written in hex.
        let hex = "audit(1.2:3): domain=1 blockers=fs.make_reg path=2F746D702F6120620A";
        assert_eq!(fields(hex)["path"], "/tmp/a b\n");
    }
}
