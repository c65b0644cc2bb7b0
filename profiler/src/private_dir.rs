//! Private working folders for the files profiler hands to other programs while it records
//! (the recording seccomp profile, a rewritten OCI bundle, a compose override).
//!
//! Root writes them and a container engine or runtime reads them back, so nobody else may
//! choose, replace or swap them: a fixed pattern in /tmp (`profile-PID.json`) can be created
//! in advance by any local user as a symlink to a file of their choosing, or swapped between
//! profiler's write and the engine's read. So every folder is made by `mkdtemp` (random
//! name, mode 0700) inside `/run/profiler`, which must be a real directory owned by root and
//! writable by nobody else; files are created relative to the folder's descriptor with
//! `O_CREAT | O_EXCL | O_NOFOLLOW`.
use std::ffi::CString;
use std::io::Write as _;
use std::os::fd::{AsFd as _, OwnedFd};
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::Mode;

/// profiler's root-only runtime folder (also holds the kallsyms cache).
pub const RUNTIME_DIR: &str = "/run/profiler";

/// Makes sure `RUNTIME_DIR` exists, is a directory (not a symlink), belongs to the current
/// user and is not writable by group or others; a looser one is tightened when it is ours,
/// refused otherwise.
pub fn runtime_dir() -> anyhow::Result<PathBuf> {
    let dir = Path::new(RUNTIME_DIR);
    use std::os::unix::fs::DirBuilderExt as _;
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("cannot create {RUNTIME_DIR}")),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("cannot stat {RUNTIME_DIR}"))?;
    if !meta.file_type().is_dir() {
        bail!("{RUNTIME_DIR} is not a directory (a symlink or file someone else made?); remove it");
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "{RUNTIME_DIR} belongs to uid {}, not to uid {me}: refusing to keep private files there",
            meta.uid()
        );
    }
    if meta.mode() & 0o077 != 0 {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot tighten the permissions of {RUNTIME_DIR}"))?;
    }
    Ok(dir.to_path_buf())
}

/// A cache file `name` in `dir` (the runtime folder, or a test's): trusted only as a regular
/// file of this user's that nobody else can write, opened without following a link. A
/// planted cache would choose what profiler believes about the kernel.
pub fn open_cache_file(dir: &Path, name: &str) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(name))
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file()
        || meta.uid() != nix::unistd::geteuid().as_raw()
        || meta.mode() & 0o077 != 0
        || meta.nlink() != 1
    {
        return None;
    }
    Some(file)
}

/// Replaces the cache file `name` in `dir`: written whole under a new random name
/// (`mkstemp`: created exclusively, mode 0600; two profilers in different pid namespaces
/// share the folder) and renamed over the old one, so a reader sees the old file or the new
/// one, never half of one.
pub fn write_cache_file(dir: &Path, name: &str, bytes: &[u8]) -> anyhow::Result<()> {
    let (fd, tmp) = nix::unistd::mkstemp(&dir.join(format!(".{name}.XXXXXX")))
        .with_context(|| format!("cannot create a file in {}", dir.display()))?;
    let written = std::fs::File::from(fd)
        .write_all(bytes)
        .map_err(anyhow::Error::from)
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)).map_err(anyhow::Error::from));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// A folder only the current user can use, removed with everything in it on drop.
pub struct PrivateDir {
    path: PathBuf,
    fd: OwnedFd,
}

impl PrivateDir {
    /// A new folder `RUNTIME_DIR/TAG-XXXXXX`.
    pub fn create(tag: &str) -> anyhow::Result<PrivateDir> {
        let base = runtime_dir()?;
        let template = base.join(format!("{tag}-XXXXXX"));
        let path = nix::unistd::mkdtemp(&template)
            .with_context(|| format!("cannot create a private folder in {}", base.display()))?;
        let fd = nix::fcntl::open(
            &path,
            OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open {}", path.display()))?;
        Ok(PrivateDir { path, fd })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates `name` in the folder (never an existing file, never through a symlink).
    pub fn write(&self, name: &str, content: &[u8]) -> anyhow::Result<PathBuf> {
        if name.contains('/') || name == "." || name == ".." || name.is_empty() {
            bail!("invalid file name {name:?}");
        }
        let cname = CString::new(name)?;
        let fd = openat(
            self.fd.as_fd(),
            cname.as_c_str(),
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .with_context(|| format!("cannot create {}", self.path.join(name).display()))?;
        let mut file = std::fs::File::from(fd);
        file.write_all(content)
            .with_context(|| format!("cannot write {}", self.path.join(name).display()))?;
        Ok(self.path.join(name))
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// For unit tests that need a private folder in /run/profiler: true when running as root,
/// else says why the test is skipped.
#[cfg(test)]
pub(crate) fn root_or_skip() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: the private folder in /run/profiler needs root");
    }
    root
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_created_once_and_never_through_a_symlink() {
        if !root_or_skip() {
            return;
        }
        let d = PrivateDir::create("unit").unwrap();
        let meta = std::fs::metadata(d.path()).unwrap();
        assert_eq!(meta.mode() & 0o777, 0o700);
        d.write("a.json", b"{}").unwrap();
        // A second create of the same name fails instead of overwriting.
        assert!(d.write("a.json", b"x").is_err());
        std::os::unix::fs::symlink("/etc/passwd", d.path().join("b.json")).unwrap();
        assert!(d.write("b.json", b"x").is_err());
        assert!(d.write("../x", b"x").is_err());
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
    }
}
