//! Which syscalls a program can make by name, from its ELF import tables: a dynamically
//! linked program calls libc's wrapper `kill()` through an undefined dynamic symbol `kill`
//! (`kill@GLIBC_2.2.5`), whether or not the recording reached that call. The executable and
//! every library of its `DT_NEEDED` closure are read (libssl's imports are the program's too);
//! a library's own defined exports are not (libc defines every wrapper, and a program can
//! reach only those something imports).
//!
//! The closure is resolved the way glibc's loader does (elf/dl-load.c, `_dl_map_object`): a
//! name with a slash is a path; otherwise the needing object's `DT_RPATH` (only when it has
//! no `DT_RUNPATH`) and then the executable's, its `DT_RUNPATH`, `/etc/ld.so.cache`, and the
//! default folders, taking the first file of the same ELF class and machine. `$ORIGIN` is
//! expanded; `LD_LIBRARY_PATH` and `LD_PRELOAD` are not read (the recording does not keep the
//! environment), nor is anything `dlopen()`ed (modules, plugins, NSS): see the README.
//!
//! Everything is read inside the workload's root (`openat2(RESOLVE_IN_ROOT)`, through
//! `/proc/PID/root`), at record time: a container's files are gone by `generate`. The files are
//! the workload's, so they are input: size-capped, parsed by the `object` crate, and a
//! closure is bounded in objects.
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::Read as _;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt as _;
use std::path::Path;
use std::sync::Arc;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};

use crate::arch::Arch;
use crate::recording::ld_cache::{self, LdCache};
use crate::trace::image::{ImportTable, Imports};

/// Objects larger than this are not read (a hostile sparse "library" must not take memory);
/// libicudata, the largest library of the test images, is some 30 MiB.
const MAX_OBJECT: u64 = 128 * 1024 * 1024;
/// At most this many objects per closure (a real program has a few dozen).
const MAX_OBJECTS: usize = 512;

/// What one ELF object says about its imports and dependencies.
#[derive(Debug)]
struct Object {
    arch: Option<Arch>,
    /// `PT_INTERP`: loaded by the dynamic loader.
    interpreter: bool,
    needed: Vec<String>,
    rpath: Vec<String>,
    runpath: Vec<String>,
    /// Imported syscall-named functions.
    syscalls: BTreeSet<String>,
    /// Imported functions, syscall-named or not.
    functions: u64,
}

/// A file's device and inode.
type FileId = (u64, u64);

/// Reads import tables, each object once (by device and inode), across a recording.
#[derive(Default)]
pub struct ImportReader {
    objects: HashMap<FileId, Option<Arc<Object>>>,
    caches: HashMap<FileId, Arc<LdCache>>,
}

impl ImportReader {
    /// The imports of the executable at `path` inside `root`, when the file there is still
    /// the one identified at the exec (`dev`, `inode`); `None` when it is not, or cannot be
    /// opened.
    pub fn imports(
        &mut self,
        root: BorrowedFd<'_>,
        path: &str,
        dev: u64,
        inode: u64,
    ) -> Option<Imports> {
        let (exe, id) = self.object(root, path)?;
        if id != (dev, inode) {
            return None;
        }
        let Some(exe) = exe else {
            return Some(Imports {
                table: ImportTable::Unreadable,
                ..Default::default()
            });
        };
        if !exe.interpreter && exe.needed.is_empty() {
            return Some(Imports {
                table: ImportTable::None,
                arch: exe.arch,
                executable_functions: exe.functions,
                ..Default::default()
            });
        }
        let mut out = Imports {
            table: ImportTable::Dynamic,
            arch: exe.arch,
            executable_functions: exe.functions,
            ..Default::default()
        };
        out.objects.insert(path.to_owned(), exe.syscalls.clone());
        let cache = self.ld_cache(root);
        let mut seen_ids = BTreeSet::from([id]);
        let mut names: BTreeSet<String> = BTreeSet::new();
        let mut queue = VecDeque::from([(path.to_owned(), exe.clone())]);
        while let Some((at, object)) = queue.pop_front() {
            for name in &object.needed {
                if !names.insert(name.clone()) || out.objects.len() >= MAX_OBJECTS {
                    continue;
                }
                let found = self
                    .candidates(name, &at, &object, &exe, path, &cache)
                    .into_iter()
                    .find_map(|candidate| {
                        let (lib, id) = self.object(root, &candidate)?;
                        let lib = lib?;
                        (lib.arch == exe.arch).then_some((candidate, lib, id))
                    });
                let Some((lib_path, lib, id)) = found else {
                    out.missing_libraries.insert(name.clone());
                    continue;
                };
                if seen_ids.insert(id) {
                    out.objects.insert(lib_path.clone(), lib.syscalls.clone());
                    queue.push_back((lib_path, lib));
                }
            }
        }
        Some(out)
    }

    /// Where the loader looks for `name`, needed by the object at `at`, in its order.
    fn candidates(
        &self,
        name: &str,
        at: &str,
        object: &Object,
        exe: &Object,
        exe_path: &str,
        cache: &LdCache,
    ) -> Vec<String> {
        if name.contains('/') {
            // Relative to the loader's working directory, which is not known here.
            return if name.starts_with('/') {
                vec![name.to_owned()]
            } else {
                vec![]
            };
        }
        let mut dirs = Vec::new();
        if object.runpath.is_empty() {
            dirs.extend(expand(&object.rpath, at));
            if exe.runpath.is_empty() && at != exe_path {
                dirs.extend(expand(&exe.rpath, exe_path));
            }
        }
        dirs.extend(expand(&object.runpath, at));
        let mut out: Vec<String> = dirs.iter().map(|d| format!("{d}/{name}")).collect();
        out.extend(cache.lookup(name).iter().cloned());
        out.extend(default_dirs(exe.arch).iter().map(|d| format!("{d}/{name}")));
        out
    }

    /// Reads the object at `path` in `root` once per (device, inode): `None` when it cannot
    /// be opened as a regular file; `Some((None, id))` when it is not an ELF object read here.
    fn object(
        &mut self,
        root: BorrowedFd<'_>,
        path: &str,
    ) -> Option<(Option<Arc<Object>>, FileId)> {
        let file = open_in_root(root, path)?;
        let meta = file.metadata().ok()?;
        let id = (meta.dev(), meta.ino());
        if let Some(known) = self.objects.get(&id) {
            return Some((known.clone(), id));
        }
        // Only the ranges the parse needs (headers, dynamic section, dynamic symbols and
        // strings) are read, each checked against the file's length (`CappedFile`) by
        // object's `ReadCache`: reading all of cc1 (33 MB) for its imports cost more than the rest of
        // profiler's work during a build.
        let parsed = (meta.len() <= MAX_OBJECT)
            .then(|| {
                let file = crate::recording::files::CappedFile::new(file, meta.len());
                parse(&object::ReadCache::new(file)).map(Arc::new)
            })
            .flatten();
        self.objects.insert(id, parsed.clone());
        Some((parsed, id))
    }

    /// `/etc/ld.so.cache` of `root`, read once per file.
    fn ld_cache(&mut self, root: BorrowedFd<'_>) -> Arc<LdCache> {
        let Some(mut file) = open_in_root(root, "/etc/ld.so.cache") else {
            return Arc::default();
        };
        let Ok(meta) = file.metadata() else {
            return Arc::default();
        };
        let id = (meta.dev(), meta.ino());
        if let Some(c) = self.caches.get(&id) {
            return c.clone();
        }
        let mut data = Vec::new();
        let cache = if meta.len() <= ld_cache::MAX_CACHE
            && (&mut file)
                .take(ld_cache::MAX_CACHE)
                .read_to_end(&mut data)
                .is_ok()
        {
            Arc::new(LdCache::parse(&data))
        } else {
            Arc::default()
        };
        self.caches.insert(id, cache.clone());
        cache
    }
}

/// The loader's default folders after the cache (glibc's system dirs, with Debian's and
/// Fedora's layouts: multiarch and lib64/lib32).
fn default_dirs(arch: Option<Arch>) -> &'static [&'static str] {
    match arch {
        Some(Arch::I386) => &[
            "/lib/i386-linux-gnu",
            "/usr/lib/i386-linux-gnu",
            "/lib32",
            "/usr/lib32",
            "/lib",
            "/usr/lib",
        ],
        Some(Arch::X32) => &[
            "/lib/x86_64-linux-gnux32",
            "/usr/lib/x86_64-linux-gnux32",
            "/libx32",
            "/usr/libx32",
        ],
        _ => &[
            "/lib/x86_64-linux-gnu",
            "/usr/lib/x86_64-linux-gnu",
            "/lib64",
            "/usr/lib64",
            "/lib",
            "/usr/lib",
        ],
    }
}

/// `RPATH`/`RUNPATH` entries with `$ORIGIN` (the needing object's folder) expanded; entries
/// with other tokens ($LIB, $PLATFORM) or relative ones (to the working directory) are
/// dropped.
fn expand(entries: &[String], at: &str) -> Vec<String> {
    let origin = Path::new(at)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    entries
        .iter()
        .map(|e| e.replace("${ORIGIN}", &origin).replace("$ORIGIN", &origin))
        .filter(|e| e.starts_with('/') && !e.contains('$'))
        .map(|e| {
            crate::trace::image::normalize(Path::new(&e))
                .display()
                .to_string()
        })
        .collect()
}

/// Opens a regular file at `path` inside `root` (symlinks resolve inside it).
fn open_in_root(root: BorrowedFd<'_>, path: &str) -> Option<std::fs::File> {
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let rel = path.trim_start_matches('/');
    crate::recording::files::open_regular(root, if rel.is_empty() { "." } else { rel }, how)
}

/// The root of process `pid` as a directory descriptor.
pub fn process_root(pid: u32) -> Option<std::os::fd::OwnedFd> {
    nix::fcntl::open(
        format!("/proc/{pid}/root").as_str(),
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .ok()
}

/// One ELF object's machine, loader, dependencies and imported functions.
fn parse<'data, R: object::ReadRef<'data>>(data: R) -> Option<Object> {
    use object::Object as _;
    let file = object::File::parse(data).ok()?;
    let arch = match (file.architecture(), file.is_64()) {
        (object::Architecture::X86_64, true) => Some(Arch::X86_64),
        (object::Architecture::X86_64_X32, _) | (object::Architecture::X86_64, false) => {
            Some(Arch::X32)
        }
        (object::Architecture::I386, _) => Some(Arch::I386),
        _ => None,
    };
    let mut object = match &file {
        object::File::Elf64(elf) => dynamic(elf),
        object::File::Elf32(elf) => dynamic(elf),
        _ => return None,
    };
    object.arch = arch;
    let imports = file.imports().ok()?;
    for import in imports.flatten() {
        let name = match import.name() {
            object::read::NameOrOrdinal::Name(n) => n,
            object::read::NameOrOrdinal::Ordinal(_) => continue,
        };
        if let object::read::ImportFlags::Elf { st_info, .. } = import.flags()
            && matches!(
                st_info.st_type(),
                object::elf::STT_OBJECT | object::elf::STT_TLS
            )
        {
            continue;
        }
        object.functions += 1;
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        // A versioned name as tools print it (`shutdown@GLIBC_2.2.5`) is the same function.
        let name = name.split('@').next().unwrap_or(name);
        if let Some(a) = arch
            && a.has_syscall(name)
        {
            object.syscalls.insert(name.to_owned());
        }
    }
    Some(object)
}

/// `PT_INTERP`, and the `DT_NEEDED`, `DT_RPATH` and `DT_RUNPATH` entries.
fn dynamic<'d, Elf, R>(elf: &object::read::elf::ElfFile<'d, Elf, R>) -> Object
where
    Elf: object::read::elf::FileHeader<Endian = object::Endianness>,
    R: object::ReadRef<'d>,
{
    use object::read::elf::ProgramHeader as _;
    let endian = elf.endian();
    let data = elf.data();
    let interpreter = elf
        .elf_header()
        .program_headers(endian, data)
        .map(|phs| {
            phs.iter()
                .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
        })
        .unwrap_or(false);
    let mut out = Object {
        arch: None,
        interpreter,
        needed: vec![],
        rpath: vec![],
        runpath: vec![],
        syscalls: BTreeSet::new(),
        functions: 0,
    };
    let Ok(table) = elf.elf_section_table().dynamic_table(endian, data) else {
        return out;
    };
    for d in table.iter() {
        let Ok(value) = table.string(d) else { continue };
        let value = String::from_utf8_lossy(value).into_owned();
        match d.tag {
            object::elf::DT_NEEDED => out.needed.push(value),
            object::elf::DT_RPATH => out.rpath.extend(value.split(':').map(str::to_owned)),
            object::elf::DT_RUNPATH => out.runpath.extend(value.split(':').map(str::to_owned)),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Imports of the executable `path` as this process's own root shows it (a command profiler
    /// started runs in profiler's root).
    fn imports_on_host(reader: &mut ImportReader, path: &str) -> Option<Imports> {
        use std::os::fd::AsFd as _;
        let root = process_root(std::process::id())?;
        let meta = std::fs::metadata(path).ok()?;
        reader.imports(root.as_fd(), path, meta.dev(), meta.ino())
    }

    /// The host's own /bin/ls: dynamically linked, its closure reaches libc, and what it
    /// imports by syscall name matches `nm -D --undefined-only` (binutils), read here.
    #[test]
    fn reads_a_real_programs_closure_like_nm() {
        let mut reader = ImportReader::default();
        let Some(imports) = imports_on_host(&mut reader, "/usr/bin/ls") else {
            panic!("/usr/bin/ls could not be read");
        };
        assert_eq!(imports.table, ImportTable::Dynamic);
        assert_eq!(imports.arch, Some(Arch::X86_64));
        assert!(
            imports.objects.keys().any(|p| p.ends_with("/libc.so.6")),
            "{:?}",
            imports.objects.keys()
        );
        let Ok(nm) = std::process::Command::new("nm")
            .args(["-D", "--undefined-only", "/usr/bin/ls"])
            .output()
        else {
            eprintln!("SKIP: no nm");
            return;
        };
        let from_nm: BTreeSet<String> = String::from_utf8_lossy(&nm.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .map(|n| n.split('@').next().unwrap().to_owned())
            .filter(|n| Arch::X86_64.has_syscall(n))
            .collect();
        assert!(!from_nm.is_empty());
        assert_eq!(imports.objects["/usr/bin/ls"], from_nm);
        // libc defines its wrappers: they are not its imports.
        let libc = imports
            .objects
            .iter()
            .find(|(p, _)| p.ends_with("/libc.so.6"))
            .unwrap()
            .1;
        assert!(!libc.contains("kill") && !libc.contains("read"), "{libc:?}");
    }

    #[test]
    fn origin_is_the_needing_objects_folder() {
        assert_eq!(
            expand(
                &[
                    "$ORIGIN/../lib".into(),
                    "${ORIGIN}".into(),
                    "lib".into(),
                    "$LIB/x".into()
                ],
                "/opt/app/bin/app"
            ),
            ["/opt/app/lib", "/opt/app/bin"]
        );
    }
}
