//! Output folders that root writes into safely, and files written there all or nothing.
//!
//! profiler runs as root and is pointed at folders other users may own (`--out
//! /home/bob/profile`, a CI workspace). Such a user must not be able to make root write
//! somewhere else. So:
//! - the folder is opened one component at a time, relative to the previous one's
//!   descriptor (`openat2(RESOLVE_NO_SYMLINKS)`): a symbolic link on the way is followed only
//!   when it belongs to root or to profiler's own user (a link another user planted is
//!   refused, unless `--follow-symlinks` says otherwise), and missing components are created
//!   the same way (`mkdirat` + open without following);
//! - files are staged under random names with `O_CREAT | O_EXCL | O_NOFOLLOW` relative to the
//!   folder's descriptor (never through a planted symlink, never into an existing file), made
//!   durable, and only then renamed into place with `renameat`;
//! - every destination is checked before anything is renamed (a directory where a file must
//!   go is an error with nothing changed), and a failure removes every staged file.
use std::ffi::{CString, OsStr};
use std::io::Write as _;
use std::os::fd::{AsFd as _, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::{Component, Path, PathBuf};

use anyhow::{Context as _, bail};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat, renameat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstatat, mkdirat};

/// Up to this many files are made durable one by one (fdatasync); more with one syncfs
/// (per-file syncs were most of the time to write 200 container profiles). syncfs also
/// writes back whatever else is dirty on the filesystem, such as a build's output just
/// written by the workload, so it is not used for a few files (BENCHMARKS.md, M12).
const SYNC_FILES_ONE_BY_ONE: usize = 64;

/// How many symbolic links one path may go through (the kernel's own limit, MAXSYMLINKS).
const MAX_LINKS: usize = 40;

/// An opened output folder.
pub struct OutputDir {
    pub path: PathBuf,
    fd: OwnedFd,
}

fn stat_at(dir: BorrowedFd<'_>, name: &CString) -> Result<FileStat, Errno> {
    fstatat(dir, name.as_c_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
}

fn is_kind(st: &FileStat, kind: SFlag) -> bool {
    SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == kind
}

/// Whether a symlink owned by `uid` may be followed: root's own links (`/var/run -> /run`)
/// and the current user's are; another user's are not, unless `follow_any`.
fn trusted_link(uid: u32, follow_any: bool) -> bool {
    follow_any || uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &CString) -> Result<OwnedFd, Errno> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(dir, name.as_c_str(), how)
}

impl OutputDir {
    /// Opens `path` as described above, creating what is missing.
    pub fn open(path: &Path, follow_any_symlink: bool) -> anyhow::Result<OutputDir> {
        Self::walk(path, follow_any_symlink, true)
    }

    /// Before a workload runs: whether `path` can be opened and written, without creating
    /// anything (a missing folder is judged by its nearest existing parent, where a probe
    /// file is written and removed: 64 KiB, so a full filesystem shows).
    pub fn check(path: &Path, follow_any_symlink: bool) -> anyhow::Result<()> {
        Self::walk(path, follow_any_symlink, false)?.check_writable()
    }

    fn walk(path: &Path, follow_any_symlink: bool, create: bool) -> anyhow::Result<OutputDir> {
        let abs = crate::profile::absolute(path);
        let root = nix::fcntl::open(
            "/",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .context("cannot open /")?;
        let mut pending: Vec<PathBuf> = abs
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(PathBuf::from(n)),
                _ => None,
            })
            .rev()
            .collect();
        // `stack` holds the descriptors of the folders walked so far (for `..` in a link).
        let mut stack: Vec<OwnedFd> = vec![root];
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            let name_os: &OsStr = comp.as_os_str();
            if name_os == ".." {
                if stack.len() > 1 {
                    stack.pop();
                }
                continue;
            }
            if name_os == "." {
                continue;
            }
            let name = CString::new(name_os.as_bytes())?;
            let here = stack.last().unwrap().as_fd();
            let shown = || abs.display().to_string();
            match stat_at(here, &name) {
                Ok(st) if is_kind(&st, SFlag::S_IFLNK) => {
                    links += 1;
                    if links > MAX_LINKS {
                        bail!("{}: too many symbolic links", shown());
                    }
                    if !trusted_link(st.st_uid, follow_any_symlink) {
                        bail!(
                            "refusing to follow the symbolic link {:?} in {} owned by uid {} (another user may have \
                             planted it to redirect what root writes); pass --follow-symlinks to follow it anyway",
                            comp,
                            shown(),
                            st.st_uid
                        );
                    }
                    let target = readlinkat(here, name.as_c_str()).with_context(|| {
                        format!("reading the symbolic link {comp:?} in {}", shown())
                    })?;
                    let target = PathBuf::from(target);
                    if target.is_absolute() {
                        stack.truncate(1);
                    }
                    let parts: Vec<PathBuf> = target
                        .components()
                        .filter_map(|c| match c {
                            Component::Normal(n) => Some(PathBuf::from(n)),
                            Component::ParentDir => Some(PathBuf::from("..")),
                            _ => None,
                        })
                        .collect();
                    pending.extend(parts.into_iter().rev());
                }
                Ok(st) if is_kind(&st, SFlag::S_IFDIR) => {
                    let fd = open_dir_at(here, &name)
                        .with_context(|| format!("cannot open {comp:?} in {}", shown()))?;
                    stack.push(fd);
                }
                Ok(_) => bail!("{}: {comp:?} on the way is not a directory", shown()),
                Err(Errno::ENOENT) if !create => break,
                Err(Errno::ENOENT) => {
                    match mkdirat(here, name.as_c_str(), Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(e) => {
                            return Err(e).with_context(|| {
                                format!("cannot create output folder {}", shown())
                            });
                        }
                    }
                    // Reopened without following: what is there now must be a directory.
                    let fd = open_dir_at(here, &name)
                        .with_context(|| format!("cannot open {comp:?} in {}", shown()))?;
                    stack.push(fd);
                }
                Err(e) => {
                    return Err(e)
                        .with_context(|| format!("cannot look at {comp:?} in {}", shown()));
                }
            }
        }
        // The O_PATH descriptor of the folder, reopened for real use.
        let dir = stack.pop().unwrap();
        let fd = openat(
            dir.as_fd(),
            ".",
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("cannot open output folder {}", abs.display()))?;
        Ok(OutputDir { path: abs, fd })
    }

    /// Opens `name` in this folder for appending (a log), created if missing, never through
    /// a symlink and never anything but a regular file.
    pub fn open_append(&self, name: &str) -> anyhow::Result<std::fs::File> {
        use std::os::unix::fs::MetadataExt as _;
        let c = CString::new(name)?;
        let fd = openat(
            self.fd.as_fd(),
            c.as_c_str(),
            // O_NONBLOCK: a FIFO planted at the name fails (ENXIO) instead of hanging root.
            OFlag::O_WRONLY
                | OFlag::O_APPEND
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_NOCTTY
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .with_context(|| {
            format!(
                "cannot open {} (a symlink? a FIFO?)",
                self.path.join(name).display()
            )
        })?;
        let file = std::fs::File::from(fd);
        let meta = file.metadata()?;
        if !meta.is_file() || meta.nlink() > 1 {
            bail!(
                "{} is not a regular file of its own (another name links to it)",
                self.path.join(name).display()
            );
        }
        Ok(file)
    }

    fn check_writable(&self) -> anyhow::Result<()> {
        let (name, mut f) = self.stage("write-check")?;
        let res = f
            .write_all(&[0u8; 64 * 1024])
            .and_then(|_| f.sync_data())
            .with_context(|| format!("cannot write in {}", self.path.display()));
        let _ = nix::unistd::unlinkat(
            self.fd.as_fd(),
            name.as_c_str(),
            nix::unistd::UnlinkatFlags::NoRemoveDir,
        );
        res
    }

    /// A new staging file: `.NAME.tmp-RANDOM`, created exclusively, never through a link.
    fn stage(&self, name: &str) -> anyhow::Result<(CString, std::fs::File)> {
        for _ in 0..8 {
            let mut r = [0u8; 8];
            getrandom(&mut r);
            let tmp = format!(".{name}.tmp-{}", u64::from_ne_bytes(r));
            let c = CString::new(tmp)?;
            match openat(
                self.fd.as_fd(),
                c.as_c_str(),
                OFlag::O_WRONLY
                    | OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            ) {
                Ok(fd) => return Ok((c, std::fs::File::from(fd))),
                Err(Errno::EEXIST) => continue,
                Err(e) => {
                    return Err(e).with_context(|| {
                        format!("cannot create a file in {}", self.path.display())
                    });
                }
            }
        }
        bail!("cannot create a staging file in {}", self.path.display())
    }

    /// Whether `name` is something a file may replace (absent, a file, or a symlink, which a
    /// rename replaces without following).
    fn check_destination(&self, name: &str) -> anyhow::Result<()> {
        let c = CString::new(name)?;
        match stat_at(self.fd.as_fd(), &c) {
            Ok(st) if is_kind(&st, SFlag::S_IFDIR) => bail!(
                "{} is a directory where profiler must write a file; nothing was written",
                self.path.join(name).display()
            ),
            Ok(_) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => {
                Err(e).with_context(|| format!("cannot look at {}", self.path.join(name).display()))
            }
        }
    }
}

fn getrandom(buf: &mut [u8]) {
    // SAFETY: the buffer is valid for its length; a short or failed read leaves zeros, and
    // O_EXCL still keeps the name from meaning an existing file.
    unsafe { libc::getrandom(buf.as_mut_ptr().cast(), buf.len(), 0) };
}

/// Opens the log file `path` for appending the way output folders are opened: its folder
/// walked without following other users' symlinks, the file itself never a symlink.
pub fn open_log(path: &Path, follow_any_symlink: bool) -> anyhow::Result<std::fs::File> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} names no file", path.display()))?;
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    OutputDir::open(parent, follow_any_symlink)?.open_append(name)
}

/// How many threads make the staged files durable at once.
const SYNC_THREADS: usize = 4;

/// fdatasync of each file, on a few threads at once: each new file's sync waits for a
/// journal commit, and syncs waiting together share one (ext4 and xfs commit what is
/// pending at once) instead of one commit after another (some 0.2 ms each: 3.1-3.5 ms for a
/// recording's files, 2.0 ms so, Intel Xeon). The first failure is returned.
fn sync_all(files: Vec<(std::fs::File, PathBuf)>) -> anyhow::Result<()> {
    if files.is_empty() {
        return Ok(());
    }
    let per_thread = files.len().div_ceil(SYNC_THREADS);
    let sync = |chunk: &[(std::fs::File, PathBuf)]| -> anyhow::Result<()> {
        for (f, path) in chunk {
            f.sync_data()
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    };
    std::thread::scope(|scope| {
        let mut here = Ok(());
        let mut workers = Vec::new();
        for chunk in files.chunks(per_thread) {
            // A thread that cannot be made leaves its share to this one.
            match std::thread::Builder::new().spawn_scoped(scope, move || sync(chunk)) {
                Ok(worker) => workers.push(worker),
                Err(_) => here = here.and_then(|()| sync(chunk)),
            }
        }
        let joined = workers.into_iter().try_for_each(|w| {
            w.join()
                .map_err(|_| anyhow::anyhow!("a thread syncing the profiles panicked"))?
        });
        here.and(joined)
    })
}

/// Writes every (folder, files) set all or nothing: everything staged and made durable
/// first, every destination checked, then the renames. Returns the paths written.
pub fn write_sets(
    sets: &[crate::profile::OutputSet<'_>],
    follow_any_symlink: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let mut dirs = Vec::new();
    for (path, files) in sets {
        let dir = OutputDir::open(path, follow_any_symlink)?;
        for (name, _) in files {
            dir.check_destination(name)?;
        }
        dirs.push(dir);
    }
    let mut staged: Vec<(usize, CString, String)> = Vec::new();
    let cleanup = |staged: &[(usize, CString, String)], dirs: &[OutputDir]| {
        for (i, tmp, _) in staged {
            let _ = nix::unistd::unlinkat(
                dirs[*i].fd.as_fd(),
                tmp.as_c_str(),
                nix::unistd::UnlinkatFlags::NoRemoveDir,
            );
        }
    };
    let file_count: usize = sets.iter().map(|(_, files)| files.len()).sum();
    let one_by_one = file_count <= SYNC_FILES_ONE_BY_ONE;
    let result: anyhow::Result<()> = (|| {
        let mut to_sync = Vec::new();
        for (i, (_, files)) in sets.iter().enumerate() {
            for (name, content) in files {
                let (tmp, mut f) = dirs[i].stage(name)?;
                staged.push((i, tmp, name.to_string()));
                f.write_all(content).with_context(|| {
                    format!("cannot write {}", dirs[i].path.join(name).display())
                })?;
                if one_by_one {
                    to_sync.push((f, dirs[i].path.join(name)));
                }
            }
        }
        sync_all(to_sync)?;
        // Data first, then the renames: after a crash either the old or the new files exist.
        if !one_by_one && let Some(d) = dirs.first() {
            nix::unistd::syncfs(d.fd.as_fd()).context("syncing the output filesystem")?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        cleanup(&staged, &dirs);
        return Err(e);
    }
    let mut written = Vec::new();
    for (n, (i, tmp, name)) in staged.iter().enumerate() {
        let dest = CString::new(name.as_str())?;
        if let Err(e) = renameat(
            dirs[*i].fd.as_fd(),
            tmp.as_c_str(),
            dirs[*i].fd.as_fd(),
            dest.as_c_str(),
        ) {
            cleanup(&staged[n..], &dirs);
            return Err(e).with_context(|| {
                format!(
                    "cannot move {} into place",
                    dirs[*i].path.join(name).display()
                )
            });
        }
        written.push(dirs[*i].path.join(name));
    }
    for d in &dirs {
        let _ = nix::unistd::fsync(d.fd.as_fd());
    }
    Ok(written)
}
