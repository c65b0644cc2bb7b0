//! Rare events, streamed through a ring buffer (execs, file writes, network endpoints, user
//! switches). Never the syscall record itself: a flood of events can only lose events, which
//! are counted, never a syscall.

/// Bytes of a path, or of a sockaddr, in [`Event::data`] (NUL-padded).
pub const EVENT_PATH_LEN: usize = 256;
/// Bytes of a second string (`argv[0]` of an exec) in [`Event::aux`] (NUL-padded).
pub const EVENT_AUX_LEN: usize = 64;

/// How often userspace drains the event ring buffer without being woken: the programs wake
/// it only when the buffer fills up (a wake-up per event costs more than the event).
pub const EVENT_DRAIN_INTERVAL_MS: u64 = 50;

/// execve/execveat entered: `data` = filename as passed, `aux` = argv[0], args[0] = dirfd.
pub const EVENT_EXEC_ATTEMPT: u32 = 1;
/// An exec succeeded (sched_process_exec): `args` see [`ExecOk`], `aux` the supplementary
/// groups ([`EXEC_GROUPS_KNOWN`]).
pub const EVENT_EXEC_OK: u32 = 2;
/// A path was opened for writing, created, removed or renamed: args[0] = syscall number,
/// args[1] = dirfd, args[2] = open flags; `data` = path as passed.
pub const EVENT_WRITE: u32 = 3;
/// chdir: `data` = path.
pub const EVENT_CHDIR: u32 = 4;
/// fchdir: args[0] = fd.
pub const EVENT_FCHDIR: u32 = 5;
/// A new process: args[0] = parent tgid, args[1] = child tgid, args[2] = the child's
/// `task_struct.start_boottime` in ns, 0 when unknown.
pub const EVENT_FORK: u32 = 6;
/// bind/connect: args[0] = fd, args[1] = address length; `data` = the sockaddr bytes.
pub const EVENT_BIND: u32 = 7;
pub const EVENT_CONNECT: u32 = 8;
/// listen: args[0] = fd, args[1] = backlog.
pub const EVENT_LISTEN: u32 = 9;
/// setuid family: args[0] = syscall number, args[1..4] = the ids.
pub const EVENT_SETID: u32 = 10;
/// socket: args[0..3] = family, type, protocol.
pub const EVENT_SOCKET: u32 = 11;
/// `profiler enforce` killed a program that an exec started and the profile does not list
/// (the path is in this thread's preceding EVENT_EXEC_ATTEMPT).
pub const EVENT_EXEC_KILLED: u32 = 12;
/// A task was moved into a cgroup that is not recorded (any on the host): args[0] = the
/// destination cgroup id, args[1] = the task's tgid. Userspace decides whether the task was
/// the workload's (then the recording lost it).
pub const EVENT_CGROUP_ATTACH: u32 = 13;

/// Key of the allowed-executables map of `profiler enforce`: the path as passed to execve,
/// NUL-padded.
pub type ExecPath = [u8; EVENT_PATH_LEN];

/// One event as the ring buffer carries it: `kind` is one of the `EVENT_*` values above.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    pub cgroup_id: u64,
    pub kind: u32,
    /// Process (tgid) and thread id.
    pub pid: u32,
    pub tid: u32,
    pub phase: u32,
    pub args: [u64; 4],
    pub data: [u8; EVENT_PATH_LEN],
    pub aux: [u8; EVENT_AUX_LEN],
}

// SAFETY: plain-old-data, `#[repr(C)]`, no padding (the size is asserted next).
#[cfg(feature = "user")]
unsafe impl aya::Pod for Event {}

const _: () = assert!(core::mem::size_of::<Event>() == 56 + EVENT_PATH_LEN + EVENT_AUX_LEN);

/// An `EVENT_EXEC_OK`'s `aux`, as `u32` words: the first is [`EXEC_GROUPS_KNOWN`] with the
/// number of the process's supplementary groups (`cred->group_info->ngroups`), the next up
/// to [`EXEC_GROUPS_MAX`] of those groups. Without the flag, or with more groups than fit,
/// userspace reads them from /proc.
pub const EXEC_GROUPS_KNOWN: u32 = 1 << 31;
pub const EXEC_GROUPS_MAX: usize = EVENT_AUX_LEN / 4 - 1;

/// The supplementary groups an `EVENT_EXEC_OK`'s `aux` holds ([`EXEC_GROUPS_KNOWN`]); None
/// where the kernel did not give them all.
pub fn exec_groups(aux: &[u8; EVENT_AUX_LEN]) -> Option<impl Iterator<Item = u32> + '_> {
    let word =
        |i: usize| u32::from_ne_bytes([aux[4 * i], aux[4 * i + 1], aux[4 * i + 2], aux[4 * i + 3]]);
    let head = word(0);
    let count = (head & !EXEC_GROUPS_KNOWN) as usize;
    (head & EXEC_GROUPS_KNOWN != 0 && count <= EXEC_GROUPS_MAX).then(|| (1..=count).map(word))
}

/// An `EVENT_EXEC_OK`'s arguments: `[uid | gid << 32, s_dev | mtime << 32, i_ino, i_size]`
/// of the exec and of the file the kernel ran (`bprm->file`; device in the kernel's
/// encoding, mtime in seconds, to 2106). Identity fields are 0 where the kernel's BTF did not
/// lead to the file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecOk {
    pub uid: u32,
    pub gid: u32,
    pub dev: u32,
    pub mtime: u32,
    pub ino: u64,
    pub size: u64,
}

impl ExecOk {
    pub fn from_args(args: &[u64; 4]) -> ExecOk {
        ExecOk {
            uid: args[0] as u32,
            gid: (args[0] >> 32) as u32,
            dev: args[1] as u32,
            mtime: (args[1] >> 32) as u32,
            ino: args[2],
            size: args[3],
        }
    }
    pub fn to_args(&self) -> [u64; 4] {
        [
            self.uid as u64 | (self.gid as u64) << 32,
            self.dev as u64 | (self.mtime as u64) << 32,
            self.ino,
            self.size,
        ]
    }
}
