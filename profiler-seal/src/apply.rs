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
    /// Rules the restricted process adds itself, just before it restricts: its own
    /// `/proc/self…` folders, which in the parent would name the parent's.
    own: Vec<(std::ffi::CString, u64)>,
}

/// Whether a path names the calling process's own /proc entries (`/proc/self`, below it).
fn names_self(path: &std::path::Path) -> bool {
    path.starts_with("/proc/self") || path.starts_with("/proc/thread-self")
}

/// `LANDLOCK_RESTRICT_SELF_LOG_NEW_EXEC_ON` (include/uapi/linux/landlock.h, ABI 7): also log
/// denials after the next exec. Landlock logs only the creator's own denials by default, and
/// the creator here is a launcher that execs the workload right after.
const LOG_NEW_EXEC_ON: u32 = 2;

/// Makes the ruleset for `plan`, for the calling process itself.
pub fn prepare(plan: &Plan) -> Result<Prepared, String> {
    prepare_for(plan, false)
}

/// Makes the ruleset for `plan` in a parent, for a child that restricts itself with
/// [`Prepared::restrict_self`] between fork and exec: the `/proc/self` rules are left to it.
pub fn prepare_for_child(plan: &Plan) -> Result<Prepared, String> {
    prepare_for(plan, true)
}

fn prepare_for(plan: &Plan, child: bool) -> Result<Prepared, String> {
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
    let mut own = Vec::new();
    // The write rights this kernel handles, as the raw mask a rule the child adds carries.
    let write_mask = AccessFs::from_write(ABI::from(kernel_abi())).bits();
    for dir in &plan.writable {
        if child && names_self(dir) {
            if let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) {
                own.push((c, write_mask));
            }
            continue;
        }
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
        own,
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
        for (path, access) in &self.own {
            add_own_rule(fd, path, *access)?;
        }
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

    /// What a forked child needs to restrict itself (the ruleset fd stays open in the
    /// parent, which keeps this Prepared until the child has exec'd). None without Landlock.
    pub fn for_child(&self) -> Option<ChildRestriction> {
        Some(ChildRestriction {
            fd: self.raw_fd()?,
            flags: self.flags,
            own: self.own.clone(),
        })
    }
}

/// A ruleset a forked child restricts itself to, with its own `/proc/self` rules.
#[derive(Clone, Debug)]
pub struct ChildRestriction {
    fd: i32,
    flags: u32,
    own: Vec<(std::ffi::CString, u64)>,
}

impl ChildRestriction {
    /// Between fork and exec: only raw syscalls on data made before the fork.
    pub fn apply(&self) -> std::io::Result<()> {
        for (path, access) in &self.own {
            add_own_rule(self.fd, path, *access)?;
        }
        restrict_self_raw(self.fd, self.flags)
    }
}

/// `struct landlock_path_beneath_attr` (include/uapi/linux/landlock.h), packed.
#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Adds a path-beneath rule for `path` as this process sees it: open, landlock_add_rule,
/// close (async-signal-safe; `path` was made before the fork).
fn add_own_rule(ruleset: i32, path: &std::ffi::CStr, access: u64) -> std::io::Result<()> {
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
        if fd < 0 {
            return Ok(()); // not there: nothing to allow
        }
        let attr = PathBeneathAttr {
            allowed_access: access,
            parent_fd: fd,
        };
        // LANDLOCK_RULE_PATH_BENEATH = 1
        let r = libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            1u32,
            &raw const attr,
            0u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        if r != 0 {
            return Err(err);
        }
    }
    Ok(())
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
