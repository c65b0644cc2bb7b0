//! Rules against the root the workload runs in: what exists here, what the kernel opens to
//! run each program, and which recorded programs are no longer the file that was recorded.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::rules::{Executable, Rules};

/// What the ruleset will allow, on this root.
#[derive(Debug, Default)]
pub struct Plan {
    pub executables: BTreeSet<PathBuf>,
    pub writable: BTreeSet<PathBuf>,
    pub bind_ports: BTreeSet<u16>,
    pub connect_ports: BTreeSet<u16>,
    pub scope_abstract_unix: bool,
    pub scope_signals: bool,
    /// What the plan had to widen or leave out, and why.
    pub notes: Vec<String>,
}

/// The ELF interpreter (`PT_INTERP`) of an executable, if it is a dynamic ELF file.
pub fn elf_interpreter(data: &[u8]) -> Option<PathBuf> {
    use object::read::elf::ProgramHeader as _;
    fn find<H: object::read::elf::FileHeader<Endian = object::Endianness>>(
        data: &[u8],
    ) -> Option<PathBuf> {
        let header = H::parse(data).ok()?;
        let endian = header.endian().ok()?;
        for ph in header.program_headers(endian, data).ok()? {
            if let Ok(Some(interp)) = ph.interpreter(endian, data) {
                let s = std::str::from_utf8(interp).ok()?;
                return Some(PathBuf::from(s.trim_end_matches('\0')));
            }
        }
        None
    }
    // 32-bit executables name theirs the same way.
    find::<object::elf::FileHeader64<object::Endianness>>(data)
        .or_else(|| find::<object::elf::FileHeader32<object::Endianness>>(data))
}

/// The interpreter of a `#!` script.
pub fn script_interpreter(data: &[u8]) -> Option<PathBuf> {
    let rest = data.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?.trim();
    line.split_whitespace().next().map(PathBuf::from)
}

/// The program and what the kernel itself opens to run it (loader, script interpreter),
/// followed a few levels deep (fs/exec.c allows 4 levels of binfmt rewrites, BINPRM_MAX_RECURSION).
pub fn with_what_it_needs(program: &Path, out: &mut BTreeSet<PathBuf>) {
    let mut pending = vec![program.to_path_buf()];
    for _ in 0..5 {
        let Some(p) = pending.pop() else { break };
        if !out.insert(p.clone()) {
            continue;
        }
        // The first bytes are enough for a shebang and for the ELF program headers of any
        // ordinary executable.
        let Ok(data) = read_head(&p, 64 * 1024) else {
            continue;
        };
        if let Some(i) = elf_interpreter(&data).or_else(|| script_interpreter(&data)) {
            pending.push(i);
        }
    }
}

fn read_head(path: &Path, limit: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let f = std::fs::File::open(path)?;
    let mut buf = Vec::with_capacity(limit);
    f.take(limit as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Lowercase hex sha256 of what `reader` yields, streamed.
pub fn sha256_of(mut reader: impl std::io::Read) -> std::io::Result<String> {
    use sha2::Digest as _;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        match reader.read(&mut buf)? {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Whether the file at `path` is not the one the recording saw executed there (a binary
/// replaced or downloaded since): size and mtime first, the content hash when either
/// differs (a copied-in identical file keeps its hash). Says why, or None when it is the
/// same file or the rules carry no identity for it.
fn drift(exe: &Executable, path: &Path, writable: bool) -> Option<String> {
    use std::os::unix::fs::MetadataExt as _;
    // Beneath a writable directory (a named volume an earlier run wrote) the file may have
    // been rewritten to the same size with its mtime put back: there it is always hashed,
    // and without a recorded hash it is not trusted at all.
    let Some(sha) = exe.sha256.as_deref() else {
        return writable.then(|| {
            format!(
                "{} is beneath a writable directory and has no recorded hash: not executable",
                path.display()
            )
        });
    };
    let meta = std::fs::metadata(path).ok()?;
    if !writable && Some(meta.len()) == exe.size && Some(meta.mtime()) == exe.mtime {
        return None;
    }
    let now = std::fs::File::open(path)
        .and_then(sha256_of)
        .unwrap_or_else(|_| "unreadable".into());
    (now != sha).then(|| {
        format!(
            "{} changed since the recording (sha256 {} then, {} now): not executable",
            path.display(),
            &sha[..sha.len().min(12)],
            &now[..now.len().min(12)]
        )
    })
}

/// Device files nearly every program writes (or ioctls, for terminals); the rest of /dev
/// (disks above all) stays out of reach.
const DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
    "/dev/tty",
    "/dev/pts",
    "/dev/shm",
    "/dev/ptmx",
    "/dev/stdout",
    "/dev/stderr",
];

/// Whether `path` is absolute and in normal form (no `.`, `..`, empty components): the
/// profile's paths came from a recording a hostile workload may have shaped.
pub fn normal(path: &str) -> bool {
    path.starts_with('/')
        && !path.contains('\0')
        && path
            .split('/')
            .skip(1)
            .all(|c| !c.is_empty() && c != "." && c != "..")
        || path == "/"
}

/// Whether the way to `path` goes through a symbolic link inside one of the `writable`
/// directories: the workload could have planted it there (a recorded tool replaced by a link
/// to `/`, a data folder by a link to `/etc`; in a container, a named volume kept from an
/// earlier run), so it must not decide what a rule covers. System links outside them
/// (`/bin -> usr/bin`, `/var/run -> /run`) are fine.
fn through_planted_link(path: &Path, writable: &BTreeSet<PathBuf>) -> bool {
    let mut prefix = PathBuf::from("/");
    for c in path.components().skip(1) {
        prefix.push(c);
        let is_link = std::fs::symlink_metadata(&prefix)
            .map(|m| m.file_type().is_symlink())
            .unwrap_or(false);
        if is_link && writable.iter().any(|w| prefix.starts_with(w)) {
            return true;
        }
    }
    false
}

/// The plan for `rules` on the root this process sees.
pub fn resolve(rules: &Rules) -> Plan {
    let mut p = Plan {
        notes: rules.notes.clone(),
        ..Default::default()
    };
    let recorded_writable: BTreeSet<PathBuf> = rules
        .write_beneath
        .iter()
        .filter(|d| normal(d))
        .map(PathBuf::from)
        .collect();
    for exe in &rules.execute {
        let path = Path::new(&exe.path);
        if !normal(&exe.path) || !path.exists() {
            p.notes.push(format!(
                "recorded program {:?} is not here: not executable",
                exe.path
            ));
            continue;
        }
        if through_planted_link(path, &recorded_writable) {
            p.notes.push(format!(
                "{} is reached through a symbolic link inside a writable directory: not executable",
                exe.path
            ));
            continue;
        }
        // The identity may be recorded under the path the link resolves to (the kernel
        // reports the file it ran: /usr/bin/python3 -> python3.11).
        let identity = if exe.sha256.is_some() {
            Some(exe)
        } else {
            std::fs::canonicalize(path).ok().and_then(|c| {
                let c = c.display().to_string();
                rules
                    .execute
                    .iter()
                    .find(|e| e.path == c && e.sha256.is_some())
            })
        };
        let canonical = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let writable = recorded_writable
            .iter()
            .any(|w| canonical.starts_with(w) || path.starts_with(w));
        let why = match identity {
            Some(i) => drift(i, path, writable),
            None => drift(exe, path, writable),
        };
        if let Some(why) = why {
            p.notes.push(why);
            continue;
        }
        with_what_it_needs(path, &mut p.executables);
    }
    // Execute rules only on regular files (a link or `#!` naming a folder would open all of
    // it).
    p.executables
        .retain(|e| std::fs::metadata(e).map(|m| m.is_file()).unwrap_or(false));
    for dir in &rules.write_beneath {
        if !normal(dir) || dir == "/" {
            p.notes.push(format!(
                "writable directory {dir:?} refused: not a normal absolute path below /"
            ));
            continue;
        }
        let path = PathBuf::from(dir);
        if through_planted_link(&path, &recorded_writable) {
            p.notes.push(format!(
                "{dir} is reached through a symbolic link inside a writable directory: not writable"
            ));
            continue;
        }
        if path.is_dir() {
            p.writable.insert(path);
            continue;
        }
        // A directory the workload makes itself: its parent must allow making it (and so
        // everything beneath); never more than one level up, and never /.
        match path.parent().filter(|a| a.is_dir() && *a != Path::new("/")) {
            Some(parent) => {
                p.notes.push(format!(
                    "{dir} does not exist yet (the workload makes it): writes allowed beneath {} instead",
                    parent.display()
                ));
                p.writable.insert(parent.to_path_buf());
            }
            None => p.notes.push(format!(
                "{dir} does not exist, nor its parent: not writable"
            )),
        }
    }
    // Only device nodes and folders (/dev/pts, /dev/shm): /dev/stdout can be a pipe, which
    // Landlock cannot attach a rule to (EBADFD), and needs none to be written.
    for d in DEVICES {
        use std::os::unix::fs::FileTypeExt as _;
        if std::fs::metadata(d)
            .map(|m| m.file_type().is_char_device() || m.is_dir())
            .unwrap_or(false)
        {
            p.writable.insert(PathBuf::from(d));
        }
    }
    // The workload's own /proc entries; `/proc/self` names this process, which is the one
    // that execs the workload (same pid), so the rule holds for it.
    for f in &rules.write_files {
        if normal(f)
            && ["/proc/self", "/proc/self/fd", "/proc/self/task"].contains(&f.as_str())
            && Path::new(f).exists()
        {
            p.writable.insert(PathBuf::from(f));
        }
    }
    p.bind_ports = rules.bind_tcp.iter().copied().filter(|p| *p != 0).collect();
    p.connect_ports = rules
        .connect_tcp
        .iter()
        .copied()
        .filter(|p| *p != 0)
        .collect();
    p.scope_abstract_unix = rules.scope_abstract_unix;
    p.scope_signals = rules.scope_signals;
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_kernel_opens_to_run_a_program_is_found() {
        let mut out = BTreeSet::new();
        with_what_it_needs(Path::new("/bin/sh"), &mut out);
        // A dynamic executable names its loader (glibc's ld-linux on Debian).
        assert!(
            out.iter().any(|p| p.to_string_lossy().contains("ld-linux")),
            "{out:?}"
        );
        assert_eq!(
            script_interpreter(b"#!/usr/bin/python3 -u\nprint(1)\n"),
            Some(PathBuf::from("/usr/bin/python3"))
        );
        assert!(normal("/usr/bin/x") && normal("/"));
        assert!(!normal("/usr/../etc") && !normal("usr") && !normal("/a//b"));
    }

    #[test]
    fn a_changed_file_is_drift_and_the_same_content_is_not() {
        // A folder of its own (mkdtemp: a random name, mode 0700), not a guessable name in
        // the shared temporary folder.
        let template = std::env::temp_dir().join("seal-drift-XXXXXX");
        let mut template = std::ffi::CString::new(template.into_os_string().into_encoded_bytes())
            .unwrap()
            .into_bytes_with_nul();
        // SAFETY: a NUL-terminated buffer mkdtemp rewrites in place.
        let made = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
        assert!(
            !made.is_null(),
            "mkdtemp: {}",
            std::io::Error::last_os_error()
        );
        template.pop();
        let dir = std::path::PathBuf::from(String::from_utf8(template).unwrap());
        let f = dir.join("tool");
        std::fs::write(&f, b"one").unwrap();
        let sha = sha256_of(&b"one"[..]).unwrap();
        let exe = Executable {
            path: f.display().to_string(),
            size: Some(0),
            mtime: Some(0),
            sha256: Some(sha),
        };
        assert_eq!(drift(&exe, &f, false), None, "same content, other mtime");
        std::fs::write(&f, b"two").unwrap();
        assert!(drift(&exe, &f, false).unwrap().contains("changed"));
        // Same size and mtime as recorded, other content: outside writable directories
        // trusted by size and mtime, beneath one always hashed.
        use std::os::unix::fs::MetadataExt as _;
        let meta = std::fs::metadata(&f).unwrap();
        let forged = Executable {
            size: Some(meta.len()),
            mtime: Some(meta.mtime()),
            ..exe.clone()
        };
        assert_eq!(drift(&forged, &f, false), None);
        assert!(drift(&forged, &f, true).unwrap().contains("changed"));
        let unhashed = Executable {
            sha256: None,
            ..forged
        };
        assert!(
            drift(&unhashed, &f, true)
                .unwrap()
                .contains("no recorded hash")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
