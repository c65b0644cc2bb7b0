//! Opening files a workload controls, from its root or profiler's: without following it
//! into a FIFO or a device, so that reading a workload's "executable" never blocks or
//! takes a terminal.
use std::os::fd::AsFd as _;

use nix::fcntl::{OFlag, OpenHow, openat2};
use nix::sys::stat::fstat;

/// Opens `path` relative to `dir` without blocking or taking a terminal: `O_PATH` first,
/// then, only for a regular file, a read-only open of that same file through its
/// descriptor (a FIFO or device the workload put there is never opened for reading).
pub(crate) fn open_regular(
    dir: std::os::fd::BorrowedFd<'_>,
    path: &str,
    how: OpenHow,
) -> Option<std::fs::File> {
    let fd = openat2(dir, path, how).ok()?;
    let st = fstat(fd.as_fd()).ok()?;
    if nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
        != nix::sys::stat::SFlag::S_IFREG
    {
        return None;
    }
    let reopened = nix::fcntl::open(
        format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&fd)).as_str(),
        OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()?;
    Some(std::fs::File::from(reopened))
}
