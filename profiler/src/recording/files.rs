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

/// A file for `object::ReadCache`, no longer than it was when its size was checked.
/// `ReadCache` allocates each range the ELF parse asks for after checking it against the
/// file's length (read once). Without the cap, a workload that grows its executable (a
/// sparse `ftruncate`) after the size check could have a crafted header ask for gigabytes.
pub struct CappedFile {
    file: std::fs::File,
    cap: u64,
}

impl CappedFile {
    pub fn new(file: std::fs::File, cap: u64) -> CappedFile {
        CappedFile { file, cap }
    }
}

impl object::read::ReadCacheOps for CappedFile {
    fn len(&mut self) -> Result<u64, ()> {
        let actual =
            std::io::Seek::seek(&mut self.file, std::io::SeekFrom::End(0)).map_err(|_| ())?;
        Ok(actual.min(self.cap))
    }

    fn seek(&mut self, pos: u64) -> Result<u64, ()> {
        std::io::Seek::seek(&mut self.file, std::io::SeekFrom::Start(pos)).map_err(|_| ())
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, ()> {
        std::io::Read::read(&mut self.file, buf).map_err(|_| ())
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ()> {
        std::io::Read::read_exact(&mut self.file, buf).map_err(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object::ReadRef as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    /// A file grown (sparsely, as a workload could grow its executable) after its size was
    /// checked: ranges past the checked size are refused before anything is allocated for
    /// them, ranges within it read the file's bytes.
    #[test]
    fn a_file_grown_after_the_check_reads_only_its_checked_length() {
        // A private folder (mkdtemp, removed on drop): no name another user could plant.
        let dir = crate::private_dir::PrivateDir::create("capped-test").unwrap();
        let path = dir.path().join("grown");
        std::fs::write(&path, b"\x7fELF and some bytes").unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let checked = file.metadata().unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .unwrap()
            .set_len(1 << 40)
            .unwrap();
        let cache = object::ReadCache::new(CappedFile::new(file, checked));
        assert_eq!((&cache).len(), Ok(checked));
        assert_eq!((&cache).read_bytes_at(0, 4), Ok(&b"\x7fELF"[..]));
        assert!((&cache).read_bytes_at(0, 1 << 30).is_err());
        assert!((&cache).read_bytes_at(checked, 1).is_err());
    }
}
