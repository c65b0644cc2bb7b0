//! The Landlock ruleset for a [`Plan`], restricted onto the calling process: from here on it
//! and everything it executes hold to it (security/landlock/syscalls.c,
//! `landlock_restrict_self`; a domain is inherited across fork and exec and never lifted).
use landlock::{
    ABI, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset,
    RulesetAttr, RulesetCreatedAttr, RulesetStatus, Scope,
};

pub use landlock::RulesetStatus as Status;

use crate::resolve::Plan;

/// The newest ABI this code knows what to ask of (7 adds audit logging flags); older
/// kernels get what they have.
const ABI_WANTED: ABI = ABI::V7;

/// What the kernel enforced.
#[derive(Debug)]
pub struct Outcome {
    pub status: RulesetStatus,
    /// The running kernel's Landlock ABI (0: none).
    pub abi: i32,
    /// Rules the plan asked for that this kernel's ABI cannot hold.
    pub missing: Vec<&'static str>,
}

impl Outcome {
    pub fn status_text(&self) -> &'static str {
        match self.status {
            RulesetStatus::FullyEnforced => "fully enforced",
            RulesetStatus::PartiallyEnforced => "partly enforced",
            RulesetStatus::NotEnforced => "NOT enforced (no Landlock on this kernel)",
        }
    }
}

/// The running kernel's Landlock ABI version, 0 when it has none (or it is disabled).
pub fn kernel_abi() -> i32 {
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    v.max(0) as i32
}

/// Which rules the plan asks for that an ABI below `abi` lacks (Documentation/userspace-api/landlock.rst).
fn missing_for(plan: &Plan, abi: i32) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut need = |since: i32, what: &'static str| {
        if abi < since {
            out.push(what);
        }
    };
    need(1, "execute and write rules");
    need(2, "cross-directory rename and link (refer)");
    need(3, "truncate");
    need(4, "TCP bind and connect");
    if plan.scope_abstract_unix || plan.scope_signals {
        need(6, "abstract unix socket and signal scoping");
    }
    need(7, "audit logging of denials");
    out
}

/// A ruleset made and filled, not yet restricted onto anyone: made in a parent, it can be
/// restricted onto a child between fork and exec with two raw syscalls
/// ([`Prepared::restrict_self`]), where allocating (as the landlock crate does) is not safe.
#[derive(Debug)]
pub struct Prepared {
    fd: Option<std::os::fd::OwnedFd>,
    flags: u32,
    pub outcome: Outcome,
}

/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (include/uapi/linux/landlock.h, ABI 7): also log
/// denials after the next exec. Landlock logs only the creator's own denials by default, and
/// the creator here is a launcher that execs the workload right after.
const LOG_NEW_EXEC_ON: u32 = 2;

/// Makes the ruleset for `plan`.
pub fn prepare(plan: &Plan) -> Result<Prepared, String> {
    let abi = ABI_WANTED;
    let fs_handled = AccessFs::from_write(abi) | AccessFs::Execute;
    let net_handled = AccessNet::BindTcp | AccessNet::ConnectTcp;
    let mut scopes = landlock::BitFlags::<Scope>::empty();
    if plan.scope_abstract_unix {
        scopes |= Scope::AbstractUnixSocket;
    }
    if plan.scope_signals {
        scopes |= Scope::Signal;
    }
    let err = |what: &str, e: landlock::RulesetError| format!("{what}: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(fs_handled)
        .map_err(|e| err("Landlock filesystem rights", e))?
        .handle_access(net_handled)
        .map_err(|e| err("Landlock network rights", e))?;
    if !scopes.is_empty() {
        ruleset = ruleset
            .scope(scopes)
            .map_err(|e| err("Landlock scopes", e))?;
    }
    let mut created = ruleset
        .create()
        .map_err(|e| err("creating the Landlock ruleset", e))?;
    for exe in &plan.executables {
        if let Ok(fd) = PathFd::new(exe) {
            created = created
                .add_rule(PathBeneath::new(fd, AccessFs::Execute))
                .map_err(|e| err(&format!("execute rule for {}", exe.display()), e))?;
        }
    }
    for dir in &plan.writable {
        if let Ok(fd) = PathFd::new(dir) {
            created = created
                .add_rule(PathBeneath::new(fd, AccessFs::from_write(abi)))
                .map_err(|e| err(&format!("write rule for {}", dir.display()), e))?;
        }
    }
    for port in &plan.bind_ports {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::BindTcp))
            .map_err(|e| err("bind rule", e))?;
    }
    for port in &plan.connect_ports {
        created = created
            .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
            .map_err(|e| err("connect rule", e))?;
    }
    let kernel = kernel_abi();
    let fd: Option<std::os::fd::OwnedFd> = created.into();
    let missing = missing_for(plan, kernel);
    let status = match (&fd, missing.is_empty()) {
        (None, _) => RulesetStatus::NotEnforced,
        (Some(_), true) => RulesetStatus::FullyEnforced,
        (Some(_), false) => RulesetStatus::PartiallyEnforced,
    };
    Ok(Prepared {
        fd,
        flags: if kernel >= 7 { LOG_NEW_EXEC_ON } else { 0 },
        outcome: Outcome {
            status,
            abi: kernel,
            missing,
        },
    })
}

impl Prepared {
    /// Restricts the calling process onto the ruleset: `no_new_privs` (which Landlock
    /// requires of an unprivileged caller, security/landlock/syscalls.c) and
    /// `landlock_restrict_self`. Only raw syscalls, so it may run in a forked child of a
    /// threaded process. Without Landlock in the kernel it does nothing.
    pub fn restrict_self(&self) -> std::io::Result<()> {
        let Some(fd) = self.raw_fd() else {
            return Ok(());
        };
        restrict_self_raw(fd, self.flags)
    }

    /// The ruleset's fd, for a child that restricts itself (None without Landlock).
    pub fn raw_fd(&self) -> Option<i32> {
        use std::os::fd::AsRawFd as _;
        self.fd.as_ref().map(|f| f.as_raw_fd())
    }

    pub fn flags(&self) -> u32 {
        self.flags
    }
}

/// `no_new_privs` then `landlock_restrict_self(fd, flags)`: async-signal-safe.
pub fn restrict_self_raw(fd: i32, flags: u32) -> std::io::Result<()> {
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, fd, flags) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Restricts the current process (and what it executes) to `plan`.
pub fn apply(plan: &Plan) -> Result<Outcome, String> {
    let prepared = prepare(plan)?;
    prepared
        .restrict_self()
        .map_err(|e| format!("applying the Landlock ruleset: {e}"))?;
    Ok(prepared.outcome)
}

impl Plan {
    /// One line per kind of rule, for the user: what the running kernel enforced, and what
    /// it could not.
    pub fn describe(&self, outcome: &Outcome, who: &str) -> String {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_owned()
            } else {
                v.join(", ")
            }
        };
        let mut out = format!(
            "{who}: landlock (kernel ABI {}, {}):\n  execute:       {} program(s) and their loaders\n  write beneath: {}\n  tcp bind:      {}\n  tcp connect:   {}\n  scoped:        {}\n",
            outcome.abi,
            outcome.status_text(),
            self.executables.len(),
            list(
                self.writable
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect()
            ),
            list(self.bind_ports.iter().map(u16::to_string).collect()),
            list(self.connect_ports.iter().map(u16::to_string).collect()),
            list(
                [
                    self.scope_abstract_unix
                        .then(|| "abstract unix sockets".to_owned()),
                    self.scope_signals.then(|| "signals".to_owned()),
                ]
                .into_iter()
                .flatten()
                .collect()
            ),
        );
        if !outcome.missing.is_empty() {
            out.push_str(&format!(
                "  not enforced:  {} (this kernel's Landlock ABI is {})\n",
                outcome.missing.join(", "),
                outcome.abi
            ));
        }
        for n in &self.notes {
            out.push_str(&format!("  note:          {n}\n"));
        }
        out
    }
}
