//! A file mapped read-only, for the large files profiler reads whole and keeps: the kernel's
//! BTF and the kallsyms cache. A mapping costs a few page faults where `read` copies every
//! byte into pages of its own.

/// A private read-only mapping of a whole file. Only files nobody else writes in place are
/// mapped (sysfs's BTF; root's own caches, which are replaced by a rename, never rewritten):
/// a file truncated under a mapping faults its reader.
pub struct MappedFile {
    base: std::ptr::NonNull<std::ffi::c_void>,
    len: std::num::NonZeroUsize,
}

// SAFETY: the mapping is read-only and owned by this value; reads from any thread are fine.
unsafe impl Send for MappedFile {}
unsafe impl Sync for MappedFile {}

impl MappedFile {
    /// Maps `file` as it is now (its length at this moment); None for an empty file or when
    /// it cannot be mapped.
    pub fn new(file: &std::fs::File) -> Option<MappedFile> {
        use nix::sys::mman::{MapFlags, ProtFlags, mmap};
        let len = std::num::NonZeroUsize::new(usize::try_from(file.metadata().ok()?.len()).ok()?)?;
        // SAFETY: a fresh private read-only mapping, only read through `bytes`.
        let base = unsafe {
            mmap(
                None,
                len,
                ProtFlags::PROT_READ,
                MapFlags::MAP_PRIVATE,
                file,
                0,
            )
        }
        .ok()?;
        Some(MappedFile { base, len })
    }

    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping made in `new`, `len` bytes, alive as long as `self`.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr().cast(), self.len.get()) }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, not used after this.
        let _ = unsafe { nix::sys::mman::munmap(self.base, self.len.get()) };
    }
}
